"""benchmarks/mps_ab.py, on small files written by hand: the first pair decides by the rule written before the runs
(MPS helps iff MPS / plain <= 0.85 with every compare check ok), later pairs are shown only, and a pair from two
machines or with MPS in the wrong run is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_file_module

SAMPLES = """timestamp, index, utilization.gpu [%], memory.used [MiB], uuid
2026/12/08 10:00:00.001, 0, 50 %, 100 MiB, GPU-{uuid}
2026/12/08 10:00:05.001, 0, 0 %, 100 MiB, GPU-{uuid}
"""
LOG = """[Mon Dec  7 23:50:00 2026]
rule base:
    jobid: 1
[Mon Dec  7 23:50:40 2026]
Finished jobid: 1 (Rule: base)
workflow wall time: {seconds} s on 1 GPU(s), exit {status}
hardware: 0, NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04, GPU-{uuid}
"""


@pytest.fixture
def mps_ab():
    return load_file_module("benchmarks/mps_ab.py")


def run(folder: Path, seconds: int, mps: bool, uuid: str = "aa", status: int = 0) -> None:
    folder.mkdir(parents=True)
    log = LOG.format(seconds=seconds, status=status, uuid=uuid)
    (folder / "snakemake.log").write_text(log + ("MPS: on (CUDA_MPS_PIPE_DIRECTORY=/tmp/x)\n" if mps else ""))
    (folder / "gpu.csv").write_text(SAMPLES.format(uuid=uuid))
    (folder / "runs.csv").write_text("stage_time_s,wall_time_s,probe_time_s\n1,4,2\n")


def pair(root: Path, number: int, plain_s: int, mps_s: int, verdicts: tuple[str, ...] = ("ok", "ok"),
         **mps_run) -> Path:
    folder = root / f"pair{number}"
    run(folder / "plain" / "study", plain_s, mps=False)
    run(folder / "mps" / "study", mps_s, **{"mps": True, **mps_run})
    (folder / "compare.csv").write_text("study,verdict\n" + "".join(f"study,{v}\n" for v in verdicts))
    return folder


@pytest.mark.parametrize("plain_s, mps_s, verdicts, status, expected", [
    (100, 85, ("ok", "ok"), 0, "helps (ratio 0.850 <= 0.85, 2 of 2 checks ok)"),  # at the limit: helps
    (154, 131, ("ok", "ok"), 0, "does not help (ratio 0.851 > 0.85)"),  # session 16's first pair
    (100, 80, ("ok", "changed"), 0, "inconclusive (faster, but 1 of 2 compare checks ok)"),
    (100, 80, ("ok", "ok"), 130, "inconclusive (a run did not finish)"),
])
def test_the_first_pair_decides_by_the_registered_rule(tmp_path, mps_ab, plain_s, mps_s, verdicts, status, expected):
    row = mps_ab.pair(pair(tmp_path, 1, plain_s, mps_s, verdicts, status=status), "study")
    assert mps_ab.verdict(row) == expected


def test_later_pairs_are_shown_and_do_not_decide(tmp_path, mps_ab):
    rows = [mps_ab.pair(pair(tmp_path, 1, 154, 131), "study"), mps_ab.pair(pair(tmp_path, 2, 100, 50), "study")]
    text = mps_ab.report(rows, "study")
    assert "| pair2 | 100 | 50 | 0.500 | 2 of 2 |" in text and "no (added after the first pair)" in text
    assert "Mean MPS / plain over the 2 pairs: 0.675 (range 0.500 to 0.851)" in text  # (0.8506 + 0.5) / 2
    assert "**does not help (ratio 0.851 > 0.85)**" in text


def test_a_pair_from_two_machines_or_with_mps_misplaced_is_refused(tmp_path, mps_ab):
    with pytest.raises(SystemExit, match="a pair runs on one machine"):
        mps_ab.pair(pair(tmp_path, 1, 100, 80, uuid="bb"), "study")
    with pytest.raises(SystemExit, match="MPS must be on in mps/"):
        mps_ab.pair(pair(tmp_path, 2, 100, 80, mps=False), "study")
