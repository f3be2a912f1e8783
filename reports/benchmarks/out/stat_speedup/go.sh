#!/usr/bin/env bash
# session 5 STAT call: new tree (HEAD) vs old tree (14caaef), same machine, interleaved
set -u
C=$1  # carry dir (absolute)
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $C/whl/*.whl || exit 1
for t in old new; do mkdir -p /tmp/$t && tar -xf $C/tree_$t.tar -C /tmp/$t; done
{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  lscpu | grep -E "^Model name|^CPU\(s\)"
  python3 -c "import torch, transformers, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'timm', timm.__version__)"
  for t in old new; do echo "$t: $(cat /tmp/$t/COMMIT)"; (cd /tmp/$t && sha256sum methods/stat.py benchmarks/stat_timing.py); done; } > $OUT/hardware.txt 2>&1
run() {  # name tree cap args...
  local name=$1 tree=$2 cap=$3; shift 3
  echo "== $name ($tree) at ${SECONDS} s" | tee -a $OUT/hardware.txt
  (cd /tmp/$tree && PYTHONPATH=/tmp/site:/tmp/$tree timeout -k 5 $cap python3 "$@") > $OUT/$name.log 2>&1
  echo "$name: exit $? after ${SECONDS} s" | tee -a $OUT/hardware.txt
}
run bert_new_1 new 70 benchmarks/stat_timing.py --model bert-base --latency 1,256
run bert_old_1 old 70 benchmarks/stat_timing.py --model bert-base
run bert_new_2 new 70 benchmarks/stat_timing.py --model bert-base
run bert_old_2 old 70 benchmarks/stat_timing.py --model bert-base
run qr_bitwise new 90 $C/cmp_qr.py cuda $C
[ $SECONDS -lt 420 ] && run llama7b_1 new 150 benchmarks/stat_timing.py --model llama2-7b --layers 1
[ $SECONDS -lt 400 ] && run llama7b_2 new 170 benchmarks/stat_timing.py --model llama2-7b --layers 2
tail -n 3 $OUT/*.log
