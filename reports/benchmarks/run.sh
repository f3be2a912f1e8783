#!/usr/bin/env bash
# The one GPU call behind reports/benchmarks/README.md, run from the root of an export of the commit it names
# (`git archive`) on the lent nvidia-h200 machine, outputs in $OUT. Sections run one after another, each under
# its own time cap, so the whole stays inside one 600 s call and a section cut short keeps the lines it printed.
set -u
OUT=${OUT:-reports/benchmarks/out}
BUDGET=${BUDGET:-560}
DATA=${DATA:-.carry/bench6}  # holds glue/sst2/train.tsv (and, on the GPU machine, the wheels in whl/)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

section() {  # name, cap in seconds, command...
  local name=$1 cap=$2 left=$((BUDGET - SECONDS))
  shift 2
  if [ "$left" -lt 30 ]; then echo "$name: skipped, ${left} s left" >> "$OUT/hardware.txt"; return; fi
  [ "$left" -lt "$cap" ] && cap=$left
  echo "== $name: up to $cap s (at ${SECONDS} s)" | tee -a "$OUT/hardware.txt"
  timeout -k 5 "$cap" "$@" > "$OUT/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS)) s" | tee -a "$OUT/hardware.txt"
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  lscpu | grep -E "^Model name|^CPU\(s\)"
  python3 -c "import torch, transformers, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda,
              'transformers', transformers.__version__, 'timm', timm.__version__)"
  cat COMMIT 2>/dev/null; sha256sum methods/stat.py slimbench/train.py; } > "$OUT/hardware.txt" 2>&1

# Most wanted first: the device time left to a session can be short. One throughput process prints every ratio
# of issue 17's first "done when": harness/bare for the three models, and CUDA graphs against eager for text and ViT.
section throughput 240 python3 benchmarks/throughput.py --data-root "$DATA" --steps 60 --warmup 20 \
  --models resnet,text,vit --compile-models text,vit --compile-modes reduce-overhead
section stat_bert_base 60 python3 benchmarks/stat_timing.py --model bert-base --latency 1,256
section stat_llama7b 120 python3 benchmarks/stat_timing.py --model llama2-7b --layers 1
section stat_llama7b_2 120 python3 benchmarks/stat_timing.py --model llama2-7b --layers 2
