"""Figures drawn from a hand-made runs.csv frame: what they plot is checked against the rows themselves."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from slimbench.plots import FIGURES


def runs(curves: dict[tuple[str, int], list[float] | None]) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": "d", "model": "m", "chain": chain, "seed": seed, "accuracy": 0.5,
                          "train_epoch_losses": json.dumps(c) if c else None} for (chain, seed), c in curves.items()])


def test_train_curves_draw_one_line_per_recorded_run() -> None:
    frame = runs({("base", 0): [2.0, 1.0, 0.5], ("base", 1): [2.1, 1.1, 0.6], ("base+kd", 0): None})
    fig = FIGURES.get("train_curves").make(frame, "accuracy")
    lines = fig.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines] == [[2.0, 1.0, 0.5], [2.1, 1.1, 0.6]]
    assert list(lines[0].get_xdata()) == [1, 2, 3]
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["uncompressed"]  # one entry per method


def test_train_curves_refuse_runs_without_curves() -> None:
    with pytest.raises(ValueError, match="train_epoch_losses"):
        FIGURES.get("train_curves").make(runs({("base", 0): None}), "accuracy")


def test_gpu_speedup_divides_the_same_seeds_base_by_hand() -> None:
    from slimbench.plots import TABLES

    def run(chain: str, seed: int, flops: float, b1: float, large: float) -> dict:
        return {"dataset": "d", "model": "m", "chain": chain, "seed": seed, "accuracy": 0.9, "flops": flops,
                "latency_cuda_ms": b1, "latency_cuda_large_ms": large, "latency_cuda_large_batch": 256}

    frame = pd.DataFrame([run("base", 0, 100.0, 10.0, 100.0), run("base+p-0.5", 0, 50.0, 8.0, 55.0),
                          run("base", 1, 100.0, 12.0, 120.0), run("base+p-0.5", 1, 50.0, 12.0, 60.0)])
    row = TABLES.get("gpu_speedup").make(frame, "accuracy").iloc[0]
    # seed 0: FLOPs 100/50 = 2, batch 1 10/8 = 1.25, large 100/55 = 1.8182, over FLOPs 0.9091;
    # seed 1: 2, 12/12 = 1.0, 120/60 = 2.0, 1.0 (each seed against its own base, not the other's)
    assert (row["chain"], row["seeds"], row["large_batch"]) == ("base+p-0.5", 2, 256)
    assert row["flops_ratio"] == pytest.approx(2.0)
    assert row["speedup_batch1"] == pytest.approx((1.25 + 1.0) / 2)
    assert row["speedup_large"] == pytest.approx((100 / 55 + 2.0) / 2)
    assert row["large_over_flops"] == pytest.approx((100 / 55 / 2 + 1.0) / 2)
    assert row["large_over_flops_std"] == pytest.approx(abs(100 / 55 / 2 - 1.0) / 2 ** 0.5)
    cpu = TABLES.get("gpu_speedup").make(frame.drop(columns=["latency_cuda_ms", "latency_cuda_large_ms"]),
                                         "accuracy").iloc[0]  # evaluated without a GPU: no speed-up, FLOPs kept
    assert cpu["flops_ratio"] == pytest.approx(2.0) and pd.isna(cpu["speedup_large"])
    assert "speedup_paired" not in cpu  # runs that did not pair their GPU calls: no empty columns


def test_gpu_speedup_reads_the_paired_ratio_where_the_runs_have_one() -> None:
    from slimbench.plots import TABLES

    def run(chain: str, seed: int, flops: float, large: float, paired: float) -> dict:
        return {"dataset": "d", "model": "m", "chain": chain, "seed": seed, "accuracy": 0.9, "flops": flops,
                "latency_cuda_ms": 1.0, "latency_cuda_large_ms": large, "latency_cuda_vs_base_ratio": paired}

    # the pruned model's single-run medians timed under a neighbour's load: 100 -> 300 ms, a "speed-up" of 1/3;
    # paired call by call with its base, it takes 0.6 and 0.5 of the base's time
    frame = pd.DataFrame([run("base", 0, 100.0, 100.0, 1.0), run("base+p-0.5", 0, 50.0, 300.0, 0.6),
                          run("base", 1, 100.0, 100.0, 1.0), run("base+p-0.5", 1, 50.0, 100.0, 0.5)])
    row = TABLES.get("gpu_speedup").make(frame, "accuracy").iloc[0]
    assert row["speedup_large"] == pytest.approx((1 / 3 + 1.0) / 2)
    assert row["speedup_paired"] == pytest.approx((1 / 0.6 + 2.0) / 2)  # 1.6667 and 2
    assert row["paired_over_flops"] == pytest.approx((1 / 0.6 / 2 + 1.0) / 2)
    assert row["paired_over_flops_std"] == pytest.approx(abs(1 / 1.2 - 1.0) / 2 ** 0.5)


def test_metric_vs_flops_plots_each_panels_own_metric() -> None:
    """A study mixing tasks (crossbench: accuracy beside perplexity): each panel's axis and base line are its own."""
    rows = [{"dataset": "cifar", "model": "vit", "chain": c, "seed": 0, "metric": "accuracy", "accuracy": a,
             "relative_flops_kept": f} for c, a, f in (("base", 0.9, 1.0), ("base+stat-0.3", 0.8, 0.7))]
    rows += [{"dataset": "wiki", "model": "llama", "chain": c, "seed": 0, "metric": "perplexity", "perplexity": p,
              "relative_flops_kept": f} for c, p, f in (("base", 250.0, 1.0), ("base+stat-0.3", 270.0, 0.9))]
    fig = FIGURES.get("metric_vs_flops").make(pd.DataFrame(rows), "accuracy")
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == ["accuracy", "perplexity"]
    dashed = [[line.get_ydata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] for ax in fig.axes[:2]]
    assert dashed == [[0.9], [250.0]]  # the uncompressed model of each panel


def test_metric_vs_flops_lays_seven_panels_in_two_rows_with_one_style_per_method() -> None:
    """Crossbench's seven columns: rows of four, the eighth cell hidden; a method absent from a panel does not shift
    the colours of the others (each keeps the colour the shared legend gives it)."""
    rows = []
    for panel in range(7):
        chains = ["base", "base+stat-0.3", "base+kwon-0.3"] if panel else ["base", "base+kwon-0.3"]
        rows += [{"dataset": f"d{panel}", "model": "m", "chain": c, "seed": 0, "metric": "accuracy",
                  "accuracy": 0.9 - 0.1 * i, "relative_flops_kept": 1.0 - 0.2 * i} for i, c in enumerate(chains)]
    fig = FIGURES.get("metric_vs_flops").make(pd.DataFrame(rows), "accuracy")
    assert len(fig.axes) == 8 and [ax.get_visible() for ax in fig.axes] == [True] * 7 + [False]
    assert tuple(fig.get_size_inches()) == pytest.approx((4 * 5.2, 2 * 4))
    legend = {t.get_text(): h.get_color() for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    for ax in fig.axes[:2]:  # panel 0 lacks stat: kwon must keep its own colour there too
        solid = [line for line in ax.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata())]
        assert any(line.get_color() == legend["kwon"] for line in solid)


def test_the_first_ten_methods_get_tab10s_distinct_hues_and_the_next_ten_their_light_twins():
    """matplotlib's tab10 colours, read from matplotlib: the ten methods of a figure never share a hue, as tab20's own
    order (a strong hue, then its light twin) would give two methods."""
    import matplotlib

    from slimbench.plots import method_styles

    methods = [f"m{i:02d}" for i in range(12)]
    colours = [colour for colour, _ in method_styles(methods).values()]
    assert colours[:10] == [matplotlib.colormaps["tab10"](i) for i in range(10)]
    assert colours[10:] == [matplotlib.colormaps["tab20"](1), matplotlib.colormaps["tab20"](3)]
