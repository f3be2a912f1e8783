"""Benchmark (not a test): each chain's GPU speed-up over its base, re-measured alone on an idle GPU.

After a study's workflow has finished, its saved models are timed again, paired call by call with their base, and the
speed-up is set beside the FLOPs ratio and beside the speed-up the workflow itself measured on the shared GPU.

    python benchmarks/idle_speedup.py --config config/default.yaml --study STUDY [--pairs 50] [--warmup N]
        [--out FILE.csv]

Run it from the repository root (the config's ``results_dir`` is relative to it), on the GPU machine the study ran
on, with no other job on the GPU. ``--config`` may be given more than once (files merged in order).

Why: in the workflow each evaluation pairs its model's GPU calls with the base's
(``slimbench.pipeline.paired_cuda_against_base``: ``evaluation.latency.paired_cuda`` pairs, 10 in
config/default.yaml) while up to 12 other jobs share the GPU, so its intervals carry their noise. Here the same
saved models are timed again alone, with more pairs, so the two speed-ups can be set side by side.

How: per (dataset, model) the data is loaded once (``Workspace.open`` on the study's first experiment of that
panel); per seed the base model (chain ``base``) is loaded onto the GPU once, then each chain with a saved model and
a metrics file (and whose base has both) is loaded (``checkpoint.load_model``) and its calls interleaved with the
base's (``metrics.cost.paired_cuda_latency``: CUDA events, a synchronize before each call, order alternating) on
the evaluation batch the workflow used (``pipeline.example_forward`` at ``evaluation_settings``' batch_size; a text
batch is padded to its longest example), ``--warmup`` untimed pairs (default: the config's
``evaluation.latency.warmup``) then ``--pairs`` timed ones. The base is paired with itself once per seed (the A/A
row, chain ``base``: its interval is the noise floor), as in the workflow. Chains lacking a saved model or metrics
are skipped and listed as missing in the summary.

Columns (:func:`speedup_row`): ``flops_ratio`` = base FLOPs / chain FLOPs (from the metrics files, as the
``gpu_speedup`` table); ``speedup_idle`` = 1 / the paired latency ratio chain/base, its 95% interval the ratio's
interval inverted (``ci_low`` = 1 / ratio's ``ci_high``); ``idle_over_flops`` = speedup_idle / flops_ratio (1 = as
fast as the FLOPs promise); ``speedup_shared`` and ``shared_over_flops`` the same from the ratio in the chain's
metrics (the workflow's, on the shared GPU), with its pairs and batch; the median milliseconds of both. Prints one
JSON line per (dataset, model, seed, chain) as measured, writes the CSV (default
``<results_dir>/<config>/<study>/idle_speedup.csv``) atomically at the end, then a summary line with the hardware
(the metrics files' hardware record, the GPU's UUID, torch, driver), counts and wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from itertools import groupby
from pathlib import Path
from typing import Any, Iterator

import torch

from slimbench import checkpoint, devices, provenance
from slimbench.atomic import write_atomically
from slimbench.config import Experiment, evaluation_settings, experiments, load_config
from slimbench.integrity import read_sealed_json
from slimbench.metrics import cost
from slimbench.pipeline import MODEL_DIR, Workspace, example_forward
from slimbench.results import METRICS_FILE
from slimbench.stages import BASE

IDENTITY = ["dataset", "model", "seed", "chain"]
COLUMNS = [*IDENTITY, "batch", "flops_ratio",
           "speedup_idle", "speedup_idle_ci_low", "speedup_idle_ci_high", "idle_over_flops", "pairs_idle",
           "latency_idle_ms", "latency_idle_base_ms",
           "speedup_shared", "speedup_shared_ci_low", "speedup_shared_ci_high", "shared_over_flops", "pairs_shared",
           "batch_shared", "latency_shared_ms", "latency_shared_base_ms"]


def speedups(name: str, paired: dict[str, Any], flops_ratio: float | None) -> dict[str, Any]:
    """Speed-up = 1 / the paired latency ratio chain/base, with the ratio's interval inverted, over the FLOPs ratio."""
    speedup = 1 / paired["latency_cuda_vs_base_ratio"]
    return {f"speedup_{name}": speedup,
            f"speedup_{name}_ci_low": 1 / paired["latency_cuda_vs_base_ci_high"],
            f"speedup_{name}_ci_high": 1 / paired["latency_cuda_vs_base_ci_low"],
            f"{name}_over_flops": speedup / flops_ratio if flops_ratio else None,
            f"pairs_{name}": paired["latency_cuda_vs_base_pairs"],
            f"latency_{name}_ms": paired["latency_cuda_paired_ms"],
            f"latency_{name}_base_ms": paired["latency_cuda_paired_base_ms"]}


def speedup_row(own: dict[str, Any], base: dict[str, Any], idle: dict[str, Any]) -> dict[str, Any]:
    """A chain's columns from its metrics record (``own``), its base's, and the idle measurement (``idle``:
    :func:`cost.paired_cuda_latency`'s result); the ``shared`` ones only where the record has a paired GPU ratio."""
    flops, base_flops = own["cost"].get("flops"), base["cost"].get("flops")
    flops_ratio = base_flops / flops if flops and base_flops else None
    row = {"flops_ratio": flops_ratio, **speedups("idle", idle, flops_ratio)}
    if "latency_cuda_vs_base_ratio" in own["cost"]:
        row.update(speedups("shared", own["cost"], flops_ratio),
                   batch_shared=own["cost"].get("latency_cuda_vs_base_batch"))
    return row


def missing_reason(exp: Experiment, results_dir: str) -> str | None:
    """Why an experiment cannot be measured (its own or its base's saved model or metrics file absent), or None."""
    for what, folder in (("", exp.directory(results_dir)), ("base: ", exp.base.directory(results_dir))):
        if not checkpoint.is_saved(folder / MODEL_DIR):
            return f"{what}no saved model"
        if not (folder / METRICS_FILE).is_file():
            return f"{what}no metrics file"
    return None


def measure_seed(ws: Workspace, runs: list[Experiment], batch: int, pairs: int, warmup: int,
                 device: torch.device) -> Iterator[dict[str, Any]]:
    """Rows of one seed's chains, each paired with the seed's base (loaded once), the base itself included."""
    base_dir = ws.directory(runs[0].base)
    base_record = read_sealed_json(base_dir / METRICS_FILE)
    base = checkpoint.load_model(base_dir / MODEL_DIR, device)[0]
    base_forward = example_forward(ws, base, batch, device)
    for exp in runs:
        model = base if exp.chain == BASE else checkpoint.load_model(ws.directory(exp) / MODEL_DIR, device)[0]
        idle = cost.paired_cuda_latency(example_forward(ws, model, batch, device), base_forward, device, pairs, warmup)
        record = base_record if exp.chain == BASE else read_sealed_json(ws.directory(exp) / METRICS_FILE)
        row = {**{k: getattr(exp, k) for k in IDENTITY}, "batch": batch, **speedup_row(record, base_record, idle)}
        print(json.dumps({"benchmark": "idle_speedup", **row}), flush=True)
        yield row


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def hardware() -> dict[str, Any]:
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError):
        smi = []
    return {**provenance.hardware(), **devices.physical_gpu(), "torch": torch.__version__,
            "driver": smi[0] if smi else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", required=True, metavar="FILE",
                        help="config file; repeat to merge several in order")
    parser.add_argument("--study", required=True)
    parser.add_argument("--pairs", type=int, default=50,
                        help="timed pairs per chain (the workflow's counterpart: evaluation.latency.paired_cuda, "
                             "10 in config/default.yaml)")
    parser.add_argument("--warmup", type=int, help="untimed pairs before them (default: evaluation.latency.warmup)")
    parser.add_argument("--out", type=Path, help="CSV (default: <results_dir>/<config>/<study>/idle_speedup.csv)")
    args = parser.parse_args(argv)
    if args.pairs < 1 or (args.warmup is not None and args.warmup < 0):
        parser.error(f"--pairs must be >= 1 and --warmup >= 0, got {args.pairs} and {args.warmup}")
    start = time.perf_counter()
    devices.claim_gpu()  # before CUDA starts: on a multi-GPU host, a GPU no other slimbench job holds
    if not torch.cuda.is_available():
        sys.exit("idle_speedup: no CUDA device (torch.cuda.is_available() is False). It times GPU calls: run it on "
                 "the GPU machine the study ran on, from the repository root, after the workflow has finished.")
    config = load_config(args.config)
    if args.study not in config["studies"]:
        sys.exit(f"idle_speedup: config '{config['name']}' has no study '{args.study}'. Known: "
                 f"{', '.join(config['studies'])}.")
    results_dir = config["results_dir"]
    runs = list(experiments(config, args.study))
    why = {exp: missing_reason(exp, results_dir) for exp in runs}
    todo = [exp for exp in runs if why[exp] is None]
    if not todo:
        folder = Path(results_dir, config["name"], args.study).resolve()
        sys.exit(f"idle_speedup: none of the {len(runs)} experiments of study '{args.study}' has a saved model and "
                 f"metrics file with its base's (looked in '{folder}': results_dir '{results_dir}' from "
                 f"{Path.cwd()}). Fix: run the study's workflow first, and this script from the repository root.")
    settings = evaluation_settings(config, args.study)
    batch = settings["batch_size"]
    warmup = settings["latency"]["warmup"] if args.warmup is None else args.warmup
    device = torch.device("cuda")
    rows: list[dict[str, Any]] = []
    for _, panel in groupby(todo, key=lambda exp: (exp.dataset, exp.model)):
        panel = list(panel)
        ws = Workspace.open(config, panel[0])
        for _, seed_runs in groupby(panel, key=lambda exp: exp.seed):
            rows += measure_seed(ws, list(seed_runs), batch, args.pairs, warmup, device)
    out = args.out or Path(results_dir, config["name"], args.study, "idle_speedup.csv")
    write_atomically(out, lambda tmp: write_csv(tmp, rows))
    missing = [{**{k: getattr(exp, k) for k in IDENTITY}, "why": why[exp]} for exp in runs if why[exp]]
    print(json.dumps({"benchmark": "idle_speedup", "summary": True, "config": config["name"], "study": args.study,
                      "out": str(out), "measured": len(rows), "missing": len(missing), "missing_runs": missing,
                      "batch": batch, "pairs": args.pairs, "warmup": warmup,
                      "wall_s": round(time.perf_counter() - start, 1), **hardware()}), flush=True)


if __name__ == "__main__":
    main()
