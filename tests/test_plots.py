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
