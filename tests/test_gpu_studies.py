"""scripts/gpu_studies.sh, run on stand-ins for the workflow and for benchmarks/idle_speedup.py in a scratch
checkout: with IDLE_PAIRS, a study that finished (exit 0) is timed again alone and its idle_speedup files land in
$OUT/<study>; a study cut off by its time limit is not, nor is any study without IDLE_PAIRS; a table left by an
earlier call is never passed off as this call's. CONFIG (default config/default.yaml) goes to the workflow as one
argument and to idle_speedup as one --config per file, whose table is read under the last file's name."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

WORKFLOW = """#!/usr/bin/env bash
study=${@: -1}
status=0; [ "$study" = cut ] && status=124
echo "workflow wall time: 7 s on 1 GPU(s), exit $status" > "$OUT/snakemake.log"
echo "$1" > "$OUT/config.txt"
exit $status
"""
IDLE = """import sys
import yaml
args = sys.argv[1:]
study, pairs = args[args.index("--study") + 1], args[args.index("--pairs") + 1]
configs = [arg.removeprefix("--config=") for arg in args if arg.startswith("--config=")]
if study == "crash":
    sys.exit("idle_speedup: failed")
name = yaml.safe_load(open(configs[-1]))["name"]
open(f"results/{name}/{study}/idle_speedup.csv", "w").write(f"{study} {pairs} pairs {' '.join(configs)}\\n")
print('{"benchmark": "idle_speedup", "summary": true}')
"""


def run(checkout: Path, out: Path, studies: list[str], **env: str) -> str:
    environment = {**os.environ, "OUT": str(out), "BUDGET": "300", "DATA": str(checkout / "data"), **env,
                   "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}  # a python3 with yaml
    done = subprocess.run(["bash", "scripts/gpu_studies.sh", "12", *studies], cwd=checkout, env=environment,
                          capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    (root / "benchmarks").mkdir()
    for script in ("gpu_studies.sh", "config_name.py"):
        shutil.copyfile(REPO / "scripts" / script, root / "scripts" / script)
    (root / "scripts" / "gpu_workflow.sh").write_text(WORKFLOW)
    (root / "benchmarks" / "idle_speedup.py").write_text(IDLE)
    shutil.copytree(REPO / "config" / "overlays", root / "config" / "overlays")
    (root / "config" / "default.yaml").write_text("name: default\n")
    for name in ("default", "default_one_gpu"):
        for study in ("done", "cut", "crash"):
            (root / "results" / name / study).mkdir(parents=True)
    return root


def test_a_finished_study_is_timed_again_alone_and_a_cut_off_one_is_not(checkout, tmp_path):
    (checkout / "results/default/crash/idle_speedup.csv").write_text("left by an earlier call\n")
    printed = run(checkout, tmp_path / "out", ["done", "cut", "crash"], IDLE_PAIRS="50")
    out = tmp_path / "out"
    assert (out / "done" / "idle_speedup.csv").read_text() == "done 50 pairs config/default.yaml\n"
    assert (out / "done" / "config.txt").read_text() == "config/default.yaml\n"
    assert '"summary": true' in (out / "done" / "idle_speedup.jsonl").read_text()
    assert not (out / "cut" / "idle_speedup.csv").exists() and not (out / "cut" / "idle_speedup.jsonl").exists()
    assert not (out / "crash" / "idle_speedup.csv").exists()  # the stale table is removed, not copied
    assert "failed" in (out / "crash" / "idle_speedup.err").read_text()
    assert "done: idle_speedup exit 0" in printed and "crash: idle_speedup exit 1" in printed
    assert "cut: idle_speedup" not in printed


def test_without_idle_pairs_no_study_is_timed_again(checkout, tmp_path):
    printed = run(checkout, tmp_path / "out", ["done"])
    assert "idle_speedup" not in printed and not (tmp_path / "out" / "done" / "idle_speedup.jsonl").exists()


def test_an_overlay_goes_to_the_workflow_whole_and_to_idle_speedup_file_by_file(checkout, tmp_path):
    both = "config/default.yaml config/overlays/one_gpu.yaml"
    (checkout / "results/default/done/idle_speedup.csv").write_text("the base config's table\n")
    run(checkout, tmp_path / "out", ["done"], IDLE_PAIRS="5", CONFIG=both)
    assert (tmp_path / "out" / "done" / "config.txt").read_text() == both + "\n"
    assert (tmp_path / "out" / "done" / "idle_speedup.csv").read_text() == f"done 5 pairs {both}\n"


def test_a_study_not_started_is_written_down_in_a_new_out_folder(checkout, tmp_path):
    out = tmp_path / "new" / "one"  # OUT=$OUT/one in the device call: no folder yet
    printed = run(checkout, out, ["done"], BUDGET="30")  # under the 40 s a study needs to start
    assert re.fullmatch(r"done: not started, (30|29) s left\n", printed)  # 29: a loaded machine's first second
    assert (out / "studies.txt").read_text() == printed
