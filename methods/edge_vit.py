"""Edge ViT compression: Swin-to-student distillation, structured/unstructured pruning, post-training quantization.

Paper: E. Youn, S. Mitheran J, S. Prabhu, S. Chen, "Compressing Vision Transformers for Low-Resource Visual
Learning", arXiv 2309.02617 (2023); the authors' code is github.com/chensy7/efficient-vit (branch swin_v2_b,
commit 6163879 cited below). The paper fits a segmentation model to a Jetson-Nano-class device (4 GB RAM, Sec. 1
"Motivation"; its CPU has 4 cores) by (i) distilling a Swin(-V2) UPerNet teacher into a UPerNet with a MobileViT-S
backbone (ResNet-18 as a CNN reference), (ii) structured pruning (filters in the authors' code; linear rows,
attention heads, iterative pruning and unstructured pruning as the comparison are this project's, below), and
(iii) fp16 post-training quantization (details here follow the authors' ``train_upernet.py``, ``upernet.py``,
``prune.py``, ``evaluate.py``, ``Uper_mobilevit.yml``). The same stages serve the paper's setting, semantic segmentation
(study ``edge_vit``: CamVid, as LPCV 2023 UAV data is not available), and this project's image-classification
version (study ``edge_vit_cifar``: CIFAR-10).

Distillation, the authors' way (``upernet.py`` @ 6163879, ``UperNet.forward``): loss = task cross-entropy
+ 1.0 x MSE between the student's and the teacher's logit maps (both upsampled to the input size); their KL
line (T = 1) is commented out in every commit. Their task loss is OHEM cross-entropy (``OhemCELoss2D``,
thresh 0.7, ``Uper_mobilevit.yml``); here it is the task's plain cross-entropy (not replicated). The KL logit
term and the feature-mimicking term are this project's options (``logit_loss: kl``, ``beta > 0``), used by the
classification study.

Stages registered here:

- ``feature_kd-<student alias>``: distillation into a *different* model, the student, named by a model alias
  of the config (see :func:`feature_kd`): CE + alpha x logit term (MSE by default) + beta x feature term.
- ``label_student-<student alias>``: the same student trained with the same recipe on the labels alone (no
  teacher): the reference the distillation gain is measured against.
- ``mse_kd``: the authors' CE + MSE distillation of the teacher into the current model (after pruning: the
  authors retrain the pruned student with the teacher, ``train_upernet.py`` with ``prune: True``).
- ``structured_prune-<target>`` (one-shot) and ``iterative_prune-<target>`` (several prune/fine-tune
  rounds), target ``filters`` | ``channels`` | ``rows`` | ``heads``; filters/channels/rows go through
  Torch-Pruning's DependencyGraph (coupled layers shrink together), heads through slimbench.surgery.
- ``unstructured_prune-<ratio>``: per-layer magnitude pruning to zeros (no memory saving: the comparison).

Quantization reuses ``fp16`` and ``int8`` from baselines/quantize.py. The report figure/table
``edge_budget`` (a table and a figure of slimbench.plots) checks every model against the device budget.

What is the project's, not the authors' (their code at 6163879 has none of it): ``int8`` (which quantizes only
Linear layers, so MobileViT's convolutions stay fp32), ``iterative_prune``, ``heads`` and ``rows`` as pruning
targets (their only head change is ``num_attention_heads=2`` in the student's config, ``upernet.py`` line 406,
which keeps every parameter), and per-layer ``unstructured_prune``. Their fp16 is a whole-model cast
(``evaluate.py``, lines 53 and 60), as here.

Not checked: the paper's method and results sections were not available (only its abstract and introduction),
so its 0.61 mIoU, +0.06 IoU, 5.6M parameters and 3.7 GB are read from secondary summaries, and which of the
authors' commits produced its numbers cannot be told. The authors keep the checkpoint with the best val mIoU
(validated every 500 iterations) and report val (``train_upernet.py``, lines 199-256; ``evaluate.py`` line 50);
the studies here score the last model on CamVid's test split. The authors resize val images and labels to
512x512; here scoring is at the native size. They train in fp32 without gradient clipping and with
``drop_last``; ``slimbench.train.fit`` uses bf16 autocast on a GPU and keeps the last partial batch (clipping
is the recipe's ``grad_clip``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from baselines.distill import EPOCHS, LR, kd_loss, recovery_recipe
from slimbench.data import DatasetInfo
from slimbench.errors import ConfigError
from slimbench.lazy import lazy_module
from slimbench.models import build_model
from slimbench.plots import figure, pyplot, table
from slimbench.stages import Context, Param, parse_chain, stage
from slimbench.surgery import find_attentions, find_mlps, keep_heads, kept_count
from slimbench.train import fit

pd = lazy_module("pandas")

if TYPE_CHECKING:  # for the annotations only; imported where used (see handlers)
    import torch_pruning as tp

# --------------------------------------------------------------------------------------------------------------
# Students: the KD stage turns the study's base model (the teacher) into a different, smaller model.
# --------------------------------------------------------------------------------------------------------------


def teacher_shape(teacher: nn.Module) -> DatasetInfo:
    """Classes, channels and image size a student must share with ``teacher``, read from its layers: the
    classifier's outputs, the first convolution's inputs, and a patch embedding's ``img_size`` if any.

    The KD stage's ``rebuild`` hook only sees the freshly built teacher, so the student's shape comes from it.
    Segmentation models (slimbench.models.segmentation) carry their ``dataset_info``.
    """
    if isinstance(getattr(teacher, "dataset_info", None), DatasetInfo):
        return teacher.dataset_info
    linears = [m for m in teacher.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in teacher.modules() if isinstance(m, nn.Conv2d)]
    if not linears or not convs:
        raise ConfigError("feature_kd needs an image classifier teacher (a convolution in, a linear head out).")
    size = getattr(getattr(teacher, "patch_embed", None), "img_size", None)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return DatasetInfo("teacher", "image_classification", "accuracy", linears[-1].out_features,
                       convs[0].in_channels, int(size) if size else 0)


def build_student(teacher: nn.Module, student: dict[str, Any], pretrained: bool = False) -> nn.Module:
    """The student of model spec ``student`` for the teacher's classes, channels and image size."""
    return build_model(student, teacher_shape(teacher), pretrained=pretrained, download=False)


def rebuild_student(model: nn.Module, student: dict[str, Any], **_: Any) -> nn.Module:
    """``rebuild`` hook: a saved distilled model is the student, so rebuild it before its weights load."""
    return build_student(model, student)


# --------------------------------------------------------------------------------------------------------------
# Feature mimicking (FitNets-style hints with learned 1x1 projections where widths differ).
# --------------------------------------------------------------------------------------------------------------


def feature_modules(model: nn.Module) -> list[str]:
    """The modules whose outputs are mimicked: the stage outputs of the backbone, as the authors' UPerNet taps
    them (``upernet.py``: ``swin_v2_t_forward`` / ``mobilevit_forward`` return the four stage outputs).

    timm models name them in ``feature_info``; other models (the CIFAR ResNet) expose a ``layers`` Sequential.
    """
    info = getattr(model, "feature_info", None)
    if info:
        return [entry["module"] for entry in info]
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.Sequential):
        return [f"layers.{i}" for i in range(len(layers))]
    raise ConfigError(f"feature_kd: cannot find the stages of {type(model).__name__} (no timm feature_info, no "
                      f"'layers' Sequential). Fix: set feature_kd's beta to 0 (logit KD only).")


class FeatureTap:
    """Forward hooks collecting the stage outputs of a model as NCHW tensors (timm Swin emits NHWC)."""

    def __init__(self, model: Optional[nn.Module]) -> None:
        self.channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
        self.features: list[torch.Tensor] = []
        self.handles = [] if model is None else [model.get_submodule(name).register_forward_hook(self._keep)
                                                 for name in feature_modules(model)]

    @classmethod
    def nothing(cls) -> "FeatureTap":
        """A tap on no module (logit-only distillation)."""
        return cls(None)

    def _keep(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self.features.append(output.permute(0, 3, 1, 2) if self.channels_last else output)

    def take(self) -> list[torch.Tensor]:
        features, self.features = self.features, []
        return features

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def stage_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The NCHW stage outputs of one forward pass of ``model`` on ``x``."""
    tap = FeatureTap(model)
    try:
        model(x)
        return tap.take()
    finally:
        tap.close()


def pair_by_resolution(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> list[tuple[int, int]]:
    """(student index, teacher index) of stage outputs with the same spatial size; the deepest student stage
    of each size is used, as a backbone's stage output is the last map at that stride. Only feature maps
    (N, C, H, W) pair: token sequences (plain ViT blocks) have no resolution to match."""
    by_size = {tuple(f.shape[-2:]): i for i, f in enumerate(student) if f.ndim == 4}
    return [(by_size[tuple(t.shape[-2:])], j) for j, t in enumerate(teacher)
            if t.ndim == 4 and tuple(t.shape[-2:]) in by_size]


def projection(student_channels: int, teacher_channels: int) -> nn.Module:
    """A learned 1x1 convolution from the student's width to the teacher's (identity when they agree)."""
    if student_channels == teacher_channels:
        return nn.Identity()
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1)


def feature_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], projections: nn.ModuleList,
                 pairs: list[tuple[int, int]]) -> torch.Tensor:
    """Mean over paired stages of the MSE between the projected student map and the teacher map, both
    normalized over channels (layer norm without parameters) so that no stage dominates by its scale."""
    losses = []
    for proj, (s, t) in zip(projections, pairs):
        mimic = proj(student[s].float())
        target = teacher[t].float()
        losses.append(F.mse_loss(F.layer_norm(mimic.transpose(1, -1), mimic.shape[1:2]),
                                 F.layer_norm(target.transpose(1, -1), target.shape[1:2])))
    return torch.stack(losses).mean()


class Distiller(nn.Module):
    """The student plus its projections: what the optimizer trains (the projections are dropped after)."""

    def __init__(self, student: nn.Module, projections: nn.ModuleList) -> None:
        super().__init__()
        self.student = student
        self.projections = projections


def distillation_pairs(student: nn.Module, teacher: nn.Module, x: torch.Tensor) -> tuple[list[tuple[int, int]], nn.ModuleList]:
    """Pair the stage outputs of student and teacher on one batch and build the projections."""
    s_feats, t_feats = stage_outputs(student.eval(), x), stage_outputs(teacher, x)
    pairs = pair_by_resolution(s_feats, t_feats)
    if not pairs:
        raise ConfigError("feature_kd: no student stage has the spatial size of a teacher stage. Fix: set beta 0.")
    return pairs, nn.ModuleList([projection(s_feats[s].shape[1], t_feats[t].shape[1]) for s, t in pairs])


LOGIT_LOSSES = ("mse", "kl")


def logit_term(student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """The logit distillation term. ``mse``: the authors' ``F.mse_loss(outputs, teacher_outputs)``, the mean
    over every element of the (upsampled) logit maps (``upernet.py`` @ 6163879, ``UperNet.forward``). ``kl``:
    this project's T^2-scaled KL over classes (Hinton et al., 2015), for classification logits (N, classes)."""
    if kind == "mse":
        return F.mse_loss(student.float(), teacher.float())
    if student.ndim != 2:
        raise ConfigError("logit_loss 'kl' is defined here for classification logits (N, classes), not maps of "
                          f"shape {tuple(student.shape)}. Fix: use logit_loss: mse (the authors' term).")
    return kd_loss(student, teacher, temperature)


def distillation_loss(ctx: Context, teacher: nn.Module, teacher_tap: FeatureTap, pairs: list[tuple[int, int]],
                      logit_loss: str, temperature: float, alpha: float,
                      beta: float) -> Callable[[Distiller, Any], torch.Tensor]:
    """Loss = task CE(student, y) + alpha * logit term (:func:`logit_term`) + beta * feature mimicking.

    The authors add the logit MSE to the task loss with weight 1 (``upernet.py`` @ 6163879: ``t_loss =
    F.mse_loss(outputs, teacher_outputs); loss += t_loss``), hence alpha = 1 and logit_loss = mse by default;
    the feature term (beta) is this project's and off by default.
    """

    def loss(distiller: Distiller, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            target = ctx.task.logits(teacher, batch)
        t_feats = teacher_tap.take()
        if beta == 0:
            logits = ctx.task.logits(distiller.student, batch)
            return ctx.task.loss(logits, batch) + alpha * logit_term(logits, target, logit_loss, temperature)
        s_tap = FeatureTap(distiller.student)
        try:
            logits = ctx.task.logits(distiller.student, batch)
            s_feats = s_tap.take()
        finally:
            s_tap.close()
        return (ctx.task.loss(logits, batch) + alpha * logit_term(logits, target, logit_loss, temperature)
                + beta * feature_loss(s_feats, t_feats, distiller.projections, pairs))

    return loss


STUDENT = Param("student", str, "mobilevit_xs", model=True, help="model alias of the student")
LOGIT_LOSS = Param("logit_loss", str, "mse", choices=LOGIT_LOSSES,
                   help="logit term: mse (the authors') or kl (this project's, classification)")
TEMPERATURE = Param("temperature", float, 1.0, 0.0, None, low_open=True, help="KL temperature (kl only)")
ALPHA = Param("alpha", float, 1.0, 0.0, None, help="weight of the logit term (authors: 1.0)")


def new_student(model: nn.Module, ctx: Context, student: dict[str, Any]) -> nn.Module:
    """The student of spec ``student`` for the teacher's (``model``'s) data shape, on the device."""
    net = build_student(model, student, pretrained=True).to(ctx.device)
    if teacher_shape(net).num_classes != ctx.task.info.num_classes:
        raise ConfigError(f"feature_kd: student {student} does not predict {ctx.task.info.num_classes} classes.")
    return net


@stage("feature_kd", params=(STUDENT, EPOCHS, LR, LOGIT_LOSS, TEMPERATURE, ALPHA,
                             Param("beta", float, 0.0, 0.0, None,
                                   help="weight of the feature-mimicking term (this project's, off by default)")),
       primary="student", rebuild=rebuild_student)
def feature_kd(model: nn.Module, ctx: Context, student: dict[str, Any], epochs: Optional[int], lr: Optional[float],
               logit_loss: str, temperature: float, alpha: float, beta: float) -> nn.Module:
    """Distil the teacher (``ctx.teacher``, the study's uncompressed base model, e.g. a Swin UPerNet) into a new
    student built from the spec ``student`` (the pipeline resolves the chain's alias, e.g. upernet_mobilevit_s,
    through the config's models); returns the student.

    How a stage yields a different model: the student is built here for the teacher's classes, channels and
    input size (:func:`teacher_shape`), trained with :func:`distillation_loss` through the shared training loop,
    and saved; its ``rebuild`` hook rebuilds the same student when the checkpoint is loaded, so later stages
    (pruning, quantization) and the evaluation see the student. Paper: knowledge distillation step (Swin-V2
    teacher -> MobileViT-S student, ``train_upernet.py`` with a ``teacher`` in ``Uper_mobilevit.yml``).
    """
    teacher = ctx.teacher
    net = new_student(model, ctx, student)
    pairs, projections = [], nn.ModuleList()
    if beta > 0:
        sample = ctx.task.to_device(next(ctx.calibration_batches(8, 8)), ctx.device)[0]
        pairs, projections = distillation_pairs(net, teacher, sample)
    distiller = Distiller(net, projections.to(ctx.device))
    teacher_tap = FeatureTap(teacher) if beta > 0 else FeatureTap.nothing()
    try:
        fit(distiller, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed,
            loss_fn=distillation_loss(ctx, teacher, teacher_tap, pairs, logit_loss, temperature, alpha, beta),
            progress=ctx.progress, desc=f"feature_kd {student['family']}")
    finally:
        teacher_tap.close()
    return distiller.student.eval()


STUDENT_STAGES = ("feature_kd", "label_student")


@stage("label_student", params=(STUDENT, EPOCHS, LR), primary="student", rebuild=rebuild_student)
def label_student(model: nn.Module, ctx: Context, student: dict[str, Any], epochs: Optional[int],
                  lr: Optional[float]) -> nn.Module:
    """The student trained on the labels alone, with the distillation stage's recipe (set the same epochs and
    lr in the config): the label-only reference of the paper's distillation gain (about +0.06 IoU)."""
    net = new_student(model, ctx, student)
    fit(net, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed,
        progress=ctx.progress, desc=f"label_student {student['family']}")
    return net.eval()


@stage("mse_kd", params=(EPOCHS, LR, ALPHA))
def mse_kd(model: nn.Module, ctx: Context, epochs: Optional[int], lr: Optional[float], alpha: float) -> nn.Module:
    """Retrain the current model (e.g. the pruned student) with the teacher: task CE + alpha x MSE of the logit
    maps, the authors' loss (``upernet.py`` @ 6163879); their pruned student is retrained this way
    (``train_upernet.py``, ``prune: True`` with a teacher)."""
    teacher = ctx.teacher

    def loss(student: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            target = ctx.task.logits(teacher, batch)
        logits = ctx.task.logits(student, batch)
        return ctx.task.loss(logits, batch) + alpha * logit_term(logits, target, "mse", 1.0)

    fit(model, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed, loss_fn=loss,
        progress=ctx.progress, desc="mse_kd")
    return model


# --------------------------------------------------------------------------------------------------------------
# Structured pruning through Torch-Pruning's DependencyGraph, and head pruning through slimbench.surgery.
# --------------------------------------------------------------------------------------------------------------

TARGETS = ("filters", "channels", "rows", "heads")


@lru_cache(maxsize=None)
def handlers(role: str) -> tuple[Callable, ...]:
    """Torch-Pruning's pruning functions by role: ``conv_out``, ``conv_in`` (convolution and linear inputs),
    ``linear_out``. torch_pruning is imported here, on first use: it imports timm and torchvision (about 2 s)
    that reading a config never needs."""
    import torch_pruning as tp

    return {"conv_out": (tp.prune_conv_out_channels,),
            "conv_in": (tp.prune_conv_in_channels, tp.prune_linear_in_channels),
            "linear_out": (tp.prune_linear_out_channels,)}[role]


def classifier(model: nn.Module) -> nn.Module:
    """The classification head (kept whole: its outputs are the classes)."""
    if hasattr(model, "get_classifier"):
        return model.get_classifier()
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def kept_whole(model: nn.Module) -> list[nn.Module]:
    """The layers pruning leaves whole: the classifier, and a segmentation model's whole decode head. The authors
    prune the backbone only (``train_upernet.py`` @ 6163879, line 156: ``prune(model.backbone, ...)``, over the
    backbone convolutions listed in ``prune.py``). The head's input channels follow a pruned backbone where they
    can; the stride-4 stage's outputs cannot shrink, since the head adds them to its ``fpn_out``-wide maps, so
    that stage's last convolutions stay whole here where the authors' masks thin them (``prune.py``, lines 48-54)."""
    decoder = getattr(model, "decode_head", None)
    return [classifier(model), *(decoder.modules() if decoder is not None else ())]


def dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """The layer coupling of ``model`` traced on ``example`` (the classifier is kept out of pruning roots by
    the callers, not ignored here: it must lose the input columns of removed channels)."""
    import torch_pruning as tp

    return tp.DependencyGraph().build_dependency(model, example_inputs=example, verbose=False)


def convolutional_group(group: tp.Group, head: nn.Module) -> bool:
    """True when a group couples only convolutions, batch norms and parameter-free ops (plus the head's input
    columns): filter/channel pruning leaves transformer widths (linear/LayerNorm layers) to ``rows``/``heads``."""
    for dep, _ in group:
        layer = dep.layer
        if isinstance(layer, nn.Linear) and layer is head and dep.handler in handlers("conv_in"):
            continue
        if isinstance(layer, nn.Module) and not isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)) \
                and any(True for _ in layer.parameters(recurse=False)):
            return False
    return True


def slice_norms(group: tp.Group, removing: tuple[Callable, ...]) -> Optional[torch.Tensor]:
    """L2 norm, per channel of the group's root, of the weight slices the listed pruning functions remove:
    output filters/rows (``prune_*_out_channels``) or input channels/columns (``prune_*_in_channels``).
    Depthwise convolutions count only as filters (their input slice is the filter)."""
    total: Optional[torch.Tensor] = None
    for i, (dep, idxs) in enumerate(group):
        layer, handler = dep.layer, dep.handler
        if handler not in removing or not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        weight = layer.weight.detach().float()
        if handler in handlers("conv_in"):
            if isinstance(layer, nn.Conv2d) and layer.groups > 1:
                continue
            weight = weight.transpose(0, 1)
        local = weight[idxs].flatten(1).pow(2).sum(1)
        root = torch.as_tensor(group[i].root_idxs, dtype=torch.long, device=local.device)
        size = int(root.max()) + 1 if total is None else max(len(total), int(root.max()) + 1)
        grown = torch.zeros(size, device=local.device)
        if total is not None:
            grown[: len(total)] += total
        total = grown.index_add_(0, root, local)
    return None if total is None else total.sqrt()


def prune_group(dg: tp.DependencyGraph, group: tp.Group, scores: torch.Tensor, ratio: float) -> Optional[tp.Group]:
    """The group restricted to its ``ratio`` share of lowest-scoring channels (None if nothing to remove)."""
    remove = len(scores) - kept_count(len(scores), ratio)
    if remove <= 0:
        return None
    idxs = scores.argsort()[:remove].tolist()
    root = group[0].dep
    return dg.get_pruning_group(root.target.module, root.handler, idxs)


def prune_convolutions(model: nn.Module, example: torch.Tensor, ratio: float, criterion: str) -> nn.Module:
    """Remove ``ratio`` of every convolutional group's channels outside :func:`kept_whole` by the L2 norm of its
    filters (``filters``, the output slices) or of the channels' input slices in the layers that read them
    (``channels``). The authors' ``prune.py`` @ 6163879 (lines 161-163) masks filters by
    ``ln_structured(n=2, dim=0)``, layer by layer, so their parameter count stays; here the channels are really
    removed, coupled layers together. Their list also masks MobileViT's ``conv_1x1`` (the transformer's input
    width), which here is left to ``rows``/``heads``: removing it would shrink the transformer's LayerNorms and
    linear layers too."""
    head = classifier(model)
    dg = dependency_graph(model, example)
    removing = handlers("conv_out" if criterion == "filters" else "conv_in")
    plans = []
    for group in dg.get_all_groups(ignored_layers=kept_whole(model), root_module_types=[nn.Conv2d]):
        scores = slice_norms(group, removing) if convolutional_group(group, head) else None
        if scores is not None:
            plans.append((group, scores))
    for group, scores in plans:
        pruning = prune_group(dg, group, scores, ratio)
        if pruning is not None:
            pruning.prune()
    return model


def prune_linear_rows(model: nn.Module, example: torch.Tensor, ratio: float) -> nn.Module:
    """Remove ``ratio`` of the rows (output neurons) of every MLP's input linear layer by their L2 norm; the
    DependencyGraph removes the matching input columns of the next layer (and anything else coupled)."""
    dg = dependency_graph(model, example)
    plans = []
    for mlp in find_mlps(model):
        for layer in mlp.inputs[:1]:
            group = dg.get_pruning_group(layer, handlers("linear_out")[0], list(range(layer.out_features)))
            plans.append((group, slice_norms(group, handlers("linear_out"))))
    for group, scores in plans:
        pruning = prune_group(dg, group, scores, ratio)
        if pruning is not None:
            pruning.prune()
    return model


def prune_attention_heads(model: nn.Module, ratio: float) -> nn.Module:
    """Remove ``ratio`` of every attention layer's heads, those whose weights (their query/key/value rows and
    output-projection columns) have the smallest L2 norm (``head_group_norms`` of the heads_magnitude
    baseline), by slimbench.surgery's head surgery. Attention modules the surgery does not recognise (timm
    Swin's window attention, with its per-head relative-position bias) are left whole."""
    from baselines.heads_magnitude import head_group_norms  # here: that module imports methods.stat

    for attention in find_attentions(model):
        keep = kept_count(attention.heads, ratio)
        if keep < attention.heads:
            keep_heads(attention, head_group_norms(attention).topk(keep).indices)
    return model


def structured(model: nn.Module, ctx: Context, target: str, ratio: float) -> nn.Module:
    """One structured pruning step of ``ratio`` on ``target``."""
    if target == "heads":
        return prune_attention_heads(model, ratio)
    example = ctx.task.to_device(next(ctx.calibration_batches(2, 2)), torch.device("cpu"))[0]
    model = model.cpu()
    if target == "rows":
        return prune_linear_rows(model, example, ratio)
    return prune_convolutions(model, example, ratio, target)


TARGET = Param("target", str, "filters", choices=TARGETS, help="what to remove: conv filters/channels, MLP rows, heads")
RATIO = Param("ratio", float, 0.2, 0.0, 1.0, high_open=True,
              help="share removed (prune_percentage 0.2 of the authors' first pruning commit)")


@stage("structured_prune", params=(TARGET, RATIO), primary="target", revision=2)
def structured_prune(model: nn.Module, ctx: Context, target: str, ratio: float) -> nn.Module:
    """One-shot structured pruning of ``ratio`` of the backbone's ``target`` units (paper: pruning step), then
    training with the teacher: chain ``mse_kd`` after this one (``train_upernet.py`` @ 6163879, lines 153-180).
    The default 0.2 is ``prune_percentage`` in ``Uper_mobilevit.yml`` at 084833b, the authors' first pruning
    commit; later commits set 0.6 (a2653b5) and 0.9 (8916378), and 6163879 has 0.5 with ``prune: False``. Which
    share the paper reports could not be checked (its method and results sections were not available).
    Revision 2 leaves a segmentation model's decode head whole (:func:`kept_whole`); revision 1 pruned it too."""
    return structured(model, ctx, target, ratio)


@stage("iterative_prune", params=(TARGET, RATIO, Param("steps", int, 3, 2, None),
                                  Param("epochs", int, 1, 0, None, help="fine-tuning epochs after each step"), LR),
       primary="target", revision=2)
def iterative_prune(model: nn.Module, ctx: Context, target: str, ratio: float, steps: int, epochs: int,
                    lr: Optional[float]) -> nn.Module:
    """Iterative structured pruning (paper: pruning ablation, iterative vs one-shot): ``steps`` rounds, each
    removing the same share of what is left (1 - (1 - ratio)^(1/steps)) and fine-tuning on the labels, so
    that ``ratio`` is removed in all. The schedule is the project's: the authors' code at 6163879 prunes once
    (``train_upernet.py``, lines 153-156). Revision 2: the decode head stays whole, as in ``structured_prune``."""
    share = 1.0 - (1.0 - ratio) ** (1.0 / steps)
    for step in range(steps):
        model = structured(model, ctx, target, share)
        fit(model, ctx.task, ctx.train_set, ctx.device, recovery_recipe(ctx, epochs, lr), ctx.seed + step,
            progress=ctx.progress, desc=f"iterative_prune {step + 1}/{steps}")
    return model


def prunable_weights(model: nn.Module) -> Iterator[nn.Parameter]:
    whole = {id(module) for module in kept_whole(model)}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)) and id(module) not in whole:
            yield module.weight


@stage("unstructured_prune", params=(Param("ratio", float, 0.2, 0.0, 1.0, high_open=True),), primary="ratio",
       revision=2)
def unstructured_prune(model: nn.Module, ctx: Context, ratio: float) -> nn.Module:
    """Zero ``ratio`` of each of the backbone's convolution and linear weights, the smallest in magnitude (paper:
    pruning ablation, the unstructured comparison): dense storage, so memory and latency stay as they were. This
    per-layer form is the project's: at 6163879 the authors' unstructured pruning is commented out (``prune.py``,
    lines 164-169); at 8916378 it was one global threshold (|w| > 0.19) over their backbone list. Revision 2
    leaves a segmentation model's decode head whole, as structured pruning does; revision 1 pruned it too."""
    with torch.no_grad():
        for weight in prunable_weights(model):
            remove = weight.numel() - kept_count(weight.numel(), ratio)
            if remove > 0:
                threshold = weight.abs().flatten().kthvalue(remove).values
                weight.masked_fill_(weight.abs() <= threshold, 0.0)
    return model


# --------------------------------------------------------------------------------------------------------------
# The device budget and the report figure/table.
# --------------------------------------------------------------------------------------------------------------


def budget_of(frame: pd.DataFrame) -> tuple[str, float]:
    """The device budget the metrics were measured against (the config's ``evaluation.budget``)."""
    if "budget_memory_mib" not in frame:
        raise ConfigError("figure 'edge_budget' needs a device budget: set evaluation.budget "
                          "(e.g. {name: Jetson Nano (4 GB), memory_mib: 4096}) and latency.threads in the config.")
    return str(frame["budget"].iloc[0]), float(frame["budget_memory_mib"].iloc[0])


def memory_column(frame: pd.DataFrame) -> tuple[str, str]:
    """The memory a budget is judged on: the model's own peak (``model_peak_rss_mib``, a fresh CPU-only process)
    where the runs measured it; runs from before that measure only the whole evaluating process's RSS."""
    if "model_peak_rss_mib" in frame and frame["model_peak_rss_mib"].notna().all():
        return "model_peak_rss_mib", "model's own peak RSS (MiB, fresh CPU process)"
    return "peak_rss_mib", "peak process RSS (MiB, whole evaluating process)"


def budget_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per model: accuracy, parameters, weight memory, measured peak memory, latency and FPS at the config's
    thread count, latency against the base (paired, with its interval) where measured, and whether it fits
    (``fits_budget``, from evaluate)."""
    means = frame.groupby(["dataset", "model", "chain"], sort=False).mean(numeric_only=True).reset_index()
    memory, _ = memory_column(frame)
    table = pd.DataFrame({
        "dataset": means["dataset"], "model": means["model"], "chain": means["chain"], metric: means[metric],
        "params_M": means["params"] / 1e6, "params_vs_base": means.get("relative_params_kept", 1.0),
        "weights_mib": means["stored_bits"] / 8 / 2**20, memory: means[memory],
        "peak_tensor_mib": means["stored_bits"] / 8 / 2**20 + means.get("peak_tensor_mib", float("nan")),
        "latency_ms": means["latency_cpu_ms"], "threads": means["latency_cpu_threads"],
        "fps": 1000.0 * means["latency_batch_size"] / means["latency_cpu_ms"]})
    for column in ("latency_vs_base_ratio", "latency_vs_base_ci_low", "latency_vs_base_ci_high"):
        if column in means:
            table[column] = means[column]
    table["params_vs_base"] = table["params_vs_base"].fillna(1.0)
    table["fits_budget"] = means["fits_budget"] == 1.0
    return table


def deployed_model(chain: str, base_model: str) -> str:
    """Which network a chain deploys: the (distilled or label-only) student's alias, else the study's base model."""
    students = [call.value for call in parse_chain(chain) if call.name in STUDENT_STAGES and call.value]
    return students[-1] if students else base_model


@table("edge_budget")
def budget_rows(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Every model against the device budget: accuracy, parameters, weight memory, measured peak memory,
    CPU latency and FPS at the budget's thread count, the deployed network, and whether it fits."""
    rows = budget_table(frame, metric)
    rows["network"] = [deployed_model(c, m) for c, m in zip(rows["chain"], rows["model"])]
    return rows


@figure("edge_budget")
def edge_budget(frame: pd.DataFrame, metric: str) -> Any:
    """The task metric against measured peak memory (the model's own RSS where measured, else the evaluating
    process's; tensor memory = weights + peak activations) and against CPU latency at the budget's threads (the
    paired ratio to the uncompressed model where measured), one marker per chain and deployed network; the memory
    budget drawn as a red line."""
    import seaborn as sns

    plt = pyplot()
    name, memory_mib = budget_of(frame)
    threads = int(frame["latency_cpu_threads"].iloc[0])
    table = budget_rows(frame, metric)
    table["chain_label"] = table["chain"].map(lambda c: c.removeprefix("base+") if c != "base" else "uncompressed")
    # Latency as the paired ratio against the uncompressed model (interleaved A/B runs) where measured: medians
    # of separate runs move with the machine's load more than these models differ.
    paired = "latency_vs_base_ratio" in table and table["latency_vs_base_ratio"].notna().all()
    latency = (("latency_vs_base_ratio", f"CPU latency / uncompressed model's (paired, {threads} threads)", False)
               if paired else ("latency_ms", f"CPU latency per image (ms, {threads} threads)", False))
    panels = (memory_column(frame) + (True,), ("peak_tensor_mib", "tensor memory (MiB)", True), latency)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    for ax, (column, label, budget_line) in zip(axes, panels):
        sns.scatterplot(data=table, x=column, y=metric, hue="chain_label", style="network", s=70, ax=ax,
                        legend=ax is axes[-1])
        if budget_line:
            ax.axvline(memory_mib, color="red", ls="--", lw=1.2, label=f"{name} budget")
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[-1].legend(fontsize=6, bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.suptitle(f"{metric} against the {name} budget ({memory_mib:.0f} MiB dashed, {threads} CPU threads)")
    fig.tight_layout()
    return fig
