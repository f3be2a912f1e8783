"""scripts/gpu_studies.sh, run on stand-ins for the workflow and for benchmarks/idle_speedup.py in a scratch
checkout: with IDLE_PAIRS, a study that finished (exit 0) is timed again alone and its idle_speedup files land in
$OUT/<study>; a study cut off by its time limit is not, nor is any study without IDLE_PAIRS; a table left by an
earlier call is never passed off as this call's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

WORKFLOW = """#!/usr/bin/env bash
study=${@: -1}
status=0; [ "$study" = cut ] && status=124
echo "workflow wall time: 7 s on 1 GPU(s), exit $status" > "$OUT/snakemake.log"
exit $status
"""
IDLE = """import sys
args = sys.argv[1:]
study, pairs = args[args.index("--study") + 1], args[args.index("--pairs") + 1]
if study == "crash":
    sys.exit("idle_speedup: failed")
open(f"results/default/{study}/idle_speedup.csv", "w").write(f"{study} {pairs} pairs\\n")
print('{"benchmark": "idle_speedup", "summary": true}')
"""


def run(checkout: Path, out: Path, studies: list[str], **env: str) -> str:
    environment = {**os.environ, "OUT": str(out), "BUDGET": "300", "DATA": str(checkout / "data"), **env}
    done = subprocess.run(["bash", "scripts/gpu_studies.sh", "12", *studies], cwd=checkout, env=environment,
                          capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    (root / "benchmarks").mkdir()
    shutil.copyfile(REPO / "scripts" / "gpu_studies.sh", root / "scripts" / "gpu_studies.sh")
    (root / "scripts" / "gpu_workflow.sh").write_text(WORKFLOW)
    (root / "benchmarks" / "idle_speedup.py").write_text(IDLE)
    for study in ("done", "cut", "crash"):
        (root / "results" / "default" / study).mkdir(parents=True)
    return root


def test_a_finished_study_is_timed_again_alone_and_a_cut_off_one_is_not(checkout, tmp_path):
    (checkout / "results/default/crash/idle_speedup.csv").write_text("left by an earlier call\n")
    printed = run(checkout, tmp_path / "out", ["done", "cut", "crash"], IDLE_PAIRS="50")
    out = tmp_path / "out"
    assert (out / "done" / "idle_speedup.csv").read_text() == "done 50 pairs\n"
    assert '"summary": true' in (out / "done" / "idle_speedup.jsonl").read_text()
    assert not (out / "cut" / "idle_speedup.csv").exists() and not (out / "cut" / "idle_speedup.jsonl").exists()
    assert not (out / "crash" / "idle_speedup.csv").exists()  # the stale table is removed, not copied
    assert "failed" in (out / "crash" / "idle_speedup.err").read_text()
    assert "done: idle_speedup exit 0" in printed and "crash: idle_speedup exit 1" in printed
    assert "cut: idle_speedup" not in printed


def test_without_idle_pairs_no_study_is_timed_again(checkout, tmp_path):
    printed = run(checkout, tmp_path / "out", ["done"])
    assert "idle_speedup" not in printed and not (tmp_path / "out" / "done" / "idle_speedup.jsonl").exists()
