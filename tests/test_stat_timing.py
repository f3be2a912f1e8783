"""The 7B extrapolation rule of benchmarks/stat_timing.py, against a layer-by-layer sum written out by hand: each
recalibration pass runs the blocks up to its own (``(l + 1) b`` for block ``l``) plus its Gram work."""

import pytest
import torch

from conftest import load_file_module

stat_timing = load_file_module("benchmarks/stat_timing.py")


@pytest.mark.parametrize("measured_attention", [True, False])
def test_extrapolation_sums_passes_that_stop_at_their_block(measured_attention):
    depth, n, block, g_attn, g_mlp = 32, 2, 0.5, 0.25, 1.5
    f = depth * block
    phases = stat_timing.Phases(torch.device("cpu"))
    phases.records = [("setup", "", 0.0), ("pass0", "", n * block + n * (g_attn + g_mlp)),
                      ("size_search", "", 0.0)]
    # the passes of N = 2 measured layers: MLP of blocks 0 and 1, attention of block 1 (attention stops at (l + 1) b)
    phases.records += [("pass", "mlp", (l + 1) * block + g_mlp) for l in range(n)]
    if measured_attention:
        phases.records += [("pass", "attn", (l + 1) * block + g_attn) for l in range(1, n)]
    per = {"forward_pass_s": f, "pass_attn_s": phases.mean("pass", "attn"), "pass_mlp_s": phases.mean("pass", "mlp"),
           "qr_curve_attn_s": 0.0, "qr_curve_mlp_s": 0.0, "prune_attn_s": 0.0, "prune_mlp_s": 0.0}
    out = stat_timing.extrapolate(phases, per, n, depth, None, 0, seconds=phases.total("pass0") + phases.total("pass"))
    by_hand = 0.0
    for layer in range(depth):  # attention of block 0 uses the first pass; every other component a pass of its own
        if layer:
            by_hand += (layer + 1) * block + g_attn
        by_hand += (layer + 1) * block + g_mlp
    assert out["parts_s"]["sequential_passes"] == pytest.approx(by_hand)
    assert out["parts_s"]["pass0"] == pytest.approx(f + depth * (g_attn + g_mlp))
    assert out["gram_work_s"] == pytest.approx({"attn": g_attn, "mlp": g_mlp})
