"""A config root for gin (see gin_configs/__init__.py)."""
