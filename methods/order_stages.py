"""Quantization and early exit as Order of Compression uses them (Shen et al., 2024, arXiv 2403.17447), for the
pre-registered study ``order_prereg``. The stages ``quant`` and ``exit`` of ``methods/order.py`` stay as the
``order`` study ran them; these two replace them where a review found them too weak to test the paper:

- ``qat``: quantization-aware training at 8, 4 or 2 bits (weights symmetric per output channel, activations
  affine per tensor, straight-through estimator; ``methods/order.py``). The first layer (stem conv) and the last
  layers (each classifier's output Linear) stay at ``first_last_bits`` (8 by default), the usual treatment in
  low-bit QAT (DoReFa, PACT, LSQ); the paper's own treatment could not be checked (only its abstract and
  introduction are available here).
- ``early_exit``: heads with a 3x3 conv (``width`` channels, stride 2 on maps larger than 8x8), BatchNorm, ReLU,
  pooling and a linear classifier after evenly spaced backbone stages, trained on the frozen backbone; the
  confidence threshold is then *chosen on held-out data*: the lowest threshold of a 0.01 grid whose early-exit
  accuracy stays within ``max_drop`` of the final classifier's (none qualifying: the model never exits early).
  Held out means the dataset's ``holdout_fraction`` share, which no stage trained on (the backbone included),
  the order studies' setting; a dataset without one holds ``holdout`` of the training set out of the heads'
  training only: the backbone has seen it, so its final classifier looks better there than on new data and the
  threshold comes out conservative (fewer early exits). The paper's head design and threshold rule could not be
  checked; BranchyNet (Teerapittayanon et al., 2016) trains exits jointly, here the backbone is frozen so that
  E leaves the other methods' result untouched and its own effect is the exit alone.

Cost is BitOps with the measured exit distribution (``slimbench/metrics/bitops.py``: ``exit_counts`` and the
expected BitOps are recorded in every metrics file).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from baselines.distill import EPOCHS, LR, recovery_recipe
from methods.order import (EarlyExit, TokenPool, add_exits, calibrate, calibrating, joint_loss, quant_bits, quantize,
                           set_edge_bits, train_heads)
from slimbench.errors import ConfigError
from slimbench.stages import Context, Param, stage
from slimbench.train import fit

THRESHOLDS = [round(0.01 * k, 2) for k in range(1, 101)]  # candidate confidences, lowest first
NEVER = 2.0  # a threshold no softmax probability reaches: the final classifier only


# ----------------------------------------------------------------------------------------------- quantization
def rebuild_qat(model: nn.Module, bits: int, first_last_bits: int, **_: Any) -> nn.Module:
    return set_edge_bits(quantize(model, bits), first_last_bits)


@stage("qat", params=(Param("bits", int, 8, 2, 8, help="bit width of weights and activations"),
                      Param("first_last_bits", int, 8, 2, 8, help="bit width of the first and last layers"),
                      EPOCHS, LR, Param("calibration", int, 512, 1, None, help="calibration examples")),
       primary="bits", rebuild=rebuild_qat)
def qat(model: nn.Module, ctx: Context, bits: int, first_last_bits: int, epochs: Optional[int], lr: Optional[float],
        calibration: int) -> nn.Module:
    """k-bit QAT (static sub-neuron; paper Sec. 3): calibrate the input ranges, then train with the STE."""
    fresh = quant_bits(model) is None
    rebuild_qat(model, bits, first_last_bits)
    if fresh:
        calibrate(model, ctx, calibration)
    fit(model, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed,
        loss_fn=joint_loss(ctx), progress=ctx.progress, desc=f"qat-{bits}")
    return model


# ----------------------------------------------------------------------------------------------- early exit
def conv_head(feature: torch.Tensor, num_classes: int, width: int) -> nn.Module:
    """An exit head with capacity: conv 3x3 (stride 2 above 8x8) + BN + ReLU + pool + linear for CNN maps;
    norm + token mean + hidden layer + linear for token sequences."""
    if feature.dim() == 4:
        stride = 2 if feature.shape[-1] > 8 else 1
        return nn.Sequential(nn.Conv2d(feature.shape[1], width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
    dim = feature.shape[-1]
    return nn.Sequential(nn.LayerNorm(dim), TokenPool(), nn.Linear(dim, width), nn.GELU(),
                         nn.Linear(width, num_classes))


class TunedExit(EarlyExit):
    """An :class:`EarlyExit` whose threshold was chosen on held-out data; it is a buffer, so it is saved."""

    @property
    def threshold(self) -> float:
        return float(self.exit_threshold)

    @threshold.setter
    def threshold(self, value: float) -> None:
        if "exit_threshold" in self._buffers:
            self.exit_threshold.fill_(value)
        else:
            self.register_buffer("exit_threshold", torch.tensor(float(value)))

    def exits_like(self, model: nn.Module) -> "TunedExit":
        """The student's heads (E before D): same design, and this threshold, chosen on the teacher's heads (the
        paper's handling of E before D could not be checked)."""
        return add_tuned_exits(model, len(self.points), self.width, self.threshold)


def add_tuned_exits(model: nn.Module, exits: int, width: int, threshold: float = NEVER) -> TunedExit:
    found = add_exits(model, exits, threshold, head=lambda f, c: conv_head(f, c, width), wrapper=TunedExit)
    found.width = width
    return found


def choose_threshold(confidences: torch.Tensor, correct: torch.Tensor, max_drop: float) -> float:
    """The lowest threshold of :data:`THRESHOLDS` whose early-exit accuracy is at least the final classifier's
    minus ``max_drop`` (:data:`NEVER` if none is). ``confidences`` and ``correct``: (exits, examples), final last."""
    final = correct[-1].float().mean()
    for threshold in THRESHOLDS:
        confident = confidences >= threshold
        confident[-1] = True
        taken = confident.int().argmax(0)
        accuracy = correct[taken, torch.arange(correct.shape[1])].float().mean()
        if accuracy >= final - max_drop - 1e-9:
            return threshold
    return NEVER


@torch.no_grad()
def held_out_outputs(model: EarlyExit, ctx: Context, dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidences, correct), each (exits, examples), of every exit on ``dataset``."""
    model.eval()
    confidences, correct = [], []
    for batch in ctx.task.loader(dataset, 256):
        x, labels = ctx.task.to_device(batch, ctx.device)
        probs = torch.stack([o.float().softmax(-1) for o in model.forward_all(x)])
        confidences.append(probs.amax(-1).cpu())
        correct.append((probs.argmax(-1) == labels).cpu())
    return torch.cat(confidences, 1), torch.cat(correct, 1)


def split_train(ctx: Context, holdout: float) -> tuple[Any, Any]:
    """A seeded split of the training set: (heads' training share, held-out share for the threshold)."""
    count = len(ctx.train_set)
    held = round(holdout * count)
    if held < 1 or held >= count:
        raise ConfigError(f"stage 'early_exit': holdout={holdout} of {count} training examples leaves an empty "
                          "share. Fix: a holdout between 1/N and 1 - 1/N.")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(ctx.seed)).tolist()
    return ctx.train_set.subset(order[held:]), ctx.train_set.subset(order[:held])


def rebuild_early_exit(model: nn.Module, exits: int, width: int, **_: Any) -> nn.Module:
    if isinstance(model, EarlyExit):
        raise ConfigError("stage 'early_exit': the model already has exits. Fix: apply early exit once per chain.")
    return add_tuned_exits(model, exits, width)


@stage("early_exit", params=(Param("max_drop", float, 0.005, 0.0, 1.0,
                                   help="held-out accuracy the exits may cost against the final classifier"),
                             Param("exits", int, 3, 1, None, help="exit heads before the final classifier"),
                             Param("width", int, 128, 1, None, help="channels of each head's conv"),
                             Param("holdout", float, 0.1, 0.0, 1.0, low_open=True, high_open=True,
                                   help="share of the training set held out to choose the threshold"),
                             EPOCHS, LR),
       primary="max_drop", rebuild=rebuild_early_exit)
def early_exit(model: nn.Module, ctx: Context, max_drop: float, exits: int, width: int, holdout: float,
               epochs: Optional[int], lr: Optional[float]) -> nn.Module:
    """Exit heads trained on the frozen backbone, threshold chosen on held-out data: the dataset's holdout, which
    no training saw, else a share of the training set the heads did not see (dynamic architecture; paper Sec. 3)."""
    train, held = (ctx.train_set, ctx.holdout_set) if ctx.holdout_set is not None else split_train(ctx, holdout)
    model = rebuild_early_exit(model, exits, width)
    if quant_bits(model) is not None:
        calibrate_heads(model, ctx, train)
    train_heads(model, ctx, train, epochs, lr, "early_exit")
    model.threshold = choose_threshold(*held_out_outputs(model, ctx, held), max_drop)
    return model


@torch.no_grad()
def calibrate_heads(model: EarlyExit, ctx: Context, dataset: Any, examples: int = 512) -> None:
    """Set the new heads' input ranges from ``examples`` of ``dataset``; the backbone's stay as its QAT left them."""
    model.eval()
    with calibrating(model.heads):
        for batch in ctx.task.loader(dataset.subset(range(min(examples, len(dataset)))), 128):
            ctx.task.logits(model, ctx.task.to_device(batch, ctx.device))
