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


# Swin block: 4x4 map of width C in 2x2 windows (W windows of T tokens), H heads, MLP width 2C, shifted windows.
C, SIDE, WIN = 8, 4, 2
TOKENS, WINDOWS, T = SIDE * SIDE, (SIDE // WIN) ** 2, WIN * WIN
SWIN_MACS = {
    "qkv": TOKENS * C * 3 * C,
    "attention": WINDOWS * H * 2 * T * T * (C // H),  # QK^T and AV in every window
    "proj": TOKENS * C * C,
    "mlp": 2 * TOKENS * C * 2 * C,
}
# MobileViT block: 4-channel 4x4 map, 2x2 patches (P pixels per patch, NP patches), transformer width C.
CIN, P, NP = 4, 4, 4
MOBILEVIT_MACS = {
    "conv_kxk": TOKENS * CIN * CIN * 9,
    "conv_1x1": TOKENS * C * CIN,
    "qkv": TOKENS * C * 3 * C,
    "attention": P * H * 2 * NP * NP * (C // H),  # one attention over the NP patches per patch pixel
    "proj": TOKENS * C * C,
    "mlp": 2 * TOKENS * C * 2 * C,
    "conv_proj": TOKENS * CIN * C,
    "conv_fusion": TOKENS * CIN * 2 * CIN * 9,
}


def swin_block() -> torch.nn.Module:
    from timm.models.swin_transformer import SwinTransformerBlock

    return SwinTransformerBlock(C, (SIDE, SIDE), num_heads=H, window_size=WIN, shift_size=1, mlp_ratio=2.0).eval()


def mobilevit_block() -> torch.nn.Module:
    from timm.models.mobilevit import MobileVitBlock

    return MobileVitBlock(CIN, CIN, transformer_dim=C, transformer_depth=1, patch_size=2, num_heads=H,
                          mlp_ratio=2.0).eval()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("batch", [1, 2])
def test_bitops_count_swin_windows_and_mobilevit_patches_over_all_leading_dims(fused: bool, batch: int) -> None:
    for block, x, macs in ((swin_block(), torch.randn(batch, SIDE, SIDE, C), SWIN_MACS),
                           (mobilevit_block(), torch.randn(batch, CIN, SIDE, SIDE), MOBILEVIT_MACS)):
        for module in block.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = fused
        assert bitops.total_bitops(block, x) == sum(macs.values()) * 32 * 32


def test_bitops_of_a_tiny_vit_match_the_hand_count() -> None:
    assert bitops.total_bitops(tiny_vit(), torch.randn(3, 3, IMG, IMG)) == sum(VIT_MACS.values()) * 32 * 32


@pytest.mark.parametrize(("scheme", "act_bits"), [("dynamic", 8), ("weight_only", 32)])
def test_int8_dynamic_quantization_is_charged_w8a8(scheme: str, act_bits: int) -> None:
    from baselines.quantize import int8_quantize

    model = int8_quantize(torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16)), scheme)
    assert bitops.total_bitops(model, torch.randn(2, 64)) == (64 * 32 + 32 * 16) * 8 * act_bits
