#!/usr/bin/env bash
# Session 7, CPU: the wall time of one `slimbench compress` job and one `slimbench evaluate` job (a smoke
# experiment), old tree (scikit-learn imported by every job) against new (accuracy computed without it, MCC and F1
# import it when first computed), interleaved, same machine.
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
job() {  # tree step [python options]: one job of the tree, its output discarded
  local dir=$old; [ "$1" = new ] && dir=$new
  (cd "$dir" && PYTHONPATH=$dir python "${@:3}" -m slimbench.cli "$2" --config config/smoke.yaml --set "$set_json" \
    "$experiment" > /dev/null)
}
{ lscpu | grep -E "^Model name|^CPU\(s\)"; python -c "import torch, sklearn; print('torch', torch.__version__, 'scikit-learn', sklearn.__version__)"
  echo "old: $(git -C "$old" rev-parse --short HEAD), $(git -C "$old" status --short --untracked-files=no -- . ":!reports/benchmarks/out" | wc -l) changed tracked files outside reports/benchmarks/out"
  echo "new: $(git -C "$new" rev-parse --short HEAD), $(git -C "$new" status --short --untracked-files=no -- . ":!reports/benchmarks/out" | wc -l) changed tracked files outside reports/benchmarks/out"
  for tree in old new; do  # once each, untimed (a warm-up too): does the job import scikit-learn?
    for step in compress evaluate; do
      job "$tree" "$step" -X importtime 2> "$results/importtime.txt" \
        || { echo "$tree $step failed: $results/importtime.txt" >&2; exit 1; }
      echo "$tree $step imports sklearn: $(grep -c '| *sklearn$' "$results/importtime.txt")"
    done
  done
} > "$out/hardware.txt"
echo "round,tree,step,process_s" > "$out/lazy_sklearn.csv"
for round in $(seq "$rounds"); do
  for tree in old new; do
    for step in compress evaluate; do
      start=$(date +%s.%N)
      job "$tree" "$step" 2> "$results/stderr.txt" \
        || { echo "$tree $step failed: $results/stderr.txt" >&2; exit 1; }
      echo "$round,$tree,$step,$(python -c "print(round($(date +%s.%N) - $start, 2))")" >> "$out/lazy_sklearn.csv"
    done
  done
done
python - "$out/lazy_sklearn.csv" <<'PY'
import sys, pandas as pd
runs = pd.read_csv(sys.argv[1])
medians = runs.pivot_table(index="step", columns="tree", values="process_s", aggfunc="median")
medians["new/old"] = medians["new"] / medians["old"]
print(runs.to_string(index=False))
print(f"medians of {runs['round'].max()} rounds, process s:\n{medians.round(2).to_string()}")
PY
