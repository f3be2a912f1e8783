"""Report (not a test): GPU time of config/default.yaml per study, before and after (issue 17, item 3).

    python benchmarks/gpu_time.py [--config config/default.yaml] [--after reports/benchmarks/gpu_time/after.csv]

* **before**: the committed reference of each study, ``reports/<config name>/<study>/runs.csv``, summed over its
  experiments' ``wall_time_s`` (job-seconds: each experiment a process of its own, several sharing a GPU, so
  this is not the GPU's wall time but the cost the issue was filed against);
* **after**: workflow wall time on one GPU (``scripts/gpu_workflow.sh``, several jobs per GPU), from
  ``after.csv``: one row per measurement, the studies it ran together in ``studies`` (space-separated), the
  seconds from the ``workflow wall time`` line of its ``snakemake.log``, and where the log is. A study never run
  alone shares its group's row.

Writes ``gpu_time.md`` beside ``after.csv``, the table per study and the total against the 30 GPU-minutes target;
studies without an ``after`` row are listed as not measured, and the verdict is ``not met`` as soon as the
measured part alone is over the target.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from slimbench.config import load_config
from slimbench.results import RUNS_FILE, read_runs

TARGET_S = 30 * 60


def before(reports: Path, study: str) -> tuple[int, float] | None:
    path = reports / study / RUNS_FILE
    if not path.exists():
        return None
    runs = read_runs(path)
    return len(runs), float(runs["wall_time_s"].sum())


def table(config: dict, reports: Path, after: list[dict[str, str]]) -> str:
    groups = {study: row for row in after for study in row["studies"].split()}
    lines = ["| study | experiments | before: job-seconds of the reference | after: workflow seconds on one GPU | "
             "run with | GPU, jobs per GPU | source |", "|---|---|---|---|---|---|---|"]
    for study in config["studies"]:
        ref, row = before(reports, study), groups.get(study)
        cells = [study, str(ref[0]) if ref else "-", f"{ref[1]:,.0f}" if ref else "no reference"]
        if row:
            others = [s for s in row["studies"].split() if s != study]
            cells += [f"{float(row['workflow_s']):,.0f}", " + ".join(others) or "alone",
                      f"{row['gpu']}, {row['jobs_per_gpu']}", row["source"]]
        else:
            cells += ["not measured", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    measured = sum(float(row["workflow_s"]) for row in after)
    known = sum(ref[1] for ref in (before(reports, s) for s in config["studies"]) if ref)
    missing = [s for s in config["studies"] if s not in groups]
    if measured > TARGET_S:
        verdict = f"**not met**: the measured studies alone take {measured / 60:.1f} GPU-minutes"
    elif missing:
        verdict = "**inconclusive**: not every study measured"
    else:
        verdict = "**met**"
    lines += ["", f"Before: {known:,.0f} job-seconds ({known / 3600:.1f} h) over the studies with a reference. "
              f"After: {measured:,.0f} s ({measured / 60:.1f} min) of workflow time for the studies measured; "
              f"not measured: {', '.join(missing) or 'none'}. Target: the whole config in at most 30 GPU-minutes: "
              f"{verdict}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/default.yaml")
    parser.add_argument("--after", type=Path, default=Path("reports/benchmarks/gpu_time/after.csv"))
    args = parser.parse_args()
    config = load_config(args.config)
    with args.after.open() as handle:
        after = list(csv.DictReader(handle))
    out = args.after.with_name("gpu_time.md")
    out.write_text(table(config, Path("reports") / config["name"], after))
    print(out.read_text())


if __name__ == "__main__":
    main()
