"""benchmarks/idle_speedup.py on CPU: a row's speed-ups, intervals and FLOPs ratios against numbers worked out by
hand; the refusals (no CUDA, unknown study, nothing saved) before any data or model is loaded; and the loop over
panels and seeds with the GPU parts stubbed (data opened once per panel, base loaded once per seed, chains without
a model or metrics listed as missing, the CSV written)."""

import csv
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import REPO, load_file_module

from slimbench.config import experiments, load_config
from slimbench.integrity import write_sealed_json

idle_speedup = load_file_module("benchmarks/idle_speedup.py")
CONFIG = str(REPO / "config" / "default.yaml")


def paired(ratio: float, low: float, high: float, pairs: int, own_ms: float, base_ms: float) -> dict:
    """What cost.paired_cuda_latency returns (and the workflow stores in a metrics record's cost)."""
    return {"latency_cuda_vs_base_ratio": ratio, "latency_cuda_vs_base_ci_low": low,
            "latency_cuda_vs_base_ci_high": high, "latency_cuda_vs_base_pairs": pairs,
            "latency_cuda_paired_ms": own_ms, "latency_cuda_paired_base_ms": base_ms}


def test_row_against_numbers_by_hand():
    base = {"cost": {"flops": 10_000_000}}
    own = {"cost": {"flops": 2_500_000, **paired(0.8, 0.5, 1.25, 10, 8.0, 10.0), "latency_cuda_vs_base_batch": 256}}
    idle = paired(0.5, 0.4, 0.625, 50, 2.0, 4.0)
    row = idle_speedup.speedup_row(own, base, idle)
    # FLOPs ratio 1e7 / 2.5e6 = 4. Idle: 1 / 0.5 = 2, interval [1 / 0.625, 1 / 0.4] = [1.6, 2.5], 2 / 4 = 0.5.
    # Shared: 1 / 0.8 = 1.25, interval [1 / 1.25, 1 / 0.5] = [0.8, 2], 1.25 / 4 = 0.3125.
    assert row == pytest.approx({
        "flops_ratio": 4.0,
        "speedup_idle": 2.0, "speedup_idle_ci_low": 1.6, "speedup_idle_ci_high": 2.5, "idle_over_flops": 0.5,
        "pairs_idle": 50, "latency_idle_ms": 2.0, "latency_idle_base_ms": 4.0,
        "speedup_shared": 1.25, "speedup_shared_ci_low": 0.8, "speedup_shared_ci_high": 2.0,
        "shared_over_flops": 0.3125, "pairs_shared": 10, "batch_shared": 256,
        "latency_shared_ms": 8.0, "latency_shared_base_ms": 10.0})
    assert set(row) <= set(idle_speedup.COLUMNS)


def test_row_without_flops_or_a_workflow_ratio():
    """A run evaluated without FLOPs or without paired GPU calls: no FLOPs ratio, no shared columns."""
    row = idle_speedup.speedup_row({"cost": {}}, {"cost": {}}, paired(1.25, 1.0, 2.0, 50, 5.0, 4.0))
    assert row["flops_ratio"] is None and row["idle_over_flops"] is None
    assert (row["speedup_idle"], row["speedup_idle_ci_low"], row["speedup_idle_ci_high"]) == (0.8, 0.5, 1.0)
    assert not any("shared" in key for key in row)


@pytest.fixture
def no_work(monkeypatch):
    """No GPU claimed, and any data or model loading fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("loaded data or a model before refusing")

    monkeypatch.setattr(idle_speedup.devices, "claim_gpu", lambda: {})
    monkeypatch.setattr(idle_speedup.Workspace, "open", forbidden)
    monkeypatch.setattr(idle_speedup.checkpoint, "load_model", forbidden)


def test_refuses_without_cuda(monkeypatch, no_work):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as refused:
        idle_speedup.main(["--config", CONFIG, "--study", "order_pqd"])
    assert "no CUDA device" in refused.value.code and "GPU machine the study ran on" in refused.value.code


def test_refuses_an_unknown_study(monkeypatch, no_work):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(SystemExit, match="no study 'nope'"):
        idle_speedup.main(["--config", CONFIG, "--study", "nope"])


def in_results(monkeypatch, results) -> dict:
    """The default config with its results_dir at ``results``, as the script will load it."""
    config = load_config(CONFIG)
    config["results_dir"] = str(results)
    monkeypatch.setattr(idle_speedup, "load_config", lambda paths: config)
    return config


def test_refuses_when_nothing_is_saved(monkeypatch, tmp_path, no_work):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    in_results(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as refused:
        idle_speedup.main(["--config", CONFIG, "--study", "order_pqd"])
    assert "none of the 18 experiments" in refused.value.code
    assert str(tmp_path / "default" / "order_pqd") in refused.value.code  # where it looked


def save(exp, results, flops: int, metrics: bool = True) -> None:
    folder = exp.directory(results)
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "arch.json").write_text("{}")  # is_saved looks for it; load_model is stubbed
    if metrics:
        write_sealed_json(folder / "metrics.json", {"cost": {"flops": flops, **paired(0.9, 0.8, 1.0, 10, 9.0, 10.0)}})


def test_loop_over_panels_and_seeds(monkeypatch, tmp_path, capsys):
    """dgmr: two panels x two seeds. Saved: panel 1's base and first chain for both seeds, and its second chain of
    seed 0 without metrics; nothing of panel 2 (its data is never loaded)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(idle_speedup.devices, "claim_gpu", lambda: {})
    monkeypatch.setattr(idle_speedup, "hardware", lambda: {"gpu": "stub"})
    config = in_results(monkeypatch, tmp_path)
    config["evaluation"]["batch_size"] = 96  # the pairs run at the config's batch and warm-up, whatever they are
    config["evaluation"]["latency"]["warmup"] = 3
    runs = list(experiments(config, "dgmr"))
    panel = [e for e in runs if (e.dataset, e.model) == (runs[0].dataset, runs[0].model)]
    chains = list(dict.fromkeys(e.chain for e in panel))
    assert chains[0] == "base"
    for exp in panel:
        if exp.chain == chains[0]:
            save(exp, tmp_path, 1000)
        elif exp.chain == chains[1]:
            save(exp, tmp_path, 250)
        elif exp.chain == chains[2] and exp.seed == 0:
            save(exp, tmp_path, 500, metrics=False)
    opened, loaded, timed = [], [], []

    def open_workspace(config, exp):
        opened.append(exp)
        return SimpleNamespace(directory=lambda e: e.directory(tmp_path))

    def load_model(folder, device):
        loaded.append(folder)
        return folder, {}

    def paired_cuda_latency(forward, base_forward, device, pairs, warmup):
        timed.append((forward, base_forward, pairs, warmup))
        return paired(0.5, 0.4, 0.625, pairs, 1.0, 2.0)

    monkeypatch.setattr(idle_speedup.Workspace, "open", open_workspace)
    monkeypatch.setattr(idle_speedup.checkpoint, "load_model", load_model)
    monkeypatch.setattr(idle_speedup, "example_forward", lambda ws, model, batch, device: (model, batch))
    monkeypatch.setattr(idle_speedup.cost, "paired_cuda_latency", paired_cuda_latency)
    out = tmp_path / "idle.csv"
    idle_speedup.main(["--config", CONFIG, "--study", "dgmr", "--pairs", "7", "--out", str(out)])

    assert opened == [panel[0]]  # panel 2 has nothing saved: its data is not loaded
    base_dirs = [exp.directory(tmp_path) / "model" for exp in panel if exp.chain == "base"]
    chain_dirs = [exp.directory(tmp_path) / "model" for exp in panel if exp.chain == chains[1]]
    assert loaded == [base_dirs[0], chain_dirs[0], base_dirs[1], chain_dirs[1]]  # the base once per seed
    assert [(f[0], b[0], p, w) for f, b, p, w in timed] == [
        (base_dirs[0], base_dirs[0], 7, 3), (chain_dirs[0], base_dirs[0], 7, 3),
        (base_dirs[1], base_dirs[1], 7, 3), (chain_dirs[1], base_dirs[1], 7, 3)]
    assert all(f[1] == b[1] == 96 for f, b, _, _ in timed)  # the evaluation batch
    with open(out) as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["seed"], r["chain"], r["flops_ratio"]) for r in rows] == [
        ("0", "base", "1.0"), ("0", chains[1], "4.0"), ("1", "base", "1.0"), ("1", chains[1], "4.0")]
    assert rows[1]["speedup_idle"] == "2.0" and rows[1]["idle_over_flops"] == "0.5" and rows[1]["pairs_idle"] == "7"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    summary = lines[-1]
    assert len(lines) == 5 and summary["measured"] == 4 and summary["missing"] == len(runs) - 4
    why = {(m["model"], m["seed"], m["chain"]): m["why"] for m in summary["missing_runs"]}
    assert why[panel[0].model, 0, chains[2]] == "no metrics file"
    assert why[panel[0].model, 1, chains[2]] == "no saved model"
    last = (runs[-1].dataset, runs[-1].model)
    other = {m["why"] for m in summary["missing_runs"] if (m["dataset"], m["model"]) == last}
    assert other == {"no saved model"}


def test_a_chain_whose_base_is_not_saved_or_evaluated_is_missing(monkeypatch, tmp_path):
    config = in_results(monkeypatch, tmp_path)
    base, chain, other = [e for e in experiments(config, "dgmr") if e.seed == 0][:3]
    save(chain, tmp_path, 250)
    assert idle_speedup.missing_reason(chain, str(tmp_path)) == "base: no saved model"
    save(base, tmp_path, 1000, metrics=False)
    assert idle_speedup.missing_reason(chain, str(tmp_path)) == "base: no metrics file"
    assert idle_speedup.missing_reason(other, str(tmp_path)) == "no saved model"
