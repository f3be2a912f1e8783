"""The command line without Snakemake: selecting part of a study, skipping finished work, the order study's
checkpoint (decide, then run the derived chains) done by `slimbench study`, and the core's import direction."""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from slimbench import cli
from slimbench.config import REPO, experiments, load_config
from slimbench.errors import SlimbenchError
from slimbench.results import METRICS_FILE


def config_in(tmp_path: Path) -> dict[str, Any]:
    config = load_config(REPO / "config" / "default.yaml")
    config["results_dir"], config["reports_dir"] = str(tmp_path / "results"), str(tmp_path / "reports")
    return config


def write_metrics(config: dict[str, Any], exp: Any, accuracy: float, bitops: float = 100.0) -> None:
    path = exp.directory(config["results_dir"]) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"study": exp.study, "dataset": exp.dataset, "model": exp.model, "chain": exp.chain,
                                "seed": exp.seed, "metric": "accuracy", "metrics": {"accuracy": accuracy},
                                "cost": {"bitops": bitops, "params": 1000}}))


def test_match_selects_experiments_by_their_id() -> None:
    exps = list(experiments(load_config(REPO / "config" / "default.yaml"), "dgmr"))
    swin_seed1 = cli.matching(exps, ["*/swin_tiny_p2/seed1/*"])
    assert len(swin_seed1) == len(exps) // 4 and {(e.model, e.seed) for e in swin_seed1} == {("swin_tiny_p2", 1)}
    assert cli.matching(exps, None) == exps
    both = cli.matching(exps, ["*/*/seed0/base", "*/*/seed1/base"])
    assert [(e.model, e.seed) for e in both] == [("vit_tiny_p4", 0), ("vit_tiny_p4", 1), ("swin_tiny_p2", 0),
                                                 ("swin_tiny_p2", 1)]


def test_study_match_without_experiments_names_the_id_format(tmp_path: Path) -> None:
    args = argparse.Namespace(study="dgmr", match=["nothing/*"])
    with pytest.raises(SlimbenchError, match="fashion_mnist/vit_tiny_p4/seed0/base"):
        cli.cmd_study(args, config_in(tmp_path))


def test_a_finished_experiment_is_skipped_without_building_anything(tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="slimbench")
    config = config_in(tmp_path)
    exp = next(e for e in experiments(config, "dgmr") if e.chain == "base+dgmr-0.5+dgmr_kd")
    for done in (exp.base, exp):
        write_metrics(config, done, 0.8)
    cli.cmd_run(argparse.Namespace(experiment=str(exp.directory(config["results_dir"])), force=False), config)
    assert "done already" in caplog.text
    assert sorted(p.name for p in exp.directory(config["results_dir"]).parent.iterdir()) == ["base",
                                                                                                exp.chain]
    assert not any(exp.directory(config["results_dir"]).parent.rglob("arch.json"))


def test_parallel_jobs_run_bases_at_once_and_each_base_before_its_chains(tmp_path: Path, monkeypatch) -> None:
    config = config_in(tmp_path)
    exps = cli.matching(list(experiments(config, "dgmr")), ["*/vit_tiny_p4/seed0/*", "*/swin_tiny_p2/seed0/*"])
    both_bases_running = threading.Barrier(2, timeout=10)  # breaks unless the two bases are in flight together
    started: list[str] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
        started.append(command[-1])
        if command[-1].endswith("/base"):
            both_bases_running.wait()
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    args = argparse.Namespace(config=["config/default.yaml"], set=None)
    cli.run_all(config, exps, args, jobs=2)
    assert sorted(started) == sorted(str(e.directory(config["results_dir"])) for e in exps)
    for model in ("vit_tiny_p4", "swin_tiny_p2"):
        in_order = [str(e.directory(config["results_dir"])) for e in exps if e.model == model]
        assert [s for s in started if f"/{model}/" in s] == in_order

    monkeypatch.setattr(subprocess, "run", lambda command, **kwargs: subprocess.CompletedProcess(command, 3))
    with pytest.raises(SlimbenchError, match=r"failed \(exit 3\); its output is in .*run\.log"):
        cli.run_all(config, exps[:1], args, jobs=2)


def test_order_study_decides_from_pairwise_metrics_and_lists_the_derived_chains(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    rank = {"quant": 0, "prune": 1, "exit": 2, "distill": 3}  # the wins give Q -> P -> E -> D
    for exp in experiments(config, "order"):
        stages = [s.split("-")[0] for s in exp.chain.split("+")[1:]]
        if exp.chain == "base":
            write_metrics(config, exp, 0.9)
        elif len(stages) == 2 and stages[0] != stages[1]:
            write_metrics(config, exp, 0.8 if rank[stages[0]] < rank[stages[1]] else 0.7)
    derived = cli.decide_all(config, "order")
    record = json.loads((Path(config["reports_dir"]) / "default" / "order" / "derived" / "cifar10_train_split"
                         / "resnet_small_cifar" / "decision.json").read_text())
    assert record["order"] == ["quant", "prune", "exit", "distill"] and record["cycles"] == []
    sorted_chain = "base+quant-8+prune-0.5+exit-0.9+distill"
    assert record["chains"]["sorted"] == sorted_chain
    assert {(e.seed, e.chain) for e in derived} >= {(0, sorted_chain), (1, sorted_chain)}
    with pytest.raises(SlimbenchError, match="missing"):  # the reports wait for the derived chains too
        cli.study_metrics(config, "order")


def test_the_workflow_checkpoint_command_runs_as_a_shell_would(tmp_path: Path) -> None:
    """`slimbench derive` exactly as workflow/rules/derive.smk calls it (a subprocess on the config files plus
    --set overrides), so an import-time failure of the checkpoint cannot hide behind the dry run."""
    config = config_in(tmp_path)
    for exp in experiments(config, "order"):
        if exp.chain == "base" or len(exp.chain.split("+")) == 3:
            write_metrics(config, exp, 0.8 if exp.chain.startswith("base+distill") else 0.7)
    out = tmp_path / "decision.json"
    where = json.dumps({"results_dir": config["results_dir"], "reports_dir": config["reports_dir"]})
    decide = ["slimbench", "derive", "--config", "config/default.yaml", "--set", where, "--study", "order",
              "--dataset", "cifar10_train_split", "--model", "resnet_small_cifar", "--random", "1", "--out", str(out)]
    proc = subprocess.run(decide, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(out.read_text())
    assert record["order"][0] == "distill" and len(record["chains"]["random"]) == 1
    proc = subprocess.run([*decide[:-2], "--out", str(out), "--study", "nope"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "slimbench: error:" in proc.stderr and "nope" in proc.stderr


def test_the_core_imports_no_method_and_lists_without_them(tmp_path: Path) -> None:
    """slimbench/ never imports methods/ or baselines/: with both hidden, the CLI still imports and `list` runs."""
    hide = ("import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('methods', 'baselines'):\n"
            "            raise ModuleNotFoundError(name, name=name)\n"
            "sys.meta_path.insert(0, Hide())\n"
            "import pkgutil, slimbench\n"
            "for m in pkgutil.walk_packages(slimbench.__path__, 'slimbench.'):\n"
            "    importlib.import_module(m.name)\n"
            "from slimbench.cli import main\n"
            "sys.exit(main(['list']))\n")
    proc = subprocess.run([sys.executable, "-c", hide], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "model families:" in proc.stdout and "stages:" in proc.stdout
    sources = "\n".join(p.read_text() for p in (REPO / "slimbench").rglob("*.py"))
    assert not re.search(r"^\s*(from|import) (methods|baselines)\b", sources, re.MULTILINE)


def test_runs_of_a_study_cut_short_name_what_is_missing(tmp_path: Path) -> None:
    """`slimbench runs` refuses a study with missing metrics; `--allow-missing` writes the runs that exist and
    lists the others in missing.csv (never a silently short report), which a full run removes again."""
    config = config_in(tmp_path)
    exps = [e for e in experiments(config, "order") if e.seed == 0 and len(e.chain.split("+")) <= 2]
    for exp in exps:
        write_metrics(config, exp, 0.8)
    args = argparse.Namespace(study="order", allow_missing=False)
    with pytest.raises(SlimbenchError, match="allow-missing"):
        cli.cmd_runs(args, config)
    cli.cmd_runs(argparse.Namespace(study="order", allow_missing=True), config)
    folder = Path(config["reports_dir"]) / "default" / "order"
    runs, missing = pd.read_csv(folder / "runs.csv"), pd.read_csv(folder / "missing.csv")
    total = len(list(experiments(config, "order")))
    assert len(runs) == len(exps) and len(runs) + len(missing) == total
    assert set(missing.columns) == {"dataset", "model", "seed", "chain"}
    done = {(e.seed, e.chain) for e in exps}
    assert not done & set(zip(missing["seed"], missing["chain"]))
    for exp in experiments(config, "order"):
        write_metrics(config, exp, 0.8)
    cli.cmd_runs(argparse.Namespace(study="order", allow_missing=True), config)
    assert not (folder / "missing.csv").exists()


@pytest.mark.parametrize("study, expected", [("order", ["fork server", "workspace"]),  # default.yaml's budget
                                             ("crossbench", ["workspace"])])           # budget: null there
def test_evaluate_starts_the_memory_probe_before_the_data_and_model_load(tmp_path: Path, monkeypatch, study: str,
                                                                          expected: list[str]) -> None:
    from slimbench.metrics import model_memory

    config, order = config_in(tmp_path), []
    monkeypatch.setattr(model_memory, "start_server", lambda model_dir: order.append(("fork server", model_dir)))

    def open_workspace(*_: Any) -> None:
        order.append("workspace")
        raise InterruptedError  # the load itself is not under test

    monkeypatch.setattr(cli, "experiment_workspace", open_workspace)
    exp = next(experiments(config, study))
    args = argparse.Namespace(command="evaluate", experiment=str(exp.directory(config["results_dir"])))
    with pytest.raises(InterruptedError):
        cli.cmd_step(args, config)
    model_dir = exp.directory(config["results_dir"]) / "model"  # prepared for at once: this experiment's model
    assert order == [("fork server", model_dir) if step == "fork server" else step for step in expected]


def test_evaluate_of_a_folder_the_config_lacks_fails_before_the_memory_probe_starts(tmp_path: Path,
                                                                                    monkeypatch) -> None:
    from slimbench.metrics import model_memory

    config, started = config_in(tmp_path), []
    monkeypatch.setattr(model_memory, "start_server", lambda model_dir: started.append("fork server"))
    exp = next(experiments(config, "order"))
    folder = exp.directory(config["results_dir"]).parent.parent / "seed7" / exp.chain  # order's seeds are 0 and 1
    with pytest.raises(SlimbenchError, match="seed 7 is not a seed"):
        cli.cmd_step(argparse.Namespace(command="evaluate", experiment=str(folder)), config)
    assert started == []


def test_list_prints_each_stage_s_first_sentence_whole() -> None:
    """A docstring's first sentence is shown whole, across its line breaks, and stops before the next sentence;
    "et al. 2025" and "Sec. 3" do not end it."""
    docstring = ("Keep ``ratio`` of every MLP's hidden neurons (DGMR, Shen et al. 2025, Sec. 3), the ones\n"
                 "    with the most diverse weights. The second sentence.\n\n    A second paragraph.")
    assert cli.first_sentence(docstring) == ("Keep ``ratio`` of every MLP's hidden neurons (DGMR, Shen et al. 2025, "
                                             "Sec. 3), the ones with the most diverse weights.")
    assert cli.first_sentence("One paragraph without a full stop\nover two lines") == \
        "One paragraph without a full stop over two lines"
    proc = subprocess.run([sys.executable, "-m", "slimbench.cli", "list"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert max(map(len, lines[lines.index("stages:"):])) <= cli.LIST_WIDTH
    exit_stage = next(i for i, line in enumerate(lines) if line.startswith("  exit "))
    assert " ".join(" ".join(lines[exit_stage:exit_stage + 2]).split()[1:]) == (
        "Early-exit heads with a confidence threshold (dynamic architecture; paper Sec. 3), trained on the frozen "
        "backbone so the final classifier is unchanged.")


def test_list_breaks_the_parameters_only_between_them(monkeypatch) -> None:
    """At 30 columns, by hand: each line holds whole parameters (a range such as ``(0.0, 1.0]`` is never split), later
    lines start under the first parameter, and the chain value follows the last one."""
    monkeypatch.setattr(cli, "LIST_WIDTH", 30)
    assert cli.packed(["a=1 (0.0, 1.0]", "bb=2 [0, inf]", "c=3"], "  (chain value: a)", "    params: ") == (
        "    params: a=1 (0.0, 1.0],\n"
        "            bb=2 [0, inf],\n"
        "            c=3  (chain value: a)")
    assert cli.packed(["a=1", "b=2"], "  (x)", "    params: ") == "    params: a=1, b=2  (x)"
    assert cli.packed(["a_parameter_longer_than_the_line=1", "c=3"], "", "p: ") == (
        "p: a_parameter_longer_than_the_line=1,\n   c=3")  # too long for any line: on the first, after the prefix
