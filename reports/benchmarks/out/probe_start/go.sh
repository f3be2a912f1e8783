#!/usr/bin/env bash
# Session 6, CPU: `slimbench evaluate` of one smoke experiment with the memory probe on, old tree (its fork server
# started after the data and model load) against new (started before), interleaved, same machine.
#   bash reports/benchmarks/out/probe_start/go.sh OLD_TREE NEW_TREE ROUNDS RESULTS
# (trees: checkouts of the two commits; RESULTS: an absolute scratch folder, the experiment is built there first
# by the new tree's `slimbench run` if it is missing; $SLIMBENCH_DATA_ROOT: the data root)
set -u
old=$1 new=$2 rounds=$3 results=$4
out=$(cd "$(dirname "$0")" && pwd)
set_json="{\"evaluation\":{\"model_memory\":true},\"results_dir\":\"$results\"}"
experiment=$results/smoke/skeleton/mnist_smoke/vit_micro/seed0/base+mlp_magnitude-0.5
[ -f "$experiment/metrics.json" ] || (cd "$new" && PYTHONPATH=$new python -m slimbench.cli run --config config/smoke.yaml \
  --set "$set_json" "$experiment" > /dev/null) || { echo "building the experiment failed"; exit 1; }
{ lscpu | grep -E "^Model name|^CPU\(s\)"; python -c "import torch; print('torch', torch.__version__)"
  echo "old: $(git -C "$old" rev-parse --short HEAD), $(git -C "$old" status --short | wc -l) changed files"
  echo "new: $(git -C "$new" rev-parse --short HEAD), $(git -C "$new" status --short | wc -l) changed files"
} > "$out/hardware.txt"
echo "round,tree,process_s,eval_time_s,probe_time_s,model_peak_rss_mib" > "$out/probe_start.csv"
for round in $(seq "$rounds"); do
  for tree in old new; do
    dir=$old; [ "$tree" = new ] && dir=$new
    start=$(date +%s.%N)
    (cd "$dir" && PYTHONPATH=$dir python -m slimbench.cli evaluate --config config/smoke.yaml --set "$set_json" \
      "$experiment" > /dev/null 2>&1) || { echo "$tree failed"; exit 1; }
    took=$(python -c "print(round($(date +%s.%N) - $start, 2))")
    python - "$experiment/metrics.json" "$round" "$tree" "$took" >> "$out/probe_start.csv" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(",".join([sys.argv[2], sys.argv[3], sys.argv[4], f"{m['eval_time_s']:.2f}", f"{m['cost']['probe_time_s']:.2f}",
                f"{m['cost']['model_peak_rss_mib']:.1f}"]))
PY
  done
done
cat "$out/probe_start.csv"
