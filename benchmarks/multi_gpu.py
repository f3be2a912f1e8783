"""Report (not a test): one study on several GPUs at once against the same study on one GPU (issue 21).

    python benchmarks/multi_gpu.py reports/benchmarks/multi_gpu/minimal_attention \\
        --one-gpu reports/benchmarks/gpu_time/minimal_attention \\
        --compare reports/benchmarks/multi_gpu/minimal_attention/compare.csv

FOLDER is what scripts/gpu_import.py made of the multi-GPU run: ``jobs.csv`` (per job, the uuid of the GPU it ran
on and the UTC span of its work), ``gpu.csv``, ``gpu.2.csv``, ... (nvidia-smi every 5 s; their ``uuid`` column maps
a job's GPU to an index) and ``snakemake.log``, ``snakemake.2.log``, ... (one per call: its line
``workflow wall time: N s on G GPU(s), exit E`` gives the seconds, summed over the calls, and the GPU count).
``--one-gpu`` is the same study run on one GPU: its imported folder (its logs must say 1 GPU and a finished run)
or its seconds.
``--compare`` is the ``compare.csv`` of ``slimbench compare`` with this run against the one-GPU run.

Writes ``multi_gpu.md`` in FOLDER: per GPU, the jobs that ran on it, the share of its samples with it busy
(utilisation above 0) and its mean utilisation; the most GPUs busy at once, from the jobs' spans (distinct GPUs
among the jobs running at one moment) and from the samples (GPUs above 0 in one sampling round); the wall times
and the speed-up (one-GPU seconds over multi-GPU seconds); the compare's ok checks out of all; and the verdict.

Done when (issue 21's words, made exact here before any multi-GPU run): **met** iff all of
1. the most distinct GPUs running jobs at once, from jobs.csv's spans, equals the run's GPU count, and that count
   is at least ``MIN_GPUS``;
2. the multi-GPU run finished (its last call exited 0: a run cut off has a wall time that is only a lower bound)
   and its speed-up is above ``MIN_SPEEDUP``;
3. a compare is given and every one of its checks is ok.
Else **not met**, with the reasons. The samples' count is shown beside the jobs' but does not decide: a 5 s
sample can miss a short job, and a busy GPU is not proof of which job ran on it.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from collections import Counter
from datetime import datetime
from pathlib import Path

from gpu_time import percent, sample_files, samples

MIN_GPUS = 2  # rule 1: a multi-GPU run
MIN_SPEEDUP = 1.0  # rule 2: strictly faster than the one-GPU run
WALL_TIME = re.compile(r"^workflow wall time: (\d+) s on (\d+) GPU\(s\), exit (\d+)$", re.M)
LOG = re.compile(r"snakemake(?:\.(\d+))?\.log")
KINDS = ("base", "compress", "evaluate")


def calls(folder: Path) -> list[tuple[int, int, int]]:
    """Seconds, GPU count and exit status of each call, in call order, from the line scripts/gpu_workflow.sh
    appends to its log."""
    logs = sorted((int(found.group(1) or 1), path) for path in folder.glob("snakemake*.log")
                  if (found := LOG.fullmatch(path.name)))
    lines = [WALL_TIME.findall(path.read_text()) for _, path in logs]
    if not logs or not all(lines):
        raise SystemExit(f"{folder}: a snakemake*.log without a 'workflow wall time' line, or none. Fix: give the "
                         f"folder scripts/gpu_import.py made of the run, or the one-GPU run's seconds.")
    return [(int(seconds), int(gpus), int(status)) for seconds, gpus, status in (line[-1] for line in lines)]


def wall(folder: Path) -> tuple[int, int, bool, int]:
    """The run's seconds over all its calls, its GPU count, whether its last call finished (exit 0) and the calls."""
    ran = calls(folder)
    if len({gpus for _, gpus, _ in ran}) != 1:
        raise SystemExit(f"{folder}: its calls ran on different GPU counts; one run, one machine size.")
    return sum(seconds for seconds, _, _ in ran), ran[0][1], ran[-1][2] == 0, len(ran)


def one_gpu_seconds(given: str) -> float:
    """The one-GPU run's seconds: a number as given, else from its folder, which must hold a finished one-GPU run."""
    try:
        return float(given)
    except ValueError:
        seconds, gpus, finished, _ = wall(Path(given))
    if gpus != 1 or not finished:
        raise SystemExit(f"{given}: ran on {gpus} GPU(s), {'finished' if finished else 'unfinished'}; the reference "
                         f"must be a finished run on one GPU.")
    return float(seconds)


def bare(uuid: str) -> str:
    """A GPU's uuid as torch gives it: nvidia-smi writes the same one with a ``GPU-`` prefix."""
    return uuid.strip().removeprefix("GPU-")


def spans(jobs: list[dict[str, str]]) -> list[tuple[datetime, datetime, str]]:
    """(start, end, GPU) of each job that ran on a GPU and recorded its span."""
    return [(datetime.fromisoformat(job["started_at"]), datetime.fromisoformat(job["finished_at"]),
             bare(job["gpu_uuid"])) for job in jobs if job["gpu_uuid"] and job["started_at"] and job["finished_at"]]


def most_gpus_at_once(running: list[tuple[datetime, datetime, str]]) -> int:
    """The most distinct GPUs with a job running at one moment. The count can only rise where a job starts, so it
    is taken at each start; a job that ends as another starts does not overlap it."""
    return max((len({gpu for start, end, gpu in running if start <= moment < end}) for moment, _, _ in running),
               default=0)


def rounds(rows: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """nvidia-smi's rows by sampling round: a round lists each GPU once, so a new one starts where an index comes
    again (the GPUs of one round may carry timestamps a few milliseconds apart)."""
    grouped: list[list[dict[str, str]]] = []
    for row in rows:
        if not grouped or row["index"] in {seen["index"] for seen in grouped[-1]}:
            grouped.append([])
        grouped[-1].append(row)
    return grouped


def most_busy_in_a_round(files: list[list[dict[str, str]]]) -> int:
    """The most GPUs above 0% utilisation in one sampling round, over every call's samples."""
    return max((sum(percent(row["utilization.gpu"]) > 0 for row in sampled)
                for rows in files for sampled in rounds(rows)), default=0)


def compare_counts(path: Path) -> tuple[int, int]:
    """The ok checks and all checks of a ``slimbench compare`` table."""
    with path.open() as handle:
        verdicts = [row["verdict"] for row in csv.DictReader(handle)]
    return verdicts.count("ok"), len(verdicts)


def unmet(gpus: int, at_once: int, finished: bool, speedup: float, compared: tuple[int, int] | None) -> list[str]:
    """The rules of the module docstring that the run does not meet; none: done."""
    reasons = []
    if gpus < MIN_GPUS:
        reasons.append(f"{gpus} GPU(s), fewer than {MIN_GPUS}")
    if at_once != gpus:
        reasons.append(f"at most {at_once} of the {gpus} GPUs ran jobs at once")
    if not finished:
        reasons.append("the multi-GPU run did not finish")
    if speedup <= MIN_SPEEDUP:
        reasons.append(f"speed-up {speedup:.2f}, not above {MIN_SPEEDUP:g}")
    if compared is None:
        reasons.append("no compare given")
    elif not compared[1]:
        reasons.append("the compare has no checks")
    elif compared[0] != compared[1]:
        reasons.append(f"{compared[1] - compared[0]} of {compared[1]} compare checks not ok")
    return reasons


def per_gpu(jobs: list[dict[str, str]], sampled: list[dict[str, str]]) -> list[str]:
    """A table row per GPU: its index and uuid, the jobs that ran on it by kind, its busy share and mean
    utilisation; a job's GPU missing from the samples (older samples have no uuid) gets index ``?``."""
    index = {bare(row["uuid"]): row["index"] for row in sampled if row.get("uuid")}
    by_index: dict[str, list[float]] = {}
    for row in sampled:
        by_index.setdefault(row["index"], []).append(percent(row["utilization.gpu"]))
    ran = Counter((bare(job["gpu_uuid"]), job["kind"]) for job in jobs if job["gpu_uuid"])
    uuids = {uuid for uuid, _ in ran}
    rows = []
    for gpu in sorted(by_index.keys() | {index.get(uuid, "?") for uuid in uuids}, key=lambda i: (i == "?", i.zfill(3))):
        named = sorted(uuid for uuid in uuids | set(index) if index.get(uuid, "?") == gpu)
        kinds = [sum(ran[uuid, kind] for uuid in named) for kind in KINDS]
        busy = by_index.get(gpu, [])
        share = f"{sum(b > 0 for b in busy) / len(busy):.0%} of {len(busy)}" if busy else "no samples"
        mean = f"{statistics.mean(busy):.0f}%" if busy else "-"
        rows.append(f"| {gpu} | {', '.join(named) or '-'} | {sum(kinds)} "
                    f"({', '.join(f'{n} {kind}' for n, kind in zip(kinds, KINDS))}) | {share} | {mean} |")
    return rows


def report(folder: Path, one_gpu: float, compare: Path | None) -> str:
    with (folder / "jobs.csv").open() as handle:
        jobs = list(csv.DictReader(handle))
    files = [samples(path) for path in sample_files(folder)]
    seconds, gpus, finished, called = wall(folder)
    running = spans(jobs)
    at_once, speedup = most_gpus_at_once(running), one_gpu / seconds
    compared = compare_counts(compare) if compare else None
    reasons = unmet(gpus, at_once, finished, speedup, compared)
    lines = [f"# {folder.name} on {gpus} GPUs against one GPU (issue 21), written by benchmarks/multi_gpu.py", "",
             f"Hardware: {gpus} GPU(s) (the `workflow wall time` line of snakemake.log). jobs.csv lists {len(jobs)} "
             f"jobs; {len(running)} of them name their GPU and their span (the others ran on the CPU or predate "
             f"issue 21).", "",
             "| GPU index | uuid | jobs (by kind) | samples busy (above 0%) | mean utilisation |",
             "|---|---|---|---|---|", *per_gpu(jobs, [row for rows in files for row in rows]), "",
             f"* Most GPUs busy at once, from the jobs' spans (distinct GPUs among the jobs running): **{at_once}** "
             f"of {gpus}.",
             f"* Most GPUs busy at once, from the nvidia-smi samples (above 0% in one 5 s round): "
             f"{most_busy_in_a_round(files)} of {gpus}.",
             f"* Wall time: {seconds} s on {gpus} GPUs over {called} call(s), "
             f"{'finished' if finished else 'unfinished'}, against {one_gpu:g} s on one GPU: speed-up "
             f"**{speedup:.2f}** ({one_gpu:g} / {seconds}).",
             "* Compare against the one-GPU run: " + (f"{compared[0]} of {compared[1]} checks ok." if compared else
                                                      "not given."), "",
             "Done when (rule in benchmarks/multi_gpu.py, written before any multi-GPU run): every GPU ran jobs at "
             f"once, at least {MIN_GPUS} GPUs; the run finished, with a speed-up above {MIN_SPEEDUP:g}; every "
             "compare check ok: " + ("**met**." if not reasons else f"**not met**: {'; '.join(reasons)}.")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the multi-GPU run, as scripts/gpu_import.py imported it")
    parser.add_argument("--one-gpu", required=True, help="the one-GPU run's imported folder, or its seconds")
    parser.add_argument("--compare", type=Path, help="compare.csv of slimbench compare, this run against one GPU")
    args = parser.parse_args()
    out = args.folder / "multi_gpu.md"
    out.write_text(report(args.folder, one_gpu_seconds(args.one_gpu), args.compare))
    print(out.read_text())


if __name__ == "__main__":
    main()
