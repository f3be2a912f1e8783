"""Chains that a study decides at run time from its own results (e.g. the order study's sorted order).

A study with ``derive: <name>`` runs its configured chains first. Then, for each (dataset, model), the
registered deriver reads the runs of the chains it names, writes a decision (JSON, with the chains to run next
under ``chains``), and those chains run as ordinary experiments. The workflow's checkpoint and
``slimbench study`` both go through here; methods register derivers and the core knows them only by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from slimbench.atomic import atomic_target
from slimbench.config import Experiment, panels
from slimbench.lazy import lazy_module
from slimbench.registry import Registry
from slimbench.results import METRICS_FILE, load_frame, study_metric
from slimbench.stages import BASE, chain_prefixes

pd = lazy_module("pandas")

DECISION_FILE = "decision.json"


@dataclass(frozen=True)
class Deriver:
    """``inputs(chains)``: the configured chains a decision reads (besides base); ``decide(runs, metric, chains,
    random_count, seed)``: the decision record; ``chains(decision)``: the chains it asks for; ``configure(study)``
    (optional): the deriver bound to a study's config (e.g. its pre-registered ``protocol:``)."""

    inputs: Callable[[list[str]], list[str]]
    decide: Callable[[pd.DataFrame, str, list[str], int | None, int], dict[str, Any]]
    chains: Callable[[dict[str, Any]], list[str]]
    configure: Callable[[dict[str, Any]], "Deriver"] | None = None


DERIVERS: Registry[Deriver] = Registry("chain deriver")


def deriver_of(config: dict[str, Any], study: str) -> Deriver | None:
    """The study's deriver, bound to the study's config when it takes one."""
    spec = config["studies"][study]
    if not spec.get("derive"):
        return None
    deriver = DERIVERS.get(spec["derive"])
    return deriver.configure(spec) if deriver.configure else deriver


def decision_path(config: dict[str, Any], study: str, dataset: str, model: str) -> Path:
    """Where the decision of one (study, dataset, model) lives (the workflow checkpoint's output)."""
    return Path(config["reports_dir"]) / config["name"] / study / "derived" / dataset / model / DECISION_FILE


def input_experiments(config: dict[str, Any], study: str, dataset: str, model: str) -> list[Experiment]:
    spec = config["studies"][study]
    chains = [BASE, *deriver_of(config, study).inputs(spec["chains"])]
    return [Experiment(config["name"], study, dataset, model, seed, chain) for seed in spec["seeds"] for chain in chains]


def decide_panel(config: dict[str, Any], study: str, dataset: str, model: str, random_count: int | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """The decision of one (study, dataset, model) from the metrics of its input chains (all must exist)."""
    paths = [e.directory(config["results_dir"]) / METRICS_FILE for e in input_experiments(config, study, dataset, model)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} input metrics missing, e.g. {missing[0]}")
    frame = load_frame(paths)
    return deriver_of(config, study).decide(frame, study_metric(frame), config["studies"][study]["chains"],
                                            random_count, seed)


def write_decision(record: dict[str, Any], out: Path) -> None:
    """Atomically: a killed checkpoint leaves no half-written decision."""
    with atomic_target(out) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")


def derived_chains(config: dict[str, Any], study: str, decision: dict[str, Any]) -> list[str]:
    return deriver_of(config, study).chains(decision)


def evaluated_chains(config: dict[str, Any], study: str, decision: dict[str, Any]) -> list[str]:
    """The chains of a decision and every prefix of them (each is evaluated: figures trace a chain step by step),
    beyond the study's configured chains."""
    chains = [p for chain in derived_chains(config, study, decision) for p in chain_prefixes(chain)]
    return [c for c in dict.fromkeys(chains) if c not in config["studies"][study]["chains"]]


def derived_experiments(config: dict[str, Any], study: str) -> list[Experiment]:
    """The experiments of the decisions already written for a study."""
    found = []
    for dataset, model in panels(config, study):
        path = decision_path(config, study, dataset, model)
        if path.exists():
            chains = evaluated_chains(config, study, json.loads(path.read_text()))
            found += [Experiment(config["name"], study, dataset, model, seed, chain)
                      for chain in chains for seed in config["studies"][study]["seeds"]]
    return found
