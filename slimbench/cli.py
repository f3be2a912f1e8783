"""Command line: the steps Snakemake calls, also usable by hand.

  slimbench plan      --config config/smoke.yaml            what would be built
  slimbench base      --config CFG results/<cfg>/<study>/<dataset>/<model>/seed0/base
  slimbench compress  --config CFG results/.../seed0/base+kd
  slimbench evaluate  --config CFG results/.../seed0/base+kd
  slimbench run       --config CFG results/.../seed0/base+kd+int8   (every missing step of one experiment)
  slimbench aggregate --config CFG --study skeleton           tables in reports/<cfg>/<study>/
  slimbench figures   --config CFG --study skeleton           figures in reports/<cfg>/<study>/
  slimbench study     --config CFG --study skeleton           a whole study without Snakemake
  slimbench order-decide / order-summarize                    the order study's checkpoint (workflow/rules/order.smk)
  slimbench list                                              registered models, datasets, stages, figures
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from slimbench.errors import SlimbenchError, exit_status


def invocation() -> str:
    """The command line as typed, without the machine-specific path of the executable."""
    return " ".join(map(shlex.quote, ["slimbench", *sys.argv[1:]]))


def experiment_workspace(config: dict[str, Any], directory: str) -> Any:
    """The workspace of an experiment folder, after checking it belongs to the config: its study has a grid
    entry for the dataset and model, the seed is one of the study's, and every stage of the chain resolves
    with the study's settings (chains derived at run time, e.g. by the order study's checkpoint, qualify)."""
    from slimbench.config import Experiment, study_settings
    from slimbench.pipeline import Workspace
    from slimbench.stages import resolve_chain

    exp = Experiment.from_directory(directory)
    if exp.config != config["name"]:
        raise SlimbenchError(f"'{directory}' belongs to config '{exp.config}', not '{config['name']}'.")
    _, settings = study_settings(config, exp)
    if exp.seed not in config["studies"][exp.study]["seeds"]:
        raise SlimbenchError(f"seed {exp.seed} is not a seed of study '{exp.study}' "
                             f"({config['studies'][exp.study]['seeds']}).")
    resolve_chain(exp.chain, settings)
    return Workspace.open(config, exp)


def cmd_step(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from slimbench import pipeline

    ws = experiment_workspace(config, args.experiment)
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

    from slimbench import pipeline
    from slimbench.results import METRICS_FILE
    from slimbench.stages import chain_prefixes

    ws = experiment_workspace(config, args.experiment)
    target = ws.exp
    evaluated = [replace(target, chain=chain) for chain in dict.fromkeys(["base", target.chain])]
    if not args.force and all((e.directory(config["results_dir"]) / METRICS_FILE).exists() for e in evaluated):
        print(f"done already: {args.experiment}")
        return
    for chain in chain_prefixes(target.chain):
        ws.exp = replace(target, chain=chain)
        if not (ws.directory() / pipeline.MODEL_DIR / "arch.json").exists():
            (pipeline.run_base if ws.exp.prefix is None else pipeline.run_compress)(ws)
    for exp in evaluated:
        ws.exp = exp
        if args.force or not (ws.directory() / METRICS_FILE).exists():
            print(pipeline.run_evaluate(ws, command=invocation()))


def run_all(config: dict[str, Any], exps: list[Any], config_path: str, jobs: int = 1) -> None:
    """Run experiments one after another, or ``jobs`` at once, one subprocess each (small models leave a GPU
    mostly idle). Experiments that share a base (dataset, model, seed) stay in one worker, in order, so no
    base is trained twice; each subprocess writes its output to run.log in its experiment folder."""
    if jobs <= 1:
        for exp in exps:
            print(f"== {exp.directory(config['results_dir'])}", flush=True)
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
            log = directory / "run.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"== {directory} (output in {log})", flush=True)
            with log.open("a") as out:
                status = subprocess.run([sys.executable, "-m", "slimbench.cli", "run", "--config", config_path,
                                         str(directory)], stdout=out, stderr=subprocess.STDOUT).returncode
            if status != 0:
                raise SlimbenchError(f"{directory} failed (exit {status}); its output is in {log}.")
            print(f"done: {directory}", flush=True)

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
    """A whole study without Snakemake (e.g. on a machine without it): every experiment, the chains an order
    study derives from its pairwise results (as the workflow's checkpoint does), then the reports. With
    --match only the matching experiments run; the reports follow once every experiment has metrics."""
    from methods.order_graph import is_order_study
    from slimbench.config import experiments

    exps = list(experiments(config, args.study))
    chosen = matching(exps, args.match)
    if not chosen:
        raise SlimbenchError(f"no experiment of study '{args.study}' matches {args.match}; ids look like "
                             f"'{exps[0].dataset}/{exps[0].model}/seed{exps[0].seed}/{exps[0].chain}'.")
    run_all(config, chosen, args.config, args.jobs)
    if is_order_study(config, args.study):
        run_all(config, matching(decide_order(config, args.study), args.match), args.config, args.jobs)
    try:
        study_metrics(config, args.study)
    except SlimbenchError as missing:
        print(f"reports not written: {missing}")
        return
    cmd_aggregate(argparse.Namespace(study=args.study, out=None), config)
    cmd_figures(argparse.Namespace(study=args.study, out=None, only=None), config)


def decide_order(config: dict[str, Any], study: str) -> list[Any]:
    """The order checkpoint without Snakemake: a decision per (dataset, model) whose pairwise chains are all
    evaluated, then the experiments of every decision written."""
    from methods.order_graph import decide_panel, decided_path, derived_experiments, write_decision
    from slimbench.config import panels

    for dataset, model in panels(config, study):
        try:
            record = decide_panel(config, study, dataset, model)
        except FileNotFoundError as missing:
            print(f"order of {dataset}/{model} not decided yet: {missing}")
            continue
        write_decision(record, decided_path(config, study, dataset, model))
    return derived_experiments(config, study)


def cmd_order_decide(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """The order checkpoint of one (study, dataset, model): pairwise metrics -> order.json with the chains to run."""
    from methods.order_graph import decide_panel, write_decision

    counts = {} if args.random is None else {"random_count": args.random}
    record = decide_panel(config, args.study, args.dataset, args.model, seed=args.seed, **counts)
    write_decision(record, Path(args.out))


def cmd_order_summarize(args: argparse.Namespace, config: dict[str, Any]) -> None:
    """The derived chains' results (with their base) as a table beside the checkpoint's order.json."""
    import json

    from methods.order_graph import chains_table
    from slimbench.plots import write_tables
    from slimbench.results import load_frame

    frame = load_frame([Path(p) for p in args.metrics])
    metric = json.loads(Path(args.metrics[0]).read_text())["metric"]
    out = Path(args.out)
    write_tables(chains_table(frame, metric), out.parent, out.stem)


def study_metrics(config: dict[str, Any], study: str) -> list[Path]:
    """Every metrics file of a study (an order study's derived chains included); all must exist."""
    from methods.order_graph import derived_experiments, is_order_study
    from slimbench.config import experiments
    from slimbench.results import METRICS_FILE

    exps = list(experiments(config, study))
    if is_order_study(config, study):
        exps += derived_experiments(config, study)
    paths = [e.directory(config["results_dir"]) / METRICS_FILE for e in exps]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise SlimbenchError(f"{len(missing)} of {len(paths)} metrics file(s) of study '{study}' are missing, "
                             f"e.g. {missing[0]}. Fix: run the workflow first (snakemake --cores N --configfile ...).")
    return paths


def report_dir(config: dict[str, Any], study: str, out: str | None) -> Path:
    return Path(out) if out else Path(config["reports_dir"]) / config["name"] / study


def cmd_aggregate(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from slimbench.plots import summary_table, write_tables
    from slimbench.results import load_frame, load_records

    paths = study_metrics(config, args.study)
    metric = load_records(paths[:1])[0]["metric"]
    frame = load_frame(paths)
    out = report_dir(config, args.study, args.out)
    for path in write_tables(summary_table(frame, metric), out):
        print(path)
    frame.to_csv(out / "runs.csv", index=False)


def cmd_figures(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from slimbench.plots import FIGURES
    from slimbench.results import load_frame, load_records

    paths = study_metrics(config, args.study)
    metric = load_records(paths[:1])[0]["metric"]
    frame = load_frame(paths)
    names = config["studies"][args.study]["figures"]
    if args.only and args.only not in names:
        raise SlimbenchError(f"study '{args.study}' has no figure '{args.only}'. Its figures: {', '.join(names)}.")
    for name in [args.only] if args.only else names:
        for path in FIGURES.get(name)(frame, metric, report_dir(config, args.study, args.out)):
            print(path)


def cmd_plan(args: argparse.Namespace, config: dict[str, Any]) -> None:
    from slimbench.config import experiments
    from slimbench.stages import chain_prefixes

    exps = list(experiments(config, args.study))
    models = {(e.study, e.dataset, e.model, e.seed, p) for e in exps for p in chain_prefixes(e.chain)}
    trainings = sum(1 for m in models if m[-1] == "base")
    print(f"config '{config['name']}': {len(exps)} experiments, {len(models)} distinct models "
          f"({trainings} base trainings, {len(models) - trainings} compression steps)")
    for exp in exps:
        print(" ", exp.directory(config["results_dir"]))


def cmd_list(args: argparse.Namespace) -> None:
    from slimbench.config import load_plugins
    from slimbench.data import DATASETS
    from slimbench.models import MODELS
    from slimbench.plots import FIGURES
    from slimbench.stages import STAGES

    load_plugins()
    for title, registry in (("model families", MODELS), ("dataset loaders", DATASETS), ("figures", FIGURES)):
        print(f"{title}: {', '.join(registry.names())}")
    print("stages:")
    for name in STAGES.names():
        stage = STAGES.get(name)
        params = ", ".join(f"{p.name}={p.default} {p.range_text() if p.low is not None or p.high is not None else ''}".strip()
                           for p in stage.params)
        summary = stage.description.splitlines()[0] if stage.description else ""
        print(f"  {name:<22} {summary}\n  {'':<22} params: {params or '-'}  (chain value: {stage.primary or '-'})")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="slimbench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = root.add_subparsers(dest="command", required=True)
    for name in ("base", "compress", "evaluate", "run"):
        p = sub.add_parser(name, help=f"{name} one experiment folder")
        p.add_argument("--config", required=True)
        p.add_argument("experiment", help="results/<config>/<study>/<dataset>/<model>/seed<k>/<chain>")
        if name == "run":
            p.add_argument("--force", action="store_true", help="re-evaluate even if metrics exist")
    for name in ("aggregate", "figures"):
        p = sub.add_parser(name, help=f"{name} of one study")
        p.add_argument("--config", required=True)
        p.add_argument("--study", required=True)
        p.add_argument("--out", help="output folder (default reports/<config>/<study>)")
        if name == "figures":
            p.add_argument("--only", help="draw only this figure")
    p = sub.add_parser("study", help="run one study end to end without Snakemake, then its reports")
    p.add_argument("--config", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--match", action="append", metavar="GLOB",
                   help="run only experiments whose <dataset>/<model>/seed<k>/<chain> matches (repeatable), "
                        "e.g. 'fashion_mnist/swin_*/*/*'")
    p.add_argument("--jobs", type=positive_int, default=1,
                   help="experiments run at once, one process each (default 1; several suit small models on a GPU)")
    p = sub.add_parser("order-decide", help="an order study's checkpoint: pairwise metrics -> order.json")
    for name in ("--config", "--study", "--dataset", "--model", "--out"):
        p.add_argument(name, required=True)
    p.add_argument("--random", type=int, help="random orders to run besides sorted and reverse (default: "
                                               "RANDOM_ORDERS in methods/order_graph.py)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random orders")
    p = sub.add_parser("order-summarize", help="table of an order study's derived chains")
    p.add_argument("--config", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("metrics", nargs="+")
    p = sub.add_parser("plan", help="list the experiments of a config")
    p.add_argument("--config", required=True)
    p.add_argument("--study")
    sub.add_parser("list", help="list registered names")
    return root


def dispatch(args: argparse.Namespace) -> None:
    if args.command == "list":
        cmd_list(args)
        return
    from slimbench.config import load_config

    config = load_config(args.config)
    study = getattr(args, "study", None)
    if study is not None and study not in config["studies"]:
        raise SlimbenchError(f"config '{config['name']}' has no study '{study}'. Studies: {', '.join(config['studies'])}.")
    handler = {"base": cmd_step, "compress": cmd_step, "evaluate": cmd_step, "run": cmd_run,
               "aggregate": cmd_aggregate, "figures": cmd_figures, "plan": cmd_plan, "study": cmd_study,
               "order-decide": cmd_order_decide, "order-summarize": cmd_order_summarize}[args.command]
    handler(args, config)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return exit_status("slimbench", lambda: dispatch(args))


if __name__ == "__main__":
    sys.exit(main())
