"""benchmarks/multi_gpu.py, checked on small files written by hand with answers worked out by hand: two GPUs
(uuids aa and bb, nvidia-smi writing them GPU-aa and GPU-bb), four jobs whose spans put at most two distinct GPUs
to work at once though three jobs run together, samples whose GPUs in one round carry timestamps milliseconds
apart, 170 s against 300 s on one GPU of the same machine (speed-up 1.76; its samples list both GPUs, aa busy),
and the done-when rule's reasons one by one, the same-machine rule's among them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import load_file_module

ZERO = datetime(2026, 12, 8, 10, 0, tzinfo=timezone.utc)
JOBS_HEADER = "kind,dataset,model,chain,seed,gpu_uuid,cuda_visible_devices,source,started_at,finished_at\n"
NEW_SAMPLES = """timestamp, index, utilization.gpu [%], memory.used [MiB], uuid
2026/12/08 10:00:00.001, 0, 50 %, 100 MiB, GPU-aa
2026/12/08 10:00:00.002, 1, 0 %, 0 MiB, GPU-bb
2026/12/08 10:00:05.001, 0, 100 %, 100 MiB, GPU-aa
2026/12/08 10:00:05.003, 1, 20 %, 100 MiB, GPU-bb
2026/12/08 10:00:10.001, 0, 0 %, 100 MiB, GPU-aa
2026/12/08 10:00:10.002, 1, 30 %, 100 MiB, GPU-bb
"""
OLD_SAMPLES = "".join(line.rsplit(",", 1)[0] + "\n" for line in NEW_SAMPLES.splitlines())  # no uuid column
ONE_GPU_SAMPLES = """timestamp, index, utilization.gpu [%], memory.used [MiB], uuid
2026/12/08 10:05:00.001, 0, 40 %, 100 MiB, GPU-aa
2026/12/08 10:05:00.002, 1, 0 %, 0 MiB, GPU-bb
2026/12/08 10:05:05.001, 0, 0 %, 100 MiB, GPU-aa
2026/12/08 10:05:05.002, 1, 0 %, 0 MiB, GPU-bb
"""  # CUDA_VISIBLE_DEVICES=0: nvidia-smi still samples both GPUs, only aa works


@pytest.fixture
def multi_gpu():
    return load_file_module("benchmarks/multi_gpu.py")


def at(seconds: float) -> str:
    return (ZERO + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def job(kind: str, uuid: str, start: float | None, end: float | None) -> str:
    times = f"{at(start)},{at(end)}" if start is not None else ","
    return f"{kind},mnist,vit,base,0,{uuid},{'0' if uuid else ''},lock-file pool,{times}\n"


def span(uuid: str, start: float, end: float) -> tuple[datetime, datetime, str]:
    return ZERO + timedelta(seconds=start), ZERO + timedelta(seconds=end), uuid


def write_logs(folder: Path, logs: tuple[str, ...]) -> None:
    """snakemake.log, snakemake.2.log, ..., each ending in the given ``workflow wall time`` line."""
    for number, line in enumerate(logs, start=1):
        name = "snakemake.log" if number == 1 else f"snakemake.{number}.log"
        (folder / name).write_text(f"Building DAG of jobs...\nworkflow wall time: {line}\n"
                                   f"hardware: 0, NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04, GPU-aa; 1, ...\n")


def reference(tmp_path: Path, samples: str = ONE_GPU_SAMPLES,
              logs: tuple[str, ...] = ("300 s on 1 GPU(s), exit 0",), gpus: tuple[str, ...] = ("aa", "aa")) -> Path:
    """The imported one-GPU reference of the same device call: a job on each of ``gpus``."""
    folder = tmp_path / "one_gpu" / "minimal_attention"
    folder.mkdir(parents=True)
    (folder / "gpu.csv").write_text(samples)
    (folder / "jobs.csv").write_text(JOBS_HEADER + "".join(job("base", gpu, 0, 100) for gpu in gpus))
    write_logs(folder, logs)
    return folder


def run_folder(tmp_path: Path, samples: str = NEW_SAMPLES, logs: tuple[str, ...] = ("170 s on 2 GPU(s), exit 0",),
               verdicts: tuple[str, ...] = ("ok", "ok", "ok")) -> tuple[Path, Path]:
    """The imported run: jobs aa 0-100 s and 10-100 s, bb 20-100 s and 100-170 s, and one from before issue 21;
    at 20 s three jobs run, on two distinct GPUs. Its compare.csv has the given verdicts."""
    folder = tmp_path / "minimal_attention"
    folder.mkdir()
    (folder / "jobs.csv").write_text(JOBS_HEADER + job("base", "aa", 0, 100) + job("base", "aa", 10, 100)
                                     + job("compress", "bb", 20, 100) + job("evaluate", "bb", 100, 170)
                                     + job("evaluate", "", None, None))
    (folder / "gpu.csv").write_text(samples)
    write_logs(folder, logs)
    compare = tmp_path / "compare.csv"
    compare.write_text("study,verdict\n" + "".join(f"minimal_attention,{v}\n" for v in verdicts))
    return folder, compare


def test_the_report_of_a_run_that_meets_the_rule(tmp_path, multi_gpu):
    folder, compare = run_folder(tmp_path)
    text = multi_gpu.report(folder, reference(tmp_path), compare)
    assert "Hardware: 0, NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04, GPU-aa; 1, ...; 2 GPU(s) used" in text
    assert "jobs.csv lists 5 jobs; 4 of them name their GPU and their span" in text
    # aa: samples 50, 100, 0 % -> 2 of 3 busy, mean 50 %; bb: 0, 20, 30 % -> 2 of 3, mean 16.7 %
    assert "| 0 | aa | 2 (2 base, 0 compress, 0 evaluate) | 67% of 3 | 50% |" in text
    assert "| 1 | bb | 2 (0 base, 1 compress, 1 evaluate) | 67% of 3 | 17% |" in text
    assert "from the jobs' spans (distinct GPUs among the jobs running): **2** of 2." in text
    assert "(above 0% in one 5 s round): 2 of 2." in text  # the round at 10:00:05, its GPUs 2 ms apart
    assert ("170 s on 2 GPUs over 1 call(s), finished, against 300 s on 1 GPU(s) over 1 call(s), finished: "
            "speed-up **1.76** (300 / 170)") in text
    assert ("(`../one_gpu/minimal_attention`): GPU(s) its jobs name: aa; GPU(s) busy in its samples: aa; this run's "
            "samples name 2 GPU(s).") in text
    assert "3 of 3 checks ok." in text and text.endswith("of the same machine, to the end: **met**.\n")


def test_a_changed_check_or_no_compare_is_not_met(tmp_path, multi_gpu):
    folder, compare = run_folder(tmp_path, verdicts=("ok", "changed", "ok"))
    one = reference(tmp_path)
    text = multi_gpu.report(folder, one, compare)
    assert "2 of 3 checks ok." in text and text.endswith("**not met**: 1 of 3 compare checks not ok.\n")
    assert multi_gpu.report(folder, one, None).endswith("**not met**: no compare given.\n")


def test_older_samples_without_uuid_leave_the_jobs_gpus_unplaced(tmp_path, multi_gpu):
    folder, compare = run_folder(tmp_path, samples=OLD_SAMPLES)
    text = multi_gpu.report(folder, reference(tmp_path), compare)
    assert "| 0 | - | 0 (0 base, 0 compress, 0 evaluate) | 67% of 3 | 50% |" in text
    assert "| ? | aa, bb | 4 (2 base, 1 compress, 1 evaluate) | no samples | - |" in text
    assert "**2** of 2." in text  # the jobs' spans still name their GPUs
    assert text.endswith("**not met**: the multi-GPU run's gpu.csv has no uuid column (samples before issue 21): "
                         "its machine is not known.\n")  # rule 4: the reference's GPU cannot be placed


def test_gpus_used_one_after_the_other_are_not_at_once(multi_gpu):
    # aa 0-100 and 50-150 (two jobs, one GPU); bb 150-200 (starts as aa's last ends) and 160-170
    running = [span("aa", 0, 100), span("aa", 50, 150), span("bb", 150, 200),
               span("bb", 160, 170)]
    assert multi_gpu.most_gpus_at_once(running) == 1
    assert multi_gpu.most_gpus_at_once(running + [span("bb", 149, 151)]) == 2  # overlaps aa at 149 s
    assert multi_gpu.most_gpus_at_once([]) == 0


def test_a_resumed_run_adds_its_calls_and_the_last_one_says_whether_it_finished(tmp_path, multi_gpu):
    folder, _ = run_folder(tmp_path, logs=("100 s on 2 GPU(s), exit 124", "70 s on 2 GPU(s), exit 0"))
    assert multi_gpu.wall(folder) == (170, 2, True, 2)
    (folder / "snakemake.3.log").write_text("workflow wall time: 5 s on 2 GPU(s), exit 124\n")
    assert multi_gpu.wall(folder) == (175, 2, False, 3)


def test_the_reference_is_read_from_its_logs_and_samples(tmp_path, multi_gpu):
    one = multi_gpu.read_run(reference(tmp_path, logs=("200 s on 1 GPU(s), exit 124", "100 s on 1 GPU(s), exit 0")))
    assert one == multi_gpu.Run(300, 1, True, 2, frozenset({"aa", "bb"}), frozenset({"aa"}), frozenset({"aa"}))
    old = multi_gpu.read_run(reference(tmp_path / "old", samples=OLD_SAMPLES))
    assert old.uuids is None and old.busy is None
    (tmp_path / "no_log").mkdir()
    with pytest.raises(SystemExit, match="without a 'workflow wall time' line"):
        multi_gpu.read_run(tmp_path / "no_log")


def test_a_reference_on_two_gpus_is_not_met(tmp_path, multi_gpu):
    folder, compare = run_folder(tmp_path)
    text = multi_gpu.report(folder, reference(tmp_path, logs=("300 s on 2 GPU(s), exit 0",)), compare)
    assert "against 300 s on 2 GPU(s) over 1 call(s), finished" in text
    assert text.endswith("**not met**: the reference ran on 2 GPU(s), not 1.\n")
    text = multi_gpu.report(folder, reference(tmp_path / "b", gpus=("aa", "GPU-bb")), compare)
    assert "GPU(s) its jobs name: aa, bb;" in text  # its samples show aa alone, its jobs say otherwise
    assert text.endswith("**not met**: the reference's jobs name 2 GPU(s), not 1.\n")


AB = frozenset({"aa", "bb"})
MULTI = {"seconds": 100, "gpus": 2, "finished": True, "calls": 1, "uuids": AB, "busy": AB, "job_gpus": AB}
ONE = {**MULTI, "seconds": 150, "gpus": 1, "busy": frozenset({"aa"}), "job_gpus": frozenset({"aa"})}  # speed-up 1.5


@pytest.mark.parametrize("multi, one, at_once, compared, reasons", [
    ({}, {}, 2, (4, 4), []),
    ({"gpus": 1}, {}, 1, (4, 4), ["1 GPU(s), fewer than 2"]),  # rule 1
    ({"gpus": 4}, {}, 3, (4, 4), ["at most 3 of the 4 GPUs ran jobs at once"]),
    ({"finished": False}, {}, 2, (4, 4), ["the multi-GPU run did not finish"]),  # rule 2
    ({}, {"seconds": 100}, 2, (4, 4), ["speed-up 1.00, not above 1"]),
    ({}, {}, 2, (0, 0), ["the compare has no checks"]),  # rule 3
    ({}, {}, 2, (3, 4), ["1 of 4 compare checks not ok"]),
    ({}, {"gpus": 2}, 2, (4, 4), ["the reference ran on 2 GPU(s), not 1"]),  # rule 4
    ({}, {"finished": False}, 2, (4, 4), ["the reference did not finish"]),
    ({}, {"busy": frozenset({"aa", "cc"})}, 2, (4, 4),
     ["the reference's busy GPU(s) cc not among the multi-GPU run's: another machine"]),
    ({}, {"busy": frozenset()}, 2, (4, 4), ["no GPU busy in the reference's samples"]),
    ({}, {"job_gpus": AB}, 2, (4, 4), ["the reference's jobs name 2 GPU(s), not 1"]),
    ({}, {"job_gpus": frozenset()}, 2, (4, 4), ["the reference's jobs name 0 GPU(s), not 1"]),
    ({}, {"job_gpus": frozenset({"cc"})}, 2, (4, 4),
     ["the reference's jobs ran on GPU cc, not among the multi-GPU run's: another machine"]),
    ({}, {"uuids": None, "busy": None}, 2, (4, 4),
     ["the reference's gpu.csv has no uuid column (samples before issue 21): its machine is not known"]),
    ({"uuids": None, "busy": None}, {}, 2, (4, 4),
     ["the multi-GPU run's gpu.csv has no uuid column (samples before issue 21): its machine is not known"]),
])
def test_each_rule_of_done_when(multi_gpu, multi, one, at_once, compared, reasons):
    assert multi_gpu.unmet(multi_gpu.Run(**{**MULTI, **multi}), multi_gpu.Run(**{**ONE, **one}), at_once,
                           compared) == reasons


def test_gpus_busy_in_different_rounds_are_not_at_once(tmp_path, multi_gpu):
    lines = NEW_SAMPLES.splitlines()
    (tmp_path / "gpu.csv").write_text("\n".join(lines[:3] + lines[5:]) + "\n")  # rounds 1 and 3: one GPU busy in each
    assert multi_gpu.most_busy_in_a_round([multi_gpu.samples(tmp_path / "gpu.csv")]) == 1
