#!/usr/bin/env bash
# Run one study of a config on a GPU machine that lacks Snakemake, and pack its results into $OUT.
#
#   [TIME_LIMIT=seconds] bash scripts/gpu_study.sh config/default.yaml <study> [data root [--match GLOB ...]]
#
# Expects the wheels from scripts/gpu_wheels.sh in .whl/ (pip installs them offline into .site/) and the data
# the study needs under the data root (default .carry/data). Arguments after the data root go to
# `slimbench study` (e.g. --match to run part of a study, --jobs N to run N experiments side by side).
# TIME_LIMIT stops the study (SIGINT) after that many seconds, so that what finished is still packed. Writes
# $OUT/<study>.tgz holding reports/<config>/<study>/ and every metrics.json, stage.json and run.log of the
# study, and $OUT/<study>.log.
set -euo pipefail
config=$1
study=$2
export SLIMBENCH_DATA_ROOT=${3:-$PWD/.carry/data}
shift $(($# < 3 ? $# : 3))
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
out=${OUT:-$PWD/.out}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PWD/.site" .whl/*.whl
  export PYTHONPATH="$PWD/.site${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
name=$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['name'])" "$config")
set +e
timeout --signal=INT --kill-after=20 "${TIME_LIMIT:-0}" \
  python3 -m slimbench.cli study --config "$config" --study "$study" "$@" 2>&1 | tee "$out/$study.log"
status=${PIPESTATUS[0]}
set -e
tar czf "$out/$study.tgz" "reports/$name/$study" $(find "results/$name/$study" -name metrics.json -o -name stage.json -o -name run.log) 2>/dev/null || true
exit "$status"
