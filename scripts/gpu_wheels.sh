#!/usr/bin/env bash
# Collect into .whl/ the wheels that the GPU machine (Python 3.12 with torch, timm, transformers, pandas; no
# internet) lacks to run the workflow there: ../shared/wheels-gpu (datasets, torchao, torch-pruning, ...) plus
# Snakemake and the dependencies the machine's image does not have. Pure-Python wheels are built here (some of
# Snakemake's dependencies ship only sources); compiled ones are fetched for CPython 3.12.
set -euo pipefail
cd "$(dirname "$0")/.."
SNAKEMAKE=$(grep -E '^snakemake==' envs/requirements-cpu.txt | cut -d= -f3)
# Already on the GPU image (see the device tool's KINDS.md), or not needed there and too large for the 64 MiB
# carry (pulp, 16 MB: the GPU runs use Snakemake's greedy scheduler; docutils: only for --report; greenlet:
# SQLAlchemy's async support; evaluate: unused): never carried.
ON_IMAGE='^(pulp|docutils|greenlet|evaluate|certifi|charset_normalizer|idna|jinja2|markupsafe|packaging|psutil|pyyaml|requests|tabulate|urllib3|wrapt|attrs|typing_extensions|tqdm|numpy|pandas|python_dateutil|six|pytz|tzdata|fastjsonschema|traitlets|jupyter_core)-'
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64"
rm -rf .whl && mkdir -p .whl
cp "${WHEELS_GPU:-../shared/wheels-gpu}"/*.whl .whl/
build=$(mktemp -d)
python3 -m pip wheel -q -w "$build" "snakemake==$SNAKEMAKE" jsonschema
for wheel in "$build"/*.whl; do
  name=$(basename "$wheel")
  if [[ "$name" =~ $ON_IMAGE ]]; then continue; fi
  if [[ "$name" == *-none-any.whl ]]; then cp "$wheel" .whl/; continue; fi
  package=${name%%-*}; version=$(echo "$name" | cut -d- -f2)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
    -d .whl "$package==$version"
done
rm -rf "$build"
du -sh .whl && ls .whl
