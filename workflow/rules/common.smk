# Config loading (validated once, before any job), path helpers and wildcard constraints.

import json
import os
import sys

from methods.order_graph import RANDOM_ORDERS, derived_chains, is_order_study, pairwise_chains
from slimbench.config import experiments, panels, read_config, validate_config
from slimbench.errors import SlimbenchError
from slimbench.stages import chain_prefixes

if not config:
    config.update(read_config("config/default.yaml"))
try:
    CFG = validate_config(config)
except SlimbenchError as error:
    sys.exit(f"slimbench: {error}")

NAME = CFG["name"]
RESULTS = os.path.join(CFG["results_dir"], NAME)
REPORTS = os.path.join(CFG["reports_dir"], NAME)
# The CLI reads the resolved config from here; rewritten only when it changes.
CONFIG_JSON = os.path.join(RESULTS, "config.json")
_resolved = json.dumps(CFG, indent=1, sort_keys=True)
if not os.path.exists(CONFIG_JSON) or open(CONFIG_JSON).read() != _resolved:
    os.makedirs(RESULTS, exist_ok=True)
    with open(CONFIG_JSON, "w") as handle:
        handle.write(_resolved)

_rules = {"all", "base", "compress", "evaluate", "aggregate", "figure", "order_decide", "order_derived", "order_chains"}
_clash = _rules & set(CFG["studies"])
if _clash:
    sys.exit(f"slimbench: study name(s) {sorted(_clash)} clash with rule names; rename the study.")


wildcard_constraints:
    study=r"[A-Za-z0-9_.]+",
    dataset=r"[A-Za-z0-9_.]+",
    model=r"[A-Za-z0-9_.]+",
    seed=r"\d+",
    chain=r"base(\+[A-Za-z0-9_]+(-[A-Za-z0-9_.]+)?)*",
    prefix=r"base(\+[A-Za-z0-9_]+(-[A-Za-z0-9_.]+)?)*",
    stage=r"[A-Za-z0-9_]+(-[A-Za-z0-9_.]+)?",
    figure=r"[A-Za-z0-9_]+",


def exp(*parts):
    """A path inside one experiment's folder (wildcards study, dataset, model, seed)."""
    return os.path.join(RESULTS, "{study}", "{dataset}", "{model}", "seed{seed}", *parts)


def rep(*parts):
    """A path inside one study's report folder."""
    return os.path.join(REPORTS, "{study}", *parts)


def base_metrics(wildcards):
    """Compressed chains read the uncompressed model's metrics (for the share of cost kept)."""
    if wildcards.chain == "base":
        return []
    return exp("base", "metrics.json").format(**wildcards)


def metrics_files(study):
    return [str(e.directory(CFG["results_dir"]) / "metrics.json") for e in experiments(CFG, study)]


def figure_files(study):
    figures = CFG["studies"][study]["figures"]
    return [os.path.join(REPORTS, study, f"{figure}.{ext}") for figure in figures for ext in ("png", "pdf")]


def table_files(study):
    return [os.path.join(REPORTS, study, f"table.{ext}") for ext in ("csv", "md", "tex")]


def study_targets(studies):
    return [path for study in studies for path in table_files(study) + figure_files(study)]


# Order of compression (workflow/rules/order.smk): studies that draw the precedence graph, and the
# inputs of their checkpoint and of the chains it derives.
ORDER_STUDIES = [s for s in CFG["studies"] if is_order_study(CFG, s)]
ORDER_STUDY = "|".join(s.replace(".", r"\.") for s in ORDER_STUDIES) or "(?!)"
ORDER_RANDOM = RANDOM_ORDERS


def order_summaries(study):
    """The derived chains' tables of an order study: its tables and figures wait for those chains."""
    if study not in ORDER_STUDIES:
        return []
    return [os.path.join(REPORTS, study, "derived", dataset, model, "order_chains.csv")
            for dataset, model in panels(CFG, study)]


def order_pairwise_metrics(wildcards):
    spec = CFG["studies"][wildcards.study]
    return [exp(chain, "metrics.json").format(seed=seed, **wildcards)
            for seed in spec["seeds"] for chain in ["base", *pairwise_chains(spec["chains"])]]


def order_derived_metrics(wildcards):
    decided = json.loads(open(checkpoints.order_decide.get(**wildcards).output[0]).read())
    chains = derived_chains(decided)
    prefixes = dict.fromkeys(p for chain in chains for p in chain_prefixes(chain))
    return [exp(p, "metrics.json").format(seed=seed, **wildcards)
            for seed in CFG["studies"][wildcards.study]["seeds"] for p in prefixes]
