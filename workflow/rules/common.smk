# Config loading (validated once, before any job), path helpers and wildcard constraints. Nothing here writes a
# file: every job reads the same config files Snakemake read (CONFIG_ARGS), and each step's own settings are a
# rule parameter (slimbench.config.tracked_settings), so changing a setting reruns exactly the steps that use it.

import glob
import json
import os
import shlex
import sys

from slimbench.compare import reference_for
from slimbench.config import (Experiment, evaluation_settings, experiments, panels, read_configs, skipped,
                              tracked_settings, validate_config)
from slimbench.derive import DERIVERS, evaluated_chains, input_experiments
from slimbench.errors import SlimbenchError
from slimbench.estimate import estimate
from slimbench.provenance import cpu_kernels

CONFIG_FILES = [os.path.relpath(p) for p in workflow.config_settings.configfiles] or ["config/default.yaml"]
OVERRIDES = dict(workflow.config_settings.config or {})
if not workflow.config_settings.configfiles:
    config.update(read_configs(CONFIG_FILES, OVERRIDES))
try:
    CFG = validate_config(config)
except SlimbenchError as error:
    sys.exit(f"slimbench: {error}")
print(f"slimbench: {estimate(CFG).text()}", file=sys.stderr)

NAME = CFG["name"]
RESULTS = os.path.join(CFG["results_dir"], NAME)
REPORTS = os.path.join(CFG["reports_dir"], NAME)
# What every slimbench call of a job gets: the config files (and --config overrides) this workflow was started with.
CONFIG_ARGS = " ".join(f"--config {shlex.quote(p)}" for p in CONFIG_FILES)
if OVERRIDES:
    CONFIG_ARGS += f" --set {shlex.quote(json.dumps(OVERRIDES, sort_keys=True))}"
REFERENCE = reference_for(CFG["compare"], os.path.join("reports", NAME), cpu_kernels())  # exact per CPU family
for _name in CFG["studies"]:  # never silent: what skip_inapplicable leaves out is said here and in the table
    _left_out = skipped(CFG, _name)
    if _left_out:
        print(f"slimbench: study '{_name}' leaves out {len(_left_out)} inapplicable (dataset, model, chain), e.g. "
              f"{_left_out[0]['model']}/{_left_out[0]['chain']}: {_left_out[0]['reason']}; all with reasons in "
              f"{os.path.join(REPORTS, _name, 'skipped.csv')}", file=sys.stderr)


def reference_runs(wildcards):
    """The committed reference runs the check reads: a new reference compares again."""
    return sorted(glob.glob(os.path.join(REFERENCE, "*", "runs.csv"))) if REFERENCE else []


def config_args(wildcards, output):
    """CONFIG_ARGS as a rule parameter. It takes ``output``, so Snakemake counts it as derived from the paths and
    leaves it out of the params rerun trigger: the same settings from another config file rerun nothing."""
    return CONFIG_ARGS

_rules = {"all", "base", "compress", "evaluate", "runs", "table", "figure", "scorecard", "scorecards", "compare",
          "derive"}
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
    name=r"[A-Za-z0-9_]+",


def exp(*parts):
    """A path inside one experiment's folder (wildcards study, dataset, model, seed)."""
    return os.path.join(RESULTS, "{study}", "{dataset}", "{model}", "seed{seed}", *parts)


def rep(*parts):
    """A path inside one study's report folder."""
    return os.path.join(REPORTS, "{study}", *parts)


def experiment_of(wildcards, chain):
    return Experiment(NAME, wildcards.study, wildcards.dataset, wildcards.model, int(wildcards.seed), chain)


def settings(step):
    """The rule parameter that tracks what one step of an experiment depends on."""
    def of(wildcards):
        chain = "base" if step == "base" else wildcards.chain if step == "evaluate" else f"{wildcards.prefix}+{wildcards.stage}"
        return tracked_settings(CFG, experiment_of(wildcards, chain), step)
    return of


def base_metrics(wildcards):
    """Compressed chains read the uncompressed model's metrics (for the share of cost kept)."""
    if wildcards.chain == "base":
        return []
    return exp("base", "metrics.json").format(**wildcards)


def metrics_of(exps):
    return [os.path.join(RESULTS, e.study, e.dataset, e.model, f"seed{e.seed}", e.chain, "metrics.json") for e in exps]


def study_metrics(wildcards):
    """Every metrics file of a study; for a study with `derive:`, also those of the chains its checkpoint decides."""
    found = metrics_of(experiments(CFG, wildcards.study))
    if CFG["studies"][wildcards.study].get("derive"):
        for dataset, model in panels(CFG, wildcards.study):
            decision = checkpoints.derive.get(study=wildcards.study, dataset=dataset, model=model).output[0]
            chains = evaluated_chains(CFG, wildcards.study, json.loads(open(decision).read()))
            found += metrics_of(Experiment(NAME, wildcards.study, dataset, model, seed, chain)
                                for chain in chains for seed in CFG["studies"][wildcards.study]["seeds"])
    return list(dict.fromkeys(found))


def derive_inputs(wildcards):
    return metrics_of(input_experiments(CFG, wildcards.study, wildcards.dataset, wildcards.model))


def study_outputs(study):
    """The declared outputs of one study: runs.csv, each table and figure, the scorecard."""
    spec = CFG["studies"][study]
    paths = [os.path.join(REPORTS, study, "runs.csv")]
    paths += [os.path.join(REPORTS, study, f"{t}.{ext}") for t in spec["tables"] for ext in ("csv", "md", "tex")]
    paths += [os.path.join(REPORTS, study, f"{f}.{ext}") for f in spec["figures"] for ext in ("png", "pdf")]
    return paths + [os.path.join(REPORTS, study, f"scorecard.{ext}") for ext in ("csv", "md")]


def caption(kind):
    """The registered table's or figure's caption (its docstring), shown by `snakemake --report`."""
    from slimbench.plots import FIGURES, TABLES

    registry = TABLES if kind == "table" else FIGURES
    return lambda wildcards: registry.get(wildcards.name).caption


def alternatives(names):
    """A wildcard constraint matching exactly these names."""
    return "|".join(sorted(set(names))) or "(?!)"


TABLE_NAMES = alternatives(t for spec in CFG["studies"].values() for t in spec["tables"])
FIGURE_NAMES = alternatives(f for spec in CFG["studies"].values() for f in spec["figures"])
DERIVE_STUDIES = "|".join(s.replace(".", r"\.") for s in CFG["studies"] if CFG["studies"][s].get("derive")) or "(?!)"
