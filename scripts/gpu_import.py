"""One study's GPU calls into a folder of reports/benchmarks/gpu_time/, as benchmarks/gpu_time.py reads it.

    python scripts/gpu_import.py --config config/default.yaml --study dgmr --out reports/benchmarks/gpu_time/dgmr \
        [--table gpu_speedup] CALL...

``--config`` is given once per file of the run's CONFIG (scripts/gpu_studies.sh), in its order: a run under an
overlay (e.g. ``--config config/default.yaml --config config/overlays/one_gpu.yaml``) has its results under the
overlay's ``name``, and that is where the archive is read.

Each CALL is the ``$OUT/<study>`` folder of one call of scripts/gpu_studies.sh (``snakemake.log``, ``gpu.csv``,
``results.tgz``), in the order the calls ran; a resumed run has one per call. Writes ``snakemake.log``,
``snakemake.2.log``, ... and ``gpu.csv``, ``gpu.2.csv``, ..., with the device checkout's path in the logs replaced by
``<repo>`` (no machine paths in tracked files); ``runs.csv`` (and ``missing.csv`` for an unfinished run) by
``slimbench runs --allow-missing`` from the last call's ``results.tgz``, which holds every metrics file of the run
since the results stay on the warm machine; each ``--table`` by ``slimbench table``; and the last call's
``idle_speedup.csv`` and ``.jsonl`` where gpu_studies.sh's ``IDLE_PAIRS`` made them; and ``jobs.csv``, where and
when each job of the study in that archive ran (benchmarks/multi_gpu.py), with its timed seconds and, for an
evaluation, the parts of its time. Prints the run's
``workflow_s`` (the calls' ``workflow wall time`` lines summed), ``calls`` and ``finished`` for ``after.csv``, and,
where an idle table came in, its ``study`` and ``table`` for ``idle_runs.csv`` (benchmarks/idle_verdict.py).
Session 10 did these steps by hand; from the same calls this script made the same files, byte for byte, but for
the last digit of three floats in a ``gpu_speedup.csv`` that the device, not this machine, had written. ``--out``
must be empty or new, every input is checked before anything is written, and the files move in only once all
steps succeeded.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from slimbench.config import Experiment, read_configs
from slimbench.pipeline import MODEL_DIR, STAGE_LOG
from slimbench.results import METRICS_FILE

WALL_TIME = re.compile(r"^workflow wall time: (\d+) s on \d+ GPU\(s\), exit (\d+)$", re.M)
IDLE = ("idle_speedup.csv", "idle_speedup.jsonl")  # benchmarks/idle_speedup.py's table and lines, if it ran
CHECKOUT = re.compile(r"^\s*Working directory: (/\S+)$", re.M)  # Snakemake's header names the checkout once
JOBS = "jobs.csv"
JOB_COLUMNS = ("kind", "dataset", "model", "chain", "seed", "gpu_uuid", "cuda_visible_devices", "source",
               "started_at", "finished_at", "time_s", "process_age_s", "eval_phases_s")


def numbered(name: str, call: int) -> str:
    """``snakemake.log`` for the first call, ``snakemake.2.log`` for the second, ..."""
    stem, suffix = name.rsplit(".", 1)
    return name if call == 1 else f"{stem}.{call}.{suffix}"


def without_checkout(log: str, where: Path) -> str:
    """The log with the checkout's path, where a path of it ends (not inside a longer name), as ``<repo>``."""
    found = CHECKOUT.search(log)
    if not found:
        raise SystemExit(f"{where}: no 'Working directory:' line, so the checkout's path is not known. Fix: import "
                         f"the snakemake.log that scripts/gpu_workflow.sh wrote.")
    root = found.group(1)
    return re.sub(re.escape(root) + r"(?=[/\s'\")\],:]|$)", "<repo>", log, flags=re.M)


def wall_time(log: str, where: Path) -> tuple[int, bool]:
    """Seconds and whether the workflow finished (exit 0), from the line scripts/gpu_workflow.sh appends."""
    found = WALL_TIME.findall(log)
    if not found:
        raise SystemExit(f"{where}: no 'workflow wall time' line. Fix: was the call cut off before its end? Import "
                         f"the calls that ran to the end of scripts/gpu_workflow.sh.")
    seconds, status = found[-1]
    return int(seconds), status == "0"


def slimbench(configs: list[Path], results: Path, *args: str) -> None:
    """A slimbench command on the extracted results, never on the checkout's own results/."""
    where = json.dumps({"results_dir": str(results), "reports_dir": str(results / "reports")})
    given = [part for config in configs for part in ("--config", str(config))]
    command = [sys.executable, "-m", "slimbench.cli", *args, *given, "--set", where]
    if status := subprocess.run(command).returncode:
        raise SystemExit(f"'slimbench {' '.join(args)}' failed (exit {status}), see its message above; nothing was "
                         f"written to --out.")


def checked(calls: list[Path], out: Path) -> list[tuple[str, int, bool]]:
    """Each call's log (path replaced), seconds and exit, once every input is there: nothing is written before."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} is not empty: its old logs, samples or missing.csv would mix with this run's. Fix: "
                         f"move them aside (e.g. into {out}/session<N>/) or import into a new folder.")
    for path in [call / name for call in calls for name in ("snakemake.log", "gpu.csv")] + [calls[-1] / "results.tgz"]:
        if not path.is_file():
            raise SystemExit(f"{path} is missing. Fix: pass each call's $OUT/<study> folder of scripts/gpu_studies.sh.")
    logs = [(without_checkout((call / "snakemake.log").read_text(), call / "snakemake.log"), call) for call in calls]
    return [(log, *wall_time(log, call / "snakemake.log")) for log, call in logs]


def job_row(path: Path, experiment: Path) -> dict[str, Any]:
    """One job's row of ``jobs.csv`` from its stage log or metrics: where and when it ran, the seconds its step
    timed, and for an evaluation the process's age when it began and its parts' seconds (JSON), so the time a job
    spends outside its timed work shows. A file written before it recorded one of these leaves its cell blank."""
    exp, record = Experiment.from_directory(experiment), json.loads(path.read_text())
    evaluation = path.name == METRICS_FILE
    kind = "evaluate" if evaluation else "base" if exp.prefix is None else "compress"
    device = record.get("device") or {}
    phases = record.get("eval_phases_s")
    return {"kind": kind, "dataset": exp.dataset, "model": exp.model, "chain": exp.chain, "seed": exp.seed,
            **{key: device.get(key, "") for key in ("gpu_uuid", "cuda_visible_devices", "source")},
            **{key: record.get(key, "") for key in ("started_at", "finished_at")},
            "time_s": record.get("eval_time_s" if evaluation else "time_s", ""),
            "process_age_s": record.get("process_age_at_evaluation_s", ""),
            "eval_phases_s": json.dumps(phases, sort_keys=True) if phases else ""}


def write_jobs(results: Path, name: str, study: str, out: Path) -> None:
    """``jobs.csv``: a row per base or compress step (its model's stage log) and per evaluation (its metrics) of
    ``study`` of config ``name`` in the extracted results, in path order, so a multi-GPU run shows which GPU ran
    what, and when."""
    experiments = f"{name}/{study}/*/*/seed*/*"
    found = [(path, path.parent.parent) for path in results.glob(f"{experiments}/{MODEL_DIR}/{STAGE_LOG}")]
    found += [(path, path.parent) for path in results.glob(f"{experiments}/{METRICS_FILE}")]
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, JOB_COLUMNS)
        writer.writeheader()
        writer.writerows(job_row(path, experiment) for path, experiment in sorted(found))


def report_folder(results: Path, name: str, study: str, archive: Path) -> Path:
    """The study's report folder in the extracted archive, once the archive is known to hold the config's run: a
    base config given for an overlay's run (or the reverse) would find no metrics, and say only that."""
    if not any((folder / name / study).is_dir() for folder in (results, results / "reports")):
        held = sorted({path.parent.name for pattern in (f"*/{study}", f"reports/*/{study}")
                       for path in results.glob(pattern)})
        raise SystemExit(f"{archive}: no results of config '{name}' for '{study}' (it holds config(s) "
                         f"{', '.join(held) or 'none'}). Fix: give --config once per file of the run's CONFIG, e.g. "
                         f"--config config/default.yaml --config config/overlays/one_gpu.yaml.")
    return results / "reports" / name / study


def import_calls(configs: list[Path], study: str, calls: list[Path], out: Path, tables: list[str]) -> tuple[int, bool]:
    """Writes ``out`` (see the module docstring) and returns the run's seconds and whether its last call finished."""
    if not hasattr(tarfile, "data_filter"):
        raise SystemExit("this Python cannot extract an archive safely (tarfile filters: 3.10.12+, 3.11.4+). Fix: "
                         "use a newer Python.")
    logs = checked(calls, out)
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / "out"
        built.mkdir()
        for number, (call, (log, _, _)) in enumerate(zip(calls, logs), start=1):
            (built / numbered("snakemake.log", number)).write_text(log)
            shutil.copyfile(call / "gpu.csv", built / numbered("gpu.csv", number))
        with tarfile.open(calls[-1] / "results.tgz") as archive:
            archive.extractall(tmp, filter="data")
        results = Path(tmp) / "results"
        config_name = read_configs(configs)["name"]
        report = report_folder(results, config_name, study, calls[-1] / "results.tgz")
        slimbench(configs, results, "runs", "--study", study, "--allow-missing")
        write_jobs(results, config_name, study, built / JOBS)
        for name in tables:
            slimbench(configs, results, "table", "--study", study, "--name", name)
        for name in ["runs.csv", "missing.csv"] + [f"{table}.{ext}" for table in tables for ext in ("md", "csv")]:
            if (report / name).exists():
                shutil.copyfile(report / name, built / name)
        for name in IDLE:  # scripts/gpu_studies.sh with IDLE_PAIRS, after the study finished: its last call
            if (calls[-1] / name).is_file():
                shutil.copyfile(calls[-1] / name, built / name)
        out.mkdir(parents=True, exist_ok=True)
        for path in built.iterdir():
            shutil.copyfile(path, out / path.name)
    return sum(seconds for _, seconds, _ in logs), logs[-1][2]


def idle_runs_entry(study: str, out: Path, runs: Path = Path("reports/benchmarks/gpu_time/idle_runs.csv")) -> str:
    """The ``study`` and ``table`` of the run's row in ``idle_runs.csv``: the table's path relative to that file."""
    return f"idle_runs.csv: study={study}, table={os.path.relpath(out.resolve() / IDLE[0], runs.resolve().parent)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, action="append", required=True,
                        help="the run's config file; once per file, base first, as the run's CONFIG")
    parser.add_argument("--study", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", action="append", default=[], help="a table of the study to make, e.g. gpu_speedup")
    parser.add_argument("calls", type=Path, nargs="+", help="each call's $OUT/<study> folder, in order")
    args = parser.parse_args()
    seconds, finished = import_calls([config.resolve() for config in args.config], args.study, args.calls, args.out,
                                     args.table)
    print(f"after.csv: workflow_s={seconds}, calls={len(args.calls)}, finished={'yes' if finished else 'no'}")
    if (args.out / IDLE[0]).is_file():
        print(idle_runs_entry(args.study, args.out))


if __name__ == "__main__":
    main()
