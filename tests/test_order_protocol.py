"""The pre-registered pair rule of the order studies (methods/order_graph.py, Protocol) and the order_prereg
study's configuration: verdicts worked out by hand, the rule read from the config and recorded in decisions
and tables, and the stages of the new study chained on a tiny net."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

from methods.order import edge_bits, quant_bits
from methods.order_graph import LEGACY, Protocol, judge_pair, pairwise_all, pareto_winner
from methods.order_stages import TunedExit
from slimbench.config import experiments, load_config
from slimbench.derive import deriver_of
from slimbench.errors import ConfigError
from slimbench.stages import STAGES, parse_chain

from test_order_known_answers import apply, context, easy_data, one_thread, tiny_resnet  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
PREREG = {"operating_point": "pareto", "tolerance": 0.005, "cost_tolerance": 0.05, "agreement": "every_seed",
          "ties": "tie", "seeds": [0, 1]}


def seeds(*values: float) -> pd.Series:
    return pd.Series(values, index=range(len(values)))


# ----------------------------------------------------------------------------------------------- the rule
def test_pareto_rule_by_hand() -> None:
    rule = Protocol.from_config(PREREG)
    assert pareto_winner(0.80, 0.70, 100, 100, rule) == 1  # more accurate at the same cost
    assert pareto_winner(0.80, 0.70, 100, 104, rule) == 1  # 4% apart: same cost within 5%
    assert pareto_winner(0.80, 0.70, 100, 50, rule) is None  # more accurate but twice the BitOps: incomparable
    assert pareto_winner(0.80, 0.70, 50, 100, rule) == 1  # more accurate and cheaper
    assert pareto_winner(0.802, 0.80, 50, 100, rule) == 0  # 0.2 pt <= 0.5 pt: a tie, whatever the cost
    cheaper_wins = Protocol.from_config({**PREREG, "ties": "fewer_bitops", "agreement": "mean"})
    assert pareto_winner(0.802, 0.80, 50, 100, cheaper_wins) == 1


def test_every_seed_must_agree_and_reasons_are_reported() -> None:
    rule = Protocol.from_config(PREREG)
    assert judge_pair(seeds(0.80, 0.79), seeds(0.70, 0.71), 100, 100, None, rule) == (1, "won")
    assert judge_pair(seeds(0.90, 0.70), seeds(0.70, 0.72), 100, 100, None, rule) == (0, "seeds disagree")
    mean_rule = Protocol.from_config({**PREREG, "agreement": "mean"})
    assert judge_pair(seeds(0.90, 0.70), seeds(0.70, 0.72), 100, 100, None, mean_rule) == (1, "won")
    assert judge_pair(seeds(0.80, 0.80), seeds(0.70, 0.70), 100, 30, None, rule) == (0, "incomparable")
    only_seed_1 = Protocol.from_config({**PREREG, "seeds": [1]})  # seed 0 says A, seed 1 says B
    assert judge_pair(seeds(0.90, 0.70), seeds(0.70, 0.72), 100, 100, None, only_seed_1) == (-1, "won")
    # a protocol seed not run by one order: no edge from the other seed alone (order_prereg's PEQ had seed 0 only)
    assert judge_pair(seeds(0.80), seeds(0.70, 0.71), 100, 100, None, rule) == (0, "missing seeds")
    assert judge_pair(seeds(0.80), seeds(0.70), 100, 100, None, only_seed_1) == (0, "no common seeds")


def test_legacy_rule_is_the_order_studys_matched_cost_rule() -> None:
    # the order study's D/P pair: D->P 65.61% at 15.4x, P->D 74.02% at 3.9x (reports/default/order/README.md)
    base = (0.8322, 6.533e10)
    ab, ba = seeds(0.6561, 0.6561), seeds(0.7402, 0.7402)
    assert judge_pair(ab, ba, 6.533e10 / 15.4, 6.533e10 / 3.9, base, LEGACY) == (1, "won")  # D->P, by extrapolation
    prereg = Protocol.from_config(PREREG)
    assert judge_pair(ab, ba, 6.533e10 / 15.4, 6.533e10 / 3.9, base, prereg) == (0, "incomparable")


@pytest.mark.parametrize("block, problem", [
    ({k: v for k, v in PREREG.items() if k != "ties"}, "missing"),
    ({**PREREG, "tolerence": 0.1}, "unknown key"),
    ({**PREREG, "operating_point": "interpolate"}, "operating_point"),
    ({**PREREG, "tolerance": -0.1}, "tolerance"),
    ({**PREREG, "ties": "fewer_bitops"}, "every_seed"),
    ({**PREREG, "operating_point": "matched_cost"}, "every_seed"),
])
def test_a_bad_protocol_is_named(block: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Protocol.from_config(block)


# ----------------------------------------------------------------------------------------------- from the config
def order_config_path(tmp_path: Path, studies: tuple[str, ...] = ("order", "order_prereg"), **protocol: Any) -> Path:
    """default.yaml with only the given studies (the others may be other people's work in progress)."""
    raw = yaml.safe_load((REPO / "config" / "default.yaml").read_text())
    raw["studies"] = {k: v for k, v in raw["studies"].items() if k in studies}
    if protocol:
        raw["studies"]["order_prereg"]["protocol"].update(protocol)
    raw["results_dir"], raw["reports_dir"] = str(tmp_path / "results"), str(tmp_path / "reports")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def order_config(tmp_path: Path, **protocol: Any) -> dict[str, Any]:
    return load_config(order_config_path(tmp_path, **protocol))


def runs(protocol_study: dict[str, Any] | None = None) -> pd.DataFrame:
    """D/P both orders: D->P cheaper and less accurate (the pair where the two rules part)."""
    rows = [("base", 0.83, 64.0), ("base+distill+prune-0.5", 0.66, 4.0), ("base+prune-0.5+distill", 0.74, 16.0)]
    frame = pd.DataFrame([{"dataset": "d", "model": "m", "seed": s, "chain": c, "accuracy": a + 0.001 * s,
                           "bitops": b} for c, a, b in rows for s in (0, 1)])
    if protocol_study is not None:
        frame.attrs["study"] = protocol_study
    return frame


def test_the_study_protocol_decides_and_is_recorded(tmp_path: Path) -> None:
    config = order_config(tmp_path)
    prereg = deriver_of(config, "order_prereg").decide(runs(), "accuracy", list(runs()["chain"]), None, 0)
    assert prereg["protocol"] == {**PREREG, "metric": "accuracy", "random_orders": 2, "random_seed": 0}
    assert prereg["pairs"] == [{"A": "distill", "B": "prune", "winner": "incomparable"}] and prereg["edges"] == []
    legacy = deriver_of(config, "order").decide(runs(), "accuracy", list(runs()["chain"]), None, 0)
    assert legacy["protocol"]["operating_point"] == "matched_cost" and legacy["edges"] == [("distill", "prune")]
    table = pairwise_all(runs(config["studies"]["order_prereg"]), "accuracy")
    assert table["winner"].tolist() == ["incomparable"]
    assert table["rule"].tolist() == ["accuracy, pareto, tol 0.005, cost tol 0.05, every_seed of seeds 0,1, ties: tie"]
    assert pairwise_all(runs(), "accuracy")["winner"].tolist() == ["D->P"]  # no study attached: the legacy rule


def test_protocol_seeds_must_be_run_by_the_study(tmp_path: Path) -> None:
    config = order_config(tmp_path, seeds=[0, 7])
    with pytest.raises(ConfigError, match=r"seeds \[7\]"):
        deriver_of(config, "order_prereg")


def test_prereg_study_configures_every_order_any_rule_derived(tmp_path: Path) -> None:
    config = order_config(tmp_path)
    study = config["studies"]["order_prereg"]
    short = {"distill": "D", "prune": "P", "qat": "Q", "early_exit": "E"}
    orders = {"".join(short[c.name] for c in parse_chain(chain)): chain for chain in study["chains"]}
    for order in ("DPQE", "EQPD", "PDQE", "EQDP"):  # paper, reverse, and the order study's first derived pair
        assert order in orders
    assert all(a + b in orders for a in "DPQE" for b in "DPQE" if a != b)  # every pairwise order
    assert {c for c in study["chains"] if "qat-4" in c or "qat-2" in c}  # the low-bit regime
    assert [e.model for e in experiments(config, "order_prereg")][0] == "resnet34_cifar"
    student = config["models"][study["stages"]["distill"]["student"]]
    assert student["blocks"] == [2, 2, 2, 2] and student["width"] == 64  # ResNet-18, not the pruned ResNet-34
    assert "protocol" not in config["studies"]["order"]  # the order study keeps the rule it was decided with


# ----------------------------------------------------------------------------------------------- the stages chained
def test_distillation_carries_tuned_exits_and_8_bit_edges_to_the_student() -> None:
    data = easy_data(64)
    ctx = context(data, epochs=1)
    student = {"family": "cifar_resnet", "blocks": [1, 1], "width": 4}
    model = apply("qat", tiny_resnet(), ctx, "4", calibration=32, epochs=0)
    model = apply("early_exit", model, ctx, "0.01", exits=2, width=8, holdout=0.25, epochs=1)
    threshold = model.threshold
    distill = STAGES.get("distill")
    pupil = distill(model, ctx, **distill.resolve_models(distill.resolve(None, {"student": "small", "epochs": 1}),
                                                         {"small": student}))
    assert isinstance(pupil, TunedExit) and pupil.threshold == threshold and len(pupil.points) == 1
    assert quant_bits(pupil) == 4 and edge_bits(pupil) == 8
    assert pupil(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_paper_twins_match_the_default_studies(tmp_path: Path) -> None:
    """Same chains, protocol (but its seeds) and claims at paper scale; the twins load and validate."""
    raws = {name: yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text()) for name in ("default", "paper")}
    for study in ("order_prereg", "order_pqd"):
        default, paper = (raws[name]["studies"][study] for name in ("default", "paper"))
        assert default["chains"] == paper["chains"] and default["claims"] == paper["claims"]
        if "protocol" in default:
            assert {**default["protocol"], "seeds": None} == {**paper["protocol"], "seeds": None}
            assert paper["protocol"]["seeds"] == paper["seeds"]
    raw = raws["paper"]
    raw["studies"] = {k: v for k, v in raw["studies"].items() if k in ("order_prereg", "order_pqd")}
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "paper.yaml")
    assert deriver_of(config, "order_prereg").configure is not None


def test_pqd_study_gives_both_orders_the_same_budget(tmp_path: Path) -> None:
    """P->Q->D and D->P->Q use the same stages with the same epochs (the study's stage settings), and end in
    the same architecture, so their CPU latency (recorded for every chain) compares like with like."""
    config = load_config(order_config_path(tmp_path, ("order_pqd",)))
    study = config["studies"]["order_pqd"]
    pqd, dpq = "base+prune-0.5+qat-8+kd", "base+kd+prune-0.5+qat-8"
    assert {pqd, dpq} <= set(study["chains"])
    assert sorted(c.name for c in parse_chain(pqd)) == sorted(c.name for c in parse_chain(dpq))
    assert {study["stages"][s]["epochs"] for s in ("prune", "qat", "kd")} and config["evaluation"]["latency"]
