"""Benchmark (not a test): measured int8 CPU latency of the order_pqd study's two architectures, beside fp32.

    python benchmarks/int8_latency.py [--threads 4] [--batch-sizes 1,64] [--backend x86] [--min-run-time 5]
        [--blocks 10]

Every chain of the ``order_pqd`` study (config/default.yaml) ends in the same architecture: ``resnet18_cifar``
with 50% of every conv's output channels removed (``methods.order.prune_channels``) and 8-bit fake
quantization. The harness times that fake-quant model in float, which is not an int8 runtime; the issue (and
Zhou and Shen 2026, "Prune-Quantize-Distill", who rank orders by it) asks for measured int8 CPU latency.
An int8 kernel's time does not depend on the weight values, so one model per distinct architecture suffices:
the uncompressed ResNet-18 and the 50%-pruned one, both with random weights (seed ``--seed``), eval mode.

Each is timed in fp32 (eager, as the harness runs it) and in int8: PyTorch's FX post-training static
quantization (``prepare_fx`` / ``convert_fx`` with ``get_default_qconfig_mapping(--backend)``, the same
quantized engine), calibrated on a few random batches. The calibration values only set scales and zero
points, which do not change the int8 kernels' work, so random inputs give the latency real data would.
BasicBlock applies ``torch.relu`` after conv1/bn1, which the FX backend config does not fuse (a TODO in
torch/ao/quantization/backend_config/_common_operator_config_utils.py) nor quantize: left as is, every block
would dequantize, run the ReLU in fp32 and quantize again. :func:`int8` therefore traces a copy and calls
``F.relu`` (the same operation) instead, so conv, BN and ReLU fuse into one int8 kernel as a deployment
would have them; the model code is unchanged. convert_fx folds BN into the int8 convs; fp32 keeps eager BN.
What stays fp32 in the int8 graph: ``flatten`` of the pooled features before the classifier (a dequantize
and a quantize of 512 values per example) and the logits (``int8_dequantize_nodes`` counts both).

Latency: ``torch.utils.benchmark.Timer`` under ``torch.inference_mode()`` with ``--threads`` threads (the
harness's latency default is 4), at each of ``--batch-sizes``: after a warm-up call, ``--blocks`` blocks
(``repeats``) of ``calls_per_block`` calls, sized from one timed call so that all take about
``--min-run-time`` seconds; median and IQR (``slimbench.metrics.cost.spread``) of the per-call time of each
block. Not ``blocked_autorange``: its block-size rule (timer overhead at most 1e-4 of a block) chose blocks
of 100 to 1000 calls on a 2-core machine, leaving 2 to 7 blocks in 10 s, too few for an IQR.
FLOPs: torch's flop counter (``slimbench.metrics.cost.count_flops``) on the fp32 models at batch 1.

Prints one JSON line per (architecture, precision, batch) as it is measured, then a summary line: parameter
counts, FLOPs, speed-ups (time of the reference / time of the model: int8 pruned vs fp32 base, int8 pruned vs
int8 base, fp32 pruned vs fp32 base, int8 vs fp32 per architecture) beside the FLOPs ratio, and sanity
checks that the int8 models are int8 (quantized conv/linear modules, dequantize nodes left in the graph,
top-1 agreement with fp32 on 256 random inputs), with the hardware, torch version and quantized engine.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.ao.nn import intrinsic, quantized
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.utils import benchmark

from methods.order import prune_channels
from slimbench.config import load_config
from slimbench.data import DatasetInfo
from slimbench.data.images import CIFAR_MEAN, CIFAR_STD
from slimbench.metrics.cost import count_flops, spread
from slimbench.models import build_model
from slimbench.train import seed_everything

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = DatasetInfo("cifar10", "image_classification", "accuracy", 10, 3, 32, CIFAR_MEAN, CIFAR_STD, True)
PRUNED_PARAMS = 2_797_610  # params of the pruned model in our order_pqd runs (2.798e6)
QUANTIZED = (quantized.Conv2d, quantized.Linear, intrinsic.quantized.ConvReLU2d)


def architectures(seed: int, ratio: float) -> dict[str, nn.Module]:
    """resnet18_cifar as the harness builds it for CIFAR-10 (random init), and a copy with ``ratio`` of every
    conv's output channels pruned as the order studies prune it."""
    spec = load_config(REPO / "config" / "default.yaml")["models"]["resnet18_cifar"]
    seed_everything(seed)
    base = build_model(spec, CIFAR10, pretrained=False, download=False).eval()  # random weights: timing only
    pruned = prune_channels(copy.deepcopy(base), ratio, torch.randn(1, 3, 32, 32)).eval()
    return {"base": base, f"pruned_{ratio}": pruned}


def int8(model: nn.Module, backend: str, calibration: list[torch.Tensor]) -> fx.GraphModule:
    """FX post-training static int8 quantization of a copy, ``torch.relu`` calls traced as ``F.relu``."""
    traced = fx.symbolic_trace(copy.deepcopy(model))
    for node in traced.graph.nodes:
        if node.op == "call_function" and node.target is torch.relu:
            node.target = F.relu
    traced.recompile()
    prepared = prepare_fx(traced, get_default_qconfig_mapping(backend), example_inputs=(calibration[0],))
    with torch.inference_mode():
        for batch in calibration:
            prepared(batch)
    return convert_fx(prepared)


def latency(model: nn.Module, batch: int, threads: int, min_run_time: float, blocks: int) -> dict[str, Any]:
    x = torch.randn(batch, 3, 32, 32)
    timer = benchmark.Timer(stmt="model(x)", globals={"model": model, "x": x}, num_threads=threads)
    with torch.inference_mode():
        model(x)  # warm-up
        number = max(1, round(min_run_time / blocks / timer.timeit(1).times[0]))
        measured = benchmark.Measurement.merge(timer.timeit(number) for _ in range(blocks))[0]
    return {**spread([t * 1e3 for t in measured.times]), "calls_per_block": number}


@torch.inference_mode()
def agreement(fp32: nn.Module, q: nn.Module, inputs: torch.Tensor) -> float:
    """Share of inputs on which the int8 and fp32 models' top-1 classes agree."""
    return (fp32(inputs).argmax(1) == q(inputs).argmax(1)).float().mean().item()


def hardware(threads: int) -> dict[str, Any]:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")),
                    None)
    except (OSError, subprocess.CalledProcessError):
        name = None
    return {"processor": platform.processor(), "cpu_model": name,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads, "torch": torch.__version__,
            "quantized_engine": torch.backends.quantized.engine}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4, help="intra-op threads (the harness's latency default: 4)")
    parser.add_argument("--batch-sizes", default="1,64")
    parser.add_argument("--backend", default="x86", help="quantized engine and default qconfig mapping")
    parser.add_argument("--min-run-time", type=float, default=5.0, help="seconds of timed calls per measurement")
    parser.add_argument("--blocks", type=int, default=10, help="timed blocks per measurement")
    parser.add_argument("--ratio", type=float, default=0.5, help="share of channels pruned")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibration-batches", type=int, default=4)
    args = parser.parse_args()
    if args.backend not in torch.backends.quantized.supported_engines:
        parser.error(f"--backend {args.backend}: this torch supports {torch.backends.quantized.supported_engines}")
    torch.backends.quantized.engine = args.backend
    torch.set_num_threads(args.threads)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    models = architectures(args.seed, args.ratio)
    calibration = [torch.randn(32, 3, 32, 32) for _ in range(args.calibration_batches)]
    probe = torch.randn(256, 3, 32, 32)
    info: dict[str, dict[str, Any]] = {}
    times: dict[tuple[str, str, int], float] = {}
    for arch, fp32 in models.items():
        q = int8(fp32, args.backend, calibration)
        info[arch] = {"params": sum(p.numel() for p in fp32.parameters()),
                      "flops_batch1": count_flops(lambda: fp32(torch.randn(1, 3, 32, 32))),
                      "fp32_conv_linear": sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in fp32.modules()),
                      "int8_quantized_modules": sum(isinstance(m, QUANTIZED) for m in q.modules()),
                      "int8_dequantize_nodes": sum(n.target == "dequantize" for n in q.graph.nodes),
                      "int8_fp32_top1_agreement": agreement(fp32, q, probe)}
        for precision, model in (("fp32", fp32), ("int8", q)):
            for batch in sizes:
                measured = latency(model, batch, args.threads, args.min_run_time, args.blocks)
                times[arch, precision, batch] = measured["median_ms"]
                print(json.dumps({"benchmark": "int8_latency", "arch": arch, "precision": precision, "batch": batch,
                                  **measured, "threads": args.threads}), flush=True)
    base, pruned = models
    ratios: dict[str, dict[str, float]] = {}
    for batch in sizes:
        t = {(a, p): times[a, p, batch] for a in models for p in ("fp32", "int8")}
        ratios[f"batch_{batch}"] = {
            "int8_pruned_vs_fp32_base": t[base, "fp32"] / t[pruned, "int8"],
            "int8_pruned_vs_int8_base": t[base, "int8"] / t[pruned, "int8"],
            "fp32_pruned_vs_fp32_base": t[base, "fp32"] / t[pruned, "fp32"],
            **{f"int8_vs_fp32_{a}": t[a, "fp32"] / t[a, "int8"] for a in models}}
    summary = {"benchmark": "int8_latency", "summary": True, "models": info,
               "flops_ratio_base_over_pruned": info[base]["flops_batch1"] / info[pruned]["flops_batch1"],
               "pruned_params_as_in_runs": abs(info[pruned]["params"] - PRUNED_PARAMS) <= 500,
               "speedups": {k: {r: round(v, 3) for r, v in d.items()} for k, d in ratios.items()},
               "min_run_time_s": args.min_run_time, "blocks": args.blocks, "seed": args.seed, **hardware(args.threads)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
