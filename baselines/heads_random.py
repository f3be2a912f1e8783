"""Random pruning of attention heads and MLP neurons at a FLOPs budget: the floor of the crossbench.

The same structure, FLOPs accounting and per-layer sizes as ``heads_magnitude`` (every layer keeps the same
fraction of its units, the largest that meets the budget; ``slimbench.surgery``), but the kept heads (key/value
groups) and neurons are drawn uniformly at random, seeded by the experiment's seed. No correction, no data.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.heads_magnitude import uniform_sizes
from slimbench.stages import Context, applies_to, removes_value, stage
from slimbench.surgery import FLOPS_RATIO, SEQ_LEN, components, head_columns, keep_heads, keep_mlp_neurons


@stage("heads_random", params=(FLOPS_RATIO, SEQ_LEN), primary="ratio",
       applies_to=applies_to("attention_heads", "mlp_neurons"), budget=removes_value)
def heads_random(model: nn.Module, ctx: Context, ratio: float, seq_len: int) -> nn.Module:
    """Remove random heads and neurons, the same share in every layer, to a FLOPs budget."""
    if ratio == 0:
        return model
    generator = torch.Generator().manual_seed(ctx.seed)
    parts = components(model)
    for part, keep in zip(parts, uniform_sizes(parts, ratio, seq_len)):
        if keep >= part.units:
            continue
        chosen = torch.randperm(part.units, generator=generator)[:keep].sort().values
        if part.is_attention:
            keep_heads(part.view, head_columns(chosen, part.view.group_size))
        else:
            keep_mlp_neurons(part.view, chosen)
    return model
