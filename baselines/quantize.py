"""Post-training quantization: int8 through torchao, fp16 by casting.

``int8``: torchao's dynamic int8 activations with int8 per-channel symmetric weights on every Linear
(``int8_weight_only`` keeps activations in float). Both run on CPU and CUDA with torchao >= 0.10. The
checkpoint stores the int8 codes and scales; reloading re-quantizes the dequantized weights.
"""

from __future__ import annotations

import logging

from torch import nn

from slimbench.stages import Context, Param, applies_to, stage

# torchao registers Enums with torch's pytree on import (here or when a saved int8 model is read) and torch logs a
# deprecation line for each.
logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
# torchao's configs by scheme name; torchao itself is imported on first use (about 2 s on the 2-core VM, which
# reading a config never needs).
SCHEMES = {"dynamic": "Int8DynamicActivationInt8WeightConfig", "weight_only": "Int8WeightOnlyConfig"}
SCHEME = Param("scheme", str, "dynamic", choices=tuple(SCHEMES), help="int8 activations too, or weights only")


def int8_quantize(model: nn.Module, scheme: str = "dynamic") -> nn.Module:
    from torchao import quantization

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
