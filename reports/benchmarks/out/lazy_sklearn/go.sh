#!/usr/bin/env bash
# Session 7, CPU: the process time of one `slimbench compress` job (a smoke experiment), old tree (scikit-learn
# imported by every job) against new (imported when a metric is first computed), interleaved, same machine.
#   bash reports/benchmarks/out/lazy_sklearn/go.sh OLD_TREE NEW_TREE ROUNDS RESULTS
# (trees: checkouts of the two commits; RESULTS: an absolute scratch folder, the experiment is built there first
# by the new tree's `slimbench run` if it is missing; $SLIMBENCH_DATA_ROOT: the data root)
set -u
old=$1 new=$2 rounds=$3 results=$4
out=$(cd "$(dirname "$0")" && pwd)
set_json="{\"results_dir\":\"$results\"}"
experiment=$results/smoke/skeleton/mnist_smoke/vit_micro/seed0/base+mlp_magnitude-0.5
[ -f "$experiment/metrics.json" ] || (cd "$new" && PYTHONPATH=$new python -m slimbench.cli run --config config/smoke.yaml \
  --set "$set_json" "$experiment" > /dev/null 2>&1) || { echo "building the experiment failed"; exit 1; }
{ lscpu | grep -E "^Model name|^CPU\(s\)"; python -c "import torch, sklearn; print('torch', torch.__version__, 'scikit-learn', sklearn.__version__)"
  echo "old: $(git -C "$old" rev-parse --short HEAD), $(git -C "$old" status --short --untracked-files=no | wc -l) changed tracked files"
  echo "new: $(git -C "$new" rev-parse --short HEAD), $(git -C "$new" status --short --untracked-files=no | wc -l) changed tracked files"
} > "$out/hardware.txt"
for tree in old new; do  # once each, untimed (a warm-up too): does the job import scikit-learn?
  dir=$old; [ "$tree" = new ] && dir=$new
  (cd "$dir" && PYTHONPATH=$dir python -X importtime -m slimbench.cli compress --config config/smoke.yaml \
    --set "$set_json" "$experiment" > /dev/null 2> "$results/importtime_$tree.txt") || { echo "$tree failed"; exit 1; }
  echo "$tree imports sklearn: $(grep -c '| *sklearn$' "$results/importtime_$tree.txt")" >> "$out/hardware.txt"
done
echo "round,tree,process_s" > "$out/lazy_sklearn.csv"
for round in $(seq "$rounds"); do
  for tree in old new; do
    dir=$old; [ "$tree" = new ] && dir=$new
    start=$(date +%s.%N)
    (cd "$dir" && PYTHONPATH=$dir python -m slimbench.cli compress --config config/smoke.yaml \
      --set "$set_json" "$experiment" > /dev/null 2>&1) || { echo "$tree failed"; exit 1; }
    took=$(python -c "print(round($(date +%s.%N) - $start, 2))")
    echo "$round,$tree,$took" >> "$out/lazy_sklearn.csv"
  done
done
python - "$out/lazy_sklearn.csv" <<'PY'
import sys, pandas as pd
runs = pd.read_csv(sys.argv[1])
medians = runs.groupby("tree").process_s.median()
print(runs.to_string(index=False))
print(f"median process s: old {medians['old']:.2f}, new {medians['new']:.2f}, new/old {medians['new'] / medians['old']:.2f}")
PY
