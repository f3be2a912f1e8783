#!/usr/bin/env bash
# Studies one after another, each alone on the GPU, for a GPU time per study (benchmarks/gpu_time.py):
#
#   OUT=<folder> BUDGET=<seconds for the whole call> DATA=<data root> bash scripts/gpu_studies.sh JOBS_PER_GPU STUDY...
#
# Each study runs `scripts/gpu_workflow.sh config/default.yaml JOBS_PER_GPU STUDY` with its own $OUT/STUDY and a
# time limit of what is left of BUDGET; a study with less than 40 s left is not started. $OUT/studies.txt says
# when each started and its workflow wall time.
set -u
jobs=$1
shift
root=${OUT:?set OUT}
budget=${BUDGET:?set BUDGET (seconds for the whole call)}
data=${DATA:?set DATA (the data root)}
for study in "$@"; do
  left=$((budget - SECONDS))
  if [ "$left" -lt 40 ]; then echo "$study: not started, ${left} s left" | tee -a "$root/studies.txt"; continue; fi
  mkdir -p "$root/$study"
  echo "$study: started at ${SECONDS} s, limit ${left} s" | tee -a "$root/studies.txt"
  OUT=$root/$study TIME_LIMIT=$left SLIMBENCH_DATA_ROOT=$data bash scripts/gpu_workflow.sh config/default.yaml "$jobs" \
    "$study" > "$root/$study/stdout.txt" 2>&1
  echo "$study: exit $? at ${SECONDS} s; $(grep 'workflow wall time' "$root/$study/snakemake.log")" | tee -a "$root/studies.txt"
done
