"""Magnitude pruning of attention heads and MLP neurons without any correction, at a FLOPs budget.

The retraining-free baseline of the STAT study (Flynn et al., 2024, arXiv 2406.00061): the same prunable
structure and FLOPs accounting as ``methods/stat.py`` (``slimbench.surgery``), but units are ranked by weight magnitude and the
next layer is only sliced. Scores: a neuron, the L2 norm of its input row(s) (as ``mlp_magnitude``); a head
(or key/value group), the L2 norm of all its weights (its q/k/v rows and its output-projection columns).
Every layer keeps the same fraction of its units, the largest fraction that meets the budget.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.magnitude import input_row_norms
from slimbench.stages import Context, applies_to, removes_value, stage
from slimbench.surgery import (FLOPS_RATIO, SEQ_LEN, Attention, Component, components, head_columns, keep_heads,
                               keep_mlp_neurons, prunable_flops)


def qkv_rows(attn: Attention) -> list[torch.Tensor]:
    """The q, k and v projection weights of one attention, each (heads x head_dim, embed_dim)."""
    module = attn.owner
    if attn.kind == "bert":
        return [module.self.query.weight, module.self.key.weight, module.self.value.weight]
    if attn.kind == "llama":
        return [module.q_proj.weight, module.k_proj.weight, module.v_proj.weight]
    return list(module.qkv.weight.chunk(3))


def head_group_norms(attn: Attention) -> torch.Tensor:
    """L2 norm of every key/value group's weights: its query heads' q rows and output columns, its k, v rows."""
    q, k, v = (w.detach().float() for w in qkv_rows(attn))
    out = attn.output.weight.detach().float()
    squares = (q.pow(2).sum(1).view(attn.kv_heads, -1).sum(1) + out.pow(2).sum(0).view(attn.kv_heads, -1).sum(1)
               + k.pow(2).sum(1).view(attn.kv_heads, -1).sum(1) + v.pow(2).sum(1).view(attn.kv_heads, -1).sum(1))
    return squares.sqrt()


def uniform_sizes(parts: list[Component], ratio: float, seq_len: int) -> list[int]:
    """The largest common keep fraction (bisection, then rounding per layer) whose FLOPs meet the budget."""
    target = (1 - ratio) * prunable_flops(parts, [c.units for c in parts], seq_len)

    def sizes(fraction: float) -> list[int]:
        return [max(1, round(fraction * c.units)) for c in parts]

    low, high = 0.0, 1.0
    for _ in range(50):
        mid = (low + high) / 2
        low, high = (mid, high) if prunable_flops(parts, sizes(mid), seq_len) <= target else (low, mid)
    if prunable_flops(parts, sizes(low), seq_len) > target:
        raise ValueError(f"heads_magnitude cannot remove {ratio:.0%} of the FLOPs while keeping one unit per layer.")
    return sizes(low)


@stage("heads_magnitude", params=(FLOPS_RATIO, SEQ_LEN), primary="ratio",
       applies_to=applies_to("attention_heads", "mlp_neurons"), budget=removes_value)
def heads_magnitude(model: nn.Module, ctx: Context, ratio: float, seq_len: int) -> nn.Module:
    """Remove the smallest-norm heads and neurons, the same share in every layer, to a FLOPs budget."""
    if ratio == 0:
        return model
    parts = components(model)
    for part, keep in zip(parts, uniform_sizes(parts, ratio, seq_len)):
        if keep >= part.units:
            continue
        if part.is_attention:
            groups = head_group_norms(part.view).topk(keep).indices
            keep_heads(part.view, head_columns(groups.sort().values, part.view.group_size))
        else:
            keep_mlp_neurons(part.view, input_row_norms(part.view).topk(keep).indices)
    return model
