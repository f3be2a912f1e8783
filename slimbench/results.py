"""The metrics record (one JSON per experiment) and a study's records as one table, ``runs.csv``.

``runs.csv`` is the only input of a study's tables, figures, scorecard and comparison: a run's and a committed
reference's report folder are read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slimbench.lazy import lazy_module

pd = lazy_module("pandas")

METRICS_FILE = "metrics.json"
RUNS_FILE = "runs.csv"
MISSING_FILE = "missing.csv"  # beside runs.csv when a report was made from a run cut short
TASK_METRICS = ("accuracy", "mcc", "f1", "perplexity", "mean_iou")  # for runs.csv files without a metric column


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One table row: identity columns, then metrics and cost columns by their own names."""
    row = {k: record[k] for k in ("study", "dataset", "model", "chain", "seed", "metric")}
    row.update(record.get("metrics", {}))
    row.update(record.get("cost", {}))
    row.update({f"relative_{k}": v for k, v in record.get("relative", {}).items()})
    epoch_losses = record.get("train_epoch_losses")
    row["train_loss"] = epoch_losses[-1] if epoch_losses else None  # mean loss of the last training epoch
    row["train_epoch_losses"] = json.dumps(epoch_losses) if epoch_losses else None  # the curve, for train_curves
    row["stage_time_s"] = record.get("stage_time_s")
    row["wall_time_s"] = record.get("wall_time_s")
    row["model_spec"] = json.dumps(record.get("config", {}).get("model"), sort_keys=True)
    return row


def load_records(paths: list[Path]) -> list[dict[str, Any]]:
    """The records, each checked against its checksum (a corrupt one is moved aside with a clear error)."""
    from slimbench.integrity import read_sealed_json

    return [read_sealed_json(Path(p)) for p in paths]


def load_frame(paths: list[Path]) -> pd.DataFrame:
    return pd.DataFrame([flatten(r) for r in load_records(paths)])


def study_metric(frame: pd.DataFrame, default: str | None = None) -> str:
    """The task metric of these runs: their ``metric`` column, else ``default`` (e.g. the study's), else the first
    task metric present (older runs.csv files lack the column). Call it per (dataset, model) where a study mixes
    tasks (CoLA's mcc beside SST-2's accuracy)."""
    if "metric" in frame and frame["metric"].notna().any():
        return str(frame["metric"].dropna().iloc[0])
    if default is not None:
        return default
    found = [m for m in TASK_METRICS if m in frame]
    if found:
        return found[0]
    raise ValueError(f"no task metric column among {list(frame.columns)[:12]}...")


def read_runs(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)
