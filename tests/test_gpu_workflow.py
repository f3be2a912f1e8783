"""scripts/gpu_workflow.sh, run in a scratch checkout with stand-ins for nvidia-smi (a host of four GPUs), pip and
Snakemake: the GPUs a call uses are CUDA_VISIBLE_DEVICES' entries when it is set (a one-GPU reference on a
multi-GPU host), else all four that nvidia-smi lists; they set --resources gpu= (jobs per GPU times GPUs) and the
``workflow wall time`` line. With MPS=1, one MPS daemon serves the call's jobs. Also scripts/config_name.py, which
names the results folder of an overlay's run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, load_file_module

NVIDIA_SMI = """#!/usr/bin/env bash
if [ "$1" = --list-gpus ]; then
  for i in 0 1 2 3; do echo "GPU $i: NVIDIA H100 80GB HBM3 (UUID: GPU-$i)"; done
else
  echo "NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04"
fi
"""
PYTHON = """#!/usr/bin/env bash
case "$1 $2" in
  "-m pip") exit 0 ;;
  "-m snakemake") echo "snakemake ${*:3} (visible: ${CUDA_VISIBLE_DEVICES-unset})"
    echo "snakemake $3 (MPS pipe: ${CUDA_MPS_PIPE_DIRECTORY-unset})" >> calls
    [ "$3" = --unlock ] || exit "${SNAKEMAKE_STATUS:-0}" ;;
  "-c "*) echo "CUDA probe (MPS pipe: ${CUDA_MPS_PIPE_DIRECTORY-unset})" >> calls; exit "${PROBE_STATUS:-0}" ;;
  *) exec REAL_PYTHON "$@" ;;  # the real one, for the config name
esac
"""


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    for folder in ("scripts", "config", ".whl", "bin"):
        (root / folder).mkdir(parents=True)
    for script in ("gpu_workflow.sh", "config_name.py"):
        shutil.copyfile(REPO / "scripts" / script, root / "scripts" / script)
    (root / "config" / "default.yaml").write_text("name: default\n")
    (root / "bin" / "nvidia-smi").write_text(NVIDIA_SMI)
    (root / "bin" / "python3").write_text(PYTHON.replace("REAL_PYTHON", sys.executable))
    for stand_in in ("nvidia-smi", "python3"):
        (root / "bin" / stand_in).chmod(0o755)
    return root


def workflow(checkout: Path, visible: str | None, **extra: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("CUDA_VISIBLE_DEVICES", "MPS")}
    env.update(PATH=f"{checkout / 'bin'}:{env['PATH']}", OUT=str(checkout / "out"), **extra)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return subprocess.run(["bash", "scripts/gpu_workflow.sh", "config/default.yaml", "8", "minimal_attention"],
                          cwd=checkout, env=env, capture_output=True, text=True)


@pytest.mark.parametrize("visible, gpus, pool", [(None, 4, "0,1,2,3"), ("0", 1, "0"), ("1,3", 2, "1,3"),
                                                 (" 2, 3 ,", 2, " 2, 3 ,")])
def test_the_gpus_used_are_the_visible_ones_else_all_the_host_has(checkout, visible, gpus, pool):
    done = workflow(checkout, visible)
    assert done.returncode == 0, done.stderr
    log = (checkout / "out" / "snakemake.log").read_text()
    assert f"--resources gpu={8 * gpus} " in log  # 8 jobs per GPU
    assert f"(visible: {pool})" in log  # the jobs' pool: what was set, else every GPU counted
    assert re.search(rf"\nworkflow wall time: \d+ s on {gpus} GPU\(s\), exit 0\n"
                     rf"hardware: NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04\n$", log)


MPS_CONTROL = """#!/usr/bin/env bash
if [ "$1" = -d ]; then
  echo "mps-control -d (visible: ${CUDA_VISIBLE_DEVICES-unset})" >> calls; exit "${DAEMON_STATUS:-0}"
fi
command=$(cat)  # a command on stdin, as the control program reads it
echo "mps-control $command" >> calls
case "$command" in
  get_server_list) [ -n "${NO_SERVER:-}" ] || echo 4242 ;;
  quit) exit "${QUIT_STATUS:-0}" ;;
esac
"""


@pytest.fixture
def with_mps(checkout: Path) -> Path:
    (checkout / "bin" / "nvidia-cuda-mps-control").write_text(MPS_CONTROL)
    (checkout / "bin" / "nvidia-cuda-mps-control").chmod(0o755)
    return checkout


@pytest.mark.parametrize("visible", ["0", "2,3"])
def test_mps_serves_the_jobs_and_is_quit_at_the_end(with_mps, visible):
    done = workflow(with_mps, visible, MPS="1")
    assert done.returncode == 0, done.stderr
    pipe = "/tmp/slimbench-mps/pipe"
    calls = (with_mps / "calls").read_text().splitlines()
    assert calls == [
        "mps-control quit",  # a daemon a killed call left behind
        "mps-control -d (visible: unset)",  # it sees every GPU, so the jobs' indices keep their meaning
        f"CUDA probe (MPS pipe: {pipe})",
        "mps-control get_server_list",  # the probe left a server behind: it ran under MPS
        f"snakemake --unlock (MPS pipe: {pipe})",
        f"snakemake --cores (MPS pipe: {pipe})",
        "mps-control quit"]
    log = (with_mps / "out" / "snakemake.log").read_text()
    assert f"(visible: {visible})" in log
    assert log.endswith(f"\nMPS: on (server pid 4242; CUDA_MPS_PIPE_DIRECTORY={pipe})\n")


@pytest.mark.parametrize("failing", ["DAEMON_STATUS", "PROBE_STATUS", "NO_SERVER"])
def test_mps_that_cannot_serve_stops_the_call_before_any_job(with_mps, failing):
    done = workflow(with_mps, "0", MPS="1", **{failing: "1"})
    assert done.returncode == 1 and "Fix: leave MPS unset" in done.stderr
    assert "snakemake" not in (with_mps / "calls").read_text()
    assert not (with_mps / "out" / "snakemake.log").exists()


@pytest.mark.parametrize("status", ["0", "2"])
def test_a_failing_quit_keeps_the_workflow_s_exit_status(with_mps, status):
    done = workflow(with_mps, "0", MPS="1", QUIT_STATUS="1", SNAKEMAKE_STATUS=status)
    assert done.returncode == int(status), done.stderr
    assert "workflow wall time: " in (with_mps / "out" / "snakemake.log").read_text()


def test_without_mps_no_daemon_is_started(with_mps):
    done = workflow(with_mps, "0")
    assert done.returncode == 0, done.stderr
    assert (with_mps / "calls").read_text() == ("snakemake --unlock (MPS pipe: unset)\n"
                                                "snakemake --cores (MPS pipe: unset)\n")
    assert "MPS" not in (with_mps / "out" / "snakemake.log").read_text()


def test_no_visible_gpu_is_refused(checkout):
    done = workflow(checkout, "")
    assert done.returncode == 1 and "no GPU visible (CUDA_VISIBLE_DEVICES='')" in done.stderr
    assert not (checkout / "out" / "snakemake.log").exists()


def test_the_results_folder_is_the_last_name_given():
    config_name = load_file_module("scripts/config_name.py").config_name
    base, overlay = str(REPO / "config" / "default.yaml"), str(REPO / "config" / "overlays" / "one_gpu.yaml")
    assert config_name([base]) == "default" and config_name([base, overlay]) == "default_one_gpu"
    with pytest.raises(SystemExit, match="sets a config 'name'"):
        config_name([])
