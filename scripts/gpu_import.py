"""One study's GPU calls into a folder of reports/benchmarks/gpu_time/, as benchmarks/gpu_time.py reads it.

    python scripts/gpu_import.py --config config/default.yaml --study dgmr --out reports/benchmarks/gpu_time/dgmr \
        [--table gpu_speedup] CALL...

Each CALL is the ``$OUT/<study>`` folder of one call of scripts/gpu_studies.sh (``snakemake.log``, ``gpu.csv``,
``results.tgz``), in the order the calls ran; a resumed run has one per call. Writes ``snakemake.log``,
``snakemake.2.log``, ... and ``gpu.csv``, ``gpu.2.csv``, ..., with the device checkout's path in the logs replaced by
``<repo>`` (no machine paths in tracked files); ``runs.csv`` (and ``missing.csv`` for an unfinished run) by
``slimbench runs --allow-missing`` from the last call's ``results.tgz``, which holds every metrics file of the run
since the results stay on the warm machine; and each ``--table`` by ``slimbench table``. Prints the run's
``workflow_s`` (the calls' ``workflow wall time`` lines summed) and ``finished`` for ``after.csv``. Session 10 did
these steps by hand; from the same calls this script made the same files, byte for byte, but for the last digit
of two floats in a ``gpu_speedup.csv`` that the device, not this machine, had written.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

WALL_TIME = re.compile(r"^workflow wall time: (\d+) s on \d+ GPU\(s\), exit (\d+)$", re.M)
CHECKOUT = re.compile(r"(/\S+?)/(?:\.snakemake/log/|workflow/rules/|config/)")


def numbered(name: str, call: int) -> str:
    """``snakemake.log`` for the first call, ``snakemake.2.log`` for the second, ..."""
    stem, suffix = name.rsplit(".", 1)
    return name if call == 1 else f"{stem}.{call}.{suffix}"


def without_checkout(log: str) -> str:
    """The log with the device checkout's path (found where Snakemake names its log, rules or config) as ``<repo>``."""
    found = CHECKOUT.search(log)
    return log.replace(found.group(1), "<repo>") if found else log


def wall_time(log: str) -> tuple[int, bool]:
    """Seconds and whether the workflow finished (exit 0), from the line scripts/gpu_workflow.sh appends."""
    found = WALL_TIME.findall(log)
    if not found:
        raise SystemExit("no 'workflow wall time' line in a snakemake.log: was the call cut off before its end?")
    seconds, status = found[-1]
    return int(seconds), status == "0"


def slimbench(config: Path, results: Path, *args: str) -> None:
    """A slimbench command on the extracted results, never on the checkout's own results/."""
    where = json.dumps({"results_dir": str(results), "reports_dir": str(results / "reports")})
    subprocess.run([sys.executable, "-m", "slimbench.cli", *args, "--config", str(config), "--set", where], check=True)


def import_calls(config: Path, study: str, calls: list[Path], out: Path, tables: list[str]) -> tuple[int, bool]:
    out.mkdir(parents=True, exist_ok=True)
    total, finished = 0, False
    for number, call in enumerate(calls, start=1):
        log = without_checkout((call / "snakemake.log").read_text())
        seconds, finished = wall_time(log)
        total += seconds
        (out / numbered("snakemake.log", number)).write_text(log)
        shutil.copyfile(call / "gpu.csv", out / numbered("gpu.csv", number))
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(calls[-1] / "results.tgz") as archive:
            archive.extractall(tmp, filter="data")
        results = Path(tmp) / "results"
        slimbench(config, results, "runs", "--study", study, "--allow-missing")
        for name in tables:
            slimbench(config, results, "table", "--study", study, "--name", name)
        report = next((results / "reports").glob(f"*/{study}"))
        for name in ["runs.csv", "missing.csv"] + [f"{table}.{ext}" for table in tables for ext in ("md", "csv")]:
            if (report / name).exists():
                shutil.copyfile(report / name, out / name)
    return total, finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--study", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--table", action="append", default=[], help="a table of the study to make, e.g. gpu_speedup")
    parser.add_argument("calls", type=Path, nargs="+", help="each call's $OUT/<study> folder, in order")
    args = parser.parse_args()
    seconds, finished = import_calls(args.config.resolve(), args.study, args.calls, args.out, args.table)
    print(f"after.csv: workflow_s={seconds}, calls={len(args.calls)}, finished={'yes' if finished else 'no'}")


if __name__ == "__main__":
    main()
