"""Post-training quantization: int8 through torchao, fp16 by casting.

``int8``: torchao's dynamic int8 activations with int8 per-channel symmetric weights on every Linear
(``int8_weight_only`` keeps activations in float). Both run on CPU and CUDA with torchao >= 0.10. The
checkpoint stores the int8 codes and scales; reloading re-quantizes the dequantized weights.

On CUDA, torchao 0.18's ``safe_int_mm`` (``torchao/kernel/intmm.py``) multiplies any shape that cuBLAS's int8
kernel refuses (an inner or outer width not a multiple of 8: every 10-, 2- or 30,522-wide output layer, and most
pruned widths) on the CPU in int32: at batch 256, ViT-Tiny's int8 model with 538-wide MLPs took 10.7 s a call
and its crossbench evaluation up to 480 s on an H100. ``keep_int8_matmuls_on_gpu`` routes those shapes to the
same integer product in float64 on the GPU, which is exact, so no result changes; CPU tensors and cuBLAS-ready
shapes are left to torchao. Int8 latencies on the GPU therefore time a float64 product for such layers, not an
int8 kernel.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from slimbench.stages import Context, Param, applies_to, stage

# torchao registers Enums with torch's pytree on import (here or when a saved int8 model is read) and torch logs a
# deprecation line for each.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# torchao's configs by scheme name; torchao itself is imported on first use (about 2 s on the 2-core VM, which
# reading a config never needs).
SCHEMES = {"dynamic": "Int8DynamicActivationInt8WeightConfig", "weight_only": "Int8WeightOnlyConfig"}
SCHEME = Param("scheme", str, "dynamic", choices=tuple(SCHEMES), help="int8 activations too, or weights only")


# Output elements per float64 block in exact_int_mm: 2**26, 512 MiB of float64 (a Llama output layer's
# 32,768 x 30,522 product would need 8 GiB at once); the float64 copies of the inputs come on top.
EXACT_BLOCK_ELEMENTS = 2**26


def exact_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of two int8 matrices as int32, computed in float64 on their device. Exact in any summation order:
    every partial sum is an integer of magnitude at most 128 * 128 * K, below 2**53 for any K below 2**39."""
    rows = max(1, EXACT_BLOCK_ELEMENTS // max(1, b.shape[1]))
    right = b.double()
    return torch.cat([(block.double() @ right).to(torch.int32) for block in a.split(rows)])


def keep_int8_matmuls_on_gpu() -> None:
    """Make torchao's ``safe_int_mm`` multiply CUDA shapes that cuBLAS refuses with ``exact_int_mm`` on the GPU
    instead of moving them to the CPU (module docstring). Idempotent; checked against torchao 0.18's fallback rule
    (``input.shape[1]`` and ``mat2.shape[1]`` multiples of 8; a zero width, which no model has, stays with
    torchao)."""
    from torchao.kernel import intmm

    if getattr(intmm.safe_int_mm, "keeps_int8_on_gpu", False):
        return
    torchao_safe_int_mm = intmm.safe_int_mm

    def safe_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        refused_by_cublas = a.shape[1] > 0 and b.shape[1] > 0 and (a.shape[1] % 8 or b.shape[1] % 8)
        if a.is_cuda and b.is_cuda and refused_by_cublas and not torch.compiler.is_compiling():
            return exact_int_mm(a, b)
        return torchao_safe_int_mm(a, b)

    safe_int_mm.keeps_int8_on_gpu = True
    intmm.safe_int_mm = safe_int_mm


def int8_quantize(model: nn.Module, scheme: str = "dynamic") -> nn.Module:
    from torchao import quantization

    keep_int8_matmuls_on_gpu()
    quantization.quantize_(model.float(), getattr(quantization, SCHEMES[scheme])())
    return model


@stage("int8", params=(SCHEME,), primary="scheme", finalize=int8_quantize, applies_to=applies_to("linear_compute"))
def int8(model: nn.Module, ctx: Context, scheme: str) -> nn.Module:
    """Quantize every Linear layer's weights to int8 (torchao); activations too with ``dynamic``."""
    return int8_quantize(model.cpu(), scheme)


def to_half(model: nn.Module) -> nn.Module:
    return model.half()


@stage("fp16", finalize=to_half, applies_to=applies_to())  # casting works on any model
def fp16(model: nn.Module, ctx: Context) -> nn.Module:
    """Cast all weights to float16 (half the memory of float32)."""
    return to_half(model)
