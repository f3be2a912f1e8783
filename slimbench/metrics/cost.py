"""Cost metrics: parameters, stored bits, FLOPs (torch.utils.flop_counter), latency and peak memory.

FLOPs count attention on every backend: torch's counter has no formula for the fused CPU SDPA kernel, so
``scaled_dot_product_attention`` counted 0 on CPU (issue #15: -5.3% for vit_tiny_p4); it is charged here with
torch's own SDPA formula, the same count the math backend's two bmm give.

Latency and memory are measurements, so they belong in benchmarks and reports, never in assertions. CPU
latency goes through ``torch.utils.benchmark.Timer`` (it sets the thread count for the measurement and
returns median and interquartile range); GPU latency through CUDA events around each call, which time the
GPU's own timeline without a host synchronization inside the measurement. A difference between two models
is read from :func:`paired_latency` and :func:`paired_cuda_latency` (calls interleaved with the base, ratio with
an interval), not from two medians taken minutes apart. This process's RSS (:func:`peak_memory`) is a
whole-process figure; a model's own memory comes from a fresh process (``slimbench/metrics/model_memory.py``).
"""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np
import psutil
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry, sdpa_flop_count

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


def _sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    """QK^T and AV of a fused attention op (torch's own formula, GQA included; a causal mask is not discounted)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Fused attention kernels that torch's flop counter has no formula for (torch 2.14: it knows the CUDA flash,
# efficient and cuDNN kernels only), so ``scaled_dot_product_attention`` counted 0 FLOPs on CPU. All take
# (query, key, value, ...) like the ops torch registers ``sdpa_flop`` for.
UNCOUNTED_SDPA = tuple(getattr(torch.ops.aten, name) for name in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable",
    "_scaled_dot_product_attention_math_for_mps") if hasattr(torch.ops.aten, name))


@torch.no_grad()
def count_flops(forward: Forward) -> int:
    """Floating-point operations of one call (a multiply-add counts 2), as torch's flop counter sees them, plus
    attention on every backend: the fused CPU (and MPS / out-of-tree) SDPA kernels are charged torch's own SDPA
    formula, 2 x 2 x batch x heads x N_q x N_k x head_dim, which is what the math backend's two bmm give."""
    mapping = {op: _sdpa_flops for op in UNCOUNTED_SDPA if op not in flop_registry}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
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


def spread(times_ms: list[float]) -> dict[str, float]:
    """Median, interquartile range (75th - 25th percentile, linear interpolation) and extremes."""
    quartiles = statistics.quantiles(times_ms, n=4, method="inclusive") if len(times_ms) > 1 else times_ms * 3
    return {"median_ms": statistics.median(times_ms), "iqr_ms": quartiles[2] - quartiles[0],
            "min_ms": min(times_ms), "max_ms": max(times_ms), "repeats": len(times_ms)}


@torch.no_grad()
def cpu_latency(forward: Forward, threads: int | None = None, warmup: int = 3, repeats: int = 10) -> dict[str, float]:
    """Wall time per call on the CPU through ``torch.utils.benchmark.Timer`` with ``num_threads=threads``
    (default: the current count): ``warmup`` untimed calls, then ``repeats`` samples of one call each (the
    Timer runs two untimed calls before each sample)."""
    from torch.utils import benchmark  # lazy: the memory probe's fresh process imports this module

    threads = threads or torch.get_num_threads()
    timer = benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=threads)
    if warmup:
        timer.timeit(number=warmup)
    measured = benchmark.Measurement.merge(timer.timeit(number=1) for _ in range(repeats))[0]
    return {**spread([t * 1e3 for t in measured.times]), "threads": threads}


@torch.no_grad()
def cuda_latency(forward: Forward, device: torch.device, warmup: int = 3, repeats: int = 10) -> dict[str, float]:
    """GPU time per call from CUDA events recorded around each of ``repeats`` back-to-back calls after
    ``warmup`` calls; a call whose kernels wait for the host's launches counts that wait."""
    for _ in range(warmup):
        forward()
    torch.cuda.synchronize(device)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    for start, end in events:
        start.record()
        forward()
        end.record()
    torch.cuda.synchronize(device)
    return spread([start.elapsed_time(end) for start, end in events])


def latency_record(forward_at: Callable[[int, torch.device], Forward], device: torch.device, batch_size: int,
                   large_batch: int, threads: int, warmup: int, repeats: int) -> dict[str, Any]:
    """The latency entries of a metrics record. ``forward_at(batch, device)`` returns a call of the model on
    a batch of that size on that device. CPU: at ``batch_size`` and ``threads``. GPU (when ``device`` is one):
    at ``batch_size`` (the config's, batch 1 by default) and at ``large_batch``, where throughput, and so the
    speed-up of structured pruning, can be compared with the FLOPs kept."""
    cpu = cpu_latency(forward_at(batch_size, torch.device("cpu")), threads, warmup, repeats)
    out: dict[str, Any] = {"latency_cpu_ms": cpu["median_ms"], "latency_cpu_iqr_ms": cpu["iqr_ms"],
                           "latency_cpu_threads": threads, "latency_batch_size": batch_size}
    if device.type == "cuda":
        for key, size in (("latency_cuda", batch_size), ("latency_cuda_large", large_batch)):
            gpu = cuda_latency(forward_at(size, device), device, warmup, repeats)
            out.update({f"{key}_ms": gpu["median_ms"], f"{key}_iqr_ms": gpu["iqr_ms"]})
        out["latency_cuda_large_batch"] = large_batch
    return out


def interleave(forward: Forward, base_forward: Forward, pairs: int, warmup: int,
               time_call: Callable[[Forward], float]) -> tuple[list[float], list[float]]:
    """The milliseconds of ``pairs`` calls of each model, interleaved A B, B A, A B, ... after ``warmup`` untimed
    pairs; ``time_call(call)`` runs one call and returns its milliseconds. The order alternates because the second
    call of a pair runs on warmer caches (a model paired with itself came out 8% slower first on the CPU)."""
    if pairs < 1:
        raise ValueError(f"paired latency needs at least one pair, got {pairs}")
    own: list[float] = []
    base: list[float] = []
    for _ in range(warmup):
        forward(), base_forward()
    for pair in range(pairs):
        order = ((forward, own), (base_forward, base))
        for call, times in order[::-1] if pair % 2 else order:
            times.append(time_call(call))
    return own, base


def ratio_summary(prefix: str, own: list[float], base: list[float], resamples: int) -> dict[str, float]:
    """The median of the pairs' ratios own/base with a 95% percentile-bootstrap interval of that median
    (``resamples`` resamples of the pairs, seed 0), and the number of pairs."""
    ratios = np.array(own) / np.array(base)
    medians = np.median(np.random.default_rng(0).choice(ratios, (resamples, len(ratios))), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return {f"{prefix}_ratio": float(np.median(ratios)), f"{prefix}_ci_low": float(low),
            f"{prefix}_ci_high": float(high), f"{prefix}_pairs": len(ratios)}


def paired_latency(forward: Forward, base_forward: Forward, num_threads: int, pairs: int, warmup: int = 3,
                   batch_size: int = 1, resamples: int = 2000, clock: Callable[[], float] = time.perf_counter
                   ) -> dict[str, float]:
    """CPU latency of a model against its base, interleaved call by call (:func:`interleave`): each pair's
    ratio A/B sees the same machine state, so load and frequency drift cancel, where one median per model (the
    single-run ``latency_cpu_ms``) does not. Reports the median ratio with its interval (:func:`ratio_summary`),
    both medians and frames per second (``batch_size`` x 1000 / median ms). ``clock`` is for tests."""

    def time_call(call: Forward) -> float:
        start = clock()
        call()
        return (clock() - start) * 1e3

    with threads(num_threads), torch.no_grad():
        own, base = interleave(forward, base_forward, pairs, warmup, time_call)
    own_ms = statistics.median(own)
    return {**ratio_summary("latency_vs_base", own, base, resamples), "latency_paired_ms": own_ms,
            "latency_paired_base_ms": statistics.median(base), "fps_cpu": batch_size * 1e3 / own_ms}


@torch.no_grad()
def paired_cuda_latency(forward: Forward, base_forward: Forward, device: torch.device, pairs: int, warmup: int = 3,
                        resamples: int = 2000) -> dict[str, float]:
    """GPU latency of a model against its base, interleaved call by call as :func:`paired_latency` does on the
    CPU. On a GPU shared by several jobs, a single model's median (:func:`latency_record`) depends on what the
    others were doing at that moment, and its base was timed by another process, earlier; a pair's two calls see
    the same neighbours. Each call is timed by CUDA events with none of this process's work still queued (the
    warm-up's included): its time includes the host's launch gaps and any time the GPU spends on other processes'
    kernels, so ``latency_cuda_paired_ms`` is not comparable with the back-to-back ``latency_cuda_large_ms``.
    Reports ``latency_cuda_vs_base_*`` (:func:`ratio_summary`) and both medians."""

    def time_call(call: Forward) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        call()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end)

    own, base = interleave(forward, base_forward, pairs, warmup, time_call)
    return {**ratio_summary("latency_cuda_vs_base", own, base, resamples),
            "latency_cuda_paired_ms": statistics.median(own), "latency_cuda_paired_base_ms": statistics.median(base)}


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
