"""The scorecard: each claim test on hand-made runs whose verdict is known, and the config's claims resolvable."""

from __future__ import annotations

import pandas as pd
import pytest

from slimbench import claims
from slimbench.claims import score_study
from slimbench.config import REPO, load_config


def runs(rows: list[tuple]) -> pd.DataFrame:
    """(chain, seed, accuracy[, bitops]) rows of one panel; model m, dataset d."""
    return pd.DataFrame([{"dataset": "d", "model": "m", "chain": r[0], "seed": r[1], "accuracy": r[2],
                          "bitops": r[3] if len(r) > 3 else 100.0, "stage_time_s": 10.0 * (r[1] + 1)} for r in rows])


def verdict(frame: pd.DataFrame, test: dict, metric: str = "accuracy", seeds: int = 1) -> tuple[str, str]:
    claim = {"id": "c", "claim": "c", "source": "s", "paper": "p", "test": test}
    row = score_study(frame, metric, [claim], "study", seeds=seeds).iloc[0]
    return row["verdict"], row["ours"]


def test_drop_at_most_is_met_only_when_every_seed_is_within() -> None:
    frame = runs([("base", 0, 0.90), ("base+x", 0, 0.89), ("base", 1, 0.92), ("base+x", 1, 0.906)])
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.015}) == (
        "met", "1.2 +- 0.28 pt (n=2)")  # drops 1.0 and 1.4 points, by hand
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.012})[0] == "inconclusive"
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.005})[0] == "not met"
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+y", "max_drop": 0.1}) == ("not run", "-")


def test_a_missing_seed_leaves_the_claim_not_run() -> None:
    frame = runs([("base", 0, 0.90), ("base+x", 0, 0.89), ("base", 1, 0.92)])  # seed 1 lacks base+x
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.05}, seeds=2)[0] == "not run"
    assert verdict(frame, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.05}, seeds=1)[0] == "met"


def test_each_panel_is_judged_on_its_own_metric() -> None:
    cola = runs([("base", 0, 0.70), ("base+x", 0, 0.695)]).assign(dataset="cola", metric="mcc", mcc=[0.50, 0.10])
    assert verdict(cola, {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.015})[0] == "not met"  # mcc -0.4


def test_tied_pairs_do_not_make_a_decided_order() -> None:
    from slimbench.config import load_plugins
    from slimbench.derive import DERIVERS

    load_plugins()
    methods = ["distill", "prune", "quant", "exit"]
    token = {"distill": "distill", "prune": "prune-0.5", "quant": "quant-8", "exit": "exit-0.9"}
    rows = [("base", 0, 0.9, 100.0)]
    for a in methods:
        for b in methods:
            if a != b:  # every order equal: ties everywhere, no edge
                rows.append((f"base+{token[a]}+{token[b]}", 0, 0.8, 50.0))
    test = {"kind": "decided_order", "order": methods}
    claim = {"id": "c", "claim": "c", "source": "s", "paper": "p", "test": test}
    tied = score_study(runs(rows), "accuracy", [claim], "order", DERIVERS.get("order")).iloc[0]
    assert tied["verdict"] == "not met"
    rank = {m: i for i, m in enumerate(methods)}  # now the earlier method first always wins by 1 point
    won = [(c, s, 0.81 if len(c.split("+")) == 3 and rank[c.split("+")[1].split("-")[0]] < rank[c.split("+")[2].split("-")[0]]
            else acc, b) for c, s, acc, b in rows]
    decided = score_study(runs(won), "accuracy", [claim], "order", DERIVERS.get("order")).iloc[0]
    assert decided["verdict"] == "met"


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


def test_a_panel_whose_runs_are_all_missing_is_scored_not_run() -> None:
    """A run cut short before a dataset started: that dataset's row says "not run" instead of vanishing."""
    frame = runs([("base", 0, 0.90), ("base+x", 0, 0.80)])
    claim = {"id": "c", "claim": "c", "source": "s", "paper": "p", "model": "m",
             "test": {"kind": "drop_at_most", "chain": "base+x", "max_drop": 0.05}}
    missing = pd.DataFrame([{"dataset": "rte", "model": "m", "seed": 0, "chain": c} for c in ("base", "base+x")]
                           + [{"dataset": "rte", "model": "other", "seed": 0, "chain": "base"}])
    card = score_study(frame, "accuracy", [claim], "study", missing=missing)
    assert list(zip(card["dataset"], card["verdict"])) == [("d", "not met"), ("rte", "not run")]


def test_reduction_within_is_not_run_while_a_chain_of_its_panel_is_missing() -> None:
    """A run cut short (missing.csv) may lack the chain with the best reduction: no verdict from the rest."""
    frame = runs([("base", 0, 0.90, 1000.0), ("base+p", 0, 0.895, 100.0)])
    test = {"kind": "reduction_within", "cost": "bitops", "max_drop": 0.01, "min_factor": 859}
    claim = {"id": "c", "claim": "c", "source": "s", "paper": "p", "test": test}
    missing = pd.DataFrame([{"dataset": "d", "model": "m", "seed": 0, "chain": "base+p+q-2"}])
    assert score_study(frame, "accuracy", [claim], "study", missing=missing).iloc[0]["verdict"] == "not run"
    elsewhere = missing.assign(model="other")  # another panel's gap does not matter here
    assert score_study(frame, "accuracy", [claim], "study", missing=elsewhere).iloc[0]["verdict"] == "not met"
    reached = {**claim, "test": {**test, "min_factor": 10}}  # met by the chains that ran: more chains cannot undo it
    assert score_study(frame, "accuracy", [reached], "study", missing=missing).iloc[0]["verdict"] == "met"
    named = {**test, "kind": "reduces", "chain": "base+p", "min_factor": 10}  # a test of named chains is judged
    assert verdict(frame, named)[0] == "met"
    assert score_study(frame, "accuracy", [{**claim, "test": named}], "study",
                       missing=missing).iloc[0]["verdict"] == "met"


def test_reduces_divides_the_reference_cost_whatever_the_accuracy() -> None:
    frame = runs([("base", 0, 0.90, 1000.0), ("base+e", 0, 0.50, 800.0), ("base+q", 0, 0.9, 250.0)])
    assert verdict(frame, {"kind": "reduces", "chain": "base+e", "cost": "bitops", "min_factor": 1.25}) == (
        "met", "1.25x (n=1)")
    assert verdict(frame, {"kind": "reduces", "chain": "base+e", "cost": "bitops", "min_factor": 1.3})[0] == "not met"
    assert verdict(frame, {"kind": "reduces", "chain": "base+e", "cost": "bitops", "min_factor": 3,
                           "reference": "base+q"})[0] == "not met"  # 250 / 800


def test_across_seeds_judges_once_on_every_seed() -> None:
    frame = runs([("base+x", 0, 0.9), ("base+x", 1, 0.9)])  # stage_time_s 10 and 20: per seed one passes
    test = {"kind": "at_most", "chain": "base+x", "column": "stage_time_s", "value": 15}
    assert verdict(frame, test, seeds=2)[0] == "inconclusive"
    assert verdict(frame, {**test, "across_seeds": True}, seeds=2)[0] == "met"  # the mean of both, 15
    assert verdict(frame[frame["seed"] == 0], {**test, "across_seeds": True}, seeds=2)[0] == "not run"


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


def test_a_claim_naming_a_chain_its_study_does_not_run_is_refused() -> None:
    from slimbench.config import read_config, validate_config
    from slimbench.errors import ConfigError

    config = read_config(REPO / "config" / "default.yaml")
    config["studies"]["stat"]["claims"][0]["test"]["chain"] = "base+stat-0.45"
    with pytest.raises(ConfigError, match="claim 'stat_40pct_no_finetune': chain 'base\\+stat-0.45' is not one of"):
        validate_config(config)


def test_a_stale_missing_csv_does_not_hide_runs_that_exist(tmp_path) -> None:
    """A missing.csv left beside a newer runs.csv (e.g. a full rerun copied over a partial report) names runs that
    exist: they are not counted missing, so the whole-panel claim is judged."""
    from slimbench.cli import score

    config = load_config(REPO / "config" / "default.yaml")
    folder = tmp_path / "order_prereg"
    folder.mkdir()
    rows = [{"study": "order_prereg", "dataset": "cifar10_train_holdout", "model": "resnet34_cifar", "chain": c,
             "seed": seed, "metric": "accuracy", "accuracy": 0.9, "bitops": b}
            for seed in (0, 1) for c, b in (("base", 1000.0), ("base+qat-8", 100.0))]
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)
    pd.DataFrame([{k: r[k] for k in ("dataset", "model", "seed", "chain")} for r in rows[1:2]]).to_csv(
        folder / "missing.csv", index=False)  # names base+qat-8 of seed 0, which runs.csv has
    card = score(config, "order_prereg", tmp_path).set_index("claim")
    assert card.loc["prereg_859x_within_1pt", "verdict"] == "not met"  # 10x, judged: nothing is really missing


def test_a_benchmark_claim_reads_the_last_matching_line_of_its_output(tmp_path) -> None:
    """STAT's 7B timing lives in a benchmark's JSON-lines log, not in a study's runs: the claim reads it there."""
    log = tmp_path / "out" / "stat.log"
    log.parent.mkdir()
    log.write_text("\n".join([
        "SyntaxWarning: not JSON",
        '{"phase": ["pass", "mlp", 9.1]}',
        '{"benchmark": "stat_timing", "model": "llama2-7b", "layers_pruned": 1, "extrapolated": {"seconds": 20000}}',
        '{"benchmark": "stat_timing", "model": "bert-base", "layers_pruned": 1, "extrapolated": {"seconds": 5}}',
        '{"benchmark": "stat_timing", "model": "llama2-7b", "layers_pruned": 1, "extrapolated": {"seconds": 797}}']))
    test = {"kind": "benchmark_at_most", "file": "out/stat.log", "field": "extrapolated.seconds", "value": 10800,
            "select": {"benchmark": "stat_timing", "model": "llama2-7b"}}
    claim = {"id": "c", "claim": "c", "source": "s", "paper": "p", "test": test}

    def judged(**change) -> tuple[str, str]:
        row = score_study(runs([]), "accuracy", [{**claim, "test": {**test, **change}}], "study", seeds=2,
                          root=tmp_path).iloc[0]
        return row["verdict"], row["ours"]

    assert judged() == ("met", "797 s (n=1)")  # the last llama2-7b line, not the first (20000) nor bert-base's
    assert judged(value=700) == ("not met", "797 s (n=1)")
    assert judged(kind="benchmark_at_least", value=700)[0] == "met"
    assert judged(file="out/absent.log") == ("not run", "-")
    assert judged(select={"model": "llama2-13b"}) == ("not run", "-")


def test_a_scorecard_without_claims_says_so_and_where_the_claims_are(tmp_path) -> None:
    card = pd.DataFrame(columns=["study", "claim", "statement", "source", "paper", "dataset", "model", "test", "ours",
                                 "seeds", "verdict"])
    md, csv_path = claims.write_scorecard(card, tmp_path, "SCORECARD", "Scorecard of config smoke")[::-1]
    assert md.read_text() == ("# Scorecard of config smoke\n\nNo claim checks: no study here names a paper's claim "
                              "(a study's `claims`). The papers' claims are checked by config/default.yaml: "
                              "reports/default/SCORECARD.md.\n")
    assert pd.read_csv(csv_path).empty  # the CSV keeps its header
