"""Lets gin resolve `include 'gin_configs/...'` from any working directory (gin reads packages as config roots)."""
