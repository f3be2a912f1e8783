"""The crossbench (issue 22): stages declare what they apply to, a study leaves out (and lists) what does not
apply, the declared structures match the real models, and the leaderboards give known answers on hand-made runs."""

from __future__ import annotations

import copy
import json
import subprocess

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimbench.architectures import structures
from slimbench.config import experiments, load_config, load_plugins, skipped, validate_config
from slimbench.data import DatasetInfo
from slimbench.errors import ConfigError
from slimbench.leaderboard import cells, chain_budget, leaderboard, ranks, skipped_table
from slimbench.models import build_model
from slimbench.stages import STAGES, Param, applies_to, removes_value, stage
from slimbench.surgery import components, find_attentions, find_mlps, keep_heads, prunable_flops

from conftest import LM_INFO, REPO, TINY_LLAMA

load_plugins()  # the methods' and baselines' stages, as a config load registers them

# ---------------------------------------------------------------------------------------------------------
# A toy stage joins the grid where it applies and is skipped, with its reason, where it does not
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_stages():
    """Two stages registered as a method file would: one needs attention heads, one works only on text."""
    stage("toy_heads", params=(Param("ratio", float, 0.5, 0.0, 1.0, high_open=True),), primary="ratio",
          applies_to=applies_to("attention_heads"), budget=removes_value)(lambda model, ctx, ratio: model)
    stage("toy_text", applies_to=applies_to(tasks=("text_classification",)))(lambda model, ctx: model)
    yield
    for name in ("toy_heads", "toy_text"):
        STAGES._items.pop(name)


def toy_config(skip: bool) -> dict:
    study = {"grid": [{"datasets": ["cifar10_train_split"], "models": ["vit_micro", "swin_tiny_p2"]},
                      {"datasets": ["sst2"], "models": ["minilm"]}],
             "chains": ["base", "base+toy_heads-0.3", "base+toy_text"], "seeds": [0, 1], "tables": ["table", "skipped"]}
    if skip:
        study["skip_inapplicable"] = True
    return {"name": "toy", "data_root": "data", "studies": {"toy": study}}


def test_toy_stage_joins_the_grid_where_it_applies_and_is_skipped_with_its_reason(toy_stages):
    config = validate_config(toy_config(skip=True))
    planned = {(e.model, e.chain) for e in experiments(config, "toy")}
    assert ("vit_micro", "base+toy_heads-0.3") in planned and ("minilm", "base+toy_heads-0.3") in planned
    assert ("swin_tiny_p2", "base+toy_heads-0.3") not in planned
    assert ("minilm", "base+toy_text") in planned and ("vit_micro", "base+toy_text") not in planned
    assert ("swin_tiny_p2", "base") in planned
    assert len(planned) == 6 and len(list(experiments(config, "toy"))) == 12  # 9 combinations - 3 left out, 2 seeds
    rows = {(r["model"], r["chain"]): r for r in skipped(config, "toy")}
    assert set(rows) == {("swin_tiny_p2", "base+toy_heads-0.3"), ("vit_micro", "base+toy_text"),
                         ("swin_tiny_p2", "base+toy_text")}
    assert rows[("swin_tiny_p2", "base+toy_heads-0.3")]["stage"] == "toy_heads"
    assert "attention_heads" in rows[("swin_tiny_p2", "base+toy_heads-0.3")]["reason"]
    assert "not image_classification" in rows[("vit_micro", "base+toy_text")]["reason"]


def test_the_estimate_leaves_out_what_the_study_skips(toy_stages):
    from functools import partial

    from slimbench.config import is_left_out
    from slimbench.estimate import estimate

    config = toy_config(skip=True)
    config["studies"]["toy"]["chains"] = ["base", "base+toy_heads-0.3+kd"]  # kd trains; swin cannot run toy_heads
    config = validate_config(config)
    # by hand, 2 seeds each: base on vit_micro, swin and minilm (6), kd after toy_heads on vit_micro and minilm (4)
    assert estimate(config, "toy", partial(is_left_out, config)).trainings == 10
    assert estimate(config, "toy").trainings == 12  # counting swin's skipped kd too


def test_without_the_flag_an_inapplicable_pair_is_a_config_error(toy_stages):
    config = toy_config(skip=False)
    config["studies"]["toy"]["chains"] = ["base", "base+toy_heads-0.3"]
    with pytest.raises(ConfigError, match="chain 'base\\+toy_heads-0.3' cannot run on model 'swin_tiny_p2'.*"
                                          "attention_heads.*skip_inapplicable: true"):
        validate_config(config)


def test_a_chain_that_applies_nowhere_and_a_missing_skipped_table_are_refused(toy_stages):
    config = toy_config(skip=True)
    config["studies"]["toy"]["grid"] = [{"datasets": ["cifar10_train_split"], "models": ["vit_micro"]}]
    with pytest.raises(ConfigError, match="'base\\+toy_text' applies to no"):
        validate_config(config)
    config = toy_config(skip=True)
    config["studies"]["toy"]["tables"] = ["table"]
    with pytest.raises(ConfigError, match="add 'skipped' to the study's tables"):
        validate_config(config)


def test_a_claim_on_a_left_out_chain_must_be_restricted_to_where_it_runs(toy_stages):
    claim = {"id": "toy", "claim": "-", "source": "-", "paper": "-",
             "test": {"kind": "drop_at_most", "chain": "base+toy_heads-0.3", "max_drop": 0.01}}
    config = toy_config(skip=True)
    config["studies"]["toy"]["claims"] = [claim]
    with pytest.raises(ConfigError, match="'base\\+toy_heads-0.3' is left out for cifar10_train_split/swin_tiny_p2"):
        validate_config(config)
    config["studies"]["toy"]["claims"] = [{**claim, "model": "vit_micro"}]
    validate_config(config)


# ---------------------------------------------------------------------------------------------------------
# The declared structures against the real models (slimbench.surgery and torch's FLOP counter)
# ---------------------------------------------------------------------------------------------------------

CIFAR10 = DatasetInfo("cifar10", "image_classification", "accuracy", 10, 3, 32, (0.5,) * 3, (0.5,) * 3)
GLUE2 = DatasetInfo("glue/sst2", "text_classification", "accuracy", 2)
REAL = {"vit_tiny_p4": CIFAR10, "swin_tiny_p2": CIFAR10, "mobilevit_xs": CIFAR10, "resnet_small_cifar": CIFAR10,
        "minilm": GLUE2, "llama_tiny_scratch": LM_INFO}


def linear_flop_share(model: nn.Module, info: DatasetInfo) -> float:
    """Share of a forward pass's FLOPs in matrix products with weights (nn.Linear), by torch's counter."""
    if info.task == "image_classification":
        inputs = {"x": torch.randn(1, 3, 32, 32)}
    else:
        inputs = {"input_ids": torch.randint(0, 100, (1, 32))}
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(*inputs.values()) if "x" in inputs else model(**inputs)
    counts = counter.get_flop_counts()["Global"]
    linear = sum(v for op, v in counts.items() if str(op).split(".")[1] in ("addmm", "mm"))
    return linear / counter.get_total_flops()


def real_structures(model: nn.Module, info: DatasetInfo) -> frozenset[str]:
    found = set()
    if find_mlps(model):
        found.add("mlp_neurons")
    attentions = find_attentions(copy.deepcopy(model))
    if attentions:
        keep_heads(attentions[0], [0])  # raises if its heads cannot be removed
        found.add("attention_heads")
    if linear_flop_share(model, info) > 0.5:
        found.add("linear_compute")
    if hasattr(model, "forward_features") or hasattr(model, "config"):
        found.add("token_features")
    return frozenset(found)


@pytest.mark.parametrize("name", sorted(REAL))
def test_declared_structures_match_the_real_model(name):
    spec = load_config(REPO / "config" / "default.yaml")["models"][name]
    torch.manual_seed(0)
    model = build_model(spec, REAL[name], pretrained=False, download=False).eval()
    assert structures(spec) == real_structures(model, REAL[name])


def test_swin_has_attention_but_no_head_surgery():
    """Swin lacks prunable heads although it has attention: its window attention is not found by surgery."""
    spec = {"family": "timm", "arch": "swin_tiny_patch4_window7_224", "patch_size": 2, "window_size": 4}
    model = build_model(spec, CIFAR10, pretrained=False, download=False)
    assert any(type(m).__name__ == "WindowAttention" for m in model.modules()) and not find_attentions(model)


# ---------------------------------------------------------------------------------------------------------
# Budgets and leaderboards on a hand-made runs frame
# ---------------------------------------------------------------------------------------------------------

def test_chain_budget_is_the_share_of_prunable_flops_removed():
    assert chain_budget("base+stat-0.3") == 0.3
    assert chain_budget("base+mlp_magnitude-0.5") == 0.5
    assert chain_budget("base+dgmr-0.7+dgmr_kd+int8") == 0.3  # dgmr keeps 0.7: removes 0.3
    assert chain_budget("base+int8") is None and chain_budget("base") is None


VIT = json.dumps({"family": "timm", "arch": "vit_tiny_patch16_224", "patch_size": 4})
SWIN = json.dumps({"family": "timm", "arch": "swin_tiny_patch4_window7_224", "patch_size": 2})
LLAMA = json.dumps({"family": "hf_causal_lm", "config": {"model_type": "llama"}})


def run(dataset, model, spec, chain, seed, metric, value, flops):
    return {"dataset": dataset, "model": model, "chain": chain, "seed": seed, "metric": metric, metric: value,
            "relative_flops_kept": flops, "model_spec": spec}


@pytest.fixture
def runs() -> pd.DataFrame:
    rows = []
    for seed, (base, stat, kwon, dgmr, stat5) in enumerate([(0.90, 0.85, 0.80, 0.88, 0.70), (0.92, 0.89, 0.90, 0.90, 0.72)]):
        rows += [run("cifar", "vit", VIT, "base", seed, "accuracy", base, 1.0),
                 run("cifar", "vit", VIT, "base+stat-0.3", seed, "accuracy", stat, 0.70),
                 run("cifar", "vit", VIT, "base+kwon-0.3", seed, "accuracy", kwon, 0.72),
                 run("cifar", "vit", VIT, "base+dgmr-0.7", seed, "accuracy", dgmr, 0.80),
                 run("cifar", "vit", VIT, "base+stat-0.5", seed, "accuracy", stat5, 0.50),
                 run("cifar", "swin", SWIN, "base", seed, "accuracy", base, 1.0),
                 run("cifar", "swin", SWIN, "base+dgmr-0.7", seed, "accuracy", dgmr, 0.81)]
    for seed, (base, stat, kwon) in enumerate([(20.0, 25.0, 21.0), (22.0, 27.0, 24.0)]):
        rows += [run("wiki", "llama", LLAMA, "base", seed, "perplexity", base, 1.0),
                 run("wiki", "llama", LLAMA, "base+stat-0.3", seed, "perplexity", stat, 0.70),
                 run("wiki", "llama", LLAMA, "base+kwon-0.3", seed, "perplexity", kwon, 0.70)]
    return pd.DataFrame(rows)


def test_leaderboard_cells_known_answers(runs):
    found = cells(runs, "accuracy").set_index(["budget", "model", "method"])
    # ViT: drops by hand in points, per seed against that seed's base: stat 5 and 3, kwon 10 and 2, dgmr 2 and 2.
    stat, kwon, dgmr = (found.loc[(0.3, "vit", m)] for m in ("stat", "kwon", "dgmr"))
    assert stat["drop_mean"] == pytest.approx(4.0) and stat["drop_std"] == pytest.approx(2 ** 0.5)
    assert kwon["drop_mean"] == pytest.approx(6.0) and kwon["drop_std"] == pytest.approx(32 ** 0.5)
    assert dgmr["drop_mean"] == pytest.approx(2.0) and dgmr["drop_std"] == pytest.approx(0.0)
    assert bool(dgmr["best"]) and not bool(stat["best"]) and not bool(kwon["best"])
    assert stat["flops_kept"] == pytest.approx(0.70) and stat["seeds"] == 2
    assert found.loc[(0.5, "vit", "stat")]["drop_mean"] == pytest.approx(20.0)
    # Llama, perplexity (lower is better): the drop is the rise, stat 5 and 5, kwon 1 and 2: kwon is best.
    lstat, lkwon = found.loc[(0.3, "llama", "stat")], found.loc[(0.3, "llama", "kwon")]
    assert lstat["drop_mean"] == pytest.approx(5.0) and lstat["drop_std"] == pytest.approx(0.0)
    assert lkwon["drop_mean"] == pytest.approx(1.5) and lkwon["drop_std"] == pytest.approx(0.5 ** 0.5)
    assert bool(lkwon["best"]) and not bool(lstat["best"])
    ranked = ranks(runs, "accuracy").set_index(["budget", "model", "method"])["rank"]
    assert [ranked[(0.3, "vit", m)] for m in ("dgmr", "stat", "kwon")] == [1, 2, 3]
    assert [ranked[(0.3, "llama", m)] for m in ("kwon", "stat")] == [1, 2]


def test_leaderboard_table_per_budget(runs):
    board = leaderboard(runs, "accuracy", 0.3).set_index("method")
    assert list(board.columns) == ["vit / cifar [accuracy drop, pt]", "swin / cifar [accuracy drop, pt]",
                                   "llama / wiki [perplexity rise]"]
    assert board.loc["dgmr", "vit / cifar [accuracy drop, pt]"] == "**2.00 ± 0.00** (80% FLOPs)"
    assert board.loc["stat", "vit / cifar [accuracy drop, pt]"] == "4.00 ± 1.41 (70% FLOPs)"
    assert board.loc["kwon", "llama / wiki [perplexity rise]"] == "**1.50 ± 0.71** (70% FLOPs)"
    assert board.loc["stat", "swin / cifar [accuracy drop, pt]"] == "n/a"  # stat needs heads, Swin has none
    assert board.loc["dgmr", "llama / wiki [perplexity rise]"] == "not run"  # applies (MLP neurons), not made
    assert list(leaderboard(runs, "accuracy", 0.5)["method"]) == ["stat"]
    one_seed = leaderboard(runs[~((runs["seed"] == 1) & (runs["chain"] == "base+stat-0.3"))], "accuracy", 0.3)
    assert one_seed.set_index("method").loc["stat", "vit / cifar [accuracy drop, pt]"] == "5.00 (1 seed, 70% FLOPs)"


def test_skipped_table_from_the_runs(runs):
    table = skipped_table(runs, "accuracy")
    swin = table[table["model"] == "swin"]
    assert set(swin["chain"]) == {"base+stat-0.3", "base+kwon-0.3", "base+stat-0.5"}
    assert set(swin["stage"]) == {"stat", "kwon"} and swin["reason"].str.contains("attention_heads").all()
    # Llama lacks dgmr-0.7 and stat-0.5 although both apply to it (MLP neurons, heads): runs not made, not skips
    assert table[table["model"] == "llama"].empty


# ---------------------------------------------------------------------------------------------------------
# heads_random: the budget is met, the choice follows the seed
# ---------------------------------------------------------------------------------------------------------

def test_heads_random_meets_the_budget_and_follows_the_seed():
    from types import SimpleNamespace

    def pruned(seed):
        torch.manual_seed(0)
        model = build_model(TINY_LLAMA, LM_INFO, pretrained=False, download=False)
        full = prunable_flops(components(model), [c.units for c in components(model)], 128)
        STAGES.get("heads_random")(model, SimpleNamespace(seed=seed), ratio=0.5, seq_len=128)
        parts = components(model)
        assert prunable_flops(parts, [c.units for c in parts], 128) <= 0.5 * full
        return torch.cat([p.flatten() for p in model.parameters()])

    assert torch.equal(pruned(0), pruned(0)) and not torch.equal(pruned(0), pruned(1))


# ---------------------------------------------------------------------------------------------------------
# The crossbench study planned (dry runs only): the same grid in slimbench plan and Snakemake, skips stated
# ---------------------------------------------------------------------------------------------------------

def test_plan_and_workflow_dry_run_plan_the_crossbench_with_skips_stated(tmp_path):
    plan = subprocess.run(["slimbench", "plan", "--config", "config/default.yaml", "--study", "crossbench"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-2000:]
    planned = {line.strip() for line in plan.stdout.splitlines() if line.startswith("  results/")}
    assert "results/default/crossbench/cifar10_train_split/vit_tiny_p4/seed1/base+stat-0.3" in planned
    assert not [p for p in planned if "swin_tiny_p2" in p and "stat" in p]
    assert "8 of 175 (dataset, model, chain) left out as inapplicable" in plan.stderr
    dry = subprocess.run(["snakemake", "-n", "--cores", "2", "crossbench", "--configfile", "config/default.yaml",
                          "--config", f"results_dir={tmp_path}/results", f"reports_dir={tmp_path}/reports"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0, dry.stderr[-3000:]
    metrics = {line.split("output: ")[1].split(",")[0] for line in dry.stdout.splitlines()
               if "output: " in line and line.rstrip().endswith("metrics.json")}
    assert {str(m).replace(f"{tmp_path}/", "").replace("/metrics.json", "") for m in metrics} == planned
    assert "leaves out 8 inapplicable" in dry.stderr and "skipped.csv" in dry.stdout
    assert not (tmp_path / "results").exists()
