"""Magnitude pruning of MLP hidden neurons (structured): keep the neurons whose input weights are largest.

The score of a hidden neuron is the L2 norm of its row in the MLP's input projection(s) (fc1; gate and up
for gated MLPs). Every MLP loses the same share of neurons; the weights really shrink.
"""

from __future__ import annotations

import torch
from torch import nn

from slimbench.stages import Context, Param, applies_to, removes_value, stage
from slimbench.surgery import MLP, find_mlps, keep_mlp_neurons, kept_count

RATIO = Param("ratio", float, 0.5, 0.0, 1.0, high_open=True, help="share of MLP hidden neurons removed")


def input_row_norms(mlp: MLP) -> torch.Tensor:
    return torch.stack([lin.weight.detach().float().norm(dim=1) for lin in mlp.inputs]).sum(0)


def prune_mlps_by_score(model: nn.Module, ratio: float, score: callable) -> nn.Module:
    """Keep the top-scoring neurons of every MLP; ``score(mlp) -> (hidden,)``."""
    for mlp in find_mlps(model):
        keep = kept_count(mlp.hidden, ratio)
        if keep < mlp.hidden:
            keep_mlp_neurons(mlp, score(mlp).topk(keep).indices)
    return model


@stage("mlp_magnitude", params=(RATIO,), primary="ratio", applies_to=applies_to("mlp_neurons"), budget=removes_value)
def mlp_magnitude(model: nn.Module, ctx: Context, ratio: float) -> nn.Module:
    """Remove the ``ratio`` share of MLP hidden neurons with the smallest input-weight norm."""
    return prune_mlps_by_score(model, ratio, input_row_norms)
