"""Peak memory of a saved model alone, measured in a fresh CPU-only process (issue #15).

The evaluating process is no place to measure a model's memory: its resident set holds the dataset, the
CUDA context (2-4 GiB) and everything earlier steps left behind, and it grows with run order. Here the model
runs in a child forked from a small *fork server*: a Python process started once per evaluating process (by
``slimbench evaluate`` before it loads the data, so that the two import at once) with
no GPU visible (``CUDA_VISIBLE_DEVICES=""``) that imports torch, the checkpoint loader and this module, never
computes on a tensor, and forks one child per job. Before it forks, it *prepares* for the job's model (once per
model; ``slimbench evaluate`` asks for it with the server's start, :func:`start_server`): it imports the modules of
the stages the model went through and of its model family (:func:`plugin_modules`), builds the architecture on the
meta device (no memory: it only imports the classes, e.g. timm, or transformers' modeling module, ~60 MiB), and,
when a stage replays on reload (``rebuild`` or ``finalize``: a timm student rebuilt, torchao for int8), imports the
libraries such a replay may import (``LOAD_LIBRARIES``). So each child starts as a fresh process right after those
imports (no tensors, no CUDA context, no allocator history, no thread pool). The child builds the architecture on
the meta device again (:func:`build_on_meta` says why), takes its resident set size
(RSS) as the baseline, loads the saved model (``checkpoint.load_model``: safetensors and
``arch.json`` only, no code from the model folder) and runs one forward pass on the saved example inputs at the
configured threads. A package that the load still imports after the baseline would be charged to the model: the
child then reports it instead of a measurement, and the server imports it and measures in a fresh child again.

Reported (MiB): ``model_peak_rss_mib``, the highest RSS during that forward pass minus the baseline, i.e.
weights as loaded plus activations and temporaries plus what the allocator keeps of the load (the model's
own figure, used for a device budget; it includes a floor of 10-25 MiB of first-use library pages and
allocator state, seen even for a model of a few KiB); ``model_weights_rss_mib``, RSS after loading minus the baseline;
``probe_process_peak_rss_mib``, the child's whole peak (Python + torch runtime included) for reference;
``probe_libraries``, which of ``LOAD_LIBRARIES`` its baseline held (comma-separated); ``probe_children``, 2 when a
late import made the server measure again; and ``probe_time_s``, the wall time the measurement added (waiting for
the server's imports included).
RSS is sampled every 2 ms (``cost.RssSampler``), so a spike shorter than that can be missed.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable, TextIO

MIB = 2**20
# Libraries that a stage's replay on reload may import (a timm student rebuilt by a stage, torchao for a saved int8
# model, transformers' configs), never when a config is read. The server imports them before a child measures such
# a model, so that its baseline already holds them and they never count as the model's; a model that replays no
# stage needs only what building its architecture imports, and skips their 2-3 s.
LOAD_LIBRARIES = ("transformers", "timm", "torchao.quantization")
ARG, KWARG = "arg.", "kwarg."
_server: subprocess.Popen | None = None


def fork_server() -> subprocess.Popen:
    """This process's fork server, started (in the background) on first use; restarted if it died."""
    global _server
    if _server is None or _server.poll() is not None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
        _server = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   text=True, env=env)
        atexit.register(stop_server, _server)
    return _server


def start_server(model_dir: Path) -> None:
    """Start the fork server and have it prepare at once for measuring the model saved in ``model_dir`` (its imports
    and the meta build), beside the caller's work. Its ``arch.json`` is read here without checking the weights' hash
    or moving a garbled folder aside (the evaluation's load does both, under its lock); a folder whose arch cannot be
    read is not prepared for, and its evaluation reports why."""
    from slimbench.checkpoint import ARCH, check_spec
    from slimbench.errors import SlimbenchError

    server = fork_server()
    try:
        arch = json.loads((model_dir / ARCH).read_text())
        check_spec(arch["model"], f"saved model '{model_dir}'")  # no model that would run code from a folder
        message = {"model_dir": str(model_dir), "arch": arch, "plugins": plugin_modules(arch)}
    except (OSError, ValueError, KeyError, TypeError, SlimbenchError):
        return
    send(server, message)


def plugin_modules(arch: dict[str, Any]) -> list[str]:
    """The modules of the stages the saved model went through (its reload replays them) and of its model family (a
    plugin may register one), no others."""
    from slimbench.models import MODELS

    modules = {f.__module__ for stage in applied_stages(arch) for f in (stage.fn, stage.rebuild, stage.finalize)
               if f is not None}
    return sorted(modules | {MODELS.get(arch["model"]["family"]).build.__module__})


def applied_stages(arch: dict[str, Any]) -> list[Any]:
    """The registered stages the saved model went through."""
    from slimbench.stages import STAGES

    return [STAGES.get(s["name"]) for s in arch["stages"]]


def send(server: subprocess.Popen, message: dict[str, Any]) -> None:
    server.stdin.write(json.dumps(message) + "\n")
    server.stdin.flush()


def stop_server(server: subprocess.Popen) -> None:
    """End the fork server with its parent: close its job pipe (its loop ends) and reap it."""
    if server.poll() is None:
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class ModelMemoryProbe:
    """Measures one saved model's peak memory in a fresh CPU-only child (see the module docstring). Made with the
    model's checked ``arch`` (as its load returns it), it has the server prepare for the model at once, so that the
    imports overlap the caller's work (a second request for one model costs nothing)."""

    def __init__(self, model_dir: Path, arch: dict[str, Any]) -> None:
        self.model_dir = model_dir
        self.job = {"model_dir": str(model_dir), "arch": arch, "plugins": plugin_modules(arch)}
        send(fork_server(), self.job)  # a line without inputs: prepare only

    def measure(self, inputs: dict[str, Any], threads: int) -> dict[str, float]:
        """Save the example inputs as safetensors, run a child on them and the model folder, return its record."""
        from safetensors.torch import save_file

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="slimbench-memory-") as folder:
            path = Path(folder) / "inputs.safetensors"
            save_file({k: v.detach().cpu().contiguous() for k, v in inputs.items()}, str(path))
            server = fork_server()
            send(server, {**self.job, "inputs": str(path), "threads": threads})
            line = server.stdout.readline()
        result = json.loads(line) if line else {"error": f"the fork server exited ({server.wait()})"}
        if "error" in result:
            raise RuntimeError(f"the memory probe of '{self.model_dir}' failed:\n{result['error'][-2000:]}")
        result["probe_time_s"] = time.perf_counter() - started
        return result


def capture_inputs(model: Any, forward: Callable[[], Any]) -> dict[str, Any]:
    """The tensors ``model`` is called with in ``forward()``, by name: ``arg.<i>`` and ``kwarg.<name>``."""
    import torch

    seen: dict[str, Any] = {}

    def hook(module: Any, args: tuple, kwargs: dict) -> None:
        if seen:
            return
        named = {**{f"{ARG}{i}": a for i, a in enumerate(args)}, **{f"{KWARG}{k}": v for k, v in kwargs.items()}}
        other = [k for k, v in named.items() if v is not None and not isinstance(v, torch.Tensor)]
        if other:
            raise TypeError(f"the model is called with non-tensor inputs {other}; the memory probe only replays "
                            "tensors. Fix: pass them as tensors or set evaluation.model_memory: false.")
        seen.update({k: v for k, v in named.items() if v is not None})

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            forward()
    finally:
        handle.remove()
    return seen


def split_inputs(flat: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    args = [flat[k] for k in sorted((k for k in flat if k.startswith(ARG)), key=lambda k: int(k[len(ARG):]))]
    return args, {k[len(KWARG):]: v for k, v in flat.items() if k.startswith(KWARG)}


def import_load_libraries() -> None:
    """The fork server's imports of ``LOAD_LIBRARIES`` (those installed), before any child is forked."""
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # torchao's import logs a deprecation per Enum
    for library in LOAD_LIBRARIES:
        try:
            importlib.import_module(library)
        except ImportError:  # not installed: no model here can need it
            pass


def serve(jobs: TextIO, results: TextIO) -> None:
    """The fork server's loop. A line without ``inputs``: prepare for its model, no reply. A job line: prepare (once
    per model), fork a child that measures and writes one JSON line back; if the child's load imported a package after
    its baseline, import it here and measure again in a fresh child."""
    prepared: set[str] = set()
    for line in jobs:
        job = json.loads(line)
        try:
            prepare(job, prepared)
        except Exception:  # noqa: BLE001 - reported to the parent (which raises it) with the job, if one comes
            if "inputs" in job:
                results.write(json.dumps({"error": traceback.format_exc()}) + "\n")
                results.flush()
            continue
        if "inputs" not in job:  # a prepare line: no reply
            continue
        record = measure_in_child(job)
        if "late_imports" in record:  # charged to the model: import them here and measure again
            record = measure_again(job, record["late_imports"])
        results.write(json.dumps({"probe_children": 1, **record}) + "\n")
        results.flush()


def measure_again(job: dict[str, Any], late: list[str]) -> dict[str, Any]:
    """Import the modules a child's load imported after its baseline, then measure in a fresh child."""
    fix = "Fix: report it; meanwhile, set evaluation.model_memory: false (and no budget) for this study."
    try:
        for module in late:
            importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it
        return {"error": f"loading the model imported {late} after the memory baseline, and importing them before it "
                         f"failed ({type(error).__name__}: {error}). {fix}"}
    record = {**measure_in_child(job), "probe_children": 2}
    if "late_imports" in record:
        return {"error": f"loading the model imported {record['late_imports']} after the memory baseline, even after "
                         f"they were imported before it. {fix}"}
    return record


def prepare(job: dict[str, Any], prepared: set[str]) -> None:
    """The imports a child's baseline must already hold for this model (see the module docstring). One process that
    evaluates several models (``slimbench study``, ``slimbench run``) keeps one server, which keeps every import: a
    later model's baseline may hold more libraries (``probe_libraries`` says which); the workflow runs one
    evaluation per process."""
    if job["model_dir"] in prepared:
        return
    for module in job["plugins"]:
        importlib.import_module(module)
    if any(stage.rebuild or stage.finalize for stage in applied_stages(job["arch"])):
        import_load_libraries()
    build_on_meta(job["arch"])
    prepared.add(job["model_dir"])


def build_on_meta(arch: dict[str, Any]) -> None:
    """Build the saved model's architecture on the meta device: no memory, but it imports the architecture's
    modules (transformers loads them lazily, ~60 MiB) and runs the build's code. A forked child does not inherit
    the server's file-backed pages (library code) until it touches them, so the child builds again before its
    baseline, and the load is not charged 5-7 MiB of first-use library pages (seen with a timm ViT)."""
    import torch

    from slimbench.data import DatasetInfo
    from slimbench.models import build_model

    with torch.device("meta"):
        build_model(arch["model"], DatasetInfo(**arch["dataset"]), pretrained=False, download=False)


def measure_in_child(job: dict[str, Any]) -> dict[str, Any]:
    """Fork a fresh child that measures ``job``; its record, or the error it died of."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, report, exit without running the parent's cleanup
        os.close(read)
        try:
            record = _measure(job)
        except BaseException:  # noqa: BLE001 - every failure goes back to the parent, which raises it
            record = {"error": traceback.format_exc()}
        os.write(write, json.dumps(record).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        reply = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return json.loads(reply) if reply else {"error": f"the child died (wait status {status})"}


def packages() -> set[str]:
    """The top-level packages imported in this process; the standard library's and private ones (a leading
    underscore: the runtime modules of C extensions, such as Cython's, which their package brings) left out."""
    names = {name.partition(".")[0] for name in list(sys.modules)} - set(sys.stdlib_module_names)
    return {name for name in names if not name.startswith("_")}


def _measure(job: dict[str, Any]) -> dict[str, Any]:
    """In the fresh child: baseline, load, one forward pass (see the module docstring)."""
    import gc

    import torch
    from safetensors.torch import load_file

    from slimbench import checkpoint
    from slimbench.metrics.cost import RssSampler

    torch.set_num_threads(int(job["threads"]))
    args, kwargs = split_inputs(load_file(job["inputs"]))
    # again, here, from arch.json read as the load reads it: the code pages both run become the child's own
    build_on_meta(checkpoint.read_arch(Path(job["model_dir"])))
    gc.collect()
    imported = packages()
    with RssSampler() as whole:
        baseline = whole.process.memory_info().rss
        model, _ = checkpoint.load_model(Path(job["model_dir"]), "cpu")
        gc.collect()
        loaded = whole.process.memory_info().rss
        with RssSampler() as forward, torch.no_grad():
            model(*args, **kwargs)
    new = packages() - imported
    if new:  # charged to the model: not a measurement. Every module of the new packages, so that all are imported
        return {"late_imports": sorted(name for name in list(sys.modules) if name.partition(".")[0] in new)}
    return {"model_peak_rss_mib": (forward.peak - baseline) / MIB, "model_weights_rss_mib": (loaded - baseline) / MIB,
            "probe_process_peak_rss_mib": whole.peak / MIB, "probe_threads": torch.get_num_threads(),
            "probe_cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "probe_libraries": ",".join(sorted(imported & {library.partition(".")[0] for library in LOAD_LIBRARIES}))}


if __name__ == "__main__":
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")  # the reply pipe; anything else printed (an import, a
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())     # plugin, a C library) goes to stderr, not into a reply
    sys.stdout = sys.stderr

    import torch  # noqa: F401  - the server's imports, inherited by every child
    from safetensors.torch import load_file  # noqa: F401

    from slimbench import checkpoint  # noqa: F401
    from slimbench.metrics import cost  # noqa: F401

    serve(sys.stdin, replies)
    replies.flush()
    os._exit(0)  # no interpreter teardown (1.4 s with these libraries on a 2-core VM), which its parent waits for
