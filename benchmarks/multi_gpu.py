"""Report (not a test): one study on several GPUs at once against the same study on one GPU (issue 21).

    python benchmarks/multi_gpu.py reports/benchmarks/multi_gpu/minimal_attention \\
        --one-gpu reports/benchmarks/multi_gpu/one_gpu/minimal_attention \\
        --compare reports/benchmarks/multi_gpu/minimal_attention/compare.csv

FOLDER is what scripts/gpu_import.py made of the multi-GPU run: ``jobs.csv`` (per job, the uuid of the GPU it ran
on and the UTC span of its work), ``gpu.csv``, ``gpu.2.csv``, ... (nvidia-smi every 5 s; their ``uuid`` column maps
a job's GPU to an index) and ``snakemake.log``, ``snakemake.2.log``, ... (one per call: its line
``workflow wall time: N s on G GPU(s), exit E`` gives the seconds, summed over the calls, and the GPU count).
``--one-gpu`` is the reference: the same study on one GPU of the same machine, run in the same device call
(``CUDA_VISIBLE_DEVICES=0``, config/overlays/one_gpu.yaml) and imported the same way; not a run of another session.
Device hosts differ in their CPUs (the same training, with bit-identical results, took 157 s on one and 255 s on
another), so a speed-up is a ratio against a reference measured on the same machine, and rule 4 checks that it
was. A bare number of seconds is not taken: nothing could check where it was measured.
``--compare`` is the ``compare.csv`` of ``slimbench compare`` with this run against the one-GPU run.

Writes ``multi_gpu.md`` in FOLDER: per GPU, the jobs that ran on it, the share of its samples with it busy
(utilisation above 0) and its mean utilisation; the most GPUs busy at once, from the jobs' spans (distinct GPUs
among the jobs running at one moment) and from the samples (GPUs above 0 in one sampling round); the wall times
and the speed-up (one-GPU seconds over multi-GPU seconds); the compare's ok checks out of all; whether the
reference ran on the same machine; and the verdict.

Done when (issue 21's words, made exact here before any multi-GPU run): **met** iff all of
1. the most distinct GPUs running jobs at once, from jobs.csv's spans, equals the run's GPU count, and that count
   is at least ``MIN_GPUS``;
2. the multi-GPU run finished (its last call exited 0: a run cut off has a wall time that is only a lower bound)
   and its speed-up is above ``MIN_SPEEDUP``;
3. a compare is given and every one of its checks is ok;
4. the reference ran on the same machine, on one GPU, to the end: its logs say 1 GPU and its last call exited 0;
   both runs' gpu.csv files have the ``uuid`` column (older samples have none, and then the machine is not known);
   at least one GPU is busy (above 0%) in the reference's samples; every GPU busy there is among the GPUs of
   the multi-GPU run's samples (nvidia-smi samples every GPU of the host, visible to the jobs or not); and the
   reference's jobs (its jobs.csv) name exactly one GPU, also among them: a busy GPU alone does not say whose
   kernels ran.
Else **not met**, with the reasons. The samples' count is shown beside the jobs' but does not decide: a 5 s
sample can miss a short job, and a busy GPU is not proof of which job ran on it.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gpu_time import percent, read_rows, sample_files, samples

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
                         f"folder scripts/gpu_import.py made of the run.")
    return [(int(seconds), int(gpus), int(status)) for seconds, gpus, status in (line[-1] for line in lines)]


def wall(folder: Path) -> tuple[int, int, bool, int]:
    """The run's seconds over all its calls, its GPU count, whether its last call finished (exit 0) and the calls."""
    ran = calls(folder)
    if len({gpus for _, gpus, _ in ran}) != 1:
        raise SystemExit(f"{folder}: its calls ran on different GPU counts; one run, one machine size.")
    return sum(seconds for seconds, _, _ in ran), ran[0][1], ran[-1][2] == 0, len(ran)


def bare(uuid: str) -> str:
    """A GPU's uuid as torch gives it: nvidia-smi writes the same one with a ``GPU-`` prefix."""
    return uuid.strip().removeprefix("GPU-")


@dataclass(frozen=True)
class Run:
    """What the rules read of one imported run: its wall time, GPU count and end, and the GPUs its samples name."""

    seconds: int
    gpus: int
    finished: bool
    calls: int
    uuids: frozenset[str] | None  # every GPU in its samples; None: a gpu.csv without the uuid column
    busy: frozenset[str] | None  # those of them above 0% in some sample
    job_gpus: frozenset[str]  # the GPUs its jobs.csv names


def read_jobs(folder: Path) -> list[dict[str, str]]:
    """The run's jobs.csv (scripts/gpu_import.py); none where it has no such file."""
    return read_rows(folder / "jobs.csv") if (folder / "jobs.csv").is_file() else []


def read_run(folder: Path) -> Run:
    """A run as scripts/gpu_import.py imported it: its logs, its samples and its jobs."""
    rows = [row for path in sample_files(folder) for row in samples(path)]
    named = all(row.get("uuid") for row in rows)
    uuids = frozenset(bare(row["uuid"]) for row in rows) if named else None
    busy = frozenset(bare(row["uuid"]) for row in rows if percent(row["utilization.gpu"]) > 0) if named else None
    return Run(*wall(folder), uuids, busy, frozenset(bare(job["gpu_uuid"]) for job in read_jobs(folder)
                                                     if job["gpu_uuid"]))


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
    verdicts = [row["verdict"] for row in read_rows(path)]
    return verdicts.count("ok"), len(verdicts)


def other_machine(run: Run, one: Run) -> list[str]:
    """Rule 4's reasons: why the reference is not known to be one GPU of this run's machine, run to the end."""
    reasons = []
    if one.gpus != 1:
        reasons.append(f"the reference ran on {one.gpus} GPU(s), not 1")
    if not one.finished:
        reasons.append("the reference did not finish")
    for who, ran in (("the multi-GPU run", run), ("the reference", one)):
        if ran.uuids is None:
            reasons.append(f"{who}'s gpu.csv has no uuid column (samples before issue 21): its machine is not known")
    if one.busy is not None and not one.busy:
        reasons.append("no GPU busy in the reference's samples")
    elif one.busy and run.uuids is not None and one.busy - run.uuids:
        reasons.append(f"the reference's busy GPU(s) {', '.join(sorted(one.busy - run.uuids))} not among the "
                       f"multi-GPU run's: another machine")
    if len(one.job_gpus) != 1:
        reasons.append(f"the reference's jobs name {len(one.job_gpus)} GPU(s), not 1")
    elif run.uuids is not None and one.job_gpus - run.uuids:
        reasons.append(f"the reference's jobs ran on GPU {next(iter(one.job_gpus))}, not among the multi-GPU run's: "
                       f"another machine")
    return reasons


def unmet(run: Run, one: Run, at_once: int, compared: tuple[int, int] | None) -> list[str]:
    """The rules of the module docstring that the run does not meet, in their order; none: done."""
    reasons = []
    if run.gpus < MIN_GPUS:  # rule 1
        reasons.append(f"{run.gpus} GPU(s), fewer than {MIN_GPUS}")
    if at_once != run.gpus:
        reasons.append(f"at most {at_once} of the {run.gpus} GPUs ran jobs at once")
    if not run.finished:  # rule 2
        reasons.append("the multi-GPU run did not finish")
    if (speedup := one.seconds / run.seconds) <= MIN_SPEEDUP:
        reasons.append(f"speed-up {speedup:.2f}, not above {MIN_SPEEDUP:g}")
    if compared is None:  # rule 3
        reasons.append("no compare given")
    elif not compared[1]:
        reasons.append("the compare has no checks")
    elif compared[0] != compared[1]:
        reasons.append(f"{compared[1] - compared[0]} of {compared[1]} compare checks not ok")
    return reasons + other_machine(run, one)  # rule 4


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


def ended(run: Run) -> str:
    """A run's end in words: an unfinished run's seconds are only a lower bound."""
    return "finished" if run.finished else "unfinished"


def hardware(folder: Path) -> str:
    """The GPUs as nvidia-smi named them, from the ``hardware:`` line scripts/gpu_workflow.sh appends to its log."""
    found = re.search(r"^hardware: (.+)$", (folder / "snakemake.log").read_text(), re.M)
    return found.group(1) if found else "not in snakemake.log (a call from before issue 21)"


def report(folder: Path, one_gpu: Path, compare: Path | None) -> str:
    jobs = read_jobs(folder)
    files = [samples(path) for path in sample_files(folder)]
    run, one = read_run(folder), read_run(one_gpu)
    gpus, running = run.gpus, spans(jobs)
    at_once, speedup = most_gpus_at_once(running), one.seconds / run.seconds
    compared = compare_counts(compare) if compare else None
    reasons = unmet(run, one, at_once, compared)
    busy = ", ".join(sorted(one.busy)) if one.busy else "none" if one.busy is not None else "not known (no uuid)"
    placed = ", ".join(sorted(one.job_gpus)) or "none"
    lines = [f"# {folder.name} on {gpus} GPUs against one GPU of the same machine (issue 21), written by "
             f"benchmarks/multi_gpu.py", "",
             f"Hardware: {hardware(folder)}; {gpus} GPU(s) used (the `workflow wall time` line of snakemake.log). "
             f"jobs.csv lists {len(jobs)} "
             f"jobs; {len(running)} of them name their GPU and their span (the others ran on the CPU or predate "
             f"issue 21).", "",
             "| GPU index | uuid | jobs (by kind) | samples busy (above 0%) | mean utilisation |",
             "|---|---|---|---|---|", *per_gpu(jobs, [row for rows in files for row in rows]), "",
             f"* Most GPUs busy at once, from the jobs' spans (distinct GPUs among the jobs running): **{at_once}** "
             f"of {gpus}.",
             f"* Most GPUs busy at once, from the nvidia-smi samples (above 0% in one 5 s round): "
             f"{most_busy_in_a_round(files)} of {gpus}.",
             f"* Wall time: {run.seconds} s on {gpus} GPUs over {run.calls} call(s), {ended(run)}, against "
             f"{one.seconds} s on {one.gpus} GPU(s) over {one.calls} call(s), {ended(one)}: speed-up "
             f"**{speedup:.2f}** ({one.seconds} / {run.seconds}).",
             f"* The reference (`{os.path.relpath(one_gpu, folder)}`): GPU(s) its jobs name: {placed}; GPU(s) busy "
             f"in its samples: {busy}; this "
             f"run's samples name "
             + (f"{len(run.uuids)} GPU(s)." if run.uuids is not None else "no uuid."),
             "* Compare against the one-GPU run: " + (f"{compared[0]} of {compared[1]} checks ok." if compared else
                                                      "not given."), "",
             "Done when (rule in benchmarks/multi_gpu.py, written before any multi-GPU run): every GPU ran jobs at "
             f"once, at least {MIN_GPUS} GPUs; the run finished, with a speed-up above {MIN_SPEEDUP:g}; every "
             "compare check ok; the reference ran on one GPU of the same machine, to the end: "
             + ("**met**." if not reasons else f"**not met**: {'; '.join(reasons)}.")]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the multi-GPU run, as scripts/gpu_import.py imported it")
    parser.add_argument("--one-gpu", type=Path, required=True,
                        help="the one-GPU reference of the same device call, as scripts/gpu_import.py imported it")
    parser.add_argument("--compare", type=Path, help="compare.csv of slimbench compare, this run against one GPU")
    args = parser.parse_args()
    out = args.folder / "multi_gpu.md"
    out.write_text(report(args.folder, args.one_gpu, args.compare))
    print(out.read_text())


if __name__ == "__main__":
    main()
