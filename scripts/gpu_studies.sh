#!/usr/bin/env bash
# Studies one after another, each alone on the GPU, for a GPU time per study (benchmarks/gpu_time.py):
#
#   OUT=<folder> BUDGET=<seconds for the whole call> DATA=<data root> [CONFIG=<files>] \
#     bash scripts/gpu_studies.sh JOBS_PER_GPU STUDY...
#
# Each study runs `scripts/gpu_workflow.sh "$CONFIG" JOBS_PER_GPU STUDY` with its own $OUT/STUDY and a time limit of
# what is left of BUDGET; a study with less than 40 s left is not started. $OUT/studies.txt says when each started
# and its workflow wall time. CONFIG (default config/default.yaml) may name several files, an overlay after its
# base (e.g. "config/default.yaml config/overlays/one_gpu.yaml"): the results go under the last file's `name`.
#
# With IDLE_PAIRS=<pairs>, each study that finished is then timed again alone on the GPU, within the same BUDGET:
# benchmarks/idle_speedup.py pairs each chain's saved model with its base (the same CONFIG), and $OUT/STUDY gets
# idle_speedup.csv, its JSON lines (idle_speedup.jsonl) and its stderr (idle_speedup.err).
set -u
jobs=$1
shift
root=${OUT:?set OUT}
mkdir -p "$root"
budget=${BUDGET:?set BUDGET (seconds for the whole call)}
data=${DATA:?set DATA (the data root)}
config=${CONFIG:-config/default.yaml}
read -r -a configs <<< "$config"
idle() {  # the config's results folder: idle_speedup.py then prints paths relative to the checkout, none of $OUT
  local left=$((budget - SECONDS)) csv
  csv=results/$(PYTHONPATH="$PWD/.site" python3 scripts/config_name.py "${configs[@]}")/$1/idle_speedup.csv
  if [ "$left" -lt 20 ]; then
    echo "$1: idle_speedup not started, ${left} s left" | tee -a "$root/studies.txt"
    return
  fi
  rm -f "$csv"
  PYTHONPATH="$PWD/.site" SLIMBENCH_DATA_ROOT=$data timeout "$left" python3 benchmarks/idle_speedup.py \
    "${configs[@]/#/--config=}" --study "$1" --pairs "$IDLE_PAIRS" \
    > "$root/$1/idle_speedup.jsonl" 2> "$root/$1/idle_speedup.err"
  local status=$?
  [ -f "$csv" ] && cp "$csv" "$root/$1/"
  echo "$1: idle_speedup exit $status at ${SECONDS} s" | tee -a "$root/studies.txt"
}
for study in "$@"; do
  left=$((budget - SECONDS))
  if [ "$left" -lt 40 ]; then echo "$study: not started, ${left} s left" | tee -a "$root/studies.txt"; continue; fi
  mkdir -p "$root/$study"
  echo "$study: started at ${SECONDS} s, limit ${left} s" | tee -a "$root/studies.txt"
  OUT=$root/$study TIME_LIMIT=$left SLIMBENCH_DATA_ROOT=$data bash scripts/gpu_workflow.sh "$config" "$jobs" "$study" \
    > "$root/$study/stdout.txt" 2>&1
  status=$?
  echo "$study: exit $status at ${SECONDS} s; $(grep 'workflow wall time' "$root/$study/snakemake.log")" \
    | tee -a "$root/studies.txt"
  if [ "${IDLE_PAIRS:-0}" -gt 0 ] && [ "$status" -eq 0 ]; then idle "$study"; fi
done
