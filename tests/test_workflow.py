"""The Snakemake workflow: the DAG builds for every config without writing a file, lint is clean, and the smoke run
works end to end, reproduces its committed reference (exactly on a CPU family that has its own, else within the
other-family tolerance), and reruns exactly what a changed setting affects."""

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, needs_shared_data
from slimbench.provenance import cpu_kernels

CONFIGS = sorted(p.name for p in (REPO / "config").glob("*.yaml") if p.name != "catalog.yaml")
# `slimbench <args>` in a process that SIGKILLs itself when the step would save its model.
KILLED_BEFORE_SAVING = ("import os, signal, sys; from slimbench import checkpoint, cli; "
                        "checkpoint.save_model = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL); "
                        "cli.main(sys.argv[1:])")


def snakemake(*args, cwd=REPO, timeout=300):
    return subprocess.run(["snakemake", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("config", CONFIGS)
def test_dry_run_builds_the_dag_and_writes_nothing(config, tmp_path):
    proc = snakemake("-n", "--cores", "2", "--configfile", f"config/{config}",
                     "--config", f"results_dir={tmp_path}/results", f"reports_dir={tmp_path}/reports")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rule base" in proc.stdout and "rule evaluate" in proc.stdout
    assert "rule table" in proc.stdout and "rule figure" in proc.stdout and "rule scorecard" in proc.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "reports").exists()


def test_shared_prefixes_are_built_once(tmp_path):
    proc = snakemake("-n", "--cores", "2", "--configfile", "config/smoke.yaml",
                     "--config", f"results_dir={tmp_path}/results", f"reports_dir={tmp_path}/reports")
    outputs = [line.split("output: ")[1] for line in proc.stdout.splitlines() if "output: " in line]
    prefix = [o for o in outputs if o.split(",")[0].endswith("vit_micro/seed0/base+mlp_magnitude-0.5/model/arch.json")]
    assert len(prefix) == 1  # built once, reused by base+mlp_magnitude-0.5+kd


def test_lint_has_no_errors():
    proc = snakemake("--lint", "--configfile", "config/smoke.yaml")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_unknown_name_stops_the_workflow_before_any_job(tmp_path):
    config = tmp_path / "bad.yaml"
    text = (REPO / "config" / "smoke.yaml").read_text().replace("base+mlp_random-0.5", "base+mlp_randon-0.5")
    config.write_text(text)
    proc = snakemake("-n", "--cores", "1", "--configfile", str(config))
    assert proc.returncode != 0 and "unknown stage 'mlp_randon'" in proc.stderr + proc.stdout


def failed_job_logs(output: str, tail: int = 3000) -> str:
    """The end of each failed job's log that Snakemake names ("log: <path> (check log file(s) ..."): a failure in CI
    then says why, not only which job."""
    paths = dict.fromkeys(re.findall(r"log: (\S+) \(check log file", output))
    return "".join(f"\n--- {path} ---\n" + (Path(path).read_text(errors="replace")[-tail:] if Path(path).exists()
                                             else "(no log file)") for path in paths)


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a dry run as {rule: count}."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", output, re.MULTILINE)
            if m.group(1) != "total"}


@pytest.mark.smoke
def test_smoke_workflow_end_to_end(tmp_path):
    needs_shared_data("mnist")
    results, reports = tmp_path / "results", tmp_path / "reports"
    overrides = ["--config", f"results_dir={results}", f"reports_dir={reports}"]
    args = ["--cores", "2", "--configfile", "config/smoke.yaml", *overrides]
    proc = snakemake(*args, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-2000:] + failed_job_logs(proc.stderr)
    table = pd.read_csv(reports / "smoke" / "skeleton" / "table.csv")
    assert len(table) == 10 and table["accuracy"].between(0, 1).all()
    methods = pd.read_csv(reports / "smoke" / "methods" / "table.csv")
    assert len(methods) == 11 and (methods["relative_params_kept"] <= 1.01).all()
    for figure in ("metric_vs_params", "metric_vs_flops"):
        assert (reports / "smoke" / "skeleton" / f"{figure}.png").stat().st_size > 10_000
    # Every result equals the committed reference of this CPU family exactly (CPU runs are deterministic within
    # one): the compare job passed. A family without its own reference gets the other-family floor instead.
    compare = pd.read_csv(reports / "smoke" / "compare.csv")
    assert len(compare) >= 19 and (compare["verdict"] == "ok").all(), compare[compare["verdict"] != "ok"].to_string()
    settings = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())["compare"]
    if cpu_kernels() in settings["references"]:
        assert (compare["tolerance"] == 0).all()
    assert (reports / "smoke" / "SCORECARD.md").exists()
    record = json.loads(next(results.rglob("base+int8/metrics.json")).read_text())
    for key in ("git_commit", "source_sha256", "packages", "hardware", "config", "seed", "wall_time_s", "cost",
                "metrics"):
        assert key in record
    pruned = json.loads(next(results.rglob("vit_micro/seed0/base+mlp_magnitude-0.5/metrics.json")).read_text())
    assert pruned["relative"]["params_kept"] < 1.0
    # A rerun has nothing to do; forcing one stage reruns it and what depends on it.
    again = snakemake(*args, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    target = next(results.rglob("vit_micro/seed0/base+int8/metrics.json"))
    forced = snakemake(str(target), "--forcerun", "compress", "-n", *args)  # targets before --configfile
    assert re.search(r"^compress\s+1$", forced.stdout + forced.stderr, re.MULTILINE), forced.stdout[-3000:]
    # A changed stage setting reruns exactly the steps that use it: kd's epochs touch the kd compression of each of
    # the skeleton study's two (dataset, model) pairs and their evaluations (then that study's reports), no base
    # model and nothing of the methods study.
    changed = tmp_path / "smoke_kd2.yaml"
    changed.write_text((REPO / "config" / "smoke.yaml").read_text().replace("kd: {epochs: 1}", "kd: {epochs: 2}"))
    plan = snakemake("-n", "--cores", "2", "--configfile", str(changed), *overrides)
    counts = job_counts(plan.stdout + plan.stderr)
    assert counts.get("compress") == 2 and counts.get("evaluate") == 2 and "base" not in counts, plan.stdout[-3000:]
    assert counts.get("runs") == 1 and "base+mlp_magnitude-0.5+kd" in plan.stdout
    # A forced step killed midway: --forcerun deletes its model, the step dies before saving a new one. Asking
    # for the experiment again must rebuild and evaluate it (old metrics left beside a missing model would read as
    # up to date, and Snakemake does not rebuild a missing intermediate file for an up-to-date target).
    for name in ("arch.json", "model.safetensors"):
        (target.parent / "model" / name).unlink()
    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_SAVING, "compress", "--config", "config/smoke.yaml",
                             "--set", json.dumps({"results_dir": str(results), "reports_dir": str(reports)}),
                             str(target.parent)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    plan = snakemake(str(target), "-n", *args)
    resumed = job_counts(plan.stdout + plan.stderr)
    assert resumed.get("compress") == 1 and resumed.get("evaluate") == 1, (plan.stdout + plan.stderr)[-3000:]
