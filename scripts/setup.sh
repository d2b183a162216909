#!/usr/bin/env bash
# Creates .venv and installs picor-gin with its test tools. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "error: picor-gin needs Python 3.10 or newer; python3 is $(python3 -V)" >&2; exit 2; }
  python3 -m venv .venv
fi
# Pinned first, so that a build already in .venv (or on the machine's wheel path) is kept; else
# pip's choice, the CUDA build on Linux. The package itself asks torch>=2.13.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
