"""Kwon et al. 2022 (arXiv 2204.09656, baselines/kwon.py): known answers for each of its three steps."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimbench import checkpoint
from slimbench.models import describe_model
from slimbench.stages import STAGES, Context
from slimbench.surgery import components, find_attentions, find_mlps
from slimbench.data.base import ImageTensorDataset
from slimbench.tasks import Task, make_task

from conftest import IMAGE_INFO
from test_stat import FAMILIES, PaddedIds, stat_context, tiny  # registers the stages (load_plugins)

from baselines.kwon import fisher_diagonal, layer_io, mask_gradients, prune_and_tune, rearrange, search

FAST = {"num_examples": 32, "batch_size": 32, "seq_len": 10, "damping": 1e-6}


@dataclass
class LabelledIds(PaddedIds):
    """Padded token ids with a class label each (a stand-in for a tokenized GLUE task)."""

    labels: torch.Tensor = None

    def subset(self, indices):
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return LabelledIds(self.ids[index], self.lengths[index], self.labels[index])

    def collate(self, indices):
        return {**super().collate(indices), "labels": self.labels[torch.as_tensor(list(indices))]}


class ClassifierTask(Task):
    def to_device(self, batch, device, train=False):
        return {k: v.to(device) for k, v in batch.items()}

    def logits(self, model, batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def loss(self, logits, batch):
        return F.cross_entropy(logits, batch["labels"])


def context(kind: str) -> Context:
    generator = torch.Generator().manual_seed(2)
    if kind == "vit":
        data = ImageTensorDataset(torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=generator),
                                  torch.randint(0, 10, (64,), generator=generator))
        return Context(make_task(IMAGE_INFO), data, data, torch.device("cpu"), seed=0)
    if kind != "bert":
        return stat_context("llama")
    ids = torch.randint(0, 100, (64, 10), generator=generator)
    lengths = torch.randint(4, 11, (64,), generator=generator)
    data = LabelledIds(ids, lengths, torch.randint(0, 2, (64,), generator=generator))
    return Context(ClassifierTask(FAMILIES["bert"][1]), data, data, torch.device("cpu"), seed=0)


def sample(ctx: Context) -> list:
    return [ctx.task.to_device(b, ctx.device) for b in ctx.calibration_batches(32, 32)]


@torch.no_grad()
def logits(model: nn.Module, ctx: Context) -> torch.Tensor:
    return torch.cat([ctx.task.logits(model.eval(), b) for b in sample(ctx)])


@torch.no_grad()
def layer_output(model: nn.Module, ctx: Context, index: int) -> torch.Tensor:
    """What mask tuning reconstructs: the residual stream after component ``index`` (x + its output), per token."""
    part = components(model)[index]
    return torch.cat([x + y for x, _, y in (layer_io(model, part, b, ctx) for b in sample(ctx))])


def by_hand_flops(model: nn.Module, seq_len: int) -> int:
    """Prunable FLOPs of the tiny BERT/Llama (d_model 32, head_dim 8, no GQA) from its shapes: per head, q/k/v/o
    projections 2*4*32*8 and scores + weighted sum 4*seq_len*8; per neuron 2*32 per input row and output column."""
    heads = sum(a.heads for a in find_attentions(model))
    neurons = sum(m.hidden * (len(m.input_names) + 1) for m in find_mlps(model))
    return heads * (2 * 4 * 32 * 8 + 4 * seq_len * 8) + neurons * 2 * 32


def test_a_unit_that_changes_nothing_has_zero_fisher_and_goes_first():
    """Head 1 of layer 0 and neuron 7 of layer 1 have zeroed output weights: removing them changes nothing."""
    model, ctx = tiny("bert"), context("bert")
    attn, mlp = find_attentions(model)[0], find_mlps(model)[1]
    with torch.no_grad():
        attn.output.weight[:, 8:16] = 0
        mlp.output.weight[:, 7] = 0
    parts = components(model)
    fisher = [fisher_diagonal(g) for g in mask_gradients(model, parts, sample(ctx), ctx)]
    assert fisher[0][1] == 0 and fisher[3][7] == 0
    assert (fisher[0][[0, 2, 3]] > 0).all() and (fisher[3].count_nonzero() == 47)
    # a budget of exactly one head's FLOPs: removing the free head loses no importance at all
    one_head = 2 * 4 * 32 * 8 + 4 * 10 * 8
    kept = search(parts, fisher, one_head / by_hand_flops(model, 10), 10)
    assert kept[0].tolist() == [0, 2, 3] and [len(k) for k in kept[1:]] == [48, 4, 48]
    # a budget of one neuron, with the free head given importance (else dropping it ties): the free neuron goes
    fisher[0][1] = fisher[0].max()
    kept = search(parts, fisher, 2 * 2 * 32 / by_hand_flops(model, 10), 10)
    assert 7 not in kept[3].tolist() and [len(k) for k in kept] == [4, 48, 4, 47]
    before = logits(model, ctx)
    STAGES.get("kwon")(model, ctx, ratio=one_head / by_hand_flops(model, 10), rearrangement=True, tune=True, **FAST)
    assert [a.heads for a in find_attentions(model)] == [3, 4]
    torch.testing.assert_close(logits(model, ctx), before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tune", [True, False])
def test_mask_tuning_absorbs_a_pruned_scaled_copy(tune):
    """Neuron 5 of layer 0's MLP computes the same activation as neuron 3 and writes 0.7x its output column: with
    neuron 5 pruned, tuning sets neuron 3's mask to 1.7 (and every other to 1), reproducing the model exactly."""
    model, ctx = tiny("bert"), context("bert")
    mlp = find_mlps(model)[0]
    with torch.no_grad():
        mlp.inputs[0].weight[5] = mlp.inputs[0].weight[3]
        mlp.inputs[0].bias[5] = mlp.inputs[0].bias[3]
        mlp.output.weight[:, 5] = 0.7 * mlp.output.weight[:, 3]
    before, column, layer = logits(model, ctx), mlp.output.weight[:, 3].clone(), layer_output(model, ctx, 1)
    parts = components(model)
    kept = [torch.arange(p.units) for p in parts]
    kept[1] = torch.tensor([i for i in range(48) if i != 5])
    prune_and_tune(model, parts, kept, sample(ctx), ctx, tune=tune, damping=1e-6)
    assert mlp.hidden == 47
    if tune:
        torch.testing.assert_close(mlp.output.weight[:, 3], 1.7 * column)
        torch.testing.assert_close(layer_output(model, ctx, 1), layer, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits(model, ctx), before, atol=1e-5, rtol=1e-5)
    else:  # the copy's share of the MLP output is lost: 100x the tolerance met with tuning
        assert (layer_output(model, ctx, 1) - layer).abs().max() > 1e-3


def test_rearrangement_pairs_units_that_cancel():
    """Units 0 and 1 have opposite gradients (together they change nothing), unit 2 a small one of its own:
    when two must go, the diagonal Fisher prunes unit 2 and one of 0, 1; the block Fisher prunes 0 and 1 together."""
    generator = torch.Generator().manual_seed(0)
    g = torch.randn(100, 1, generator=generator)
    rest = torch.randn(100, 3, generator=generator) * torch.tensor([0.5, 3, 3])
    grads = torch.cat([g, -g, rest], 1)
    fisher = grads.double().T @ grads.double() / len(grads)
    diagonal_kept = torch.tensor([0, 3, 4])  # two pruned by the diagonal: units 1 and 2 (0 and 1 tie)
    assert rearrange(fisher, diagonal_kept).tolist() == [2, 3, 4]
    assert rearrange(fisher, torch.tensor([0, 1, 2, 3, 4])).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("kind,ratio", [("bert", 0.3), ("bert", 0.6), ("llama", 0.5)])
def test_flops_budget_met(kind, ratio):
    model, ctx = tiny(kind), context(kind)
    full = by_hand_flops(model, 10)
    STAGES.get("kwon")(model, ctx, ratio=ratio, rearrangement=True, tune=True, **FAST)
    removed = 1 - by_hand_flops(model, 10) / full
    assert ratio <= removed < ratio + (2 * 4 * 32 * 8 + 4 * 10 * 8) / full  # within one head of the budget


@pytest.mark.parametrize("kind", ["bert", "llama", "gqa", "vit"])
def test_kwon_prunes_and_reloads(kind, tmp_path):
    model, ctx = tiny(kind), context(kind)
    reference = logits(tiny(kind), ctx)
    params = {**FAST, "ratio": 0.5, "rearrangement": True, "tune": True}
    STAGES.get("kwon")(model, ctx, **params)
    expected = logits(model, ctx)
    spec, info = FAMILIES[kind]
    stages = [{"name": "kwon", "params": params}]
    checkpoint.save_model(model, tmp_path / "m", describe_model(spec, model), info, stages)
    reloaded, _ = checkpoint.load_model(tmp_path / "m")
    assert sum(p.numel() for p in reloaded.parameters()) < sum(p.numel() for p in tiny(kind).parameters())
    torch.testing.assert_close(logits(reloaded, ctx), expected)
    assert (expected - reference).norm() < reference.norm()  # pruned, not destroyed


def test_tuning_lowers_the_last_layers_reconstruction_error():
    """Same kept units (no rearrangement) with and without tuning: the fitted masks reconstruct the original
    model's last residual stream on the sample better than masks of 1."""
    ctx = context("bert")
    reference = layer_output(tiny("bert"), ctx, -1)
    errors = {}
    for tune in (True, False):
        model = STAGES.get("kwon")(tiny("bert"), ctx, **{**FAST, "ratio": 0.5, "rearrangement": False, "tune": tune})
        errors[tune] = (layer_output(model, ctx, -1) - reference).norm()
    assert errors[True] < 0.9 * errors[False]
