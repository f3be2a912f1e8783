"""The papers' claims as data, checked against a study's runs: the scorecard.

Each study of a config lists the claims it tests (``claims:``), written before its runs: where the claim comes
from, the paper's value, and a test on this study's runs. A test is evaluated per seed and per (dataset, model)
panel; the verdict comes from the seeds alone: **met** when every seed passes, **not met** when none does,
**inconclusive** when the seeds disagree, **not run** when the runs the test needs are missing. Nothing here
reads prose: a claim's verdict changes only when its runs or its pre-registered test change.

Test kinds (values in the metric's own units: accuracy 0.015 is 1.5 points; lower-is-better metrics such as
perplexity count a rise as the drop):

- ``drop_at_most`` {chain, max_drop[, reference, relative]}: the chain loses at most ``max_drop`` against the
  base model (or the ``reference`` chain; with ``relative: true``, as a share of the reference's value).
- ``beats`` {chain, other[, margin]}: chain is better than other by more than ``margin``; ``chain`` and
  ``other`` may be equal-length lists of pairs, all of which must hold.
- ``reduction_within`` {cost, max_drop, min_factor}: the best reduction of ``cost`` (base / chain) among the
  chains within ``max_drop`` of the base reaches ``min_factor``.
- ``reduces`` {chain, cost, min_factor[, reference]}: the chain divides ``cost`` by at least ``min_factor``
  against the base (or the ``reference`` chain), whatever its accuracy (e.g. early exit alone saves BitOps).
- ``at_most`` / ``at_least`` {chain, column, value}: a recorded column of the chain (e.g. ``stage_time_s``,
  ``peak_rss_mib``) is at most / at least ``value``.
- ``model_within`` {model, reference, max_drop[, chain]}: across models of one dataset (variants trained from
  scratch), ``model`` loses at most ``max_drop`` against the ``reference`` model (same chain, default base).
- ``benchmark_at_most`` / ``benchmark_at_least`` {file, select, field, value}: a number in a benchmark's output
  rather than in the study's runs (e.g. STAT's time at Llama-2-7B shape, ``benchmarks/stat_timing.py``):
  ``file`` holds JSON lines (a path from the repository root, e.g. ``reports/benchmarks/out/stat_llama7b.log``),
  the last line whose keys equal ``select`` is read and its ``field`` (dotted for nested keys) compared with
  ``value``; judged once, "not run" while the file or the line is missing.
- ``decided_order`` {order}: the study's chain deriver (e.g. the order study's topological sort) decides the
  given order, e.g. ``[distill, prune, quant, exit]``, with a won edge between every consecutive pair (ties do
  not count: they leave the sort to a fixed fallback).

A test that takes the best over every chain of a panel (``reduction_within``) is "not run" while an experiment
of that panel is missing (``missing``: the rows of ``missing.csv`` beside a report made from a run cut short) and
the chains that ran do not meet it: a chain not yet run could. A met is final, as more chains only add
candidates.

Every test takes ``across_seeds: true``: judged once on all seeds' runs instead of per seed (for a deriver whose
pre-registered protocol says how seeds combine, so the scorecard and ``decision.json`` agree); the verdict is then
met or not met.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from slimbench.atomic import write_atomically
from slimbench.errors import ConfigError
from slimbench.lazy import lazy_module
from slimbench.registry import Registry
from slimbench.results import study_metric
from slimbench.stages import BASE

pd = lazy_module("pandas")

LOWER_IS_BETTER = {"perplexity", "nll", "loss", "eval_loss"}
WHOLE_PANEL = {"reduction_within"}  # tests that take the best over every chain of the panel
VERDICTS = ("met", "not met", "inconclusive", "not run")


@dataclass(frozen=True)
class Outcome:
    """One seed's result: the measured value and whether the test passed."""

    value: float
    passed: bool


# A test: (one panel's runs of one seed, the metric, the test's options, the study's deriver or None) ->
# Outcome, or None when the runs it needs are missing.
Test = Callable[["pd.DataFrame", str, dict[str, Any], Any], "Outcome | None"]
TESTS: Registry[Test] = Registry("claim test")


def metric_of(runs: pd.DataFrame, chain: str, column: str) -> float | None:
    rows = runs[runs["chain"] == chain]
    return None if rows.empty or column not in rows or rows[column].isna().all() else float(rows[column].mean())


def drop(base: float, value: float, metric: str) -> float:
    """How much worse ``value`` is than ``base`` (positive = worse)."""
    return value - base if metric in LOWER_IS_BETTER else base - value


@TESTS.register("drop_at_most")
def drop_at_most(runs: pd.DataFrame, metric: str, test: dict[str, Any], _: Any) -> Outcome | None:
    base, value = metric_of(runs, test.get("reference", BASE), metric), metric_of(runs, test["chain"], metric)
    if base is None or value is None:
        return None
    lost = drop(base, value, metric) / (abs(base) if test.get("relative") else 1.0)
    return Outcome(lost, lost <= test["max_drop"])


@TESTS.register("beats")
def beats(runs: pd.DataFrame, metric: str, test: dict[str, Any], _: Any) -> Outcome | None:
    chains, others = test["chain"], test["other"]
    chains, others = ([chains], [others]) if isinstance(chains, str) else (chains, others)
    gains = []
    for chain, other in zip(chains, others):
        mine, theirs = metric_of(runs, chain, metric), metric_of(runs, other, metric)
        if mine is None or theirs is None:
            return None
        gains.append(drop(mine, theirs, metric))  # how much worse the other is
    return Outcome(sum(gains) / len(gains), all(g > test.get("margin", 0.0) for g in gains))


@TESTS.register("reduction_within")
def reduction_within(runs: pd.DataFrame, metric: str, test: dict[str, Any], _: Any) -> Outcome | None:
    cost = test["cost"]
    base_metric, base_cost = metric_of(runs, BASE, metric), metric_of(runs, BASE, cost)
    if base_metric is None or base_cost is None:
        return None
    means = runs.groupby("chain")[[metric, cost]].mean()
    within = means[[drop(base_metric, v, metric) <= test["max_drop"] for v in means[metric]]]
    best = float((base_cost / within[cost]).max()) if len(within) else 1.0
    return Outcome(best, best >= test["min_factor"])


@TESTS.register("reduces")
def reduces(runs: pd.DataFrame, metric: str, test: dict[str, Any], _: Any) -> Outcome | None:
    cost = test["cost"]
    reference, value = metric_of(runs, test.get("reference", BASE), cost), metric_of(runs, test["chain"], cost)
    if reference is None or not value:
        return None
    return Outcome(reference / value, reference / value >= test["min_factor"])


def bounded(value: float, test: dict[str, Any], below: bool) -> Outcome:
    return Outcome(value, value <= test["value"] if below else value >= test["value"])


def bound(runs: pd.DataFrame, test: dict[str, Any], below: bool) -> Outcome | None:
    value = metric_of(runs, test["chain"], test["column"])
    return None if value is None else bounded(value, test, below)


TESTS.add("at_most", lambda runs, metric, test, _: bound(runs, test, below=True))
TESTS.add("at_least", lambda runs, metric, test, _: bound(runs, test, below=False))


@TESTS.register("model_within")
def model_within(runs: pd.DataFrame, metric: str, test: dict[str, Any], _: Any) -> Outcome | None:
    chain = test.get("chain", BASE)
    mine = metric_of(runs[runs["model"] == test["model"]], chain, metric)
    reference = metric_of(runs[runs["model"] == test["reference"]], chain, metric)
    if mine is None or reference is None:
        return None
    lost = drop(reference, mine, metric)
    return Outcome(lost, lost <= test["max_drop"])


@TESTS.register("decided_order")
def decided_order(runs: pd.DataFrame, metric: str, test: dict[str, Any], deriver: Any) -> Outcome | None:
    """Met only when the decision forces the order: every consecutive pair of it is a won edge (a tie adds no
    edge, and a sort of tied pairs would fall back on a fixed list). Not run unless every input chain ran."""
    if deriver is None:
        raise ConfigError("claim test 'decided_order' needs a study with 'derive:' (e.g. derive: order).")
    order = list(test["order"])
    present = set(runs["chain"])
    needed = set(deriver.inputs(list(present)))
    pairs = {frozenset((a, b)) for a in order for b in order if a != b}
    covered = {frozenset(c.split("+")[i].split("-")[0] for i in (1, 2)) for c in needed}
    if not needed or not pairs <= covered:
        return None
    decision = deriver.decide(runs, metric, list(present), 0, 0)
    edges = {tuple(e) for e in decision.get("edges", [])}
    forced = decision.get("order") == order and all((a, b) in edges for a, b in zip(order, order[1:]))
    return Outcome(float(forced), forced)


CROSS_MODEL = {"model_within"}  # tests that compare models: their panel is a dataset
BENCHMARK = {"benchmark_at_most": True, "benchmark_at_least": False}  # kind -> below; read a benchmark's output


def benchmark_value(test: dict[str, Any], root: Path | None) -> float | None:
    """The ``field`` of the last JSON line of ``root / file`` whose keys equal ``select``; None if absent (or no
    ``root`` is given)."""
    import json

    path = root / test["file"] if root is not None else None
    if path is None or not path.is_file():
        return None
    value = None
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the logs also hold warnings and progress lines
            continue
        if not isinstance(record, dict) or any(record.get(k) != v for k, v in test.get("select", {}).items()):
            continue
        for key in test["field"].split("."):
            record = record.get(key) if isinstance(record, dict) else None
        value = float(record) if isinstance(record, (int, float)) else value
    return value


def card_row(study: str, claim: dict[str, Any], dataset: str, model: str, metric: str, outcomes: list[Outcome],
             seeds: int) -> dict[str, Any]:
    """One scorecard row: the claim, ours over its outcomes and the verdict."""
    test = claim["test"]
    return {"study": study, "claim": claim["id"], "statement": claim["claim"], "source": claim["source"],
            "paper": claim["paper"], "dataset": dataset, "model": model, "test": describe(test, metric),
            "ours": shown([o.value for o in outcomes], metric, test["kind"], bool(test.get("relative")),
                          test.get("column", test.get("field", ""))),
            "seeds": len(outcomes), "verdict": verdict(outcomes, seeds)}


def score_benchmark(claim: dict[str, Any], study: str, root: Path | None) -> dict[str, Any]:
    """One scorecard row for a claim judged once on a benchmark's output (see BENCHMARK)."""
    test = claim["test"]
    value = benchmark_value(test, root)
    outcomes = [] if value is None else [bounded(value, test, BENCHMARK[test["kind"]])]
    return card_row(study, claim, claim.get("dataset", "-"), f"benchmark: {test['file']}", test["field"], outcomes, 1)


def panels_of(runs: pd.DataFrame, claim: dict[str, Any]) -> list[tuple[str, str]]:
    if claim["test"]["kind"] in CROSS_MODEL:
        test = claim["test"]
        both = [d for d, models in runs.groupby("dataset", sort=False)["model"]
                if {test["model"], test["reference"]} <= set(models)] if len(runs) else []
        label = f"{test['model']} vs {test['reference']}"
        return [(d, label) for d in both if claim.get("dataset", d) == d] or [(claim.get("dataset", "-"), label)]
    found = list(dict.fromkeys(zip(runs["dataset"], runs["model"]))) if len(runs) else []
    wanted = [(d, m) for d, m in found if claim.get("dataset", d) == d and claim.get("model", m) == m]
    return wanted or [(claim.get("dataset", "-"), claim.get("model", "-"))]


def verdict(outcomes: list[Outcome], expected_seeds: int) -> str:
    """From the seeds alone; "not run" unless every seed of the study has a result (a missing seed could
    have disagreed)."""
    if not outcomes or len(outcomes) < expected_seeds:
        return "not run"
    passed = {o.passed for o in outcomes}
    return "inconclusive" if len(passed) > 1 else ("met" if passed == {True} else "not met")


def shown(values: list[float], metric: str, kind: str, relative: bool = False, column: str = "") -> str:
    """mean +- std (n seeds) in the units a reader expects: points for [0, 1] metrics' drops and gains."""
    if not values:
        return "-"
    scale, unit = 1.0, ""
    if relative:
        scale, unit = 100.0, "%"
    elif kind in ("drop_at_most", "beats", "model_within") and metric not in LOWER_IS_BETTER:
        scale, unit = 100.0, " pt"
    elif kind in ("reduction_within", "reduces"):
        unit = "x"
    elif column.endswith(("_s", "seconds")):
        unit = " s"
    elif column.endswith("_mib"):
        unit = " MiB"
    series = pd.Series(values, dtype=float) * scale
    spread = f" +- {series.std(ddof=1):.2f}" if len(series) > 1 else ""
    return f"{series.mean():.3g}{spread}{unit} (n={len(series)})"


def score_study(runs: pd.DataFrame, metric: str, claims: list[dict[str, Any]], study: str,
                deriver: Any = None, seeds: int = 1, missing: pd.DataFrame | None = None,
                root: Path | None = None) -> pd.DataFrame:
    """One row per (claim, panel): the claim, the paper's value, ours over seeds, and the verdict; ``seeds`` is how
    many seeds the study runs (fewer results is "not run"); each panel is judged on its own task metric;
    ``missing`` names experiments not run (see WHOLE_PANEL; a panel with no run at all is scored "not run");
    benchmark files are read below ``root``."""
    incomplete = set(zip(missing["dataset"], missing["model"])) if missing is not None else set()
    # every panel the study runs, also one whose runs are all missing (it is "not run", never left out)
    planned = runs if missing is None else pd.concat([runs, missing[["dataset", "model"]]], ignore_index=True)
    rows = []
    for claim in claims:
        test = claim["test"]
        if test["kind"] in BENCHMARK:
            rows.append(score_benchmark(claim, study, root))
            continue
        check = TESTS.get(test["kind"])
        for dataset, model in panels_of(planned, claim):
            if not len(runs):
                panel = runs
            elif test["kind"] in CROSS_MODEL:
                panel = runs[runs["dataset"] == dataset]
            else:
                panel = runs[(runs["dataset"] == dataset) & (runs["model"] == model)]
            own = study_metric(panel, metric)  # a study may mix tasks: each panel on its own metric
            outcomes = []
            if test.get("across_seeds"):  # one judgement on every seed, once every seed has run
                seen = panel["seed"].nunique() if len(panel) else 0
                outcome = check(panel, own, test, deriver) if seen >= seeds else None
                outcomes = [outcome] * seen if outcome is not None else []
            elif len(panel):
                found = (check(seed_runs, own, test, deriver) for _, seed_runs in panel.groupby("seed"))
                outcomes = [outcome for outcome in found if outcome is not None]
            if test["kind"] in WHOLE_PANEL and (dataset, model) in incomplete and not all(o.passed for o in outcomes):
                outcomes = []  # a chain not yet run could still meet it: "not run"
            rows.append(card_row(study, claim, dataset, model, own, outcomes, seeds))
    return pd.DataFrame(rows, columns=["study", "claim", "statement", "source", "paper", "dataset", "model", "test",
                                       "ours", "seeds", "verdict"])


def describe(test: dict[str, Any], metric: str) -> str:
    """The pre-registered test in words, as the scorecard prints it."""
    options = ", ".join(f"{k}={v}" for k, v in test.items() if k != "kind")
    return f"{test['kind']}({options}) on {metric}"


def scorecard_markdown(card: pd.DataFrame, title: str) -> str:
    if card.empty:  # e.g. the smoke config: its studies exercise the code and check no paper
        return (f"# {title}\n\nNo claim checks: no study here names a paper's claim (a study's `claims`). "
                "The papers' claims are checked by config/default.yaml: reports/default/SCORECARD.md.\n")
    counts = card["verdict"].value_counts()
    summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in VERDICTS)
    columns = ["study", "claim", "statement", "paper", "dataset", "model", "ours", "verdict", "source", "test"]
    return f"# {title}\n\n{len(card)} claim checks: {summary}.\n\n" + card[columns].to_markdown(index=False) + "\n"


def write_scorecard(card: pd.DataFrame, out: Path, stem: str, title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.csv", out / f"{stem}.md"]
    write_atomically(paths[0], lambda tmp: card.to_csv(tmp, index=False))
    write_atomically(paths[1], lambda tmp: tmp.write_text(scorecard_markdown(card, title)))
    return paths
