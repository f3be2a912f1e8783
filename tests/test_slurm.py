"""The workflow on a real SLURM cluster: a one-node loopback cluster (scripts/slurm_local.sh) runs a small part
of the smoke config through the executor plugin (workflow/profiles/slurm-loopback), and its metrics equal a
local run's. CPU runs with a fixed thread count (the config's, 1) are deterministic, so the task metric and
the model's costs must match exactly. 4 min on a 2-core machine shared with other work (load ~5): four SLURM
jobs, two of them at once; the cluster is stopped whatever happens."""

import json
import os
import shutil
import subprocess

import pytest
import torch
import yaml

from conftest import REPO, needs_shared_data

SCRIPT = REPO / "scripts" / "slurm_local.sh"
PROFILE = REPO / "workflow" / "profiles" / "slurm-loopback"
TOOLS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue")
CHAINS = ["base", "base+mlp_magnitude-0.5"]  # base, compress and evaluate all run as SLURM jobs
LIMIT_S = 600  # the whole SLURM run; a hang (e.g. a status command that never answers) ends here
DETERMINISTIC_COSTS = ("params", "stored_bits", "size_bytes", "flops", "bitops")

if os.geteuid() != 0:
    pytest.skip("SLURM test skipped: needs root (it starts munged, slurmctld and slurmd)", allow_module_level=True)


def missing_packages() -> list[str]:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        missing.append("snakemake-executor-plugin-slurm (envs/requirements-cpu.txt)")
    return missing


def small_config(results: str) -> dict:
    """The smoke config's skeleton study cut to one model, two chains and a few seconds of training."""
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    study = config["studies"]["skeleton"]
    grid = study["grid"][0]  # vit_micro on mnist_smoke
    config.update(name="slurm_check", results_dir=results, device="auto",  # auto: the GPU claim path runs
                  datasets={"mnist_smoke": {**config["datasets"]["mnist_smoke"], "train_size": 1000, "eval_size": 200}},
                  studies={"skeleton": {**study, "grid": [{**grid, "base": {**grid["base"], "epochs": 2}}],
                                        "chains": CHAINS, "figures": []}})
    return config


@pytest.fixture
def cluster():
    try:
        start = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=120)
        assert start.returncode == 0, start.stdout + start.stderr
        yield
    finally:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120)


@pytest.fixture
def packages():
    missing = missing_packages()
    if missing:
        message = f"SLURM packages missing: {', '.join(missing)} (apt-get install munge slurmctld slurmd slurm-client)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def test_slurm_run_matches_local_run(packages, cluster, tmp_path):
    data = needs_shared_data("mnist")
    if torch.cuda.is_available():
        pytest.skip("a CPU check: with a GPU the local run would use it and the SLURM run (fake GPUs) would not")
    env = {**os.environ, "SLIMBENCH_DATA_ROOT": str(data)}
    for name in ("CUDA_VISIBLE_DEVICES", "SLIMBENCH_THREADS"):
        env.pop(name, None)
    local_cfg, slurm_cfg = tmp_path / "local.yaml", tmp_path / "slurm.yaml"
    local_cfg.write_text(yaml.safe_dump(small_config(str(tmp_path / "local"))))
    slurm_cfg.write_text(yaml.safe_dump(small_config(str(tmp_path / "slurm"))))
    experiment = "slurm_check/skeleton/mnist_smoke/vit_micro/seed0"

    # The local run (every step of both chains in one process) runs while SLURM works through its jobs.
    local = subprocess.Popen(["slimbench", "run", "--config", str(local_cfg), f"{tmp_path}/local/{experiment}/{CHAINS[-1]}"],
                             cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    targets = [f"{tmp_path}/slurm/{experiment}/{chain}/metrics.json" for chain in CHAINS]
    workdir = tmp_path / "workdir"  # Snakemake's state and the SLURM logs, away from the repository's
    workdir.mkdir()
    try:
        proc = subprocess.run(["timeout", "-k", "30", str(LIMIT_S), "snakemake", "-s", str(REPO / "Snakefile"),
                               "--profile", str(PROFILE), *targets, "--configfile", str(slurm_cfg)],
                              cwd=workdir, env=env, capture_output=True, text=True, timeout=LIMIT_S + 60)
        local_out = local.communicate(timeout=LIMIT_S)[0]
    finally:
        local.kill()
    logs = "\n".join(p.read_text()[-2000:] for p in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log")))
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-4000:]}\n{logs}"
    assert local.returncode == 0, local_out[-4000:]

    for chain in CHAINS:
        ran = json.loads((tmp_path / "slurm" / experiment / chain / "metrics.json").read_text())
        ref = json.loads((tmp_path / "local" / experiment / chain / "metrics.json").read_text())
        assert ran["source_sha256"] == ref["source_sha256"], "the code changed between the two runs"
        assert ran["metrics"] == ref["metrics"], chain
        assert {k: ran["cost"][k] for k in DETERMINISTIC_COSTS} == {k: ref["cost"][k] for k in DETERMINISTIC_COSTS}
        assert ran["relative"] == ref["relative"]
        # SLURM chose the (fake) GPU and slimbench kept its choice; the local run had none to choose.
        assert ran["device"]["source"] == "slurm" and ran["device"]["cuda_visible_devices"] in {"0", "1"}
        assert "slurm_job_id" in ran["device"] and "slurm_job_id" not in ref["device"]
