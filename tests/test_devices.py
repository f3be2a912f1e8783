"""One GPU per job: concurrent processes on a host with N (faked) GPUs each get a different one; under SLURM
the scheduler's choice is kept. CPU only: the GPUs are CUDA_VISIBLE_DEVICES entries, never opened."""

import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from slimbench import devices
from conftest import REPO

# A job: claim a GPU, report it, hold it until the test says release (bounded, so a failed test never hangs).
JOB = """
import os, sys, time
from pathlib import Path
from slimbench.devices import claim_gpu
claim_gpu()
out = Path(sys.argv[1])
(out / f"{os.getpid()}.tmp").write_text(os.environ["CUDA_VISIBLE_DEVICES"])
os.replace(out / f"{os.getpid()}.tmp", out / f"{os.getpid()}.gpu")  # whole: the test may read it at once
deadline = time.monotonic() + 60
while not (out / "release").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def start_job(tmp_path, gpus: str, per_gpu: int, wait_s: float = 600) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(CUDA_VISIBLE_DEVICES=gpus, SLIMBENCH_GPU_LOCKS=str(tmp_path / "locks"),
               SLIMBENCH_JOBS_PER_GPU=str(per_gpu), SLIMBENCH_GPU_WAIT_S=str(wait_s),
               PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def claimed(tmp_path, count: int) -> list[str]:
    deadline = time.monotonic() + 60
    while len(files := list(tmp_path.glob("*.gpu"))) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return [f.read_text() for f in files]


@pytest.mark.parametrize("gpus, per_gpu, expected", [
    ("3,5,6,7", 1, {"3": 1, "5": 1, "6": 1, "7": 1}),  # four GPUs, four jobs: one each
    ("0,1", 2, {"0": 2, "1": 2}),                       # two slots per GPU: four jobs share two GPUs evenly
])
def test_concurrent_jobs_get_distinct_gpus(tmp_path, gpus, per_gpu, expected):
    jobs = [start_job(tmp_path, gpus, per_gpu) for _ in range(sum(expected.values()))]
    try:
        assert Counter(claimed(tmp_path, len(jobs))) == expected
        # Every slot is held: one more job waits its bounded time, then says why.
        extra = start_job(tmp_path, gpus, per_gpu, wait_s=1)
        _, err = extra.communicate(timeout=60)
        assert extra.returncode != 0 and "no free GPU slot" in err
    finally:
        (tmp_path / "release").touch()
        for job in jobs:
            job.wait(timeout=60)
    # A finished job's slot is free again.
    for f in tmp_path.glob("*.gpu"):
        f.unlink()
    (tmp_path / "release").unlink()
    again = start_job(tmp_path, gpus, per_gpu, wait_s=5)
    assert claimed(tmp_path, 1)[0] in expected
    (tmp_path / "release").touch()
    assert again.wait(timeout=60) == 0


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(devices, "_claimed", None)
    monkeypatch.setattr(devices, "_held", None)


def test_slurm_choice_is_kept(fresh):
    env = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "1,2"}
    assert devices.claim_gpu(env)["source"] == "slurm"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,2"
    assert devices.device_record("cuda", env) == {"device": "cuda", "source": "slurm",
                                                  "cuda_visible_devices": "1,2", "slurm_job_id": "42"}


def test_one_gpu_is_left_alone(fresh):
    env = {"CUDA_VISIBLE_DEVICES": "2"}
    assert devices.claim_gpu(env) == {"source": "only one visible"}
    assert env == {"CUDA_VISIBLE_DEVICES": "2"}


def test_cpu_config_records_no_claim(fresh):
    assert devices.device_record("cpu", {}) == {"device": "cpu", "source": "config"}


# A GPU job's start-up up to its GPU claim, with CUDA's device count spied on: a call there starts the CUDA
# driver, which then ignores the CUDA_VISIBLE_DEVICES the claim sets. NVML is faked to see two GPUs.
STARTUP = """
import sys, torch
started = []
torch._C._cuda_getDeviceCount = lambda: started.append("cudaGetDeviceCount") or 2
torch.cuda._device_count_nvml = lambda: 2
from slimbench import devices
def claim(*args, **kwargs):
    print("CUDA started before the claim:" if started else "claim first", started)
    raise SystemExit(3 if started else 0)
devices.claim_gpu = claim
from slimbench import cli
sys.argv = ["slimbench", "base", "--config", "config/smoke.yaml", "--set", '{"device": "auto"}', sys.argv[1]]
cli.main()
"""


def test_no_import_starts_cuda_before_a_job_claims_its_gpu() -> None:
    """torchao's import called torch.cuda.is_available(), which starts the CUDA driver: every job of a 2-GPU
    host then ran on GPU 0 whatever GPU it claimed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    proc = subprocess.run([sys.executable, "-c", STARTUP, "results/smoke/skeleton/mnist_smoke/vit_micro/seed0/base"],
                          env={**env, "PYTHONPATH": str(REPO)}, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "claim first" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_a_driver_loaded_before_the_claim_is_recorded(fresh, monkeypatch, tmp_path, capsys):
    """The metrics say when CUDA_VISIBLE_DEVICES may have come too late (libcuda already in the process)."""
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/x86_64-linux-gnu/libcuda.so.580.159.04\n")
    assert devices.driver_loaded(maps) and not devices.driver_loaded(tmp_path / "absent")
    monkeypatch.setattr(devices, "driver_loaded", lambda: True)
    env = {"CUDA_VISIBLE_DEVICES": "0,1", "SLIMBENCH_GPU_LOCKS": str(tmp_path / "locks")}
    assert devices.claim_gpu(env)["driver_loaded_before_claim"] == "yes"
    assert "warning" in capsys.readouterr().err


def test_the_record_names_the_physical_gpu_once_cuda_runs(fresh, monkeypatch):
    """UUID and PCI address come from the device CUDA actually opened (faked here: no GPU in CI)."""
    import types

    props = types.SimpleNamespace(uuid="GPU-1234", pci_domain_id=0, pci_bus_id=0x1b, pci_device_id=0)
    cuda = types.SimpleNamespace(is_initialized=lambda: True, current_device=lambda: 0,
                                 get_device_properties=lambda index: props)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert devices.device_record("cuda", {"CUDA_VISIBLE_DEVICES": "1"}) == {
        "device": "cuda", "source": "config", "gpu_uuid": "GPU-1234", "gpu_pci": "0000:1b:00",
        "cuda_visible_devices": "1"}
    assert "gpu_uuid" not in devices.device_record("cpu", {})
