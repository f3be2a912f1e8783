"""Cost and task metrics with known answers."""

import math
import mmap
import time

import numpy as np
import pytest
import torch
from torch import nn

from slimbench.metrics import cost
from slimbench.metrics.task import classification_metrics, perplexity


def test_flops_of_a_linear_layer():
    layer = nn.Linear(64, 32)
    x = torch.randn(5, 64)
    assert cost.count_flops(lambda: layer(x)) == 2 * 5 * 64 * 32


def test_flops_of_a_convolution():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 10, 10)
    assert cost.count_flops(lambda: conv(x)) == 2 * 8 * 10 * 10 * 3 * 3 * 3


def test_parameters_and_stored_bits():
    model = nn.Sequential(nn.Linear(10, 4), nn.Linear(4, 2))
    assert cost.count_parameters(model) == 10 * 4 + 4 + 4 * 2 + 2
    assert cost.stored_bits(model) == 32 * cost.count_parameters(model)
    assert cost.stored_bits(model.half()) == 16 * cost.count_parameters(model)


def test_peak_memory_sees_a_known_allocation():
    size = 64 * 2**20

    def forward() -> torch.Tensor:
        pages = mmap.mmap(-1, size)  # fresh anonymous pages: resident once written, whatever malloc keeps around
        pages.write(b"\x01" * size)
        block = torch.ones(size // 4)  # 64 MiB of float32 for the profiler's tensor peak
        time.sleep(0.3)  # held long enough for the RSS sampler to see it on a loaded machine
        pages.close()
        return block.sum()

    measured = cost.peak_memory(forward, torch.device("cpu"))
    assert measured["peak_tensor_mib"] == pytest.approx(64, abs=1)
    assert measured["rss_rise_mib"] > 48


def test_classification_metrics_match_definitions():
    labels, preds = [1, 1, 0, 0], [1, 0, 0, 0]
    out = classification_metrics(labels, preds, "mcc")
    assert out["accuracy"] == 0.75
    assert out["mcc"] == pytest.approx(1 / math.sqrt(3))
    assert classification_metrics(labels, preds, "f1")["f1"] == pytest.approx(2 / 3)


def test_accuracy_is_sklearns_to_the_bit():
    from sklearn.metrics import accuracy_score

    generator = torch.Generator().manual_seed(0)
    for size in (1, 7, 10_000, 12_345):
        labels, preds = (torch.randint(0, 3, (size,), generator=generator).tolist() for _ in range(2))
        assert classification_metrics(labels, preds, "accuracy")["accuracy"] == accuracy_score(labels, preds)
    for labels, preds in (([0, 1], [0]), ([], [])):
        with pytest.raises(ValueError, match="as many predictions as labels, at least one"):
            classification_metrics(labels, preds, "accuracy")


def test_perplexity_is_exp_of_mean_nll():
    assert perplexity(math.log(7) * 10, 10)["perplexity"] == pytest.approx(7)


def test_source_hash_follows_the_code_and_nothing_else(tmp_path) -> None:
    from slimbench.provenance import source_hash

    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "m.py").write_text("x = 1\n")
    (tmp_path / "notes.md").write_text("a")
    first = source_hash(tmp_path)
    (tmp_path / "notes.md").write_text("b")  # outside the sources: same hash
    assert source_hash(tmp_path) == first
    (tmp_path / "methods" / "m.py").write_text("x = 2\n")
    assert source_hash(tmp_path) != first


def test_latency_spread_matches_numpy_percentiles():
    times = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0]
    q1, median, q3 = np.percentile(times, [25, 50, 75])  # numpy's default: linear interpolation
    out = cost.spread(times)
    assert out["median_ms"] == pytest.approx(median)
    assert out["iqr_ms"] == pytest.approx(q3 - q1)
    assert (out["min_ms"], out["max_ms"], out["repeats"]) == (1.0, 10.0, 6)


def test_cpu_latency_runs_at_the_timers_thread_count_and_records_its_keys():
    seen = []

    def forward():
        seen.append(torch.get_num_threads())
        return torch.ones(8).sum()

    before = torch.get_num_threads()
    out = cost.cpu_latency(forward, threads=1, warmup=1, repeats=5)
    assert set(seen) == {1} and torch.get_num_threads() == before
    assert out["repeats"] == 5 and out["threads"] == 1
    assert out["min_ms"] <= out["median_ms"] <= out["max_ms"] and out["iqr_ms"] >= 0


def test_latency_record_keeps_the_metrics_keys():
    layer = nn.Linear(16, 4)
    sizes = []

    def forward_at(batch, device):
        sizes.append((batch, device.type))
        x = torch.randn(batch, 16, device=device)
        return lambda: layer.to(device)(x)

    record = cost.latency_record(forward_at, torch.device("cpu"), batch_size=1, large_batch=64, threads=1,
                                 warmup=1, repeats=3)
    assert set(record) == {"latency_cpu_ms", "latency_cpu_iqr_ms", "latency_cpu_threads", "latency_batch_size"}
    assert sizes == [(1, "cpu")] and record["latency_cpu_threads"] == 1
    if torch.cuda.is_available():
        record = cost.latency_record(forward_at, torch.device("cuda"), 1, 64, 1, 1, 3)
        expected = {"latency_cuda_ms", "latency_cuda_iqr_ms", "latency_cuda_large_ms", "latency_cuda_large_batch"}
        assert expected <= set(record)
