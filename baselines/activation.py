"""Activation-based MLP-neuron pruning (structured): keep the hidden neurons that fire most on real data.

The score of a hidden neuron is its mean absolute activation (the input of the MLP's output projection:
``act(fc1 x)``, or ``act(gate x) * up x`` for gated MLPs) over every token of a seeded, unlabeled
calibration sample of the train set, in the spirit of activation-based channel pruning (e.g. Hu et al.,
2016, "Network Trimming"). It is this project's own comparator, not DGMR's: the released DGMR code
(visresearch/DGMR at 781a6bd9ae3adaca75988dc140da0ce3405922d5, ``prune.py --prune_method``) offers only
diversity, l2 (magnitude), random and taylor (``baselines/taylor.py``). As for the other baselines,
``ratio`` is the share of neurons REMOVED from every MLP.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from baselines.magnitude import RATIO, prune_mlps_by_score
from slimbench.data import seeded_subset
from slimbench.stages import Context, Param, applies_to, removes_value, stage
from slimbench.surgery import find_mlps


@torch.no_grad()
def mean_abs_activations(model: nn.Module, ctx: Context, num_examples: int, batch_size: int) -> dict[str, torch.Tensor]:
    """Mean |hidden activation| per neuron of every MLP (by MLP name) over ``num_examples`` train examples."""
    mlps = find_mlps(model)
    sums = {m.name: torch.zeros(m.hidden, dtype=torch.float64) for m in mlps}
    counts = dict.fromkeys(sums, 0)

    def hook(name: str) -> Any:
        def record(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            hidden = inputs[0].detach().flatten(0, -2)
            sums[name] += hidden.abs().double().sum(0).cpu()
            counts[name] += hidden.shape[0]
        return record

    handles = [m.output.register_forward_pre_hook(hook(m.name)) for m in mlps]
    model.to(ctx.device).eval()
    try:
        sample = seeded_subset(ctx.train_set, num_examples, ctx.seed)
        for batch in ctx.task.loader(sample, batch_size, shuffle=False, seed=ctx.seed):
            ctx.task.logits(model, ctx.task.to_device(batch, ctx.device))
    finally:
        for handle in handles:
            handle.remove()
    return {name: sums[name] / max(1, counts[name]) for name in sums}


CALIBRATION = (Param("num_examples", int, 512, 1, None, help="calibration examples"),
               Param("batch_size", int, 64, 1, None, help="calibration batch size"))


@stage("mlp_activation", params=(RATIO, *CALIBRATION), primary="ratio", applies_to=applies_to("mlp_neurons"),
       budget=removes_value)
def mlp_activation(model: nn.Module, ctx: Context, ratio: float, num_examples: int, batch_size: int) -> nn.Module:
    """Remove the ``ratio`` share of MLP hidden neurons with the smallest mean |activation| on calibration data."""
    scores = mean_abs_activations(model, ctx, num_examples, batch_size)
    return prune_mlps_by_score(model, ratio, lambda mlp: scores[mlp.name])
