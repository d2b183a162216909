#!/usr/bin/env bash
# Creates .venv and installs picor-gin with its test tools. Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
# Pinned first so the machine's build is used: the CPU wheel where no GPU is (on disk on our
# CPU machines), the CUDA wheel from PyPI on GPU machines. The package itself asks torch>=2.13.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
