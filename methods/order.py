"""The four compression methods of Order of Compression (Shen, Sun, Lin, Zhao and Zou, 2024, arXiv 2403.17447).

The paper sorts compression methods by what they act on (its taxonomy of Sec. 3): knowledge distillation
changes the *static architecture*, pruning removes *static neurons* (channels), quantization shrinks
*static sub-neurons* (bits) and early exit changes the *dynamic architecture*. Each is a stage here, with
its recovery training, so any order of them is a chain (``base+distill+prune-0.5+quant-8+exit``):

- ``distill``: train a smaller student (a model alias of the config or an inline spec) from the incoming model's
  logits (Hinton et al. KD, reusing ``baselines.distill.kd_loss``). The incoming model is the teacher, so a
  method applied before distillation acts through the teacher; bit widths and exit heads carry over to the
  student (they are settings of the model, not of its weights), pruned channels cannot (the student's
  architecture is fixed).
- ``prune``: structured channel pruning with Torch-Pruning's DependencyGraph (Fang et al., 2023), L2
  magnitude importance, the same ratio in every layer; CNNs lose conv channels (residual groups pruned
  together), transformers lose MLP hidden neurons; then fine-tuning.
- ``quant``: k-bit fake quantization of every conv/linear layer's weights (symmetric, per output channel)
  and inputs (affine, per tensor, range calibrated then tracked by EMA), with quantization-aware training
  (straight-through estimator).
- ``exit``: early-exit heads after evenly spaced backbone stages; at inference an example leaves at the
  first head whose softmax confidence reaches ``threshold``; the heads are trained on the frozen backbone.

Recovery after pruning and quantization trains all exits jointly when the model has them (the sum of the
exits' task losses, as in BranchyNet). Cost is counted as the paper does, in BitOps with early exit's
expected depth (``slimbench/metrics/bitops.py``). The precedence graph and the sort are in
``methods/order_graph.py``. These are the stages the ``order`` study ran; the pre-registered study uses
``qat`` (8/4/2 bits, first and last layers at 8) and ``early_exit`` (threshold chosen on held-out data) of
``methods/order_stages.py`` for Q and E.

No official code of the paper is public (searched by its title, its v1 title "Chain of Compression" and the
authors' names), and only its abstract and introduction were available here. So these are this project's
choices, not checked against the paper: the distillation's temperature and weight, the same pruning ratio in
every layer, exit heads trained on a frozen backbone, bit widths and exits carried over to a student, and the
stages' epochs and learning rates. When E came before P, ``prune`` also thins the convolutions inside
``early_exit``'s heads (``methods/order_stages.py``; their width follows the ratio, their outputs stay);
``exit``'s heads (pooling and one linear layer) keep their inputs' width only where the backbone's shrinks.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from baselines.distill import EPOCHS, LR, kd_loss, recovery_recipe
from slimbench.data import DatasetInfo
from slimbench.errors import ConfigError
from slimbench.models import build_model
from slimbench.stages import Context, Param, stage
from slimbench.surgery import find_mlps, set_submodule
from slimbench.train import fit

QUANTIZABLE = (nn.Conv2d, nn.Linear)
EMA = 0.9


# ----------------------------------------------------------------------------------------------- quantization
def fake_quant_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel k-bit fake quantization (codes in [-(2^(k-1)-1), 2^(k-1)-1])."""
    levels = 2 ** (bits - 1) - 1
    w = weight.float()
    scale = (w.detach().abs().flatten(1).amax(1) / levels).clamp_min(1e-8)
    zero = torch.zeros_like(scale, dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -levels, levels)


def fake_quant_act(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor, bits: int) -> torch.Tensor:
    """Affine per-tensor k-bit fake quantization over [low, high] (widened to contain zero)."""
    low, high = low.clamp(max=0.0), high.clamp(min=0.0)
    top = 2**bits - 1
    scale = ((high - low) / top).clamp_min(1e-8).reshape(1)
    zero = torch.round(-low / scale).clamp(0, top).to(torch.int32).reshape(1)
    return torch.fake_quantize_per_tensor_affine(x.float(), scale.float(), zero, 0, top)


class FakeQuant(nn.Module):
    """A conv or linear layer computing on k-bit weights and k-bit inputs (the paper's static sub-neuron
    compression). ``calibrating`` makes eval forwards widen the input range instead of using it."""

    def __init__(self, layer: nn.Module, weight_bits: int, act_bits: int) -> None:
        super().__init__()
        self.layer = layer
        self.weight_bits = weight_bits
        self.act_bits = act_bits
        self.calibrating = False
        self.register_buffer("act_low", torch.zeros(()))
        self.register_buffer("act_high", torch.zeros(()))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        low, high = x.detach().float().min(), x.detach().float().max()
        if self.calibrating:
            self.act_low.copy_(torch.minimum(self.act_low, low))
            self.act_high.copy_(torch.maximum(self.act_high, high))
        else:
            self.act_low.mul_(EMA).add_((1 - EMA) * low)
            self.act_high.mul_(EMA).add_((1 - EMA) * high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.calibrating:
            self.observe(x)
        xq = fake_quant_act(x, self.act_low, self.act_high, self.act_bits).to(x.dtype)
        wq = fake_quant_weight(self.layer.weight, self.weight_bits)
        if isinstance(self.layer, nn.Linear):
            return F.linear(xq, wq.to(xq.dtype), None if self.layer.bias is None else self.layer.bias.to(xq.dtype))
        return self.layer._conv_forward(xq, wq.to(xq.dtype),
                                        None if self.layer.bias is None else self.layer.bias.to(xq.dtype))


def quant_bits(model: nn.Module) -> Optional[int]:
    """The bit width most of the model's fake-quantized layers use (None if it has none): the first and last
    layers may keep a wider one (``methods/order_stages.py``)."""
    widths = [m.weight_bits for m in model.modules() if isinstance(m, FakeQuant)]
    return max(set(widths), key=widths.count) if widths else None


def edge_layers(model: nn.Module) -> list[FakeQuant]:
    """The first and last layers: the backbone's first quantized layer (the stem conv) and every classifier
    output layer (a quantized Linear with one output per class: the final one and the exit heads' own)."""
    base = getattr(model, "backbone", model)
    wrappers = [m for m in base.modules() if isinstance(m, FakeQuant)]
    if not wrappers:
        return []
    classes = model_info(model).num_classes
    outputs = [m for m in model.modules() if isinstance(m, FakeQuant) and isinstance(m.layer, nn.Linear)
               and m.layer.out_features == classes]
    return [wrappers[0], *[m for m in outputs if m is not wrappers[0]]]


def edge_bits(model: nn.Module) -> Optional[int]:
    """The bit width of the first and last layers (None if the model is not quantized)."""
    edges = edge_layers(model)
    return edges[0].weight_bits if edges else None


def set_edge_bits(model: nn.Module, bits: int) -> nn.Module:
    """First and last layers at ``bits`` (weights and inputs)."""
    for wrapper in edge_layers(model):
        wrapper.weight_bits = wrapper.act_bits = bits
    return model


def quantize(model: nn.Module, bits: int) -> nn.Module:
    """Wrap every conv/linear layer (not yet wrapped) in FakeQuant; already wrapped layers take ``bits``."""
    for module in model.modules():
        if isinstance(module, FakeQuant):
            module.weight_bits = module.act_bits = bits
    wrapped = {id(m.layer) for m in model.modules() if isinstance(m, FakeQuant)}
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, QUANTIZABLE) and id(m) not in wrapped]
    for name, layer in targets:
        set_submodule(model, name, FakeQuant(layer, bits, bits).to(layer.weight.device))
    return model


def strip_quant(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Replace FakeQuant wrappers by their layers (for Torch-Pruning's tracing); returns what to restore."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, FakeQuant)}
    saved = {}
    for name, wrapper in found.items():
        saved[name] = (wrapper.weight_bits, wrapper.act_bits, wrapper.act_low.clone(), wrapper.act_high.clone())
        set_submodule(model, name, wrapper.layer)
    return saved


def restore_quant(model: nn.Module, saved: dict[str, tuple]) -> None:
    for name, (weight_bits, act_bits, low, high) in saved.items():
        wrapper = FakeQuant(model.get_submodule(name), weight_bits, act_bits)
        wrapper.act_low.copy_(low)
        wrapper.act_high.copy_(high)
        set_submodule(model, name, wrapper.to(low.device))


@contextlib.contextmanager
def calibrating(model: nn.Module) -> Iterator[None]:
    wrappers = [m for m in model.modules() if isinstance(m, FakeQuant)]
    for wrapper in wrappers:
        wrapper.calibrating = True
    try:
        yield
    finally:
        for wrapper in wrappers:
            wrapper.calibrating = False


# ----------------------------------------------------------------------------------------------- early exit
class TokenPool(nn.Module):
    """Mean over the token axis of (batch, tokens, dim) features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(1)


def exit_head(feature: torch.Tensor, num_classes: int) -> nn.Module:
    """A classifier on an intermediate feature: pool + linear (CNN maps) or norm + token mean + linear."""
    if feature.dim() == 4:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(feature.shape[1], num_classes))
    return nn.Sequential(nn.LayerNorm(feature.shape[-1]), TokenPool(), nn.Linear(feature.shape[-1], num_classes))


def select_exit(outputs: list[torch.Tensor], threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, the first exit whose max softmax probability reaches ``threshold`` (else the last)."""
    stacked = torch.stack([o.float() for o in outputs])  # (exits, batch, classes)
    confident = stacked.softmax(-1).amax(-1) >= threshold
    confident[-1] = True
    index = confident.int().argmax(0)
    return stacked[index, torch.arange(stacked.shape[1], device=stacked.device)], index


class EarlyExit(nn.Module):
    """A backbone with exit heads on the outputs of ``points`` (module paths inside the backbone).

    Training forwards return the final logits and keep every exit's logits in ``outputs`` for the joint
    loss; eval forwards return, per example, the logits of the exit it takes and record it in
    ``last_exit`` (all exits are computed; the cost of the exit actually taken is counted by BitOps).
    """

    def __init__(self, backbone: nn.Module, points: list[str], heads: nn.ModuleList, threshold: float) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.points = list(points)
        self.threshold = threshold
        self._pending: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []
        self.last_exit: Optional[torch.Tensor] = None
        for point, head in zip(self.points, self.heads):
            backbone.get_submodule(point).register_forward_hook(self._hook(head))

    def _hook(self, head: nn.Module) -> Any:
        def run(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            self._pending.append(head(output))

        return run

    def exit_boundaries(self) -> list[nn.Module]:
        return [self.backbone.get_submodule(p) for p in self.points]

    def exits_like(self, model: nn.Module) -> "EarlyExit":
        """``model`` with heads of this kind, as many as its depth allows (the student of distillation)."""
        return add_exits(model, len(self.points), self.threshold)

    def forward_all(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._pending = []
        final = self.backbone(x)
        outputs, self._pending = [*self._pending, final], []
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.outputs = self.forward_all(x)
        if self.training:
            return self.outputs[-1]
        logits, self.last_exit = select_exit(self.outputs, self.threshold)
        return logits


def block_container(model: nn.Module) -> tuple[str, nn.Module]:
    """The backbone's sequence of stages/blocks (``layers`` of CIFAR ResNets, ``blocks`` of timm ViTs)."""
    for name in ("layers", "blocks", "stages"):
        found = getattr(model, name, None)
        if isinstance(found, (nn.Sequential, nn.ModuleList)) and len(found) >= 2:
            return name, found
    raise ConfigError(f"early exit needs a model with a 'layers', 'blocks' or 'stages' sequence; "
                      f"{type(model).__name__} has none.")


def exit_points(model: nn.Module, exits: int) -> list[str]:
    """``exits`` evenly spaced block outputs, never the last block (that is the final classifier's input);
    a model with fewer blocks gets one head after each block but the last."""
    name, blocks = block_container(model)
    count = len(blocks)
    exits = min(exits, count - 1)
    return [f"{name}.{(k + 1) * count // (exits + 1) - 1}" for k in range(exits)]


def model_info(model: nn.Module) -> DatasetInfo:
    """What a fresh model of another architecture needs (classes, channels, image size), read off ``model``."""
    base = getattr(model, "backbone", model)
    classifier = [m for m in base.modules() if isinstance(m, nn.Linear)][-1]
    first_conv = next(m for m in base.modules() if isinstance(m, nn.Conv2d))
    size = getattr(getattr(base, "patch_embed", None), "img_size", (32, 32))
    return DatasetInfo("inferred", "image_classification", "accuracy", classifier.out_features,
                       first_conv.in_channels, int(size[0]), (0.0,), (1.0,), False)


@torch.no_grad()
def add_exits(model: nn.Module, exits: int, threshold: float, head: Optional[Any] = None,
              wrapper: Optional[type] = None) -> EarlyExit:
    """Attach heads (``head(feature, classes)``, default :func:`exit_head`; quantized like the backbone, if it
    is) after ``exits`` evenly spaced blocks, in ``wrapper`` (default :class:`EarlyExit`)."""
    head, wrapper = head or exit_head, wrapper or EarlyExit
    points = exit_points(model, exits)
    info = model_info(model)
    device = next(model.parameters()).device
    features: list[torch.Tensor] = []
    handles = [model.get_submodule(p).register_forward_hook(lambda m, i, o: features.append(o)) for p in points]
    was_training = model.training
    model.eval()
    model(torch.zeros(1, info.in_chans, info.image_size, info.image_size, device=device))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    heads = nn.ModuleList([head(f, info.num_classes) for f in features]).to(device)
    bits, edge = quant_bits(model), edge_bits(model)
    if bits is not None:
        quantize(heads, bits)
    found = wrapper(model, points, heads, threshold)
    if bits is not None and edge != bits:  # the heads' output layers are last layers too
        set_edge_bits(found, edge)
    return found


def all_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every exit's logits, final classifier last (just the logits for a model without exits)."""
    return model.forward_all(x) if isinstance(model, EarlyExit) else [model(x)]


def joint_loss(ctx: Context) -> Any:
    """Task loss summed over all exits (the final classifier alone when there are none)."""

    def loss(model: nn.Module, batch: Any) -> torch.Tensor:
        final = ctx.task.logits(model, batch)
        if not isinstance(model, EarlyExit):
            return ctx.task.loss(final, batch)
        return sum(ctx.task.loss(o.float(), batch) for o in model.outputs[:-1]) + ctx.task.loss(final, batch)

    return loss


def inputs(ctx: Context, raw_batch: Any) -> torch.Tensor:
    """Model inputs of a raw (not yet prepared) image batch."""
    return ctx.task.to_device(raw_batch, ctx.device)[0]


# ----------------------------------------------------------------------------------------------- stages
def make_student(teacher: nn.Module, student: dict[str, Any], info: DatasetInfo) -> nn.Module:
    """The fresh student of model spec ``student``; the teacher's exit heads and bit width carry over (Sec. 3:
    only the static architecture changes under distillation)."""
    model = build_model(student, info, pretrained=False, download=False)
    model = model.to(next(teacher.parameters()).device)
    bits, edge = quant_bits(teacher), edge_bits(teacher)
    if isinstance(teacher, EarlyExit):  # as many heads as the student's depth allows
        model = teacher.exits_like(model)
    if bits is not None:
        set_edge_bits(quantize(model, bits), edge)
    return model


def rebuild_distill(model: nn.Module, student: dict[str, Any], **_: Any) -> nn.Module:
    return make_student(model, student, model_info(model))


STUDENT = Param("student", str, "resnet18_cifar", model=True,
                help="the student: a model alias of the config, or an inline spec")


@stage("distill", params=(STUDENT, EPOCHS, LR, Param("temperature", float, 4.0, 0.0, None, low_open=True),
                          Param("alpha", float, 0.9, 0.0, 1.0)), rebuild=rebuild_distill)
def distill(model: nn.Module, ctx: Context, student: dict[str, Any], epochs: Optional[int], lr: Optional[float],
            temperature: float, alpha: float) -> nn.Module:
    """Distil the incoming model into a smaller student (static architecture; paper Sec. 3).

    Loss per exit: alpha * T^2 KL(teacher || student) + (1 - alpha) CE, the teacher's final logits as target.
    """
    teacher = model.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    pupil = make_student(teacher, student, ctx.task.info)

    def loss(net: nn.Module, batch: Any) -> torch.Tensor:
        x = batch[0]
        with torch.no_grad():
            target = all_outputs(teacher, x)[-1].float()
        total = 0.0
        for logits in all_outputs(net, x):
            logits = logits.float()
            hard = ctx.task.loss(logits, batch) if alpha < 1 else logits.new_zeros(())
            total = total + alpha * kd_loss(logits, target, temperature) + (1 - alpha) * hard
        return total

    if quant_bits(pupil) is not None:
        calibrate(pupil, ctx)
    fit(pupil, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed, loss_fn=loss,
        progress=ctx.progress, desc="distill")
    return pupil


def prunable(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    """(roots, ignored) for Torch-Pruning: transformers prune MLP hidden neurons, CNNs every conv's channels;
    classifiers (final and exit heads) keep their outputs."""
    mlps = find_mlps(model)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if mlps:
        roots = [layer for mlp in mlps for layer in mlp.inputs]
    else:
        roots = [m for m in layers if isinstance(m, nn.Conv2d)]
    keep = {id(m) for m in roots}
    return roots, [m for m in layers if id(m) not in keep]


def prune_channels(model: nn.Module, ratio: float, example: torch.Tensor) -> nn.Module:
    """Torch-Pruning (DependencyGraph) structured pruning: remove ``ratio`` of each group's channels by L2
    magnitude; coupled layers (residual adds, BN, exit heads, the next layer's inputs) shrink with them."""
    import torch_pruning as tp

    saved = strip_quant(model)
    _, ignored = prunable(model)
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio,
        ignored_layers=ignored, forward_fn=lambda m, x: torch.stack(all_outputs(m, x)).sum(0))
    pruner.step()
    restore_quant(model, saved)
    return model


@stage("prune", params=(Param("ratio", float, 0.5, 0.0, 1.0, high_open=True, help="share of channels removed"),
                        EPOCHS, LR), primary="ratio")
def prune(model: nn.Module, ctx: Context, ratio: float, epochs: Optional[int], lr: Optional[float]) -> nn.Module:
    """Structured channel pruning (static neuron; paper Sec. 3) with fine-tuning of all exits."""
    example = inputs(ctx, next(iter(ctx.calibration_batches(2, 2))))
    model.eval()
    prune_channels(model, ratio, example)
    fit(model, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed,
        loss_fn=joint_loss(ctx), progress=ctx.progress, desc="prune")
    return model


@torch.no_grad()
def calibrate(model: nn.Module, ctx: Context, examples: int = 512, within: Optional[nn.Module] = None) -> None:
    """Set the input ranges of the fake-quant layers in ``within`` (default: all of ``model``) to the min/max seen
    on calibration examples (eval mode); the other layers keep theirs."""
    model.eval()
    with calibrating(model if within is None else within):
        for batch in ctx.calibration_batches(examples, 128):
            ctx.task.logits(model, ctx.task.to_device(batch, ctx.device))


def rebuild_quant(model: nn.Module, bits: int, **_: Any) -> nn.Module:
    return quantize(model, bits)


@stage("quant", params=(Param("bits", int, 8, 2, 8, help="bit width of weights and activations"), EPOCHS, LR,
                        Param("calibration", int, 512, 1, None, help="calibration examples")),
       primary="bits", rebuild=rebuild_quant)
def quant(model: nn.Module, ctx: Context, bits: int, epochs: Optional[int], lr: Optional[float],
          calibration: int) -> nn.Module:
    """k-bit weights and activations (static sub-neuron; paper Sec. 3), calibrated, then QAT."""
    fresh = quant_bits(model) is None
    quantize(model, bits)
    if fresh:
        calibrate(model, ctx, calibration)
    fit(model, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed,
        loss_fn=joint_loss(ctx), progress=ctx.progress, desc="quant")
    return model


def rebuild_exit(model: nn.Module, exits: int, threshold: float, **_: Any) -> nn.Module:
    if isinstance(model, EarlyExit):
        model.threshold = threshold
        return model
    return add_exits(model, exits, threshold)


@stage("exit", params=(Param("threshold", float, 0.9, 0.0, 1.0, low_open=True, help="softmax confidence to exit"),
                       Param("exits", int, 3, 1, None, help="exit heads before the final classifier"), EPOCHS, LR),
       primary="threshold", rebuild=rebuild_exit, revision=2)
def early_exit(model: nn.Module, ctx: Context, threshold: float, exits: int, epochs: Optional[int],
               lr: Optional[float]) -> nn.Module:
    """Early-exit heads with a confidence threshold (dynamic architecture; paper Sec. 3), trained on the
    frozen backbone so the final classifier is unchanged. On a quantized model only the new heads' input ranges
    are calibrated (revision 2: revision 1 recalibrated the backbone's too, which widened its QAT ranges and
    changed the final classifier's outputs in every chain with E after Q)."""
    model = rebuild_exit(model, exits, threshold)
    if quant_bits(model) is not None:
        calibrate(model, ctx, within=model.heads)
    train_heads(model, ctx, ctx.train_set, epochs, lr, "exit")
    return model


def train_heads(model: EarlyExit, ctx: Context, dataset: Any, epochs: Optional[int], lr: Optional[float],
                desc: str) -> None:
    """Train the exit heads with the joint loss on a frozen backbone (its weights, BatchNorm statistics and
    dropout stay as they are), so the final classifier is unchanged."""
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    task_loss = joint_loss(ctx)

    def loss(net: EarlyExit, batch: Any) -> torch.Tensor:
        net.backbone.eval()
        return task_loss(net, batch)

    try:
        fit(model, ctx.task, dataset, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed, loss_fn=loss,
            progress=ctx.progress, desc=desc)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
