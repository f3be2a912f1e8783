"""Order of Compression (Shen et al., 2024): BitOps, early-exit cost, precedence graph and sort, stages, DAG."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from methods.order import EarlyExit, FakeQuant, add_exits, prune_channels, quantize, select_exit
from methods.order_graph import (at_matched_cost, decide, insertion_checks, method_tokens, pair_winner,
                                 pairwise_table, precedence_edges, topological_order, variant_labels)
from slimbench import checkpoint
from slimbench.config import experiments, load_config
from slimbench.data import DatasetInfo
from slimbench.metrics.bitops import expected_bitops, layer_bitops, model_bits, segment_bitops, total_bitops
from slimbench.models import build_model
from slimbench.stages import chain_prefixes

REPO = Path(__file__).resolve().parents[1]
INFO = DatasetInfo("toy", "image_classification", "accuracy", 10, 3, 16, (0.0,) * 3, (1.0,) * 3, False)
SPEC = {"family": "cifar_resnet", "blocks": [1, 1, 1], "width": 4}


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model(SPEC, INFO, pretrained=False, download=False).eval()


# ----------------------------------------------------------------------------------------------- BitOps
def test_bitops_of_a_known_conv_at_known_bit_widths() -> None:
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(1, 3, 4, 4)
    macs = 8 * 4 * 4 * 3 * 3 * 3  # outputs x (in channels x kernel)
    assert layer_bitops(macs, 4, 8) == 110592
    assert total_bitops(nn.Sequential(FakeQuant(conv, 4, 8)), x) == macs * 4 * 8
    assert total_bitops(nn.Sequential(conv), x) == macs * 32 * 32
    assert total_bitops(nn.Sequential(nn.Linear(5, 7)), torch.randn(1, 5)) == 35 * 32 * 32


def test_full_precision_bitops_match_torch_flop_counter() -> None:
    model, x = tiny_resnet(), torch.randn(1, 3, 16, 16)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert total_bitops(model, x) == counter.get_total_flops() // 2 * 32 * 32


def test_quantized_model_bits_count_weights_at_their_bit_width() -> None:
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    assert model_bits(model) == 12 * 32
    assert model_bits(quantize(model, 4)) == 12 * 4


# ----------------------------------------------------------------------------------------------- early exit
def test_expected_cost_of_a_fixed_exit_pattern() -> None:
    # exits cost 10, 10+20, 10+20+30, 10+20+30+40; one example at exit 0, one at exit 1, two at the end
    assert expected_bitops([10, 20, 30, 40], [1, 1, 0, 2]) == (10 + 30 + 2 * 100) / 4
    with pytest.raises(ValueError):
        expected_bitops([10, 20], [1])


def test_select_exit_takes_the_first_confident_head() -> None:
    confident, unsure = torch.tensor([[10.0, 0.0]]), torch.tensor([[0.0, 0.0]])
    logits, index = select_exit([unsure, confident, unsure], threshold=0.9)
    assert index.tolist() == [1] and torch.equal(logits, confident)
    _, index = select_exit([unsure, unsure, unsure], threshold=0.9)
    assert index.tolist() == [2]  # the final classifier when no head is confident


def test_early_exit_segments_split_the_full_cost() -> None:
    model, x = tiny_resnet(), torch.randn(1, 3, 16, 16)
    full = total_bitops(model, x)
    exits = add_exits(model, exits=2, threshold=0.5).eval()
    segments = segment_bitops(exits, lambda: exits(x))
    heads = sum(total_bitops(h, f) for h, f in zip(exits.heads, [torch.randn(1, 4, 16, 16), torch.randn(1, 8, 8, 8)]))
    assert len(segments) == 3 and sum(segments) == full + heads
    assert segments[0] < full


# ----------------------------------------------------------------------------------------------- stages
def test_quant_and_exit_wrappers_survive_save_and_reload(tmp_path: Path) -> None:
    model = add_exits(quantize(tiny_resnet(), 4), exits=2, threshold=0.7)
    model.train()
    for _ in range(3):  # moves the activation ranges away from their initial values
        model(torch.randn(8, 3, 16, 16))
    model.eval()
    stages = [{"name": "quant", "params": {"bits": 4, "epochs": None, "lr": None, "calibration": 8}},
              {"name": "exit", "params": {"threshold": 0.7, "exits": 2, "epochs": None, "lr": None}}]
    checkpoint.save_model(model, tmp_path / "m", SPEC, INFO, stages)
    loaded, _ = checkpoint.load_model(tmp_path / "m")
    x = torch.randn(4, 3, 16, 16)
    assert isinstance(loaded, EarlyExit) and any(isinstance(m, FakeQuant) for m in loaded.heads.modules())
    assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert torch.equal(loaded.last_exit, model.last_exit)


def test_channel_pruning_shrinks_backbone_and_exit_heads_together() -> None:
    model = add_exits(quantize(tiny_resnet(), 8), exits=2, threshold=0.9)
    before = sum(p.numel() for p in model.parameters())
    prune_channels(model.eval(), 0.5, torch.randn(1, 3, 16, 16))
    assert sum(p.numel() for p in model.parameters()) < 0.5 * before
    assert isinstance(model.backbone.stem[0], FakeQuant) and model.backbone.stem[0].layer.out_channels == 2
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


# ----------------------------------------------------------------------------------------------- graph
def test_topological_sort_of_a_known_graph() -> None:
    edges = [("distill", "prune"), ("prune", "quant"), ("quant", "exit"), ("distill", "exit"), ("prune", "exit")]
    result = topological_order(["exit", "quant", "prune", "distill"], edges)
    assert result.order == ["distill", "prune", "quant", "exit"] and result.cycles == []
    # without constraints the given node order breaks ties
    assert topological_order(["b", "a", "c"], [("a", "c")]).order == ["b", "a", "c"]


def test_a_cycle_is_reported_not_hidden() -> None:
    result = topological_order(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")])
    assert result.order is None
    assert result.cycles == [["a", "b", "c"]]
    # the direction is kept: a -> c -> b -> a is not a -> b -> c -> a (the figure colours each cycle's edges)
    assert topological_order(["a", "b", "c"], [("a", "c"), ("c", "b"), ("b", "a")]).cycles == [["a", "c", "b"]]


def test_pair_criterion_accuracy_then_bitops() -> None:
    assert pair_winner(0.90, 0.80, 10, 1) == 1  # accuracy decides
    assert pair_winner(0.80, 0.90, 1, 10) == -1
    assert pair_winner(0.900, 0.901, 10, 5) == -1  # equal accuracy: fewer BitOps wins
    assert pair_winner(0.900, 0.901, 10, 10) == 0  # a tie adds no edge


def test_orders_of_different_cost_are_compared_at_the_same_reduction() -> None:
    base = (0.90, 1024.0)
    # A->B: 4 halvings (64 BitOps) for 8 points; B->A: 2 halvings (256) for 5 points. At 2 halvings A->B would
    # have lost 4 points (86%), B->A lost 5 (85%): A->B is better although its own accuracy is lower.
    assert at_matched_cost(0.82, 0.85, 64.0, 256.0, *base) == pytest.approx((0.86, 0.85))
    assert pair_winner(0.82, 0.85, 64.0, 256.0, base) == 1
    assert pair_winner(0.82, 0.85, 64.0, 256.0) == -1  # without the base, plain accuracy
    assert pair_winner(0.85, 0.86, 256.0, 256.0, base) == -1  # same cost: plain accuracy
    assert at_matched_cost(0.80, 0.90, 1024.0, 512.0, *base) == (0.80, 0.90)  # no reduction to match at


def frame_of(results: dict[str, float]) -> pd.DataFrame:
    rows = [{"dataset": "d", "model": "m", "seed": s, "chain": chain, "accuracy": acc + 0.001 * s, "bitops": 100.0}
            for chain, acc in results.items() for s in (0, 1)]
    return pd.DataFrame(rows)


def test_pairwise_results_decide_the_chains() -> None:
    frame = frame_of({"base": 0.9, "base+distill+prune-0.5": 0.88, "base+prune-0.5+distill": 0.80,
                      "base+prune-0.5+quant-8": 0.87, "base+quant-8+prune-0.5": 0.85,
                      "base+distill+quant-8": 0.86, "base+quant-8+distill": 0.84,
                      "base+prune-0.5+quant-8+distill": 0.7, "base+distill+quant-8+prune-0.5": 0.8})
    pairs = pairwise_table(frame, "accuracy")
    assert sorted(precedence_edges(pairs)) == [("distill", "prune"), ("distill", "quant"), ("prune", "quant")]
    tokens = method_tokens(frame["chain"])
    record = decide(pairs, tokens, random_count=2, seed=0)
    assert record["order"] == ["distill", "prune", "quant"]
    assert record["chains"]["sorted"] == "base+distill+prune-0.5+quant-8"
    assert record["chains"]["reverse"] == "base+quant-8+prune-0.5+distill"
    assert len(set(record["chains"]["random"])) == 2
    checks = insertion_checks(frame, "accuracy", pairs)
    assert checks["order_kept"].tolist() == [True]  # D+Q+P beats P+Q+D, as D beats P pairwise


def test_chains_of_one_order_are_labelled_by_the_settings_that_differ() -> None:
    dpqe = "base+distill+prune-{}+qat-{}+early_exit-0.005"
    labels = variant_labels([dpqe.format(0.5, 8), dpqe.format(0.5, 4), dpqe.format(0.7, 4),
                             "base+early_exit-0.005+qat-8+prune-0.5+distill"])
    assert labels == {dpqe.format(0.5, 8): "DPQE (prune-0.5, qat-8)", dpqe.format(0.5, 4): "DPQE (prune-0.5, qat-4)",
                      dpqe.format(0.7, 4): "DPQE (prune-0.7, qat-4)",
                      "base+early_exit-0.005+qat-8+prune-0.5+distill": "EQPD"}


# ----------------------------------------------------------------------------------------------- workflow
@pytest.mark.parametrize("study", ["order", "order_prereg"])
def test_each_distinct_prefix_is_one_job_in_the_dag(study: str) -> None:
    config = load_config(REPO / "config" / "default.yaml")
    exps = list(experiments(config, study))
    prefixes = {(e.seed, p) for e in exps for p in chain_prefixes(e.chain)}
    targets = [str(e.directory(config["results_dir"]) / "metrics.json") for e in exps]
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1", "--configfile",
                          "config/default.yaml", "--", *targets], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = {k: int(v) for k, v in re.findall(r"^(\w+)\s+(\d+)$", out.stdout, re.M)}
    assert counts["base"] + counts["compress"] == len(prefixes)  # every distinct prefix once
    assert counts["evaluate"] == len(exps)
    assert len(prefixes) < sum(len(chain_prefixes(e.chain)) for e in exps)  # and sharing is real
