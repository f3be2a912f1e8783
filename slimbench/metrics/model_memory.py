"""Peak memory of a saved model alone, measured in a fresh CPU-only Python process (issue #15).

The evaluating process is no place to measure a model's memory: its resident set holds the dataset, the
CUDA context (2-4 GiB) and everything earlier steps left behind, and it grows with run order. Here a child
process is started with no GPU visible (``CUDA_VISIBLE_DEVICES=""``), imports torch, the checkpoint loader
and the modules of the stages the model went through, and takes its resident set size (RSS) as the baseline.
It then loads the saved model (``checkpoint.load_model``: safetensors and ``arch.json`` only, no code from the
model folder) and runs one forward pass on the saved example inputs at the configured threads and batch.

Reported (MiB): ``model_peak_rss_mib``, the highest RSS during that forward pass minus the baseline, i.e.
weights as loaded plus activations and temporaries plus what the allocator keeps of the load (the model's
own figure, used for a device budget); ``model_weights_rss_mib``, RSS after loading minus the baseline; and
``probe_process_peak_rss_mib``, the child's whole peak (Python + torch runtime included) for reference;
``probe_import_s`` and ``probe_time_s`` (start to result, imports included), what the probe costs.
RSS is sampled every 2 ms (``cost.RssSampler``), so a spike shorter than that can be missed.

The child is started early (:meth:`ModelMemoryProbe.start`) so that its imports overlap the parent's task
evaluation; it then waits on stdin for one job. The parent never measures while the child runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

MIB = 2**20
ARG, KWARG = "arg.", "kwarg."


class ModelMemoryProbe:
    """A fresh CPU-only child process that measures one saved model's peak memory."""

    def __init__(self, plugin_modules: list[str]) -> None:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONWARNINGS": "ignore"}
        self.started = time.perf_counter()
        self.process = subprocess.Popen([sys.executable, "-m", __name__, *plugin_modules], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def measure(self, model_dir: Path, inputs: dict[str, Any], threads: int, timeout_s: float = 600) -> dict[str, float]:
        """Send the job (the model folder, the example inputs as safetensors, the thread count) and wait."""
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory(prefix="slimbench-memory-") as folder:
            path = Path(folder) / "inputs.safetensors"
            save_file({k: v.detach().cpu().contiguous() for k, v in inputs.items()}, str(path))
            job = json.dumps({"model_dir": str(model_dir), "inputs": str(path), "threads": threads})
            try:
                out, err = self.process.communicate(job + "\n", timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise RuntimeError(f"the memory probe of '{model_dir}' ran over {timeout_s} s") from None
        if self.process.returncode != 0:
            raise RuntimeError(f"the memory probe of '{model_dir}' failed (exit {self.process.returncode}):\n"
                               f"{err.strip()[-2000:]}")
        result = json.loads(out.strip().splitlines()[-1])
        result["probe_time_s"] = time.perf_counter() - self.started
        return result

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


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


def _child(plugin_modules: list[str]) -> None:
    """Import, wait for the job, take the baseline, load, run one forward pass, print one JSON line."""
    import gc
    import importlib

    started = time.perf_counter()
    import torch
    from safetensors.torch import load_file

    from slimbench import checkpoint
    from slimbench.metrics.cost import RssSampler

    for module in plugin_modules:
        importlib.import_module(module)
    imported = time.perf_counter() - started
    job = json.loads(sys.stdin.readline())
    torch.set_num_threads(int(job["threads"]))
    args, kwargs = split_inputs(load_file(job["inputs"]))
    gc.collect()
    with RssSampler() as whole:
        baseline = whole.process.memory_info().rss
        model, _ = checkpoint.load_model(Path(job["model_dir"]), "cpu")
        gc.collect()
        loaded = whole.process.memory_info().rss
        with RssSampler() as forward, torch.no_grad():
            model(*args, **kwargs)
    print(json.dumps({"model_peak_rss_mib": (forward.peak - baseline) / MIB,
                      "model_weights_rss_mib": (loaded - baseline) / MIB,
                      "probe_process_peak_rss_mib": whole.peak / MIB, "probe_threads": torch.get_num_threads(),
                      "probe_import_s": imported}))


if __name__ == "__main__":
    _child(sys.argv[1:])
