"""Benchmark (not a test): one experiment's base training, or its evaluation job, from two source trees, alternated
on one machine.

    python benchmarks/tree_ab.py --tree old=PATH --tree new=PATH --config config/default.yaml \
        --experiment results/default/STUDY/DATASET/MODEL/seed0/base [--step base|evaluate] [--set JSON] \
        [--repeats 3] [--work DIR] [--out FILE.csv]

Why: base training ran 1.5-1.7x longer on the GPU in sessions 10-13 than in sessions 5 and 8, with the same results
and the same GPU kernel-seconds (reports/benchmarks/README.md, session 13). Both the trees and the machines
differed. Here the trees share one machine, Python and data, so a difference between them is the code's; and each
base runs alone, outside the workflow, so a time near the workflow's says the workflow's company did not cause it.

How: each repeat runs ``slimbench base`` once per tree, in an order that alternates (A B, then B A, ...). Each run
is a fresh process with its tree first on ``PYTHONPATH``, the tree's own file at ``--config``, and a scratch folder
of its own as the working directory (the experiment's path is relative to it). ``$SLIMBENCH_DATA_ROOT`` passes
through. The stages come from the ``slimbench.plugins`` entry points (``methods``, ``baselines``), so slimbench must be
installed (``pip install -e .`` of either tree) and each tree must hold those packages too: the one first on the path
is imported. Per run it records the stage log's ``time_s`` (the training alone: ``slimbench.pipeline.run_base``), the
process's wall time, the steps, the final loss and the sha256 of the saved weights: equal across trees and
repeats if the code computes the same. Writes the CSV and prints the median time per tree and their ratio.

``--step evaluate`` times the evaluation job instead (issue 17, item 3: in the workflow each one is a fresh
process): each tree first trains the base once in its own folder (untimed), then each repeat removes its
``metrics.json`` and runs ``slimbench evaluate`` there. Per run: the evaluation's ``eval_time_s``, the process's
wall time, its age when the evaluation began (``process_age_at_evaluation_s``: imports, config, data) and what
came after it (``after_s``, the wall time less both: writing the metrics, the exit), and the task metrics, equal
across trees and repeats if the code computes the same; the ratio is of the processes' median wall times.
``--set`` passes config overrides to every run (e.g. a device budget, which turns on the model-memory probe).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, NamedTuple

from slimbench.checkpoint import WEIGHTS
from slimbench.integrity import file_sha256
from slimbench.pipeline import MODEL_DIR, STAGE_LOG
from slimbench.results import METRICS_FILE

PACKAGES = ("slimbench", "methods", "baselines")  # the stages come from the last two (entry points)
COMMON = ["tree", "repeat", "position", "time_s", "process_s"]


def step_once(step: str, tree: Path, config: str, overrides: str | None, experiment: str, work: Path) -> float:
    """One ``slimbench STEP`` from ``tree`` in a fresh process, in ``work``: its wall seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "slimbench.cli", step, "--config", str(tree / config), experiment]
    start = time.perf_counter()
    done = subprocess.run(command + (["--set", overrides] if overrides else []), cwd=work, env=env,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"slimbench {step} from {tree} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - start


def base_once(tree: Path, config: str, overrides: str | None, experiment: str, work: Path) -> dict[str, object]:
    """One ``slimbench base`` from ``tree`` in a fresh process and working directory; its stage log, timed."""
    work.mkdir(parents=True)
    process_s = step_once("base", tree, config, overrides, experiment, work)
    model = work / experiment / MODEL_DIR
    log = json.loads((model / STAGE_LOG).read_text())
    return {"time_s": log["time_s"], "process_s": process_s, "steps": log["steps"], "final_loss": log["final_loss"],
            "weights_sha256": file_sha256(model / WEIGHTS)}


def evaluate_once(tree: Path, config: str, overrides: str | None, experiment: str, work: Path) -> dict[str, object]:
    """One ``slimbench evaluate`` from ``tree`` of the base trained in ``work`` (by the same tree, first)."""
    if not (work / experiment / MODEL_DIR).is_dir():
        work.mkdir(parents=True)
        step_once("base", tree, config, overrides, experiment, work)
    metrics = work / experiment / METRICS_FILE
    metrics.unlink(missing_ok=True)
    process_s = step_once("evaluate", tree, config, overrides, experiment, work)
    record = json.loads(metrics.read_text())
    age, eval_s = record["process_age_at_evaluation_s"], record["eval_time_s"]
    return {"time_s": eval_s, "process_s": process_s, "process_age_s": age, "after_s": process_s - age - eval_s,
            "metrics": json.dumps(record["metrics"], sort_keys=True)}


class Step(NamedTuple):
    """What ``--step`` runs, and how its runs are summed up: the median of ``timed``, and whether ``result`` (what
    the step computed) is the same in every run."""

    run: Callable[[Path, str, str | None, str, Path], dict[str, object]]
    folder: Callable[[str, int], str]  # the run's folder under --work, from the tree's name and the repeat
    columns: list[str]
    timed: str
    result: str
    label: str
    result_label: str


STEPS = {
    "base": Step(base_once, lambda name, repeat: f"{name}-{repeat}", COMMON + ["steps", "final_loss", "weights_sha256"],
                 "time_s", "weights_sha256", "training s", "weights"),
    # one folder per tree: its base is trained once, then evaluated in every repeat
    "evaluate": Step(evaluate_once, lambda name, repeat: name, COMMON + ["process_age_s", "after_s", "metrics"],
                     "process_s", "metrics", "evaluation job s", "task metrics"),
}


def input_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, with the fix; None when nothing is."""
    if len(args.tree) != 2 or not all("=" in entry for entry in args.tree):
        return f"--tree must be given twice, as NAME=PATH; got {args.tree}"
    trees = dict(entry.split("=", 1) for entry in args.tree)
    if len(trees) != 2:
        return f"--tree names must differ; got {args.tree}"
    for name, path in trees.items():
        missing = [f"{package}/" for package in PACKAGES if not (Path(path) / package).is_dir()]
        if missing or not (Path(path) / args.config).is_file():
            return (f"tree {name}={path} lacks {', '.join(missing) or args.config}: each tree needs "
                    f"{', '.join(p + '/' for p in PACKAGES)} and the config (e.g. git archive COMMIT "
                    f"{' '.join(PACKAGES)} config workflow)")
    if not args.experiment.rstrip("/").endswith("/base"):
        return f"--experiment must be a base experiment's folder (.../seedN/base), got {args.experiment}"
    if args.repeats < 1:
        return f"--repeats must be at least 1, got {args.repeats}"
    try:
        if args.set is not None and not isinstance(json.loads(args.set), dict):
            raise ValueError
    except ValueError:
        return f"--set must be a JSON object of config overrides, e.g. '{{\"threads\": 1}}'; got {args.set}"
    if args.work is not None and args.work.exists() and any(args.work.iterdir()):
        return f"--work {args.work} is not empty: an earlier run's models would be found there. Fix: a new folder."
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH, twice")
    parser.add_argument("--config", required=True, help="the config, relative to each tree")
    parser.add_argument("--experiment", required=True, help="the base experiment's folder, e.g. results/.../base")
    parser.add_argument("--step", choices=sorted(STEPS), default="base", help="what each run times")
    parser.add_argument("--set", default=None, metavar="JSON", help="config overrides for every run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, default=Path("tree_ab.csv"))
    args = parser.parse_args()
    problem = input_problem(args)  # every check before the first run, which takes a minute
    if problem:
        sys.exit(problem)
    trees = dict(entry.split("=", 1) for entry in args.tree)
    work = args.work or Path(tempfile.mkdtemp(prefix="tree_ab-"))
    names, step = list(trees), STEPS[args.step]
    rows = []
    for repeat in range(args.repeats):
        for position, name in enumerate(names if repeat % 2 == 0 else names[::-1]):
            run = step.run(Path(trees[name]).resolve(), args.config, args.set, args.experiment,
                           work / step.folder(name, repeat))
            rows.append({"tree": name, "repeat": repeat, "position": position, **run})
            print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=step.columns)
        writer.writeheader()
        writer.writerows(rows)
    medians = {name: statistics.median(row[step.timed] for row in rows if row["tree"] == name) for name in names}
    same = len({row[step.result] for row in rows}) == 1
    print(f"median {step.label}: {medians}; {names[1]}/{names[0]} = {medians[names[1]] / medians[names[0]]:.3f}; "
          f"{step.result_label} {'bit for bit the same in every run' if same else 'differ between runs'}")


if __name__ == "__main__":
    main()
