"""Report (not a test): GPU time of config/default.yaml per study, before and after (issue 17, item 3).

    python benchmarks/gpu_time.py [--config config/default.yaml] [--after reports/benchmarks/gpu_time/after.csv]

* **before**: the committed reference of each study, ``reports/<config name>/<study>/runs.csv``, summed over its
  experiments' ``wall_time_s`` (job-seconds: each experiment a process of its own, several sharing a GPU, so
  this is not the GPU's wall time but the cost the issue was filed against);
* **after**: workflow wall time on one GPU (``scripts/gpu_workflow.sh``, several jobs per GPU), from
  ``after.csv``: one row per measurement, the studies it ran together in ``studies`` (space-separated), the
  seconds from the ``workflow wall time`` line of its ``snakemake.log`` (summed over calls where a run was
  resumed), whether it ``finished`` (``no``: stopped at the call's time budget, so its seconds are a lower bound),
  and where the log is. A study never run alone shares its group's row.

Writes ``gpu_time.md`` beside ``after.csv``, the table per study and the total against the 30 GPU-minutes target;
studies without an ``after`` row are listed as not measured, and the verdict is ``not met`` as soon as the
measured part alone is over the target, ``inconclusive`` while a study is not measured or a run unfinished.
For a study not measured, ``earlier.csv`` beside ``after.csv`` (same columns, plus ``route``; ``date``: when the
reference was committed) may give the device calls that made its reference: other code, other settings, so they
are shown beside the measurements, never in them, and summed separately as a rough size of what is missing; a
row that also covers a measured study is left out.
Where a study ran alone and its folder beside ``after.csv`` holds the call's ``snakemake.log``, ``gpu.csv``
(nvidia-smi every 5 s, read by its header) and the run's ``runs.csv`` (a resumed run: one ``snakemake*.log`` and
``gpu.N.csv`` per call), a second table says where its time went: jobs running at once on average (summed durations
of the finished jobs over the wall time: jobs stopped by a time limit are not counted), the share of samples with
the GPU busy, the kernel seconds (mean utilisation times wall time), and per experiment the median stage, evaluation
(``wall_time_s - stage_time_s``) and memory-probe times, and the median Snakemake job duration per rule (in-process
time plus start-up). The kernel seconds add up to an estimated floor for running those studies together: without MPS
the GPU time-slices between processes and never runs two processes' kernels at once. Where its ``jobs.csv``
(scripts/gpu_import.py) has the parts of each evaluation (runs since session 16), a third table gives their medians.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Sequence

from slimbench.config import load_config
from slimbench.results import RUNS_FILE, read_runs

TARGET_S = 30 * 60


def before(reports: Path, study: str) -> tuple[int, float] | None:
    path = reports / study / RUNS_FILE
    if not path.exists():
        return None
    runs = read_runs(path)
    return len(runs), float(runs["wall_time_s"].sum())


def table(config: dict, reports: Path, after: list[dict[str, str]], earlier: Sequence[dict[str, str]] = ()) -> str:
    groups = {study: row for row in after for study in row["studies"].split()}
    references = calls_behind_references(config, groups, earlier)
    refs = {study: before(reports, study) for study in config["studies"]}
    lines = [f"# GPU time of {config['name']}.yaml per study (issue 17), written by benchmarks/gpu_time.py", "",
             "Before: job-seconds of the committed reference. After: workflow wall time on one GPU, several jobs "
             "per GPU. How each was measured: ../README.md.", "",
             "| study | experiments | before: job-seconds of the reference | after: workflow seconds on one GPU | "
             "run with | GPU, jobs per GPU | source |", "|---|---|---|---|---|---|---|"]
    for study in config["studies"]:
        ref, row = refs[study], groups.get(study) or references.get(study)
        cells = [study, str(ref[0]) if ref else "-", f"{ref[1]:,.0f}" if ref else "no reference"]
        if row:
            others = [s for s in row["studies"].split() if s != study]
            cells += [seconds(row) if study in groups else
                      f"not measured (its reference's calls, {row['route']}: {seconds(row)})",
                      " + ".join(others) or "alone", f"{row['gpu']}, {row['jobs_per_gpu']}", row["source"]]
        else:
            cells += ["not measured", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    measured = sum(float(row["workflow_s"]) for row in after)
    known = sum(ref[1] for ref in refs.values() if ref)
    missing = [s for s in config["studies"] if s not in groups]
    unfinished = not all(map(finished, after))
    at_least = "at least " if unfinished else ""
    if measured > TARGET_S:
        verdict = f"**not met**: the measured studies alone take {at_least}{measured / 60:.1f} GPU-minutes"
    elif missing:
        verdict = "**inconclusive**: not every study measured"
    elif unfinished:
        verdict = "**inconclusive**: a run unfinished"
    else:
        verdict = "**met**"
    lines += ["", f"Before: {known:,.0f} job-seconds ({known / 3600:.1f} h) over the studies with a reference. "
              f"After: {at_least}{measured:,.0f} s ({measured / 60:.1f} min) of workflow time for the studies measured; "
              f"not measured: {', '.join(missing) or 'none'}. Target: the whole config in at most 30 GPU-minutes: "
              f"{verdict}."]
    if used := {id(row): row for row in references.values()}.values():
        rough = sum(float(row["workflow_s"]) for row in used)
        lines += ["", f"The calls that made the references of {len(references)} of the studies not measured took "
                  f"{'at least ' if not all(map(finished, used)) else ''}{rough:,.0f} s ({rough / 60:.1f} min), with "
                  f"other code and settings: a rough size of what is not measured, not a measurement, so not in the "
                  f"total above."]
    return "\n".join(lines) + "\n"


def calls_behind_references(config: dict, measured: dict, earlier: Sequence[dict[str, str]]) -> dict[str, dict]:
    """Per study not measured, its row of ``earlier.csv``; a row naming a measured study is left out, since its
    seconds would count that study's time twice. A study outside the config, or in two rows, is refused."""
    references, named = {}, set()
    for row in earlier:
        studies = row["studies"].split()
        if unknown := set(studies) - set(config["studies"]):
            raise ValueError(f"earlier.csv names {sorted(unknown)}, not studies of {config['name']}.yaml")
        if twice := set(studies) & named:
            raise ValueError(f"earlier.csv gives {sorted(twice)} more than one row")
        named.update(studies)
        if not set(studies) & set(measured):
            references.update(dict.fromkeys(studies, row))
    return references


def seconds(row: dict[str, str]) -> str:
    return f"{float(row['workflow_s']):,.0f}" + ("" if finished(row) else " or more (unfinished)")


def finished(row: dict[str, str]) -> bool:
    return row["finished"] == "yes"


def job_spans(log: Path) -> list[tuple[str, float, float]]:
    """(rule, start, end) in seconds from the first timestamp, from a Snakemake log's job blocks."""
    spans, started, now, first, rule = [], {}, 0.0, None, None
    for line in log.read_text().splitlines():
        if stamp := re.match(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line):
            when = datetime.strptime(" ".join(stamp.group(1).split()), "%a %b %d %H:%M:%S %Y")
            first = first or when
            now = (when - first).total_seconds()
        elif head := re.match(r"^(?:local)?(?:rule|checkpoint) (\w+):", line):
            rule = head.group(1)
        elif (job := re.match(r"^\s+jobid: (\d+)", line)) and rule:
            started[job.group(1)], rule = (rule, now), None
        elif (done := re.match(r"^Finished jobid: (\d+)", line)) and done.group(1) in started:
            name, start = started.pop(done.group(1))
            spans.append((name, start, now))
    return spans


def sample_files(folder: Path) -> list[Path]:
    """The study's ``gpu.csv``, ``gpu.2.csv``, ... (one per call), not its tables such as ``gpu_speedup.csv``."""
    return sorted(p for p in folder.glob("gpu*.csv") if re.fullmatch(r"gpu(\.\d+)?\.csv", p.name))


def samples(path: Path) -> list[dict[str, str]]:
    """nvidia-smi's CSV rows by column name (the header's, units dropped: ``utilization.gpu``), so a file with the
    ``uuid`` column that scripts/gpu_workflow.sh appends since issue 21 reads like an older one without it."""
    with path.open() as handle:
        rows = list(csv.reader(handle, skipinitialspace=True))
    names = [name.split(" [")[0] for name in rows[0]] if rows else []
    return [dict(zip(names, row)) for row in rows[1:]]


def percent(cell: str) -> float:
    """``"50 %"`` as 50.0."""
    return float(cell.rstrip(" %"))


def utilisation(folder: Path) -> list[float]:
    """The ``utilization.gpu`` percentages of every nvidia-smi sample in the study's ``gpu.csv``, ``gpu.2.csv``..."""
    return [percent(row["utilization.gpu"]) for path in sample_files(folder) for row in samples(path)]


def kernel_seconds(busy: list[float], wall: float) -> float:
    """Seconds with a kernel running, estimated as the mean utilisation of the samples ``busy`` times the wall time."""
    return statistics.mean(busy) / 100 * wall


def breakdown(folder: Path, wall: float) -> list[str]:
    spans = [span for log in sorted(folder.glob("snakemake*.log")) for span in job_spans(log)]
    busy = utilisation(folder)
    runs = read_runs(folder / RUNS_FILE)
    durations = defaultdict(list)
    for rule, start, end in spans:
        durations[rule].append(end - start)
    per_rule = ", ".join(f"{rule} {statistics.median(durations[rule]):.0f} s ({len(durations[rule])})"
                         for rule in ("base", "compress", "evaluate") if durations[rule])
    return [folder.name, str(len(runs)), f"{sum(e - s for _, s, e in spans) / wall:.1f}",
            f"{sum(b > 0 for b in busy) / len(busy):.0%} (mean {statistics.mean(busy):.0f}%)",
            f"{kernel_seconds(busy, wall):.0f}",
            f"{runs['stage_time_s'].median():.1f}", f"{(runs['wall_time_s'] - runs['stage_time_s']).median():.1f}",
            f"{runs['probe_time_s'].median():.1f}", per_rule]


def breakdowns(root: Path, after: list[dict[str, str]]) -> str:
    alone = [(root / row["studies"], float(row["workflow_s"])) for row in after
             if (root / row["studies"] / "snakemake.log").exists()]
    if not alone:
        return ""
    lines = ["", "| study (alone) | experiments | jobs at once | GPU busy (5 s samples) | kernel s | stage s | "
             "evaluation s | memory probe s | median job duration (jobs) |", "|---|---|---|---|---|---|---|---|---|"]
    rows = [breakdown(folder, wall) for folder, wall in alone]
    kernel = sum(kernel_seconds(utilisation(folder), wall) for folder, wall in alone)
    floor = (f"Kernel s: the mean utilisation times the wall time, an estimate of the seconds with a kernel running "
             f"(each sample covers a fraction of a second of its 5 s). Without MPS the GPU runs one process's kernels "
             f"at a time, so these studies run together would need about {kernel:,.0f} s ({kernel / 60:.1f} min) or "
             f"more in eager mode, however well packed: an estimated floor.")
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows] + ["", floor]) + "\n"


def evaluation_parts(root: Path, after: list[dict[str, str]]) -> str:
    """Per study whose jobs.csv has them (runs since session 16), the median seconds of each part of an evaluation
    job: its process's age when the evaluation began (imports, config, data), then each of ``eval_phases_s``."""
    rows = []
    for row in after:
        jobs = root / row["studies"] / "jobs.csv"
        evaluations = [job for job in read_rows(jobs) if job.get("eval_phases_s")] if jobs.is_file() else []
        if not evaluations:
            continue
        parts = defaultdict(list)
        for job in evaluations:
            parts["process age"].append(float(job["process_age_s"]))
            for name, seconds in json.loads(job["eval_phases_s"]).items():
                parts[name].append(seconds)
        medians = ", ".join(f"{name} {statistics.median(values):.1f}" for name, values in parts.items())
        rows.append(f"| {row['studies']} | {len(evaluations)} | {medians} |")
    if not rows:
        return ""
    return "\n".join(["", "| study | evaluations | median seconds of each part |", "|---|---|---|", *rows]) + "\n"


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/default.yaml")
    parser.add_argument("--after", type=Path, default=Path("reports/benchmarks/gpu_time/after.csv"))
    args = parser.parse_args()
    config = load_config(args.config)
    earlier_csv = args.after.with_name("earlier.csv")  # optional: after.csv is not
    after, earlier = read_rows(args.after), read_rows(earlier_csv) if earlier_csv.exists() else []
    out = args.after.with_name("gpu_time.md")
    out.write_text(table(config, Path("reports") / config["name"], after, earlier)
                   + breakdowns(args.after.parent, after) + evaluation_parts(args.after.parent, after))
    print(out.read_text())


if __name__ == "__main__":
    main()
