"""The scorecard: each claim test on hand-made runs whose verdict is known, and the config's claims resolvable."""

from __future__ import annotations

import pandas as pd
import pytest

from slimbench.claims import score_study
from slimbench.config import REPO, load_config


def runs(rows: list[tuple]) -> pd.DataFrame:
    """(chain, seed, accuracy[, bitops]) rows of one panel; model m, dataset d."""
    return pd.DataFrame([{"dataset": "d", "model": "m", "chain": r[0], "seed": r[1], "accuracy": r[2],
                          "bitops": r[3] if len(r) > 3 else 100.0, "stage_time_s": 10.0 * (r[1] + 1)} for r in rows])


def verdict(frame: pd.DataFrame, test: dict, metric: str = "accuracy") -> tuple[str, str]:
    claim = {"id": "c", "claim": "c", "source": "s", "paper": "p", "test": test}
    row = score_study(frame, metric, [claim], "study").iloc[0]
    return row["verdict"], row["ours"]


def test_drop_at_most_is_met_only_when_every_seed_is_within() -> None:
    frame = runs([("base", 0, 0.90), ("base+x", 0, 0.89), ("base", 1, 0.92), ("base+x", 1, 0.906)])
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.015}) == (
        "met", "1.2 +- 0.28 pt (n=2)")  # drops 1.0 and 1.4 points, by hand
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.012})[0] == "inconclusive"
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.005})[0] == "not met"
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+y", "max_drop": 0.1}) == ("not run", "-")


def test_lower_is_better_metrics_count_a_rise_as_the_drop() -> None:
    frame = runs([("base", 0, 0), ("base+x", 0, 0)]).assign(perplexity=[100.0, 108.0])
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.1, "relative": True},
                   "perplexity") == ("met", "8% (n=1)")  # 108 against 100: 8% worse
    met, shown = verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.05, "relative": True},
                         "perplexity")
    assert met == "not met" and shown == "8% (n=1)"


def test_beats_needs_every_pair_to_hold() -> None:
    frame = runs([("base+a-1", 0, 0.8), ("base+b-1", 0, 0.7), ("base+a-2", 0, 0.6), ("base+b-2", 0, 0.65)])
    test = {"kind": "beats", "chain": ["base+a-1", "base+a-2"], "other": ["base+b-1", "base+b-2"]}
    assert verdict(frame, test)[0] == "not met"
    assert verdict(frame, {**test, "chain": "base+a-1", "other": "base+b-1"})[0] == "met"


def test_reduction_within_takes_the_best_chain_inside_the_drop() -> None:
    frame = runs([("base", 0, 0.90, 1000.0), ("base+p", 0, 0.895, 100.0), ("base+q", 0, 0.80, 1.0)])
    assert verdict(frame, {"kind": "reduction_within", "cost": "bitops", "max_drop": 0.01, "min_factor": 10}) == (
        "met", "10x (n=1)")
    assert verdict(frame, {"kind": "reduction_within", "cost": "bitops", "max_drop": 0.01, "min_factor": 11})[0] == "not met"


def test_model_within_compares_models_of_one_dataset() -> None:
    frame = pd.concat([runs([("base", 0, 0.9)]), runs([("base", 0, 0.895)]).assign(model="small")])
    assert verdict(frame, {"kind": "model_within", "model": "small", "reference": "m", "max_drop": 0.01}) == (
        "met", "0.5 pt (n=1)")


def test_at_most_reads_a_recorded_column() -> None:
    frame = runs([("base+x", 0, 0.9), ("base+x", 1, 0.9)])  # stage_time_s 10 and 20
    assert verdict(frame, {"kind": "at_most", "chain": "base+x", "column": "stage_time_s", "value": 15})[0] == "inconclusive"


@pytest.mark.parametrize("config", ["default", "paper", "smoke"])
def test_every_claim_of_the_configs_is_scored(config: str) -> None:
    cfg = load_config(REPO / "config" / f"{config}.yaml")
    empty = pd.DataFrame(columns=["dataset", "model", "chain", "seed"])
    for name, study in cfg["studies"].items():
        card = score_study(empty, "accuracy", study["claims"], name)
        assert len(card) == len(study["claims"]) and set(card["verdict"]) <= {"not run"}
