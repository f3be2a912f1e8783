#!/usr/bin/env bash
# Run the workflow on a GPU machine without internet and pack what it made into $OUT.
#
#   [TIME_LIMIT=s] bash scripts/gpu_workflow.sh CONFIG JOBS_PER_GPU TARGET...       e.g. config/default.yaml 6 stat stat_llama
#
# CONFIG may name several files in one argument, later ones overriding earlier ones (Snakemake's --configfile),
# e.g. "config/default.yaml config/overlays/compile_check.yaml"; the results go under the last file's `name`.
#
# Expects the wheels from scripts/gpu_wheels.sh in .whl/ (installed offline into .site/) and the data under
# $SLIMBENCH_DATA_ROOT. Runs `snakemake --cores all --resources gpu=JOBS_PER_GPU*GPUs` on the targets (study names
# are targets), so several small jobs share each GPU; the greedy scheduler needs no ILP solver. Samples
# nvidia-smi every 5 s. TIME_LIMIT stops Snakemake (SIGINT) in time for the packing; rerun to resume. Writes
# $OUT/results.tgz (results/reports/<config>/ and every metrics.json, stage.json and log of the run),
# $OUT/snakemake.log (ending in the wall time and the host's GPUs, as nvidia-smi names them) and $OUT/gpu.csv (uuid
# last, after the columns older samples have: it maps the gpu_uuid a job records to an index).
# The GPUs used are CUDA_VISIBLE_DEVICES' entries when it is set, as slimbench/devices.py counts them (e.g. 0 for a
# one-GPU reference on a multi-GPU host), else every GPU nvidia-smi lists; nvidia-smi still samples them all.
# With MPS=1 the jobs run under CUDA MPS (one nvidia-cuda-mps-control daemon for the call, quit at its end), so the
# kernels of the jobs packed on a GPU run side by side instead of taking turns; the log then ends in 'MPS: on'.
# A daemon that cannot start, or a CUDA probe that does not run under its server, stops the call before any job; the
# daemon sees every GPU, so the jobs' CUDA_VISIBLE_DEVICES keep their meaning.
set -euo pipefail
read -r -a configs <<< "$1"
per_gpu=$2
shift 2
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10 SLIMBENCH_JOBS_PER_GPU=$per_gpu
out=${OUT:-$PWD/.out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PWD/.site" .whl/*.whl
export PYTHONPATH="$PWD/.site${PYTHONPATH:+:$PYTHONPATH}"
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null
if [ -d "${SLIMBENCH_DATA_ROOT:-}" ]; then  # zips packed for the carry by scripts/carry_zip.py
  find "$SLIMBENCH_DATA_ROOT" -name '*.zip.tar.xz' | while read -r packed; do
    [ -f "${packed%.tar.xz}" ] || python3 scripts/carry_zip.py unpack "$packed" "${packed%.tar.xz}"
  done
fi
if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then  # nvidia-smi lists every GPU of the host, visible or not
  gpus=$(tr ',' '\n' <<< "$CUDA_VISIBLE_DEVICES" | grep -c '[^[:space:]]' || true)
else  # the jobs' pool (slimbench/devices.py) is then exactly the GPUs counted here
  gpus=$(nvidia-smi --list-gpus | wc -l)
  [ "$gpus" -eq 0 ] || export CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((gpus - 1)))
fi
[ "$gpus" -gt 0 ] || { echo "no GPU visible (CUDA_VISIBLE_DEVICES='${CUDA_VISIBLE_DEVICES-}')" >&2; exit 1; }
mps=off
if [ "${MPS:-0}" = 1 ]; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/slimbench-mps/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/slimbench-mps/log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  echo quit | timeout 30 nvidia-cuda-mps-control >/dev/null 2>&1 || true  # a daemon a killed call left behind
  # under MPS a client's device indices count among the daemon's devices: it sees them all (header above)
  env -u CUDA_VISIBLE_DEVICES nvidia-cuda-mps-control -d || {
    echo "MPS=1, but 'nvidia-cuda-mps-control -d' failed. Fix: leave MPS unset" >&2; exit 1; }
  trap 'echo quit | nvidia-cuda-mps-control || true' EXIT  # never the call's exit status
  # A CUDA process that cannot reach the daemon runs without MPS, so the probe must also leave a server behind.
  python3 -c 'import torch; torch.ones(1, device="cuda").sum().item()' \
    && servers=$(echo get_server_list | nvidia-cuda-mps-control | paste -sd, -) && [ -n "$servers" ] || {
    echo "MPS=1, but a CUDA process did not run under an MPS server (log: $CUDA_MPS_LOG_DIRECTORY)." \
      "Fix: leave MPS unset" >&2
    exit 1
  }
  mps=on
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
nvidia-smi --query-gpu=timestamp,index,utilization.gpu,memory.used,uuid --format=csv -l 5 > "$out/gpu.csv" &
sampler=$!
name=$(python3 scripts/config_name.py "${configs[@]}")
start=$(date +%s)
set +e
python3 -m snakemake --unlock --configfile "${configs[@]}" >/dev/null 2>&1  # a killed earlier call leaves Snakemake's lock
timeout --signal=INT --kill-after=30 "${TIME_LIMIT:-0}" python3 -m snakemake --cores all --resources gpu=$((per_gpu * gpus)) --scheduler greedy --keep-going \
  --rerun-incomplete "$@" --configfile "${configs[@]}" 2>&1 | tee "$out/snakemake.log"

status=${PIPESTATUS[0]}
set -e
echo "workflow wall time: $(( $(date +%s) - start )) s on $gpus GPU(s), exit $status" | tee -a "$out/snakemake.log"
echo "hardware: $(nvidia-smi --query-gpu=index,name,memory.total,driver_version,uuid --format=csv,noheader \
  | paste -sd ';' -)" | tee -a "$out/snakemake.log"
[ "$mps" = off ] || echo "MPS: on (server pid $servers; CUDA_MPS_PIPE_DIRECTORY=$CUDA_MPS_PIPE_DIRECTORY)" \
  | tee -a "$out/snakemake.log"
kill "$sampler" 2>/dev/null || true
tar czf "$out/results.tgz" "results/reports/$name" \
  $(find "results/$name" -name metrics.json -o -name stage.json -o -name '*.log') 2>/dev/null || true
exit "$status"
