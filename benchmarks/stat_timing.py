"""Benchmark (not a test): wall time and peak GPU memory of STAT (methods/stat.py, timed as it is).

    python benchmarks/stat_timing.py --model bert-base [--device cuda] [--ratio 0.4] [--examples 512] [--seq-len 128]
    python benchmarks/stat_timing.py --model llama2-7b --layers 2 [--sketch-rows 400]

Models, random weights and random token ids (timing only): ``bert-base`` (12 layers, hidden 768, the issue's
target: under 20 s); ``llama2-7b``, Llama-2-7B-shaped (32 layers, hidden 4096, MLP 11008, 32 heads, vocabulary
32000) in bf16 on the GPU, calibrated as config/paper.yaml's stat_llama study: 128 sequences of 2048 tokens,
batches of 4 (the paper's abstract: "several hundred data examples", "less than three hours to compress
models with 7B parameters using a single GPU"). ``--tiny`` shrinks either for a CPU run.

``--layers N`` prunes only the first N layers of the full-depth model (``components`` is narrowed to them).
A calibration pass stops at its last hook, so the measured passes run only the first blocks: the passes of
later blocks are modelled below, not measured. Each
phase is timed (synchronized at phase boundaries only): building the calibration batches, the first pass
(Gram matrices of all pruned layers), one pass per later component (``sequential``), the error-curve QRs,
the size search and each layer's pruning. Extrapolation to all L layers (printed with the measured parts):

* plain forward pass ``f`` (timed once, no hooks) and ``b = f / L``, an upper bound of one block's share
  (``f`` also holds the embeddings and the output head). A pass stops once its last hook has fired, so a
  pass that recalibrates a component of block ``l`` (0-based) runs at most ``(l + 1) b`` of the forward pass;
  the first pass runs ``N b``. Gram work per component: ``g_mlp = pass_mlp - (N + 1) b / 2`` (the measured
  passes of blocks 0..N-1), ``g_attn = pass_attn - (N + 2) b / 2`` (blocks 1..N-1) when measured, else
  ``(pass0 - N b) / N - g_mlp`` (each at least 0);
* ``T(L) = setup + [f + L (g_attn + g_mlp)] + L (qr_attn + qr_mlp) + size_search * L / N
  + b (L (L + 1) - 1) + (L - 1) g_attn + L g_mlp + L (prune_attn + prune_mlp)``, the sequential passes being
  ``sum_{l=1..L-1} ((l + 1) b + g_attn) + sum_{l=0..L-1} ((l + 1) b + g_mlp)``;
* peak memory ``M(L) = M(N) + (L - N) * m``, ``m`` = the bytes one layer's statistics hold at the end of the
  first pass, ``8 c^2`` per component of ``c`` columns (its float64 Gram, exact or sketched: a sketch is
  folded into the Gram batch by batch), since all of them are alive then and the weights are already
  full-size.

``--latency B1,B2`` (BERT-base) also times the unpruned and the pruned model's forward pass at those batch
sizes (``slimbench.metrics.cost``: CUDA events on a GPU, torch.utils.benchmark on CPU) and sets the measured
speed-up beside the ratio of their FLOPs (torch's flop counter), issue 17's check that structured pruning is
faster for real.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM

import methods.stat as stat
from slimbench.data import DatasetInfo, TokenBlockDataset
from slimbench.metrics import cost
from slimbench.stages import Context
from slimbench.surgery import prunable_flops
from slimbench.tasks import Task, make_task

LLAMA_7B = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 4096}
TINY_LLAMA = {**LLAMA_7B, "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 4,
              "num_attention_heads": 4, "num_key_value_heads": 4}
DEFAULTS = {"bert-base": {"examples": 512, "seq_len": 128, "batch_size": 32},
            "llama2-7b": {"examples": 128, "seq_len": 2048, "batch_size": 4}}


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


def build(name: str, tiny: bool, device: torch.device) -> tuple[torch.nn.Module, int]:
    """The model (bf16 on a GPU for the Llama shape) and its vocabulary size."""
    if name == "bert-base":
        config = BertConfig(num_labels=2, **({"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                                               "intermediate_size": 128} if tiny else {}))
        return BertForSequenceClassification(config).to(device).eval(), config.vocab_size
    config = LlamaConfig(**(TINY_LLAMA if tiny else LLAMA_7B))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval(), config.vocab_size


class Phases:
    """Wraps methods.stat's steps with synchronized timers; records (phase, component kind, seconds)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.records: list[tuple[str, str, float]] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, fn: Callable, classify: Callable[..., tuple[str, str]]) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            self.records.append((*classify(*args, **kwargs), time.perf_counter() - start))
            print(json.dumps({"phase": self.records[-1]}), file=sys.stderr, flush=True)  # progress, if cut short
            return out
        return timed

    def mean(self, phase: str, kind: str = "") -> float:
        times = [s for p, k, s in self.records if p == phase and (not kind or k == kind)]
        return statistics.mean(times) if times else 0.0

    def total(self, phase: str) -> float:
        return sum(s for p, _, s in self.records if p == phase)


def kind(part: Any) -> str:
    return "attn" if part.is_attention else "mlp"


def instrument(phases: Phases, layers: int) -> None:
    """Narrow STAT to the first ``layers`` layers and time its phases (module globals of methods.stat)."""
    every = stat.components
    stat.components = lambda model: every(model)[: 2 * layers]
    stat.calibration = phases.wrap(stat.calibration, lambda *a, **k: ("setup", ""))
    stat.collect_grams = phases.wrap(stat.collect_grams, lambda model, parts, *a, **k:
                                     ("pass0", "") if len(parts) > 1 else ("pass", kind(parts[0])))
    stat.pivoted_qr = phases.wrap(stat.pivoted_qr, lambda gram, width=1, steps=None:
                                  ("qr_curve" if steps is None else "qr_in_prune", "attn" if width > 1 else "mlp"))
    stat.choose_sizes = phases.wrap(stat.choose_sizes, lambda *a, **k: ("size_search", ""))
    stat.prune_component = phases.wrap(stat.prune_component, lambda part, *a, **k: ("prune", kind(part)))


def statistics_bytes(part: Any) -> int:
    return 8 * (part.units * part.width) ** 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(DEFAULTS), default="bert-base")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ratio", type=float, default=0.4)
    parser.add_argument("--examples", type=int)
    parser.add_argument("--seq-len", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--sketch-rows", type=int, default=0)
    parser.add_argument("--layers", type=int, help="prune only the first N layers and extrapolate to all")
    parser.add_argument("--tiny", action="store_true", help="a tiny model of the same family, for a CPU run")
    parser.add_argument("--latency", default="", help="batch sizes at which to time the unpruned and pruned model")
    args = parser.parse_args()
    settings = {k: getattr(args, k) or v for k, v in DEFAULTS[args.model].items()}
    torch.manual_seed(0)
    device = torch.device(args.device)
    model, vocab = build(args.model, args.tiny, device)
    depth = model.config.num_hidden_layers
    layers = min(args.layers or depth, depth)
    ids = torch.randint(0, vocab, (settings["examples"], settings["seq_len"]))
    if args.model == "bert-base":
        data, task = RandomIds(ids), IdsTask(DatasetInfo("random", "text_classification", "accuracy", 2))
    else:
        data, task = TokenBlockDataset(ids), make_task(DatasetInfo("random", "language_modeling", "perplexity"))
    ctx = Context(task, data, data, device, seed=0)
    phases = Phases(device)
    instrument(phases, layers)
    parts = stat.components(model)
    full = prunable_flops(parts, [c.units for c in parts], settings["seq_len"])
    layer_bytes = sum(statistics_bytes(p) for p in parts[:2])
    forward_s = time_forward(model, ctx, settings, phases)
    original = copy.deepcopy(model) if args.latency else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    phases.sync()
    start = time.perf_counter()
    stat.stat_prune(model, ctx, ratio=args.ratio, num_examples=settings["examples"],
                    batch_size=settings["batch_size"], seq_len=settings["seq_len"], sketch_rows=args.sketch_rows,
                    sequential=True, correct=True)
    phases.sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    parts = stat.components(model)
    measured = {p: round(phases.total(p), 3) for p in ("setup", "pass0", "pass", "qr_curve", "size_search", "prune")}
    per = {"forward_pass_s": forward_s, "pass_attn_s": phases.mean("pass", "attn"),
           "pass_mlp_s": phases.mean("pass", "mlp"),
           "qr_curve_attn_s": phases.mean("qr_curve", "attn"), "qr_curve_mlp_s": phases.mean("qr_curve", "mlp"),
           "prune_attn_s": phases.mean("prune", "attn"), "prune_mlp_s": phases.mean("prune", "mlp")}
    result: dict[str, Any] = {
        "benchmark": "stat_timing", "model": args.model + (" (tiny)" if args.tiny else ""),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "layers_total": depth, "layers_pruned": layers, **settings, "ratio_removed": args.ratio,
        "sketch_rows": args.sketch_rows, "seconds": round(seconds, 2), "peak_gpu_gib": peak,
        "phases_s": measured, "per_component_s": {k: round(v, 4) for k, v in per.items()},
        "flops_kept_pruned_layers": prunable_flops(parts, [c.units for c in parts], settings["seq_len"]) / full,
        "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30}
    if original is not None:
        sizes = [int(b) for b in args.latency.split(",")]
        result["latency"] = speedup(original, model, ids[:, : settings["seq_len"]], sizes, device)
    if layers < depth:
        result["extrapolated_all_layers"] = extrapolate(phases, per, layers, depth, peak, layer_bytes, seconds)
    print(json.dumps(result), flush=True)


@torch.no_grad()
def time_forward(model: torch.nn.Module, ctx: Context, settings: dict[str, int], phases: Phases) -> float:
    """One plain calibration pass (no hooks): the part of every STAT pass that does not depend on its layer."""
    batches = [ctx.task.to_device(b, ctx.device) for b in ctx.calibration_batches(settings["examples"],
                                                                                   settings["batch_size"])]
    ctx.task.logits(model, batches[0])  # warm-up: kernels, workspaces
    phases.sync()
    start = time.perf_counter()
    for batch in batches:
        ctx.task.logits(model, batch)
    phases.sync()
    return time.perf_counter() - start


@torch.no_grad()
def speedup(original: torch.nn.Module, pruned: torch.nn.Module, ids: torch.Tensor, sizes: list[int],
            device: torch.device) -> dict[str, Any]:
    """Forward latency of both models per batch size and the FLOPs ratio (unpruned / pruned, per example)."""
    def forward(model: torch.nn.Module, size: int) -> Callable[[], Any]:
        batch = ids[:size].to(device)
        return lambda: model(input_ids=batch)

    def latency(model: torch.nn.Module, size: int) -> dict[str, float]:
        if device.type == "cuda":
            return cost.cuda_latency(forward(model, size), device, warmup=5, repeats=30)
        return cost.cpu_latency(forward(model, size), None, warmup=2, repeats=10)

    flops = cost.count_flops(forward(original, 1)) / cost.count_flops(forward(pruned, 1))
    out: dict[str, Any] = {"flops_ratio": round(flops, 3)}
    for size in sizes:
        base, small = latency(original, size), latency(pruned, size)
        out[f"batch_{size}"] = {"unpruned_ms": base["median_ms"], "unpruned_iqr_ms": base["iqr_ms"],
                                "pruned_ms": small["median_ms"], "pruned_iqr_ms": small["iqr_ms"],
                                "speedup": round(base["median_ms"] / small["median_ms"], 3),
                                "speedup_over_flops_ratio": round(base["median_ms"] / small["median_ms"] / flops, 3)}
    return out


def extrapolate(phases: Phases, per: dict[str, float], n: int, depth: int, peak: float | None, layer_bytes: int,
                seconds: float) -> dict[str, Any]:
    """The rule in the module docstring, applied to the measured parts."""
    f = per["forward_pass_s"]
    block = f / depth
    g_mlp = max(0.0, per["pass_mlp_s"] - (n + 1) * block / 2)  # timing noise can make a difference negative
    if per["pass_attn_s"]:  # measured when a later layer's attention was recalibrated (N >= 2)
        g_attn = max(0.0, per["pass_attn_s"] - (n + 2) * block / 2)
    else:
        g_attn = max(0.0, (phases.total("pass0") - n * block) / n - g_mlp)
    parts = {
        "setup": phases.total("setup"),
        "pass0": f + depth * (g_attn + g_mlp),
        "qr_curves": depth * (per["qr_curve_attn_s"] + per["qr_curve_mlp_s"]),
        "size_search": phases.total("size_search") * depth / n,
        "sequential_passes": block * (depth * (depth + 1) - 1) + (depth - 1) * g_attn + depth * g_mlp,
        "prune": depth * (per["prune_attn_s"] + per["prune_mlp_s"]),
    }
    timed = sum(phases.total(p) for p in ("setup", "pass0", "pass", "qr_curve", "size_search", "prune"))
    parts["unattributed"] = seconds - timed
    out = {"seconds": round(sum(parts.values()), 1), "minutes": round(sum(parts.values()) / 60, 2),
           "parts_s": {k: round(v, 2) for k, v in parts.items()}, "gram_work_s": {"attn": g_attn, "mlp": g_mlp},
           "statistics_gib_per_layer": layer_bytes / 2**30}
    if peak is not None:
        out["peak_gpu_gib"] = round(peak + (depth - n) * layer_bytes / 2**30, 2)
    return out


if __name__ == "__main__":
    main()
