"""The three per-experiment steps: train the base model, apply one stage, evaluate. Called by the CLI.

Each step reads its inputs from the experiment folder of its prefix and writes its own folder atomically,
so Snakemake (or a user by hand) can run, skip and resume them independently. A step holds its experiment
folder's lock while it runs: when another process (a Snakemake job, a second `slimbench study`) was building
the same output, the step waits for it and keeps its result instead of building it twice. The saved model's
folder holds its stage log, so it is complete (weights, log, then arch.json) or absent; metrics files carry a
checksum that readers verify.

The torch thread count is set here, once per step, from ``$SLIMBENCH_THREADS`` or the config's ``threads``:
CPU results depend on it (reduction order), so it is fixed and recorded rather than left to the launcher.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import psutil
import torch
from torch import nn

from slimbench import checkpoint, devices
from slimbench.atomic import folder_lock, remove_temporaries
from slimbench.config import Experiment, evaluation_settings, measures_model_memory, study_settings
from slimbench.data import Splits, data_root, load_dataset
from slimbench.errors import ConfigError
from slimbench.integrity import corrupt, read_sealed_json, write_sealed_json
from slimbench.metrics import bitops, cost, model_memory
from slimbench.models import build_model, describe_model, tokenizer_for
from slimbench.provenance import provenance
from slimbench.results import METRICS_FILE
from slimbench.stages import STAGES, Context, fixed_since, parse_chain
from slimbench.tasks import Task, make_task
from slimbench.train import fit, seed_everything

MODEL_DIR = "model"
STAGE_LOG = "stage.json"
THREADS_ENV = "SLIMBENCH_THREADS"


def apply_threads(configured: int) -> dict[str, Any]:
    """Set torch's intra-op thread count ($SLIMBENCH_THREADS wins over the config) and say where it came from."""
    raw = os.environ.get(THREADS_ENV)
    try:
        count = int(raw) if raw else int(configured)
    except ValueError:
        raise ConfigError(f"${THREADS_ENV}={raw!r} is not a whole number of threads.") from None
    if count < 1:
        raise ConfigError(f"thread count must be >= 1, got {count} (from {'$' + THREADS_ENV if raw else 'threads'}).")
    torch.set_num_threads(count)
    return {"torch": torch.get_num_threads(), "source": f"${THREADS_ENV}" if raw else "config threads"}


def utc_now() -> str:
    """Wall-clock UTC to the millisecond: jobs of separate processes (and GPUs) are set side by side by it."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def where_and_when(ws: Workspace, started_at: str) -> dict[str, Any]:
    """The device a step ran on (the physical GPU is known once it ran) and its wall-clock span, so a multi-GPU
    run can show which jobs ran on which GPU at once (issue 21)."""
    return {"device": devices.device_record(str(ws.device)), "started_at": started_at, "finished_at": utc_now()}


def pick_device(setting: str) -> torch.device:
    """CPU if the config says so; else this job's own GPU (devices.claim_gpu, before CUDA starts) if any."""
    if setting != "cpu":
        devices.claim_gpu()
    if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class Workspace:
    """A config plus the data, task and device of one (dataset, model) pair, loaded once."""

    config: dict[str, Any]
    exp: Experiment
    splits: Splits
    task: Task
    device: torch.device
    threads: dict[str, Any]

    @classmethod
    def open(cls, config: dict[str, Any], exp: Experiment) -> "Workspace":
        threads = apply_threads(config["threads"])
        root = data_root(config["data_root"])
        cache = Path(config["cache_dir"])
        splits = load_dataset(config["datasets"][exp.dataset], root, config["download"], cache)
        spec = config["models"][exp.model]
        tokenizer = tokenizer_for(spec, config["download"])
        task = make_task(splits.info, tokenizer, **config["studies"][exp.study]["task"])
        holdout = None if splits.holdout is None else task.prepare(splits.holdout)
        splits = Splits(task.prepare(splits.train), task.prepare(splits.eval), splits.info, splits.split, holdout)
        return cls(config, exp, splits, task, pick_device(config["device"]), threads)

    @property
    def evaluation(self) -> dict[str, Any]:
        return evaluation_settings(self.config, self.exp.study)

    def directory(self, exp: Experiment | None = None) -> Path:
        return (exp or self.exp).directory(self.config["results_dir"])

    def context(self) -> Context:
        recipe, _ = study_settings(self.config, self.exp)
        base_dir = self.directory(self.exp.base) / MODEL_DIR
        return Context(self.task, self.splits.train, self.splits.eval, self.device, self.exp.seed, recipe,
                       teacher_loader=lambda: checkpoint.load_model(base_dir, self.device)[0],
                       progress=self.config["progress"], holdout_set=self.splits.holdout)


def built_by_old_revision(model_dir: Path) -> bool:
    """Whether a saved model's record names an earlier revision of one of the stages it was built by
    (``slimbench.stages.fixed_since``): a fix has changed that step since. Read from ``arch.json`` alone (loading
    the model checks its integrity); an unreadable one is left to that check."""
    try:
        stages = json.loads((model_dir / checkpoint.ARCH).read_text()).get("stages", [])
    except (OSError, ValueError, AttributeError):
        return False
    return any(fixed_since(applied) for applied in stages)


def current_model(model_dir: Path) -> bool:
    """A saved model built by the stages' current revisions: nothing to rebuild."""
    return checkpoint.is_saved(model_dir) and not built_by_old_revision(model_dir)


def start_rebuild(folder: Path) -> None:
    """Clear what a model step leaves and what its old model's metrics would claim: the metrics file goes before
    the model is rebuilt, so a rebuild killed midway (e.g. under ``snakemake --forcerun compress``, which deletes
    the model first) leaves the experiment unevaluated, and asking for it again rebuilds and evaluates it; with the
    old metrics left, Snakemake would take them as up to date and never rebuild the missing model. (The workflow's
    steps, ``slimbench base``/``compress``, also remove it before their data loads.)"""
    remove_temporaries(folder)
    (folder / METRICS_FILE).unlink(missing_ok=True)


def run_base(ws: Workspace) -> Path:
    """Build (pretrained if the spec says so) and train/fine-tune the uncompressed model."""
    out = ws.directory() / MODEL_DIR
    with folder_lock(ws.directory()) as waited:
        if waited and current_model(out):
            return out  # built meanwhile by the process we waited for
        start_rebuild(ws.directory())
        started_at = utc_now()
        recipe, _ = study_settings(ws.config, ws.exp)
        seed_everything(ws.exp.seed)
        spec = ws.config["models"][ws.exp.model]
        model = build_model(spec, ws.splits.info, pretrained=True, download=ws.config["download"])
        start = time.perf_counter()
        history = fit(model, ws.task, ws.splits.train, ws.device, recipe, ws.exp.seed,
                      resume=out.with_name("resume.pt"), progress=ws.config["progress"], desc=f"base {ws.exp.model}")
        log = {"stage": "base", "recipe": recipe, "time_s": time.perf_counter() - start, "steps": history["steps"],
               "final_loss": history["losses"][-1] if history["losses"] else None,
               "epoch_losses": history.get("epoch_losses", []), "threads": ws.threads,
               **where_and_when(ws, started_at)}
        checkpoint.save_model(model.cpu(), out, describe_model(spec, model), ws.splits.info, [], {STAGE_LOG: log})
    return out


def run_compress(ws: Workspace) -> Path:
    """Apply the chain's last stage to the saved model of its prefix."""
    prefix = ws.exp.prefix
    if prefix is None:
        raise ValueError("the base chain is trained by run_base, not compressed")
    out = ws.directory() / MODEL_DIR
    with folder_lock(ws.directory()) as waited:
        if waited and current_model(out):
            return out  # built meanwhile by the process we waited for
        start_rebuild(ws.directory())
        started_at = utc_now()
        _, settings = study_settings(ws.config, ws.exp)
        call = parse_chain(ws.exp.chain)[-1]
        stage = STAGES.get(call.name)
        params = stage.resolve_models(stage.resolve(call.value, settings.get(call.name)), ws.config["models"])
        model, arch = checkpoint.load_model(ws.directory(prefix) / MODEL_DIR, ws.device)
        seed_everything(ws.exp.seed)
        start = time.perf_counter()
        model = stage(model, ws.context(), **params)
        if ws.device.type == "cuda":
            torch.cuda.synchronize()
        log = {"stage": stage.name, "params": params, "time_s": time.perf_counter() - start, "threads": ws.threads,
               **where_and_when(ws, started_at)}
        stages = arch["stages"] + [stage.applied(params)]
        checkpoint.save_model(model.cpu(), out, arch["model"], ws.splits.info, stages, {STAGE_LOG: log})
    return out


def example_forward(ws: Workspace, model: nn.Module, batch_size: int, device: torch.device) -> Any:
    batch = ws.task.to_device(next(iter(ws.task.loader(ws.splits.eval, batch_size))), device)
    return lambda: ws.task.logits(model, batch)


def memory_probe(ws: Workspace, model_dir: Path, arch: dict[str, Any]) -> model_memory.ModelMemoryProbe | None:
    """The probe of the model's own memory (``measures_model_memory``), on this process's fork server: started
    here unless the command line started it earlier, and asked now to prepare for this model (a model it has
    prepared for costs nothing), so that its imports overlap this process's work."""
    if not measures_model_memory(ws.evaluation):
        return None
    return model_memory.ModelMemoryProbe(model_dir, arch)


def base_model(ws: Workspace, model: nn.Module, device: torch.device) -> nn.Module:
    """The study's base model (the chain prefix ``base``, built first) on ``device``, to pair latencies with;
    the base itself is paired with itself (an A/A check: its interval shows the noise floor)."""
    return model if ws.exp.prefix is None else checkpoint.load_model(ws.directory(ws.exp.base) / MODEL_DIR, device)[0]


def paired_against_base(ws: Workspace, model: nn.Module, forward: Any) -> dict[str, Any]:
    """CPU latency interleaved call by call with the base, at the latency batch and threads."""
    latency = ws.evaluation["latency"]
    cpu = torch.device("cpu")
    return cost.paired_latency(forward, example_forward(ws, base_model(ws, model, cpu), latency["batch_size"], cpu),
                               latency["threads"], latency["paired"], latency["warmup"], latency["batch_size"])


def paired_cuda_against_base(ws: Workspace, model: nn.Module) -> dict[str, Any]:
    """GPU latency interleaved call by call with the base at the evaluation batch, where structured pruning's
    speed-up is set against its FLOPs (the ``gpu_speedup`` table)."""
    latency, batch = ws.evaluation["latency"], ws.evaluation["batch_size"]
    forward = example_forward(ws, model, batch, ws.device)
    base_forward = example_forward(ws, base_model(ws, model, ws.device), batch, ws.device)
    return {**cost.paired_cuda_latency(forward, base_forward, ws.device, latency["paired_cuda"], latency["warmup"]),
            "latency_cuda_vs_base_batch": batch}


class Phases:
    """Wall seconds of the parts of one evaluation, by name (``eval_phases_s`` in its metrics): where an
    evaluation job's time goes (issue 17, item 3). GPU work is not synchronised at a phase's end, so a phase may
    carry on the next one's clock what it left queued."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def measure_cost(ws: Workspace, model: nn.Module, model_dir: Path, stages: list[dict[str, Any]],
                 probe: model_memory.ModelMemoryProbe | None, phase: Phases) -> dict[str, Any]:
    settings = ws.evaluation
    latency = settings["latency"]
    out: dict[str, Any] = {
        "params": cost.count_parameters(model),
        "stored_bits": cost.stored_bits(model),
        "size_bytes": (model_dir / checkpoint.WEIGHTS).stat().st_size,
    }
    with phase("bitops"):
        out.update(bitops.cost_record(model, ws.task, ws.splits.eval, ws.device, settings["batch_size"]))
    cpu_model = model.to("cpu")
    if settings["flops"]:
        with phase("flops"):
            # FLOPs are counted on the float model: packed kernels (int8) hide their matmuls from the counter.
            packed = any(STAGES.get(s["name"]).finalize for s in stages)
            counted = checkpoint.load_model(model_dir, "cpu", finalize=False)[0] if packed else cpu_model
            out["flops"] = cost.count_flops(example_forward(ws, counted, 1, torch.device("cpu")))
    forward = example_forward(ws, cpu_model, latency["batch_size"], torch.device("cpu"))
    if probe is not None:  # the model's own memory, from the saved model in a fresh CPU-only process
        with phase("model_memory"):
            out.update(probe.measure(model_memory.capture_inputs(cpu_model, forward), latency["threads"]))
    # This process's RSS (peak_rss_mib, rss_rise_mib) holds the dataset, a CUDA context and earlier steps' memory:
    # whole-process figures, kept for comparison with earlier reports; never a device budget's measure.
    with phase("process_memory"), cost.threads(latency["threads"]):
        memory = cost.peak_memory(forward, torch.device("cpu"))
    out.update(memory)
    if latency["paired"]:
        with phase("paired_cpu_latency"):
            out.update(paired_against_base(ws, cpu_model, forward))
    # CPU latency (torch.utils.benchmark: median and IQR) and, on a GPU, CUDA-event latency at the latency batch
    # and at the evaluation batch, where structured pruning's speed-up can be set against its FLOPs.
    with phase("latency"):
        out.update(cost.latency_record(
            lambda size, device: example_forward(ws, model.to(device), size, device),
            ws.device if latency["cuda"] else torch.device("cpu"), latency["batch_size"], settings["batch_size"],
            latency["threads"], latency["warmup"], latency["repeats"]))
    budget = settings.get("budget")
    if budget:
        out.update({"budget": budget["name"], "budget_memory_mib": budget["memory_mib"],
                    "fits_budget": out["model_peak_rss_mib"] <= budget["memory_mib"],
                    "fits_budget_measure": "model_peak_rss_mib"})
    if latency["cuda"] and ws.device.type == "cuda":
        with phase("cuda_memory_and_paired_latency"):
            gpu_model = model.to(ws.device)
            gpu = example_forward(ws, gpu_model, latency["batch_size"], ws.device)
            out["peak_cuda_mib"] = cost.peak_memory(gpu, ws.device)["peak_cuda_mib"]
            if latency.get("paired_cuda"):
                out.update(paired_cuda_against_base(ws, gpu_model))
    return out


def relative_to(base_cost: dict[str, Any], own: dict[str, Any]) -> dict[str, float]:
    """Fractions of the uncompressed model's cost kept (1.0 = no saving; the base model itself is 1.0)."""
    return {f"{key}_kept": own[key] / base_cost[key] for key in ("params", "flops", "stored_bits", "size_bytes")
            if key in own and base_cost.get(key)}


def base_cost(ws: Workspace, own: dict[str, Any]) -> dict[str, Any]:
    if ws.exp.prefix is None:
        return own
    path = ws.directory(ws.exp.base) / METRICS_FILE
    return read_sealed_json(path)["cost"] if path.exists() else {}


def run_evaluate(ws: Workspace, command: str = "") -> Path:
    """Task metric, cost metrics and provenance -> ``metrics.json`` beside the model."""
    path = ws.directory() / METRICS_FILE
    with folder_lock(ws.directory()) as waited:
        if waited and path.exists():
            return path  # evaluated meanwhile by the process we waited for
        remove_temporaries(ws.directory())
        write_sealed_json(path, evaluation_record(ws, command))
    return path


def read_stage_log(model_dir: Path) -> dict[str, Any]:
    """The step's log saved inside the model folder (checked with the model: both come from one atomic save)."""
    try:
        return read_sealed_json(model_dir / STAGE_LOG, "stage log")
    except FileNotFoundError:
        raise corrupt(model_dir, f"{STAGE_LOG} missing", "saved model") from None


def evaluation_record(ws: Workspace, command: str) -> dict[str, Any]:
    started_at, start, phase = utc_now(), time.perf_counter(), Phases()
    # Seconds since this process started: in the workflow, one job a process, its imports, config, data and workspace.
    process_age = max(0.0, time.time() - psutil.Process().create_time())
    model_dir = ws.directory() / MODEL_DIR
    with phase("load_model"):
        model, arch = checkpoint.load_model(model_dir, ws.device)
    stage_log = read_stage_log(model_dir)
    probe = memory_probe(ws, model_dir, arch)
    with phase("task_metric"):
        metrics = ws.task.evaluate(model, ws.splits.eval, ws.device, ws.evaluation["batch_size"])
    costs = measure_cost(ws, model, model_dir, arch["stages"], probe, phase)
    record = {
        "study": ws.exp.study, "dataset": ws.exp.dataset, "model": ws.exp.model, "chain": ws.exp.chain,
        "seed": ws.exp.seed, "metric": ws.task.metric, "metrics": metrics, "cost": costs,
        "relative": relative_to(base_cost(ws, costs), costs),
        "stages": arch["stages"], "stage_time_s": stage_log["time_s"],
        "train_epoch_losses": stage_log.get("epoch_losses"),
        "dataset_info": ws.splits.info.to_dict(), "split": ws.splits.split,
        "config": {"name": ws.config["name"], "study": ws.config["studies"][ws.exp.study],
                   "dataset": ws.config["datasets"][ws.exp.dataset], "model": ws.config["models"][ws.exp.model],
                   "evaluation": ws.evaluation, "device": str(ws.device)},
        "threads": ws.threads, "stage_threads": stage_log.get("threads"),
        **provenance(), "command": command, "eval_time_s": time.perf_counter() - start,
        "eval_phases_s": {name: round(seconds, 3) for name, seconds in phase.seconds.items()},
        "process_age_at_evaluation_s": round(process_age, 3),
    }
    record["wall_time_s"] = record["eval_time_s"] + stage_log["time_s"]
    return {**record, **where_and_when(ws, started_at)}
