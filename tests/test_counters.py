"""Known answers for the cost counters (FLOPs, BitOps), computed by hand from the layer sizes (issue #15).

Each expected value is written out term by term from the architecture, never taken from the counters.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from slimbench.metrics import bitops, cost

timm = pytest.importorskip("timm")

# Tiny ViT: 8x8 RGB image, 4x4 patches -> 4 patches + class token = N tokens of width D, H heads, MLP width 2D.
IMG, PATCH, D, H, CLASSES = 8, 4, 8, 2, 3
N = (IMG // PATCH) ** 2 + 1
VIT_MACS = {
    "patch_embed": (IMG // PATCH) ** 2 * D * 3 * PATCH * PATCH,
    "qkv": N * D * 3 * D,
    "attention": 2 * H * N * N * (D // H),  # QK^T and AV
    "proj": N * D * D,
    "mlp": 2 * N * D * 2 * D,
    "head": D * CLASSES,
}


def tiny_vit() -> torch.nn.Module:
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=IMG, patch_size=PATCH, embed_dim=D,
                             depth=1, num_heads=H, mlp_ratio=2.0, num_classes=CLASSES).eval()


@pytest.mark.parametrize("path", ["fused_default", "fused_math_backend", "manual_matmul"])
def test_flops_of_a_tiny_vit_count_attention_on_cpu(path: str) -> None:
    model, x = tiny_vit(), torch.randn(1, 3, IMG, IMG)
    if path == "manual_matmul":
        model.blocks[0].attn.fused_attn = False
    assert model.blocks[0].attn.fused_attn == (path != "manual_matmul")
    backend = SDPBackend.MATH if path == "fused_math_backend" else None
    with sdpa_kernel(backend) if backend else torch.no_grad():
        assert cost.count_flops(lambda: model(x)) == 2 * sum(VIT_MACS.values()) == 2 * 4520
