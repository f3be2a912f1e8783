"""Plain logit knowledge distillation (Hinton, Vinyals and Dean, 2015) and label fine-tuning.

Loss (Hinton et al., Sec. 2): alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T)) + (1 - alpha) * CE(z_s, y).
The teacher is the experiment's uncompressed model; training options default to the study's base recipe.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.stages import Context, Param, applies_to, stage
from slimbench.train import fit

EPOCHS = Param("epochs", int, None, 0, None, help="recovery epochs (default: the base recipe's)")
LR = Param("lr", float, None, 0.0, None, low_open=True, help="learning rate (default: the base recipe's)")


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2-scaled KL divergence between softened distributions, averaged over examples (or tokens)."""
    s = F.log_softmax(student.flatten(0, -2).float() / temperature, dim=-1)
    t = F.log_softmax(teacher.flatten(0, -2).float() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def recovery_recipe(ctx: Context, epochs: Optional[int], lr: Optional[float]) -> dict[str, Any]:
    recipe = dict(ctx.recipe)
    if epochs is not None:
        recipe["epochs"] = epochs
    if lr is not None:
        recipe["lr"] = lr
    return recipe


@stage("kd", params=(EPOCHS, LR, Param("temperature", float, 4.0, 0.0, None, low_open=True),
                     Param("alpha", float, 0.9, 0.0, 1.0)), applies_to=applies_to())  # logits of any task
def kd(model: nn.Module, ctx: Context, epochs: Optional[int], lr: Optional[float], temperature: float,
       alpha: float) -> nn.Module:
    """Distil the uncompressed teacher's logits into the model (Hinton et al., 2015)."""
    teacher = ctx.teacher

    def loss(student: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            target = ctx.task.logits(teacher, batch)
        logits = ctx.task.logits(student, batch)
        hard = ctx.task.loss(logits, batch) if alpha < 1 else logits.new_zeros(())
        return alpha * kd_loss(logits, target, temperature) + (1 - alpha) * hard

    fit(model, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed, loss_fn=loss,
        progress=ctx.progress, desc="kd")
    return model


@stage("finetune", params=(EPOCHS, LR), applies_to=applies_to())
def finetune(model: nn.Module, ctx: Context, epochs: Optional[int], lr: Optional[float]) -> nn.Module:
    """Recover with the task's labels only (no teacher)."""
    fit(model, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed,
        progress=ctx.progress, desc="finetune")
    return model
