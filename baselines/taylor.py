"""First-order Taylor MLP-neuron pruning (structured), DGMR's "Taylor" comparator (Shen et al. 2025).

Importance of hidden neuron j, as the authors' code computes it:
  1. per calibration batch b, the first-order Taylor term of the loss for the neuron's activation,
     ``r_b[j] = mean over the batch's examples and tokens of a_j * dL_b/da_j``, where ``a`` is the input of the
     MLP's output projection (fc2) and ``L_b`` the batch's task loss (cross-entropy with the labels): the
     estimator of visresearch/AMP (same group; DGMR's release does not include its importance code),
     ``importance.py::ImportanceEstimator.taylor_neuron_importance_1st_order`` at commit
     14773069bf275618d74e448e2a870323c7711178 (forward pre-hook and full backward hook on the last MLP linear,
     ``activation * grad_input``, ``.view(-1, hidden).mean(dim=0)`` per batch);
  2. the rows of all batches are reduced by their L2 norm, ``||r[:, j]||_2``, and the largest are kept:
     visresearch/DGMR ``prune.py::taylor_prune_mlp`` at commit 781a6bd9ae3adaca75988dc140da0ce3405922d5
     (``torch.norm(importance, p=2, dim=0)`` then ``topk``).
Not checkable: the tensor DGMR's ``taylor_prune_mlp`` loads (``block_{i}_mlp_c_fc``) is produced by code that
is not released (nor is ``configs/eva/clipe/taylor_prune_evaclip.yaml``, named in ``finetune.py``), so the
row unit (a batch) is AMP's. As released, ``taylor_prune_mlp`` keeps ``importance.shape[1] * 1`` indices out of
a vector of that same length, i.e. every index: the hard-coded ratio 1 makes it select nothing by importance;
here the stage's ``ratio`` sets the count. As for the other baselines, ``ratio`` is the share REMOVED.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from baselines.activation import CALIBRATION
from baselines.magnitude import RATIO, prune_mlps_by_score
from slimbench.stages import Context, applies_to, removes_value, stage
from slimbench.surgery import find_mlps


def taylor_scores(model: nn.Module, ctx: Context, num_examples: int, batch_size: int) -> dict[str, torch.Tensor]:
    """Per MLP (by name): the L2 norm over calibration batches of the batch-mean ``a * dL/da`` per neuron."""
    mlps = find_mlps(model)
    captured: dict[str, torch.Tensor] = {}
    rows: dict[str, list[torch.Tensor]] = {m.name: [] for m in mlps}

    def hook(name: str) -> Any:
        def record(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            captured[name] = inputs[0]
        return record

    handles = [m.output.register_forward_pre_hook(hook(m.name)) for m in mlps]
    model.to(ctx.device).eval()
    try:
        with torch.enable_grad():
            for batch in ctx.calibration_batches(num_examples, batch_size):
                batch = ctx.task.to_device(batch, ctx.device)
                captured.clear()
                loss = ctx.task.loss(ctx.task.logits(model, batch), batch)
                names = list(captured)
                grads = torch.autograd.grad(loss, [captured[n] for n in names])
                for name, grad in zip(names, grads):
                    product = (captured[name].detach().double() * grad.double()).flatten(0, -2)
                    rows[name].append(product.mean(dim=0).cpu())
    finally:
        for handle in handles:
            handle.remove()
    return {name: torch.stack(r).norm(dim=0) for name, r in rows.items()}


@stage("mlp_taylor", params=(RATIO, *CALIBRATION), primary="ratio", applies_to=applies_to("mlp_neurons"),
       budget=removes_value)  # one importance row per calibration batch
def mlp_taylor(model: nn.Module, ctx: Context, ratio: float, num_examples: int, batch_size: int) -> nn.Module:
    """Remove the ``ratio`` share of MLP hidden neurons with the smallest first-order Taylor importance."""
    scores = taylor_scores(model, ctx, num_examples, batch_size)
    return prune_mlps_by_score(model, ratio, lambda mlp: scores[mlp.name])
