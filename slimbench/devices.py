"""One GPU per job on a multi-GPU host, and the device a job ran on, for its metrics.

``snakemake --resources gpu=N`` caps how many GPU jobs run at once but does not say which GPU each one gets:
left alone, every job uses ``cuda:0``. So before CUDA starts, a job claims a free slot from a pool of lock
files, one per visible GPU (``flock`` held for the life of the process: a killed job frees its slot), and
narrows ``CUDA_VISIBLE_DEVICES`` to that GPU. Under SLURM the scheduler has already set
``CUDA_VISIBLE_DEVICES`` to the job's own GPU(s); it is left as it is. With one GPU or none there is nothing
to choose. The same code serves ``slimbench study --jobs N``: each experiment process claims its own slot.

Environment: ``CUDA_VISIBLE_DEVICES`` (if set, the pool is its entries), ``SLIMBENCH_GPU_LOCKS`` (folder of
the lock files, default ``<tmp>/slimbench-gpus``: one per host and shared by every job on it),
``SLIMBENCH_JOBS_PER_GPU`` (slots per GPU, default 1: small models may share one), ``SLIMBENCH_GPU_WAIT_S``
(how long to wait for a free slot, default 600 s, then a clear error).
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, MutableMapping

from slimbench.errors import SlimbenchError

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU; reading it does not start CUDA

_claimed: dict[str, str] | None = None
_held: IO[str] | None = None  # the open lock file: the slot stays ours while this process lives


def visible_gpus(env: MutableMapping[str, str]) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES' entries if set, else one index per GPU the
    driver lists."""
    if "CUDA_VISIBLE_DEVICES" in env:
        return [entry.strip() for entry in env["CUDA_VISIBLE_DEVICES"].split(",") if entry.strip()]
    return [str(index) for index in range(len(list(NVIDIA_GPUS.glob("*"))))] if NVIDIA_GPUS.is_dir() else []


def _cuda_started() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()


def driver_loaded(maps: Path = Path("/proc/self/maps")) -> bool:
    """Whether this process has loaded the CUDA driver (libcuda): a bare cudaGetDeviceCount does it without
    torch's own initialization, and the driver then ignores a later CUDA_VISIBLE_DEVICES."""
    try:
        return "libcuda.so" in maps.read_text()
    except OSError:
        return False


def _try_slots(gpus: list[str], per_gpu: int, folder: Path) -> tuple[str, IO[str]] | None:
    """Lock the first free slot, spreading jobs over GPUs before doubling up on one."""
    for k in range(per_gpu):
        for gpu in gpus:
            handle = (folder / f"gpu{gpu}.{k}.lock").open("a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return gpu, handle
    return None


def claim_gpu(env: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Give this process one GPU of its own (see the module docstring) and say how it was chosen; call it
    before anything starts CUDA. Repeated calls return the first claim."""
    global _claimed, _held
    if _claimed is not None:
        return _claimed
    if _cuda_started():
        raise RuntimeError("CUDA started before a GPU was claimed: claim_gpu() must run first")
    gpus = visible_gpus(env)
    if "SLURM_JOB_ID" in env:
        _claimed = {"source": "slurm"}
    elif len(gpus) <= 1:
        _claimed = {"source": "only one visible" if gpus else "none visible"}
    else:
        folder = Path(env.get("SLIMBENCH_GPU_LOCKS") or Path(tempfile.gettempdir()) / "slimbench-gpus")
        folder.mkdir(parents=True, exist_ok=True)
        per_gpu = int(env.get("SLIMBENCH_JOBS_PER_GPU", "1"))
        wait_s = float(env.get("SLIMBENCH_GPU_WAIT_S", "600"))
        deadline = time.monotonic() + wait_s
        while (slot := _try_slots(gpus, per_gpu, folder)) is None:
            if time.monotonic() > deadline:
                raise SlimbenchError(
                    f"no free GPU slot after {wait_s:.0f}s: all {len(gpus)} GPU(s) x {per_gpu} slot(s) are held by "
                    f"other jobs (lock files in {folder}). Fix: run at most that many GPU jobs at once "
                    f"(snakemake --resources gpu={len(gpus) * per_gpu}), or raise SLIMBENCH_JOBS_PER_GPU.")
            time.sleep(0.5)
        gpu, _held = slot
        env["CUDA_VISIBLE_DEVICES"] = gpu
        _claimed = {"source": "lock-file pool", "pool": ",".join(gpus)}
        if driver_loaded():  # recorded in the metrics: the job may run on another GPU than it claimed
            _claimed["driver_loaded_before_claim"] = "yes"
            print(f"slimbench: warning: the CUDA driver was loaded before this job claimed GPU {gpu}; it may run "
                  "on the first GPU instead (an import called CUDA: see PYTORCH_NVML_BASED_CUDA_CHECK)",
                  file=sys.stderr)
    return _claimed


def physical_gpu() -> dict[str, str]:
    """The physical GPU behind this process's CUDA device (UUID, PCI address), once CUDA runs: the proof of where
    a job ran, since CUDA_VISIBLE_DEVICES says what was asked for, not what the driver did with it."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return {}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    record = {"gpu_uuid": str(getattr(props, "uuid", ""))}
    if hasattr(props, "pci_bus_id"):
        record["gpu_pci"] = f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}"
    return record


def device_record(device: str, env: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """What a metrics file says about where the job ran: the torch device, the GPU(s) it could see, how they
    were chosen, the physical GPU it used, and the SLURM job when there is one."""
    record = {"device": device, **(_claimed or {"source": "config"})}
    if device.startswith("cuda"):
        record.update(physical_gpu())
    for key, name in (("CUDA_VISIBLE_DEVICES", "cuda_visible_devices"), ("SLURM_JOB_ID", "slurm_job_id")):
        if key in env:
            record[name] = env[key]
    return record
