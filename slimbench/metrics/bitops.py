"""BitOps: multiply-accumulates weighted by the bit widths of their two operands, with early exit's expected depth.

Order of Compression (Shen, Sun, Lin, Zhao and Zou, 2024, arXiv 2403.17447) measures every combination of
distillation, pruning, quantization and early exit with one cost, BitOps: a layer's operations times the
bit width of its weights times the bit width of its activations, so that a 32-bit model and its 8-bit
copy differ by 16x, and an early-exit network is charged the operations it runs up to the exit each input
takes, averaged over the evaluation set (the paper's expected cost of a dynamic architecture).

Counted here, per example (every count is over the whole call, all leading dimensions included, then divided
by the number of examples: Swin runs its layers on (batch x windows, tokens, dim) and MobileViT on (batch x
patch area, patches, dim), so the first dimension is not the batch):

- ``nn.Conv1d/2d/3d`` and ``nn.Linear``: MACs = output elements x (input channels / groups) x kernel size;
- every matrix product between activations outside those layers (attention's QK^T and AV, whether written
  as ``@``/``bmm``/``einsum`` or run by a fused ``scaled_dot_product_attention`` kernel), seen at the aten
  level by a dispatch mode: MACs = leading dims x M x K x N, at both operands' bit widths;
- a *quantized leaf* (any module with int ``weight_bits`` / ``act_bits`` and a ``layer`` child that is a conv
  or linear, e.g. the fake-quant wrapper of ``methods/order.py``) at those bit widths; any other layer at the
  bit width of its weight (32 for float32, 16 for fp16, 8 for int8 codes) and of the activations it really
  multiplies: its input's dtype, or 8 for torchao dynamic int8 (``Int8DynamicActivationInt8WeightConfig``
  quantizes each input row to int8 on the fly before an int8 x int8 matmul, so it is W8A8; weight-only int8
  keeps float activations, W8A32).

Early exit: a module with ``exit_boundaries()`` (the modules after whose forward one exit's head has run)
and ``last_exit`` (each example's exit index after an eval forward) splits the network into segments;
exit ``j`` costs segments ``0..j``. Element-wise work (norms, activations, pooling) is not counted, as in
FLOPs-style counts of the paper. Not seen: ops that fuse a whole attention block into one kernel other than
SDPA (``nn.MultiheadAttention``'s inference fast path, ``_native_multi_head_attention``). The W8A8 reading of
torchao's dynamic int8 was checked on torchao 0.18's ``Int8Tensor`` (its ``act_quant_kwargs``), not on
other torchao versions' tensor classes.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

COMPUTE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def layer_bitops(macs: int, weight_bits: int, act_bits: int) -> int:
    """BitOps of one layer: its multiply-accumulates times both operands' bit widths."""
    return int(macs) * int(weight_bits) * int(act_bits)


def tensor_bit_width(tensor: torch.Tensor) -> int:
    """Bits per element as stored (quantized tensor subclasses: their integer codes)."""
    if type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        codes = "qdata" if "qdata" in names else names[0]
        return getattr(tensor, codes).element_size() * 8
    return tensor.element_size() * 8


def layer_macs(layer: nn.Module, output: torch.Tensor) -> int:
    """MACs of one call of a conv or linear layer from its output shape, over all leading dimensions."""
    if isinstance(layer, nn.Linear):
        return output.numel() * layer.in_features
    return output.numel() * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)


def activation_bits(weight: torch.Tensor, inputs: torch.Tensor) -> int:
    """Bit width of the activations a layer multiplies: torchao weights that quantize their input on the fly
    (``act_quant_kwargs``, e.g. ``QuantizeTensorToInt8Kwargs``) say it in their name; else the input's dtype."""
    kwargs = getattr(weight, "act_quant_kwargs", None)
    if kwargs is None:
        return inputs.element_size() * 8
    found = re.search(r"(?:Int|Float)(\d+)", type(kwargs).__name__)
    if not found:
        raise ValueError(f"cannot tell the activation bit width of {type(kwargs).__name__}; add it to "
                         "slimbench.metrics.bitops.activation_bits")
    return int(found.group(1))


def _mm(a: torch.Tensor, b: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(…, M, K) x (…, K, N): leading dims x M x K x N."""
    return math.prod(a.shape) * b.shape[-1], a, b


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *_: Any, **__: Any) -> tuple[int, torch.Tensor, torch.Tensor]:
    """QK^T (leading x N_q x d x N_k) plus AV (leading x N_q x N_k x d_v), leading = batch x query heads."""
    return math.prod(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1]), q, k


# aten matrix products an activation x activation product can reach (matmul and einsum decompose to these).
MATMULS: dict[Any, Callable[..., tuple[int, torch.Tensor, torch.Tensor]]] = {
    aten.mm.default: _mm, aten.bmm.default: _mm,
    aten.addmm.default: lambda bias, a, b, *_, **__: _mm(a, b),
    aten.baddbmm.default: lambda bias, a, b, *_, **__: _mm(a, b),
    **{getattr(aten, name).default: _sdpa for name in (
        "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
        "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math_for_mps")
       if hasattr(aten, name)},
}


def is_quantized_leaf(module: nn.Module) -> bool:
    return (isinstance(getattr(module, "weight_bits", None), int) and isinstance(getattr(module, "act_bits", None), int)
            and isinstance(getattr(module, "layer", None), COMPUTE))


def _first_tensor(values: Any) -> torch.Tensor:
    return values[0] if isinstance(values, (tuple, list)) else values


class _MatmulMode(TorchDispatchMode):
    """Adds the BitOps of every aten matrix product run outside a conv/linear layer (``counter.inside == 0``)."""

    def __init__(self, counter: "SegmentCounter") -> None:
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in MATMULS and not self.counter.inside:
            macs, a, b = MATMULS[func](*args, **kwargs)
            self.counter._add(layer_bitops(macs, a.element_size() * 8, b.element_size() * 8))
        return func(*args, **kwargs)


class SegmentCounter:
    """Forward hooks that add each layer's BitOps to the current early-exit segment, and a dispatch mode (active
    inside ``with counter:``) that adds the activation x activation products run between those layers."""

    def __init__(self, model: nn.Module) -> None:
        self.segments: list[int] = [0]
        self.handles: list[Any] = []
        self.inside = 0  # depth of conv/linear/quantized-leaf calls: their matmuls are counted by the hooks
        inside_quantized: set[int] = set()
        for module in model.modules():
            if is_quantized_leaf(module):
                inside_quantized.add(id(module.layer))
                self._hook(module, self._quantized)
        for module in model.modules():
            if isinstance(module, COMPUTE) and id(module) not in inside_quantized:
                self._hook(module, self._float)
            elif isinstance(module, COMPUTE):
                self._hook(module, None)
        for module in model.modules():
            if hasattr(module, "exit_boundaries"):
                for boundary in module.exit_boundaries():
                    self.handles.append(boundary.register_forward_hook(self._next_segment))
        self._mode = _MatmulMode(self)

    def _hook(self, module: nn.Module, count: Callable[..., None] | None) -> None:
        def leave(mod: nn.Module, inputs: Any, output: Any) -> None:
            self.inside -= 1
            if count is not None:
                count(mod, inputs, output)

        def enter(*_: Any) -> None:
            self.inside += 1

        self.handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]

    def __enter__(self) -> "SegmentCounter":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)

    def _add(self, value: int) -> None:
        self.segments[-1] += value

    def _quantized(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._add(layer_bitops(layer_macs(module.layer, output), module.weight_bits, module.act_bits))

    def _float(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        act_bits = activation_bits(module.weight, _first_tensor(inputs))
        self._add(layer_bitops(layer_macs(module, output), tensor_bit_width(module.weight), act_bits))

    def _next_segment(self, *_: Any) -> None:
        self.segments.append(0)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def segment_bitops(model: nn.Module, forward: Any, examples: int = 1) -> list[int]:
    """BitOps per early-exit segment per example (one segment when the model has no exits).

    ``forward()`` runs the model on a batch of ``examples`` examples. Exit heads run in eval mode on every
    example here, so segment ``j`` holds the backbone between exits ``j-1`` and ``j`` plus head ``j``.
    """
    counter = SegmentCounter(model)
    try:
        model.eval()
        with counter:
            forward()
    finally:
        counter.remove()
    return [segment // examples for segment in counter.segments]


def expected_bitops(segments: Sequence[int], exit_counts: Sequence[int]) -> float:
    """Expected BitOps per example: exit ``j`` costs segments ``0..j``; weights are the exit frequencies."""
    if len(segments) != len(exit_counts):
        raise ValueError(f"{len(segments)} segments but {len(exit_counts)} exit counts")
    total = sum(exit_counts)
    if total <= 0:
        raise ValueError("no examples in the exit pattern")
    cumulative, running = [], 0
    for cost in segments:
        running += cost
        cumulative.append(running)
    return sum(c * n for c, n in zip(cumulative, exit_counts)) / total


def exit_module(model: nn.Module) -> nn.Module | None:
    return next((m for m in model.modules() if hasattr(m, "exit_boundaries")), None)


@torch.no_grad()
def exit_counts(model: nn.Module, task: Any, dataset: Any, device: torch.device, batch_size: int) -> list[int]:
    """How many evaluation examples leave at each exit (final classifier last)."""
    exits = exit_module(model)
    counts = torch.zeros(len(exits.exit_boundaries()) + 1, dtype=torch.long)
    model.eval()
    for batch in task.loader(dataset, batch_size):
        task.logits(model, task.to_device(batch, device))
        counts += torch.bincount(exits.last_exit.cpu(), minlength=len(counts))
    return counts.tolist()


def model_bits(model: nn.Module) -> int:
    """Parameter bits at their deployed precision: quantized leaves' weights at ``weight_bits``."""
    total, seen = 0, set()
    for module in model.modules():
        if is_quantized_leaf(module):
            weight = module.layer.weight
            total += weight.numel() * module.weight_bits
            seen.add(id(weight))
    for parameter in model.parameters():
        if id(parameter) not in seen:
            total += parameter.numel() * tensor_bit_width(parameter)
    return total


def cost_record(model: nn.Module, task: Any, dataset: Any, device: torch.device, batch_size: int) -> dict[str, Any]:
    """``bitops`` (expected over the eval set with early exit), ``bitops_full_depth`` and ``model_bits``; with
    early exit also the exit histogram (``exit_counts``), each segment's BitOps and the confidence threshold used."""
    example = task.to_device(next(iter(task.loader(dataset, 1))), device)
    segments = segment_bitops(model, lambda: task.logits(model, example))
    record: dict[str, Any] = {"bitops_full_depth": sum(segments), "model_bits": model_bits(model)}
    if len(segments) == 1:
        record["bitops"] = segments[0]
        return record
    counts = exit_counts(model, task, dataset, device, batch_size)
    record.update({"bitops": expected_bitops(segments, counts), "exit_counts": counts,
                   "exit_segment_bitops": segments, "exit_threshold": float(exit_module(model).threshold)})
    return record


def total_bitops(model: nn.Module, example: torch.Tensor) -> int:
    """Full-depth BitOps per example of ``model(example)`` (convenience for tests and scripts)."""
    return sum(segment_bitops(model, lambda: model(example), len(example)))
