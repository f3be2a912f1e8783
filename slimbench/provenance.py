"""Where a number came from: git commit, source hash, package versions and hardware, recorded in every metrics file."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import torch

PACKAGES = ("slimbench", "torch", "torchvision", "timm", "transformers", "torchao", "torch-pruning", "numpy",
            "scikit-learn", "safetensors", "snakemake", "datasets")


def git_commit(repo: Path = Path(__file__).resolve().parents[1]) -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


SOURCE_DIRS = ("slimbench", "methods", "baselines")


def source_hash(repo: Path = Path(__file__).resolve().parents[1]) -> str:
    """SHA-256 over the Python sources that compute results (path and content of each file, in path order).
    Identifies the code even where git cannot: a copy of the working tree, a dirty checkout, a tarball."""
    digest = hashlib.sha256()
    for path in sorted(p for folder in SOURCE_DIRS for p in (repo / folder).rglob("*.py")):
        digest.update(path.relative_to(repo).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def cpuinfo(field: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_name() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_kernels() -> str:
    """The CPU's kernel family, e.g. ``AuthenticAMD-AVX2``: the vendor (MKL picks its code paths by it) and the
    instruction set ATen's kernels run with. CPU runs are bit-exact only within one family: the smoke study's
    accuracies move by up to 15.2 points between two of the three families it has references for."""
    return f"{cpuinfo('vendor_id') or platform.machine()}-{torch.backends.cpu.get_cpu_capability()}"


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_kernels": cpu_kernels(),
        "cpu_count": psutil.cpu_count(logical=True),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
        info["cuda"] = torch.version.cuda
    return info


def provenance() -> dict[str, Any]:
    return {"git_commit": git_commit(), "source_sha256": source_hash(), "packages": package_versions(),
            "hardware": hardware()}
