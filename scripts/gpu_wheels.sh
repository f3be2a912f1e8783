#!/usr/bin/env bash
# Collect into .whl/ the wheels a GPU machine without internet lacks (its Python is 3.12 with torch,
# timm and transformers): ../shared/wheels-gpu plus jsonschema and its dependencies, fetched from PyPI here.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
cp "${WHEELS_GPU:-../shared/wheels-gpu}"/*.whl .whl/
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
ls .whl
