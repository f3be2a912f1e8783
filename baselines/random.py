"""Random MLP-neuron pruning: the floor any pruning criterion must beat (seeded by the experiment seed)."""

from __future__ import annotations

import torch
from torch import nn

from baselines.magnitude import RATIO, prune_mlps_by_score
from slimbench.stages import Context, applies_to, removes_value, stage


@stage("mlp_random", params=(RATIO,), primary="ratio", applies_to=applies_to("mlp_neurons"), budget=removes_value)
def mlp_random(model: nn.Module, ctx: Context, ratio: float) -> nn.Module:
    """Remove a random ``ratio`` share of every MLP's hidden neurons."""
    generator = torch.Generator().manual_seed(ctx.seed)
    return prune_mlps_by_score(model, ratio, lambda mlp: torch.rand(mlp.hidden, generator=generator))
