"""Benchmark (not a test): wall time of STAT (methods/stat.py) on a 12-layer BERT-base-sized model.

    python benchmarks/stat_timing.py [--device cuda] [--ratio 0.4] [--examples 512] [--seq-len 128]

Random weights and random token ids (timing only; the issue asks for < 60 s on a GPU). Prints one JSON line:
the time of the whole stage (calibration passes, pivoted QRs, size search, surgery) and the kept FLOPs share.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import torch
from transformers import BertConfig, BertForSequenceClassification

from methods.stat import stat_prune
from slimbench.surgery import components, prunable_flops
from slimbench.data import DatasetInfo
from slimbench.stages import Context
from slimbench.tasks import Task


@dataclass
class RandomIds:
    ids: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices):
        return RandomIds(self.ids[torch.as_tensor(list(indices), dtype=torch.long)])

    def collate(self, indices):
        ids = self.ids[torch.as_tensor(list(indices), dtype=torch.long)]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class IdsTask(Task):
    def to_device(self, batch, device, train=False):
        return {k: v.to(device) for k, v in batch.items()}

    def logits(self, model, batch):
        return model(**batch).logits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ratio", type=float, default=0.4)
    parser.add_argument("--examples", type=int, default=512)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--sketch-rows", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = BertForSequenceClassification(BertConfig(num_labels=2)).to(device).eval()  # bert-base sizes
    data = RandomIds(torch.randint(0, 30522, (args.examples, args.seq_len)))
    ctx = Context(IdsTask(DatasetInfo("random", "text_classification", "accuracy", 2)), data, data, device, seed=0)
    full = prunable_flops(components(model), [c.units for c in components(model)], args.seq_len)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    stat_prune(model, ctx, ratio=args.ratio, num_examples=args.examples, batch_size=32, seq_len=args.seq_len,
               sketch_rows=args.sketch_rows, sequential=True, correct=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    parts = components(model)
    print(json.dumps({"benchmark": "stat_timing", "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                      else "cpu", "layers": 12, "examples": args.examples, "seq_len": args.seq_len,
                      "ratio_removed": args.ratio, "sketch_rows": args.sketch_rows, "seconds": round(elapsed, 2),
                      "flops_kept": prunable_flops(parts, [c.units for c in parts], args.seq_len) / full}))


if __name__ == "__main__":
    main()
