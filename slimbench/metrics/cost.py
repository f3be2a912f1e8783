"""Cost metrics: parameters, stored bits, FLOPs (torch.utils.flop_counter), latency and peak memory.

Latency and memory are measurements, so they belong in benchmarks and reports, never in assertions.
"""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import psutil
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

Forward = Callable[[], Any]


def tensor_bits(tensor: torch.Tensor) -> int:
    """Bits a tensor really stores; quantized subclasses count their codes and scales."""
    if type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bits(getattr(tensor, n)) for n in names if getattr(tensor, n) is not None)
    return tensor.numel() * tensor.element_size() * 8


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stored_bits(model: nn.Module) -> int:
    """Parameters and persistent buffers at their stored precision (what a device must hold)."""
    return sum(tensor_bits(t) for t in model.state_dict().values())


@torch.no_grad()
def count_flops(forward: Forward) -> int:
    """Floating-point operations of one call (a multiply-add counts 2), as torch's flop counter sees them."""
    with FlopCounterMode(display=False) as counter:
        forward()
    return int(counter.get_total_flops())


@contextmanager
def threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def latency_ms(forward: Forward, device: torch.device, warmup: int = 3, repeats: int = 10) -> dict[str, float]:
    """Median and spread of wall time per call after warm-up (synchronized on CUDA)."""
    for _ in range(warmup):
        forward()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "repeats": repeats}


class RssSampler:
    """Samples this process's resident set size in a thread; ``peak`` is the highest value seen."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval_s)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


@torch.no_grad()
def peak_cpu_tensor_bytes(forward: Forward) -> int:
    """Peak of CPU tensor memory allocated during one call above what was live before it (activations and
    temporaries; weights are counted by :func:`stored_bits`), from torch.profiler's memory events: each op's
    self allocation minus frees, in time order. Allocations freed inside one op are not seen."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        forward()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


@torch.no_grad()
def peak_memory(forward: Forward, device: torch.device) -> dict[str, float]:
    """Peak process RSS during one call and its rise over the RSS before it; the peak of tensor memory the
    call allocates (CPU: ``peak_tensor_mib`` from the profiler, a separate call; CUDA: ``peak_cuda_mib``, all
    allocated tensors including weights) (MiB)."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with RssSampler() as sampler:
        before = sampler.peak
        forward()
        sync(device)
    out["peak_rss_mib"] = sampler.peak / 2**20
    out["rss_rise_mib"] = (sampler.peak - before) / 2**20
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        out["peak_tensor_mib"] = peak_cpu_tensor_bytes(forward) / 2**20
    return out
