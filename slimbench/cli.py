"""Command line: the steps Snakemake calls, also usable by hand.

  slimbench plan      --config config/smoke.yaml            what would be built
  slimbench base      --config CFG results/<cfg>/<study>/<dataset>/<model>/seed0/base
  slimbench compress  --config CFG results/.../seed0/base+kd
  slimbench evaluate  --config CFG results/.../seed0/base+kd
  slimbench run       --config CFG results/.../seed0/base+kd+int8   (every missing step of one experiment)
  slimbench runs      --config CFG --study skeleton           its metrics as one table, results/reports/<cfg>/<study>/runs.csv
  slimbench table     --config CFG --study skeleton --name table    one table (csv, md, tex) from runs.csv
  slimbench figure    --config CFG --study skeleton --name metric_vs_flops   one figure (png, pdf)
  slimbench scorecard --config CFG [--study S] [--reports reports/default]   the papers' claims, checked
  slimbench compare   results/reports/smoke reports/smoke [--config CFG]       a run against the references
  slimbench study     --config CFG --study skeleton           a whole study without Snakemake
  slimbench derive    --config CFG --study order --dataset D --model M --out F   a study's checkpoint
  slimbench list                                              registered models, datasets, stages, tables, figures

--config may be given several times (later files override earlier ones) and --set '{"key": value}' overrides
values, as Snakemake's --configfile and --config do.
"""

from __future__ import annotations

import argparse
import logging
import re
import shlex
import sys
import textwrap
from pathlib import Path
from typing import Any

from slimbench.errors import SlimbenchError, exit_status

LIST_WIDTH = 120  # `slimbench list` wraps each stage's summary to this many columns

log = logging.getLogger("slimbench")


def invocation() -> str:
    """The command line as typed, without the machine-specific path of the executable."""
    return " ".join(map(shlex.quote, ["slimbench", *sys.argv[1:]]))


def experiment_of(config: dict[str, Any], directory: str) -> Any:
    """The experiment of a folder, after checking it belongs to the config: its study has a grid entry for the
    dataset and model, the seed is one of the study's, and every stage of the chain resolves with the study's
    settings (chains derived at run time, e.g. by the order study's checkpoint, qualify). Loads no data."""
    from slimbench.config import Experiment, study_settings
    from slimbench.stages import resolve_chain

    exp = Experiment.from_directory(directory)
    if exp.config != config["name"]:
        raise SlimbenchError(f"'{directory}' belongs to config '{exp.config}', not '{config['name']}'.")
    _, settings = study_settings(config, exp)
    if exp.seed not in config["studies"][exp.study]["seeds"]:
        raise SlimbenchError(f"seed {exp.seed} is not a seed of study '{exp.study}' "
                             f"({config['studies'][exp.study]['seeds']}).")
    resolve_chain(exp.chain, settings)
    return exp


def experiment_workspace(config: dict[str, Any], exp: Any) -> Any:
    """The workspace (data, task, device) of a checked experiment."""
    from slimbench.pipeline import Workspace

    return Workspace.open(config, exp)


def start_memory_probe(config: dict[str, Any], exp: Any) -> None:
    """Start the fork server of the model-memory probe before the data and the model load, when the study's
    evaluation uses it, and have it prepare for this experiment's model: its imports take seconds on a busy
    machine, and run beside this process's work instead of being waited for at the measurement."""
    from slimbench.config import evaluation_settings, measures_model_memory
    from slimbench.metrics import model_memory
    from slimbench.pipeline import MODEL_DIR

    if measures_model_memory(evaluation_settings(config, exp.study)):
        model_memory.start_server(exp.directory(config["results_dir"]) / MODEL_DIR)


def cmd_step(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from slimbench.results import METRICS_FILE

    exp = experiment_of(config, args.experiment)
    if args.command == "evaluate":
        start_memory_probe(config, exp)
    else:  # a new model: its old metrics go first, before the data loads, so a kill at any point leaves none
        (exp.directory(config["results_dir"]) / METRICS_FILE).unlink(missing_ok=True)
    from slimbench import pipeline

    ws = experiment_workspace(config, exp)
    if args.command == "base":
        if ws.exp.prefix is not None:
            raise SlimbenchError(f"'base' trains the uncompressed model; '{ws.exp.chain}' is a compressed chain.")
        print(pipeline.run_base(ws))
    elif args.command == "compress":
        print(pipeline.run_compress(ws))
    else:
        print(pipeline.run_evaluate(ws, command=invocation()))


def cmd_run(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """Build every missing prefix of one experiment, then evaluate it (and its base, for relative costs).
    An experiment whose metrics (and its base's) exist is done and skipped, so a rerun resumes."""
    from dataclasses import replace

    from slimbench import checkpoint, pipeline
    from slimbench.stages import chain_prefixes

    target = experiment_of(config, args.experiment)
    evaluated = [replace(target, chain=chain) for chain in dict.fromkeys(["base", target.chain])]
    fixed = [c for c in chain_prefixes(target.chain) if step_fixed_since(replace(target, chain=c), config)]
    if not args.force and not fixed and all(has_metrics(e.directory(config["results_dir"])) for e in evaluated):
        log.info("done already: %s", args.experiment)
        return
    ws = experiment_workspace(config, target)
    rebuilt = False
    for chain in chain_prefixes(target.chain):
        ws.exp = replace(target, chain=chain)
        if rebuilt or chain in fixed or not checkpoint.is_saved(ws.directory() / pipeline.MODEL_DIR):
            if has_metrics(ws.directory()) and ws.exp not in evaluated:
                evaluated.insert(-1, ws.exp)  # an experiment of its own: its metrics go with its old model
            (pipeline.run_base if ws.exp.prefix is None else pipeline.run_compress)(ws)
            rebuilt = True  # every later step of the chain starts from this new model
    for exp in evaluated:
        ws.exp = exp
        if args.force or not has_metrics(ws.directory()):
            print(pipeline.run_evaluate(ws, command=invocation()))


def step_fixed_since(exp: Any, config: dict[str, Any]) -> bool:
    """Whether the experiment's saved model exists and one of the steps it was built by (its ``arch.json`` records
    them all) ran an earlier revision of its stage (``slimbench.stages.fixed_since``): then it is rebuilt, as the
    workflow reruns such steps through their tracked settings."""
    from slimbench import pipeline

    old = pipeline.built_by_old_revision(exp.directory(config["results_dir"]) / pipeline.MODEL_DIR)
    if old:
        log.info("%s: built by an earlier revision of one of its stages, which a fix has changed since: rebuilt",
                 exp.chain)
    return old


def has_metrics(directory: Path) -> bool:
    """Whether an experiment's metrics exist and pass their checksum (a corrupt file is moved aside: rebuild it)."""
    from slimbench.errors import CorruptFileError
    from slimbench.integrity import read_sealed_json
    from slimbench.results import METRICS_FILE

    if not (directory / METRICS_FILE).exists():
        return False
    try:
        read_sealed_json(directory / METRICS_FILE)
    except CorruptFileError as error:
        log.warning("%s", error)
        return False
    return True


def run_all(config: dict[str, Any], exps: list[Any], args: argparse.Namespace, jobs: int = 1) -> None:
    """Run experiments one after another, or ``jobs`` at once, one subprocess each (small models leave a GPU
    mostly idle). Experiments that share a base (dataset, model, seed) stay in one worker, in order, so no
    base is trained twice; each subprocess writes its output to run.log in its experiment folder."""
    if jobs <= 1:
        for exp in exps:
            log.info("== %s", exp.directory(config["results_dir"]))
            cmd_run(argparse.Namespace(experiment=str(exp.directory(config["results_dir"])), force=False), config)
        return
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    groups: dict[tuple[str, str, int], list[Any]] = {}
    for exp in exps:
        groups.setdefault((exp.dataset, exp.model, exp.seed), []).append(exp)

    def run_group(group: list[Any]) -> None:
        for exp in group:
            directory = exp.directory(config["results_dir"])
            log_file = directory / "run.log"
            log_file.parent.mkdir(parents=True, exist_ok=True)
            log.info("== %s (output in %s)", directory, log_file)
            with log_file.open("a") as out:
                status = subprocess.run([sys.executable, "-m", "slimbench.cli", "run", *config_arguments(args),
                                         str(directory)], stdout=out, stderr=subprocess.STDOUT).returncode
            if status != 0:
                raise SlimbenchError(f"{directory} failed (exit {status}); its output is in {log_file}.")
            log.info("done: %s", directory)

    with ThreadPoolExecutor(jobs) as pool:
        for finished in [pool.submit(run_group, group) for group in groups.values()]:
            finished.result()


def matching(exps: list[Any], patterns: list[str] | None) -> list[Any]:
    """The experiments whose id <dataset>/<model>/seed<k>/<chain> matches one of the glob patterns."""
    from fnmatch import fnmatchcase

    if not patterns:
        return exps
    return [e for e in exps if any(fnmatchcase(f"{e.dataset}/{e.model}/seed{e.seed}/{e.chain}", p) for p in patterns)]


def cmd_study(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """A whole study without Snakemake (e.g. on a machine without it): every experiment, the chains a study with
    ``derive:`` decides from its results (as the workflow's checkpoint does), then the reports. With --match only
    the matching experiments run; the reports follow once every experiment has metrics."""
    from slimbench.config import experiments
    from slimbench.derive import deriver_of

    exps = list(experiments(config, args.study))
    chosen = matching(exps, args.match)
    if not chosen:
        raise SlimbenchError(f"no experiment of study '{args.study}' matches {args.match}; ids look like "
                             f"'{exps[0].dataset}/{exps[0].model}/seed{exps[0].seed}/{exps[0].chain}'.")
    run_all(config, chosen, args, args.jobs)
    if deriver_of(config, args.study):
        run_all(config, matching(decide_all(config, args.study), args.match), args, args.jobs)
    try:
        study_metrics(config, args.study)
    except SlimbenchError as missing:
        log.warning("reports not written: %s", missing)
        return
    for path in write_reports(config, args.study):
        print(path)
    cmd_scorecard(argparse.Namespace(study=None, reports=None), config)  # the config's SCORECARD.md, as the workflow


def decide_all(config: dict[str, Any], study: str) -> list[Any]:
    """The checkpoint without Snakemake: a decision per (dataset, model) whose input runs are all evaluated,
    then the experiments of every decision written."""
    from slimbench.config import panels
    from slimbench.derive import decide_panel, decision_path, derived_experiments, write_decision

    for dataset, model in panels(config, study):
        try:
            record = decide_panel(config, study, dataset, model)
        except FileNotFoundError as missing:
            log.warning("chains of %s/%s not decided yet: %s", dataset, model, missing)
            continue
        write_decision(record, decision_path(config, study, dataset, model))
    return derived_experiments(config, study)


def cmd_derive(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """The workflow's checkpoint for one (study, dataset, model): input runs -> decision JSON with the chains to run."""
    from slimbench.derive import decide_panel, deriver_of, write_decision

    if deriver_of(config, args.study) is None:
        raise SlimbenchError(f"study '{args.study}' derives no chains (no 'derive:' in its config).")
    try:
        record = decide_panel(config, args.study, args.dataset, args.model, random_count=args.random, seed=args.seed)
    except FileNotFoundError as missing:
        raise SlimbenchError(f"cannot decide {args.dataset}/{args.model} yet: {missing}") from None
    if record.get("cycles"):
        log.warning("no full order: the precedence graph has cycles %s", record["cycles"])
    write_decision(record, Path(args.out))


def study_metrics(config: dict[str, Any], study: str, allow_missing: bool = False) -> tuple[list[Path], list[Path]]:
    """Every metrics file of a study (chains a deriver decided included), as (present, missing); all must exist
    unless ``allow_missing`` (a run cut short: its report lists what is missing)."""
    from slimbench.config import experiments
    from slimbench.derive import derived_experiments, deriver_of
    from slimbench.results import METRICS_FILE

    exps = list(experiments(config, study))
    if deriver_of(config, study):
        exps += derived_experiments(config, study)
    paths = list(dict.fromkeys(e.directory(config["results_dir"]) / METRICS_FILE for e in exps))
    missing = [p for p in paths if not p.exists()]
    if missing and not allow_missing:
        raise SlimbenchError(f"{len(missing)} of {len(paths)} metrics file(s) of study '{study}' are missing, "
                             f"e.g. {missing[0]}. Fix: run the workflow first (snakemake --cores N --configfile ...), "
                             f"or report what exists with `slimbench runs --allow-missing`.")
    return [p for p in paths if p.exists()], missing


def report_dir(config: dict[str, Any], study: str | None = None) -> Path:
    folder = Path(config["reports_dir"]) / config["name"]
    return folder / study if study else folder


def study_runs(config: dict[str, Any], study: str) -> tuple[Any, str]:
    """A study's runs.csv (written by `slimbench runs`) and its task metric."""
    from slimbench.results import RUNS_FILE, read_runs, study_metric

    path = report_dir(config, study) / RUNS_FILE
    if not path.exists():
        raise SlimbenchError(f"{path} is missing. Fix: slimbench runs --config ... --study {study} (or run the workflow).")
    frame = read_runs(path)
    frame.attrs["study"] = config["studies"][study]  # tables that follow a study's settings (e.g. its protocol)
    return frame, study_metric(frame)


def cmd_runs(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """Every metrics file of a study as one table, runs.csv: the input of its tables, figures and scorecard."""
    from slimbench.atomic import write_atomically
    import pandas as pd

    from slimbench.results import MISSING_FILE, RUNS_FILE, load_frame

    out = report_dir(config, args.study) / RUNS_FILE
    present, missing = study_metrics(config, args.study, args.allow_missing)
    if not present:
        raise SlimbenchError(f"study '{args.study}' has no metrics file yet. Fix: run the workflow first.")
    frame = load_frame(present)
    write_atomically(out, lambda tmp: frame.to_csv(tmp, index=False))
    print(out)
    listed = out.with_name(MISSING_FILE)
    if missing:  # never silently short: the experiments not run are named beside runs.csv
        parts = [p.parent.parts[-4:] for p in missing]  # .../<dataset>/<model>/seed<k>/<chain>/metrics.json
        rows = pd.DataFrame([{"dataset": d, "model": m, "seed": int(s.removeprefix("seed")), "chain": c}
                             for d, m, s, c in parts])
        write_atomically(listed, lambda tmp: rows.to_csv(tmp, index=False))
        print(f"{listed}: {len(missing)} of {len(present) + len(missing)} experiments not run", file=sys.stderr)
    else:
        listed.unlink(missing_ok=True)


def cmd_table(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from slimbench.plots import render_table

    frame, metric = study_runs(config, args.study)
    check_output(config, args.study, "tables", args.name)
    for path in render_table(args.name, frame, metric, report_dir(config, args.study)):
        print(path)


def cmd_figure(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from slimbench.plots import render_figure

    frame, metric = study_runs(config, args.study)
    check_output(config, args.study, "figures", args.name)
    for path in render_figure(args.name, frame, metric, report_dir(config, args.study)):
        print(path)


def check_output(config: dict[str, Any], study: str, kind: str, name: str) -> None:
    names = config["studies"][study][kind]
    if name not in names:
        raise SlimbenchError(f"study '{study}' has no {kind[:-1]} '{name}'. Its {kind}: {', '.join(names) or '(none)'}.")


def score(config: dict[str, Any], study: str, folder: Path) -> Any:
    """A study's scorecard from the runs.csv in ``folder`` (claims whose runs are missing are 'not run')."""
    import pandas as pd

    from slimbench.claims import score_study
    from slimbench.config import REPO
    from slimbench.derive import deriver_of
    from slimbench.results import MISSING_FILE, RUNS_FILE, read_runs, study_metric

    path = folder / study / RUNS_FILE
    frame = read_runs(path) if path.exists() else pd.DataFrame(columns=["dataset", "model", "chain", "seed"])
    metric = study_metric(frame) if len(frame) else "accuracy"
    spec = config["studies"][study]
    listed = path.with_name(MISSING_FILE)
    missing = pd.read_csv(listed) if path.exists() and listed.exists() else None
    if missing is not None:  # a missing.csv left beside a newer runs.csv may name runs that exist now
        keys = ["dataset", "model", "seed", "chain"]
        ran = set(frame[keys].astype(str).itertuples(index=False, name=None))
        stale = [tuple(row) in ran for row in missing[keys].astype(str).itertuples(index=False, name=None)]
        if any(stale):
            logging.getLogger("slimbench").warning("%s names %d run(s) that %s has; they are not counted missing",
                                                   listed, sum(stale), path.name)
        missing = missing[[not gone for gone in stale]]
    return score_study(frame, metric, spec["claims"], study, deriver_of(config, study), seeds=len(spec["seeds"]),
                       missing=missing, root=REPO)


def cmd_scorecard(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """One study's scorecard (scorecard.md/csv beside its tables), or with no --study the config's SCORECARD.md
    over all its studies. --reports reads another report folder (e.g. the committed reports/<config>)."""
    import pandas as pd

    from slimbench.claims import write_scorecard

    folder = Path(args.reports) if args.reports else report_dir(config)
    studies = [args.study] if args.study else list(config["studies"])
    card = pd.concat([score(config, s, folder) for s in studies], ignore_index=True)
    if args.study:
        paths = write_scorecard(card, folder / args.study, "scorecard", f"Scorecard of study {args.study}")
    else:
        paths = write_scorecard(card, folder, "SCORECARD", f"Scorecard of config {config['name']}: the papers' claims")
    for path in paths:
        print(path)


def write_reports(config: dict[str, Any], study: str) -> list[Path]:
    """runs.csv, every table and figure and the scorecard of a study, as the workflow writes them."""
    from slimbench.claims import write_scorecard
    from slimbench.plots import render_figure, render_table

    cmd_runs(argparse.Namespace(study=study, allow_missing=False), config)
    frame, metric = study_runs(config, study)
    out = report_dir(config, study)
    paths = [p for name in config["studies"][study]["tables"] for p in render_table(name, frame, metric, out)]
    paths += [p for name in config["studies"][study]["figures"] for p in render_figure(name, frame, metric, out)]
    return paths + write_scorecard(score(config, study, report_dir(config)), out, "scorecard",
                                   f"Scorecard of study {study}")


def cmd_compare(args: argparse.Namespace) -> None:
    """A run's report folder against a reference's: compare.md/csv, and exit status 2 when a result moved."""
    from slimbench.compare import compare_runs, summary, tolerance_for, write_comparison

    settings, title = {}, f"{args.run} against {args.reference}"
    if args.config:
        from slimbench.config import load_config
        from slimbench.provenance import cpu_kernels

        kernels = cpu_kernels()
        settings, other = tolerance_for(load_config(args.config, overrides(args))["compare"], kernels, args.reference)
        if other:
            title += f" (not a reference of this CPU family, {kernels}: the other_family tolerance)"
        settings = {k: v for k, v in settings.items() if k not in ("reference", "references", "other_family")}
    run, reference = Path(args.run), Path(args.reference)
    try:
        table = compare_runs(run, reference, settings)
    except FileNotFoundError as error:
        raise SlimbenchError(str(error)) from None
    for path in write_comparison(table, Path(args.out) if args.out else run, title):
        print(path)
    moved = table[table["verdict"] != "ok"]
    if len(moved):
        print(moved.to_string(index=False, max_colwidth=48))
        raise SlimbenchError(f"{len(moved)} of {len(table)} checks outside the tolerance ({summary(table)}); "
                             f"see {Path(args.out) if args.out else run}/compare.md.")
    print(f"all {len(table)} checks within the tolerance")


def cmd_plan(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from functools import partial

    from slimbench.config import experiments, is_left_out
    from slimbench.estimate import estimate
    from slimbench.stages import chain_prefixes

    exps = list(experiments(config, args.study))
    models = {(e.study, e.dataset, e.model, e.seed, p) for e in exps for p in chain_prefixes(e.chain)}
    trainings = sum(1 for m in models if m[-1] == "base")
    print(f"config '{config['name']}': {len(exps)} experiments, {len(models)} distinct models "
          f"({trainings} base trainings, {len(models) - trainings} compression steps)")
    print(estimate(config, args.study, partial(is_left_out, config)).text())
    for exp in exps:
        print(" ", exp.directory(config["results_dir"]))


def cmd_list(args: argparse.Namespace) -> None:
    from slimbench.config import load_plugins
    from slimbench.data import DATASETS
    from slimbench.derive import DERIVERS
    from slimbench.models import MODELS
    from slimbench.plots import FIGURES, TABLES
    from slimbench.stages import STAGES

    load_plugins()
    for title, registry in (("model families", MODELS), ("dataset loaders", DATASETS), ("tables", TABLES),
                            ("figures", FIGURES), ("chain derivers", DERIVERS)):
        print(f"{title}: {', '.join(registry.names())}")
    print("stages:")
    for name in STAGES.names():
        stage = STAGES.get(name)
        params = [f"{p.name}={p.default} {p.range_text() if p.low is not None or p.high is not None else ''}".strip()
                  for p in stage.params] or ["-"]
        summary = textwrap.fill(first_sentence(stage.description or ""), width=LIST_WIDTH, break_on_hyphens=False,
                                initial_indent=f"  {name:<22} ", subsequent_indent=" " * 25)
        tail = f"  (chain value: {stage.primary or '-'})"
        print(f"{summary}\n{packed(params, tail, ' ' * 25 + 'params: ')}")


def packed(items: list[str], tail: str, first: str) -> str:
    """``items`` joined by ", " and followed by ``tail``, in lines of at most LIST_WIDTH columns that break only
    between items (a range such as ``(0.0, inf]`` stays whole); later lines are indented under the first item."""
    lines, line = [], first
    for i, item in enumerate(items):
        text = item + (", " if i < len(items) - 1 else tail)
        if line != first and len(line.rstrip()) + len(text) > LIST_WIDTH:  # a line holds one item at least
            lines.append(line.rstrip())
            line = " " * len(first)
        line += text
    return "\n".join(lines + [line.rstrip()])


def first_sentence(docstring: str) -> str:
    """A docstring's first sentence, whatever its line breaks: it ends at a full stop before a capital letter
    ("et al. 2025" and "Sec. 3" do not end it), else with the first paragraph."""
    paragraph = " ".join(docstring.split("\n\n")[0].split())
    return re.split(r"(?<=\.)\s+(?=[A-Z])", paragraph)[0]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def config_arguments(args: argparse.Namespace) -> list[str]:
    """The --config/--set arguments of this invocation, for the subprocesses it starts."""
    found = [part for path in args.config for part in ("--config", path)]
    return found + (["--set", args.set] if args.set else [])


def overrides(args: argparse.Namespace) -> dict[str, Any] | None:
    import json

    try:
        return json.loads(args.set) if args.set else None
    except json.JSONDecodeError as error:
        raise SlimbenchError(f"--set must be a JSON object of config overrides: {error}") from None


def add_config(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", action="append", required=required, metavar="FILE",
                   help="config file (repeatable: later files override earlier ones, as Snakemake's --configfile)")
    p.add_argument("--set", metavar="JSON", help="overrides on top of the files, as Snakemake's --config")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_const", const=1, dest="verbosity", help="debug messages too")
    loudness.add_argument("-q", "--quiet", action="store_const", const=-1, dest="verbosity", help="warnings and errors only")
    common.set_defaults(verbosity=0)
    root = argparse.ArgumentParser(prog="slimbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **k: add_parser(*a, parents=[common], **k)  # every command takes -v / -q
    for name in ("base", "compress", "evaluate", "run"):
        p = sub.add_parser(name, help=f"{name} one experiment folder")
        add_config(p)
        p.add_argument("experiment", help="results/<config>/<study>/<dataset>/<model>/seed<k>/<chain>")
        if name == "run":
            p.add_argument("--force", action="store_true", help="re-evaluate even if metrics exist")
    p = sub.add_parser("study", help="run one study end to end without Snakemake, then its reports")
    add_config(p)
    p.add_argument("--study", required=True)
    p.add_argument("--match", action="append", metavar="GLOB",
                   help="run only experiments whose <dataset>/<model>/seed<k>/<chain> matches (repeatable), "
                        "e.g. 'fashion_mnist/swin_*/*/*'")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="experiments run at once, one process each (default 1; several suit small models on a GPU)")
    p = sub.add_parser("runs", help="a study's metrics files as one table, <reports>/<config>/<study>/runs.csv")
    add_config(p)
    p.add_argument("--study", required=True)
    p.add_argument("--allow-missing", action="store_true",
                   help="write runs.csv from the metrics that exist and name the rest in missing.csv (a run cut "
                        "short; chains a deriver has not decided yet cannot be named)")
    for name in ("table", "figure"):
        p = sub.add_parser(name, help=f"one registered {name} of a study, from its runs.csv")
        add_config(p)
        p.add_argument("--study", required=True)
        p.add_argument("--name", required=True)
    p = sub.add_parser("scorecard", help="the papers' claims checked against a study's runs (or all studies)")
    add_config(p)
    p.add_argument("--study", help="one study (default: the config's SCORECARD.md over all studies)")
    p.add_argument("--reports", help="report folder to read, e.g. reports/default (default: the run's)")
    p = sub.add_parser("compare", help="a run's reports against reference reports, experiment by experiment")
    p.add_argument("run", help="the run's report folder, e.g. results/reports/smoke")
    p.add_argument("reference", help="the reference report folder, e.g. reports/smoke")
    add_config(p, required=False)
    p.add_argument("--out", help="where compare.md/csv go (default: the run's folder)")
    p = sub.add_parser("derive", help="a study's checkpoint: its input runs -> the chains to run next (decision JSON)")
    add_config(p)
    for name in ("--study", "--dataset", "--model", "--out"):
        p.add_argument(name, required=True)
    p.add_argument("--random", type=int, help="random orders to run besides sorted and reverse (order studies)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random orders")
    p = sub.add_parser("plan", help="list the experiments of a config")
    add_config(p)
    p.add_argument("--study")
    sub.add_parser("list", help="list registered names")
    return root


def dispatch(args: argparse.Namespace) -> None:
    if args.command == "list":
        cmd_list(args)
        return
    if args.command == "compare":
        cmd_compare(args)
        return
    from slimbench.config import load_config

    config = load_config(args.config, overrides(args))
    study = getattr(args, "study", None)
    if study is not None and study not in config["studies"]:
        raise SlimbenchError(f"config '{config['name']}' has no study '{study}'. Studies: {', '.join(config['studies'])}.")
    handler = {"base": cmd_step, "compress": cmd_step, "evaluate": cmd_step, "run": cmd_run, "runs": cmd_runs,
               "table": cmd_table, "figure": cmd_figure, "scorecard": cmd_scorecard, "plan": cmd_plan,
               "study": cmd_study, "derive": cmd_derive}[args.command]
    handler(args, config)


def main(argv: list[str] | None = None) -> int:
    from slimbench.log import setup

    args = parser().parse_args(argv)
    setup(args.verbosity)
    return exit_status("slimbench", lambda: dispatch(args))


if __name__ == "__main__":
    sys.exit(main())
