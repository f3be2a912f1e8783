"""BitOps: multiply-accumulates weighted by the bit widths of their two operands, with early exit's expected depth.

Order of Compression (Shen, Sun, Lin, Zhao and Zou, 2024, arXiv 2403.17447) measures every combination of
distillation, pruning, quantization and early exit with one cost, BitOps: a layer's operations times the
bit width of its weights times the bit width of its activations, so that a 32-bit model and its 8-bit
copy differ by 16x, and an early-exit network is charged the operations it runs up to the exit each input
takes, averaged over the evaluation set (the paper's expected cost of a dynamic architecture).

Counted here, per example:

- ``nn.Conv1d/2d/3d`` and ``nn.Linear``: MACs = output elements x (input channels / groups) x kernel size;
- attention matrix products of modules exposing ``num_heads`` and ``head_dim`` (timm ``Attention``):
  QK^T and AV, 2 x heads x tokens^2 x head_dim MACs, at the activations' bit width;
- a *quantized leaf* (any module with int ``weight_bits`` / ``act_bits`` and a ``layer`` child that is a conv
  or linear, e.g. the fake-quant wrapper of ``methods/order.py``) at those bit widths; any other layer at the
  bit width of its weight and input dtypes (32 for float32, 16 for fp16, 8 for int8 codes).

Early exit: a module with ``exit_boundaries()`` (the modules after whose forward one exit's head has run)
and ``last_exit`` (each example's exit index after an eval forward) splits the network into segments;
exit ``j`` costs segments ``0..j``. Element-wise work (norms, activations, pooling) is not counted, as in
FLOPs-style counts of the paper.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

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
    """MACs per example of a conv or linear layer from its output shape."""
    per_example = output[0].numel() if output.dim() > 1 else output.numel()
    if isinstance(layer, nn.Linear):
        return per_example * layer.in_features
    kernel = 1
    for k in layer.kernel_size:
        kernel *= k
    return per_example * (layer.in_channels // layer.groups) * kernel


def is_quantized_leaf(module: nn.Module) -> bool:
    return (isinstance(getattr(module, "weight_bits", None), int) and isinstance(getattr(module, "act_bits", None), int)
            and isinstance(getattr(module, "layer", None), COMPUTE))


def is_attention(module: nn.Module) -> bool:
    return isinstance(getattr(module, "num_heads", None), int) and isinstance(getattr(module, "head_dim", None), int)


def _first_tensor(values: Any) -> torch.Tensor:
    return values[0] if isinstance(values, (tuple, list)) else values


class SegmentCounter:
    """Forward hooks that add each layer's BitOps to the current early-exit segment."""

    def __init__(self, model: nn.Module) -> None:
        self.segments: list[int] = [0]
        self.handles: list[Any] = []
        inside_quantized: set[int] = set()
        for module in model.modules():
            if is_quantized_leaf(module):
                inside_quantized.add(id(module.layer))
                self.handles.append(module.register_forward_hook(self._quantized))
            elif isinstance(module, COMPUTE):
                continue
            elif is_attention(module):
                self.handles.append(module.register_forward_hook(self._attention))
        for module in model.modules():
            if isinstance(module, COMPUTE) and id(module) not in inside_quantized:
                self.handles.append(module.register_forward_hook(self._float))
        for module in model.modules():
            if hasattr(module, "exit_boundaries"):
                for boundary in module.exit_boundaries():
                    self.handles.append(boundary.register_forward_hook(self._next_segment))

    def _add(self, value: int) -> None:
        self.segments[-1] += value

    def _quantized(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        self._add(layer_bitops(layer_macs(module.layer, output), module.weight_bits, module.act_bits))

    def _float(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
        act_bits = _first_tensor(inputs).element_size() * 8
        self._add(layer_bitops(layer_macs(module, output), tensor_bit_width(module.weight), act_bits))

    def _attention(self, module: nn.Module, inputs: Any, output: Any) -> None:
        tokens = _first_tensor(inputs).shape[1]
        macs = 2 * module.num_heads * tokens * tokens * module.head_dim
        bits = _first_tensor(inputs).element_size() * 8
        self._add(layer_bitops(macs, bits, bits))

    def _next_segment(self, *_: Any) -> None:
        self.segments.append(0)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def segment_bitops(model: nn.Module, forward: Any) -> list[int]:
    """BitOps per early-exit segment for one example (one segment when the model has no exits).

    ``forward()`` runs the model on a batch of one example. Exit heads run in eval mode on every example
    here, so segment ``j`` holds the backbone between exits ``j-1`` and ``j`` plus head ``j``.
    """
    counter = SegmentCounter(model)
    try:
        model.eval()
        forward()
    finally:
        counter.remove()
    return counter.segments


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
    """``bitops`` (expected over the eval set with early exit), ``bitops_full_depth`` and ``model_bits``."""
    example = task.to_device(next(iter(task.loader(dataset, 1))), device)
    segments = segment_bitops(model, lambda: task.logits(model, example))
    record: dict[str, Any] = {"bitops_full_depth": sum(segments), "model_bits": model_bits(model)}
    if len(segments) == 1:
        record["bitops"] = segments[0]
        return record
    counts = exit_counts(model, task, dataset, device, batch_size)
    record.update({"bitops": expected_bitops(segments, counts), "exit_counts": counts,
                   "exit_segment_bitops": segments})
    return record


def total_bitops(model: nn.Module, example: torch.Tensor) -> int:
    """Full-depth BitOps of ``model(example)`` (convenience for tests and scripts)."""
    return sum(segment_bitops(model, lambda: model(example)))
