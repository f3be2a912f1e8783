"""Report (not a test): issue 17's item 5 judged on the idle-GPU runs, by the rule written before them.

    python benchmarks/idle_verdict.py [--config config/default.yaml] [--runs reports/benchmarks/gpu_time/idle_runs.csv]

The rule (reports/benchmarks/README.md, "Item 5's rule for the idle runs", commit 6188ac3), as code:

* **Chains judged:** every chain of a study with a stage that prunes MLP neurons or attention heads (the stage's
  ``applies_to`` names ``mlp_neurons`` or ``attention_heads``; and, by session 12's addendum, edge_vit's
  ``structured_prune`` and ``iterative_prune`` with ``target`` heads or rows) and no ``int8`` or ``fp16`` stage,
  in every seed. The chain's judged stages (with the target where it has one), joined by ``+``, name its method.
* **A chain in one seed**, one row of a ``benchmarks/idle_speedup.py`` table: passes when ``idle_over_flops`` >= 0.8;
  clearly fails when even the top of its interval, ``speedup_idle_ci_high / flops_ratio``, is below 0.8; else
  undecided. A row is judged only when timed as the rule says (at least 50 pairs, at the study's evaluation batch)
  and with a FLOPs ratio and speed-up (finite numbers); any other row, and a chain with no row, counts as not
  timed.
* **A method in a study** is met when every chain and seed passes, not met when any clearly fails, inconclusive
  otherwise (a chain not timed leaves it inconclusive at best).
* **Item 5** is met when every method of every study timed is met, not met when any is not met, inconclusive
  otherwise or when no study was timed; the studies with judged chains but no run are named beside it.

``idle_runs.csv`` lists the runs the rule judges, one row each, added when a run is imported
(``scripts/gpu_import.py`` prints its ``study`` and ``table``): ``study``, ``table`` (its ``idle_speedup.csv``,
relative to ``idle_runs.csv``; each listed once), ``gpu``, ``date``, ``source`` (the calls). A chain timed in several
runs is judged in each: no row is dropped, so a repeat can turn a pass into a failure but never hide one. Writes
``idle_verdict.md`` beside ``idle_runs.csv``. Beside each chain, not deciding anything, the share of the base's
time that did not shrink (:func:`unshrunk_share`) restates its shortfall.
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from slimbench.config import evaluation_settings, experiments, load_config, study_settings
from slimbench.stages import resolve_chain

from gpu_time import read_rows  # beside this file

TARGET = 0.8
PAIRS = 50
PRUNED_STRUCTURES = {"mlp_neurons", "attention_heads"}
PRUNED_TARGETS = {"heads", "rows"}  # edge_vit's structured_prune/iterative_prune: attention heads, MLP rows
EXCLUDING = {"int8", "fp16"}
KEY = ("dataset", "model", "seed", "chain")


def method(chain: str, settings: dict | None = None) -> str | None:
    """The chain's MLP or head pruning stages joined by ``+``; None when it has none or an int8 or fp16 stage.
    ``settings``: the experiment's stage settings, where a stage's ``target`` may be set instead of in the chain."""
    names, pruning = set(), []
    for stage, params in resolve_chain(chain, settings or {}):
        names.add(stage.name)
        if stage.applies_to.needs & PRUNED_STRUCTURES:
            pruning.append(stage.name)
        elif params.get("target") in PRUNED_TARGETS:
            pruning.append(f"{stage.name}-{params['target']}")
    return "+".join(pruning) if pruning and not EXCLUDING & names else None


def judged_methods(config: dict, study: str) -> dict[tuple[str, ...], str]:
    """The study's judged experiments, (dataset, model, seed, chain) as written in a table, with their method."""
    found = {tuple(str(getattr(exp, k)) for k in KEY): method(exp.chain, study_settings(config, exp)[1])
             for exp in experiments(config, study)}
    return {key: name for key, name in found.items() if name}


def number(text: str) -> float | None:
    """A finite number from a table cell, else None (blank, NaN)."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def status(row: dict[str, str]) -> str:
    """``pass``, ``fail`` (clearly) or ``undecided``: one chain in one seed against 0.8 of its FLOPs ratio."""
    if float(row["idle_over_flops"]) >= TARGET:
        return "pass"
    return "fail" if float(row["speedup_idle_ci_high"]) / float(row["flops_ratio"]) < TARGET else "undecided"


def verdict(statuses: list[str], untimed: int) -> str:
    """A method's: ``not met`` if any chain clearly fails, ``met`` if every chain was timed and passes."""
    if "fail" in statuses:
        return "not met"
    return "met" if statuses and not untimed and set(statuses) == {"pass"} else "inconclusive"


def overall(verdicts: list[str]) -> str:
    """Item 5's, over the methods of the studies timed."""
    if "not met" in verdicts:
        return "not met"
    return "met" if verdicts and set(verdicts) == {"met"} else "inconclusive"


@dataclass
class Judged:
    """One judged row, or (``row`` None) a chain and seed that no run timed by the rule."""

    study: str
    method: str
    key: tuple[str, ...]
    row: dict[str, str] | None = None
    run: str = ""
    why_untimed: str = "no run timed it"

    @property
    def status(self) -> str:
        return status(self.row) if self.row else "not timed"


def judge_study(config: dict, study: str, tables: list[tuple[str, list[dict[str, str]]]]) -> list[Judged]:
    """Every judged chain and seed of ``study`` against its runs' rows (``tables``: (name, rows) per run)."""
    every = {tuple(str(getattr(exp, k)) for k in KEY) for exp in experiments(config, study)}
    expected = judged_methods(config, study)
    batch = str(evaluation_settings(config, study)["batch_size"])
    judged, off_rule = [], {}
    for run, rows in tables:
        for row in rows:
            key = tuple(row[k] for k in KEY)
            if key not in expected:
                if key in every or row["chain"] == "base":
                    continue  # the A/A row, or a chain the rule does not judge
                raise ValueError(f"{run}: {dict(zip(KEY, key))} is not an experiment of study '{study}' in "
                                 f"{config['name']}.yaml. Fix: list the table under the study it was timed for.")
            values = [number(row[name]) for name in ("flops_ratio", "idle_over_flops", "speedup_idle_ci_high")]
            if None in values:
                off_rule[key] = f"{run}: no FLOPs ratio or speed-up"
            elif (number(row["pairs_idle"]) or 0) >= PAIRS and row["batch"] == batch:
                judged.append(Judged(study, expected[key], key, row, run))
            else:
                off_rule[key] = f"{run}: {row['pairs_idle']} pairs at batch {row['batch']}, not >= {PAIRS} at {batch}"
    timed = {j.key for j in judged}
    judged += [Judged(study, name, key, why_untimed=off_rule.get(key, "no run timed it"))
               for key, name in expected.items() if key not in timed]
    order = {key: i for i, key in enumerate(expected)}
    return sorted(judged, key=lambda j: order[j.key])  # the config's order; a chain's runs in their order


def judge(config: dict, runs_file: Path) -> tuple[list[Judged], list[str]]:
    """Every judged row of the runs listed, and the studies with judged chains that no run timed."""
    runs, listed = defaultdict(list), read_rows(runs_file)
    for run in listed:
        table = runs_file.parent / run["table"]
        if run["study"] not in config["studies"]:
            raise ValueError(f"{runs_file}: '{run['study']}' is not a study of {config['name']}.yaml. Known: "
                             f"{', '.join(config['studies'])}.")
        if not table.is_file():
            raise ValueError(f"{runs_file}: table '{run['table']}' not found at {table}. Fix: give its path "
                             f"relative to the folder of {runs_file.name}.")
        if [other["table"] for other in listed].count(run["table"]) > 1:
            raise ValueError(f"{runs_file}: table '{run['table']}' is listed more than once; list each run once.")
        runs[run["study"]].append((run["table"], read_rows(table)))
    judged = [j for study, tables in runs.items() for j in judge_study(config, study, tables)]
    not_timed = [study for study in config["studies"] if study not in runs and judged_methods(config, study)]
    return judged, not_timed


def fmt(value: float) -> str:
    return f"{value:.3f}"


def unshrunk_share(speedup: float, flops_ratio: float) -> float | None:
    """The shortfall restated as a share of the base's time: the ``f`` that would not shrink if the rest shrank as
    the FLOPs did (Amdahl's law: ``1 / speedup = f + (1 - f) / flops_ratio``). Not a profile: it says how much, not
    which kernels. Negative when the speed-up beats the FLOPs ratio; None without a FLOPs reduction to solve against."""
    if flops_ratio <= 1:
        return None
    return (1 / speedup - 1 / flops_ratio) / (1 - 1 / flops_ratio)


def report(config: dict, judged: list[Judged], not_timed: list[str]) -> str:
    by_method = defaultdict(list)
    for j in judged:
        by_method[(j.study, j.method)].append(j)
    lines = [f"# Item 5 (issue 17) on the idle GPU, {config['name']}.yaml: written by benchmarks/idle_verdict.py", "",
             f"Each chain that prunes MLP neurons or attention heads (no int8 or fp16 stage), timed alone on the GPU "
             f"by benchmarks/idle_speedup.py ({PAIRS} pairs or more, at the study's evaluation batch), passes at "
             f"idle speed-up / FLOPs ratio >= {TARGET} and clearly fails when the top of its interval is below "
             f"{TARGET}. The rule: ../README.md, \"Item 5's rule for the idle runs\".", "",
             "| study | method | chains x seeds | rows timed | pass | undecided | clearly fail | lowest idle / FLOPs "
             "(chain, seed) | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for (study, name), rows in by_method.items():
        statuses = [j.status for j in rows if j.row]
        untimed = len(rows) - len(statuses)
        verdicts.append(verdict(statuses, untimed))
        lowest = min((j for j in rows if j.row), key=lambda j: float(j.row["idle_over_flops"]), default=None)
        worst = f"{fmt(float(lowest.row['idle_over_flops']))} ({lowest.key[3]}, {lowest.key[2]})" if lowest else "-"
        lines.append(f"| {study} | {name} | {len({j.key for j in rows})} | {len(statuses)} | "
                     f"{statuses.count('pass')} | {statuses.count('undecided')} | {statuses.count('fail')} | "
                     f"{worst} | **{verdicts[-1]}** |")
    timed = list(dict.fromkeys(j.study for j in judged))
    summary = (f"**Item 5: {overall(verdicts)}.** Studies timed: {', '.join(timed) or 'none'}. Studies with judged "
               f"chains not timed: {', '.join(not_timed) or 'none'}.")
    if not judged:
        return "\n".join(lines[:-2] + ["No run is listed in idle_runs.csv yet.", "", summary]) + "\n"
    lines += ["", summary, "", "## Every chain and seed", "",
              "Time not shrunk, not part of the rule: the share f of the base's time that would not shrink if the "
              "rest shrank as the FLOPs did, 1 / speed-up = f + (1 - f) / FLOPs ratio (negative: faster than the "
              "FLOPs ratio).", "",
              "| study | dataset | model | seed | chain | FLOPs ratio | idle speed-up [95% interval] | idle / FLOPs | "
              "top of interval / FLOPs | time not shrunk | status | table |", "|" + "---|" * 12]
    for j in judged:
        cells = [j.study, *j.key]
        if j.row:
            ratio = float(j.row["flops_ratio"])
            share = unshrunk_share(float(j.row["speedup_idle"]), ratio)
            cells += [fmt(ratio), f"{fmt(float(j.row['speedup_idle']))} [{fmt(float(j.row['speedup_idle_ci_low']))}, "
                      f"{fmt(float(j.row['speedup_idle_ci_high']))}]", fmt(float(j.row["idle_over_flops"])),
                      fmt(float(j.row["speedup_idle_ci_high"]) / ratio), "" if share is None else fmt(share),
                      j.status, j.run]
        else:
            cells += ["", "", "", "", "", j.status, j.why_untimed]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/default.yaml")
    parser.add_argument("--runs", type=Path, default=Path("reports/benchmarks/gpu_time/idle_runs.csv"))
    args = parser.parse_args()
    config = load_config(args.config)
    judged, not_timed = judge(config, args.runs)
    out = args.runs.with_name("idle_verdict.md")
    out.write_text(report(config, judged, not_timed))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
