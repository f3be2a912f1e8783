"""Minimal transformers (Bermeitinger et al. 2024): closed-form counts, merged-QK equivalence, the V/O-free
block, PSD symmetric similarity, checkpoints, training on CPU and the study table."""

import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml

from methods.minimal_attention import (Block, MinimalAttention, attention_parameters, closed_form_parameters,
                                       minimal_transformer, study_table, variant_options)
from slimbench import checkpoint
from slimbench.config import CATALOG
from slimbench.data import DatasetInfo, ImageTensorDataset
from slimbench.metrics.cost import count_parameters
from slimbench.models import build_model
from slimbench.tasks import make_task
from slimbench.train import fit

INFO = DatasetInfo("tiny", "image_classification", "accuracy", 10, 1, 8, (0.5,), (0.5,))
SMALL = {"embed_dim": 16, "depth": 2, "patch_size": 2}
VARIANTS = {
    "standard_h4": {"num_heads": 4},
    "standard_h1": {"num_heads": 1},
    "no_mlp": {"num_heads": 4, "mlp": False},
    "merged_h1": {"num_heads": 1, "mlp": False, "qk": "merged"},
    "merged_h2": {"num_heads": 2, "qk": "merged"},
    "merged_no_vo": {"num_heads": 1, "mlp": False, "qk": "merged", "value_output": False},
    "symmetric_h1": {"num_heads": 1, "mlp": False, "qk": "symmetric"},
    "symmetric_h2_no_vo": {"num_heads": 2, "mlp": False, "qk": "symmetric", "value_output": False},
    "tied_h4": {"num_heads": 4, "mlp": False, "qk": "tied"},
    "tied_h1_no_vo": {"num_heads": 1, "mlp": False, "qk": "tied", "value_output": False},
}
PAPER_LAYOUT = {  # the paper's layout options (one LayerNorm per encoder, attention biases); counted, not trained
    "paper_layout_h2": {"num_heads": 2, "norms_per_block": 1, "attention_bias": True, "mlp_hidden": 24},
    "paper_layout_merged_no_vo": {"num_heads": 1, "mlp": False, "qk": "merged", "value_output": False,
                                  "norms_per_block": 1, "attention_bias": True},
    "paper_layout_tied_h2": {"num_heads": 2, "mlp": False, "qk": "tied", "norms_per_block": 1,
                             "attention_bias": True},
}
MNIST = DatasetInfo("mnist", "image_classification", "accuracy", 10, 1, 28, (0.5,), (0.5,))
MODELS = yaml.safe_load(CATALOG.read_text())["models"]
# The paper's 6-encoder MNIST totals (arXiv:2410.13732): 287,686 with MLP, 101,470 without, for 1 and 4 heads;
# and the same N=60 models in this project's layout (two LayerNorms, no biases, 4x4 patches).
PAPER_TOTALS = {"minattn_paper_std_h4": 287_686, "minattn_paper_std_h1": 287_686,
                "minattn_paper_nomlp_h4": 101_470, "minattn_paper_nomlp_h1": 101_470,
                "minattn_w60_std_h4": 278_866, "minattn_w60_nomlp_h4": 91_930}


def build(options, info=INFO):
    torch.manual_seed(0)
    return minimal_transformer(info, pretrained=True, download=False, **{**SMALL, **options}).eval()


@pytest.mark.parametrize("name", [*VARIANTS, *PAPER_LAYOUT])
def test_parameter_count_equals_closed_form(name):
    variant = {**VARIANTS, **PAPER_LAYOUT}[name]
    model = build(variant)
    options = variant_options({**SMALL, **variant})
    counts = closed_form_parameters(INFO, **options)
    assert count_parameters(model) == counts["total"]
    attention = [m for m in model.modules() if isinstance(m, MinimalAttention)]
    assert len(attention) == options["depth"]
    assert sum(count_parameters(m) for m in attention) == counts["attention_total"]


def test_closed_form_attention_counts_by_hand():
    d = 128
    assert attention_parameters(d, 4, "separate", True) == 4 * d * d
    assert attention_parameters(d, 1, "merged", True) == 3 * d * d
    assert attention_parameters(d, 1, "merged", False) == d * d
    assert attention_parameters(d, 1, "symmetric", False) == d * (d + 1) // 2 == 8256
    assert attention_parameters(d, 4, "merged", False) == 4 * d * d  # multi-head collapse saves nothing
    assert attention_parameters(d, 4, "tied", True) == attention_parameters(d, 1, "tied", True) == 3 * d * d
    assert attention_parameters(60, 4, "separate", True, bias=True) == 4 * (60 * 60 + 60) == 14_640
    assert attention_parameters(60, 1, "merged", False, bias=True) == 60 * 60  # a collapsed W_qk has no bias


@pytest.mark.parametrize("heads", [1, 2])
def test_merged_logits_equal_standard_when_w_is_wq_wk_transposed(heads):
    torch.manual_seed(0)
    standard = MinimalAttention(16, heads, "separate")
    merged = MinimalAttention(16, heads, "merged")
    for layer in (standard.query, standard.key, standard.value, standard.proj):
        torch.nn.init.normal_(layer.weight, std=0.3)
    wq = standard.query.weight.t().reshape(16, heads, 16 // heads)
    wk = standard.key.weight.t().reshape(16, heads, 16 // heads)
    with torch.no_grad():
        merged.w_qk.copy_(torch.einsum("dhk,ehk->hde", wq, wk))
        merged.value.weight.copy_(standard.value.weight)
        merged.proj.weight.copy_(standard.proj.weight)
    x = torch.randn(3, 7, 16)
    expected = torch.einsum("bnd,dhk->bhnk", x, wq) @ torch.einsum("bnd,dhk->bhkn", x, wk) / (16 // heads) ** 0.5
    assert torch.allclose(standard.logits(x), expected, atol=1e-5)
    assert torch.allclose(merged.logits(x), expected, atol=1e-4)
    assert torch.allclose(merged(x), standard(x), atol=1e-5)
    assert not torch.allclose(expected, torch.zeros_like(expected), atol=1e-2)


def test_block_without_value_output_returns_attention_weighted_inputs():
    torch.manual_seed(0)
    attn = MinimalAttention(8, 1, "merged", value_output=False)
    torch.nn.init.normal_(attn.w_qk, std=0.5)
    x = torch.randn(2, 5, 8)
    weights = torch.softmax(x @ attn.w_qk[0].detach() @ x.transpose(1, 2) / 8**0.5, dim=-1)  # X W X^T / sqrt(d)
    assert torch.allclose(attn(x), weights @ x, atol=1e-5)
    with torch.no_grad():
        attn.w_qk.zero_()  # equal logits: every token becomes the mean of the inputs
    assert torch.allclose(attn(x), x.mean(1, keepdim=True).expand_as(x), atol=1e-6)


def test_block_without_value_output_mixes_each_head_slice_separately():
    torch.manual_seed(0)
    attn = MinimalAttention(8, 2, "symmetric", value_output=False)
    torch.nn.init.normal_(attn.l_qk, std=0.5)
    x = torch.randn(2, 5, 8)
    weights = torch.softmax(attn.logits(x), dim=-1)
    expected = torch.cat([weights[:, h] @ x[..., 4 * h:4 * h + 4] for h in range(2)], dim=-1)
    assert torch.allclose(attn(x), expected, atol=1e-5)
    block = Block(8, 2, mlp=False, mlp_ratio=4.0, qk="symmetric", value_output=False)
    assert not hasattr(block, "mlp") and count_parameters(block) == 2 * 8 + 2 * 8 * 9 // 2


def test_the_papers_block_has_one_layernorm_before_attention_and_its_mlp_reads_the_residual_stream():
    """Written out by hand: y = x + A(LN(x)), then y + MLP(y) with one LayerNorm per encoder, y + MLP(LN2(y))
    with two."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    for norms in (1, 2):
        block = Block(8, 2, mlp=True, mlp_ratio=2.0, qk="separate", value_output=True, norms=norms)
        for p in block.parameters():
            torch.nn.init.normal_(p, std=0.3)
        with torch.no_grad():
            y = x + block.attn(F.layer_norm(x, (8,), block.norm1.weight, block.norm1.bias))
            inner = y if norms == 1 else F.layer_norm(y, (8,), block.norm2.weight, block.norm2.bias)
            fc1, fc2 = block.mlp[0], block.mlp[2]
            expected = y + F.linear(F.gelu(F.linear(inner, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
            assert torch.allclose(block(x), expected, atol=1e-5)


@pytest.mark.parametrize("qk", ["symmetric", "tied"])
def test_symmetric_similarity_is_symmetric_and_psd(qk):
    torch.manual_seed(0)
    attn = MinimalAttention(8, 2, qk)
    for parameter in attn.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    w = attn.similarity_matrix()
    assert torch.allclose(w, w.transpose(1, 2), atol=1e-6)
    assert torch.linalg.eigvalsh(w).min() > -1e-5
    logits = attn.logits(torch.randn(3, 6, 8))
    assert torch.allclose(logits, logits.transpose(-2, -1), atol=1e-5)
    assert (logits.diagonal(dim1=-2, dim2=-1) >= 0).all()  # a token is never dissimilar to itself


def test_tied_layer_is_the_standard_layer_with_its_key_set_to_its_query():
    torch.manual_seed(0)
    standard, tied = MinimalAttention(16, 4, "separate"), MinimalAttention(16, 4, "tied")
    for layer in (standard.query, standard.value, standard.proj):
        torch.nn.init.normal_(layer.weight, std=0.3)
    with torch.no_grad():
        standard.key.weight.copy_(standard.query.weight)
        for name in ("query", "value", "proj"):
            getattr(tied, name).weight.copy_(getattr(standard, name).weight)
    x = torch.randn(3, 7, 16)
    assert torch.allclose(tied.logits(x), standard.logits(x), atol=1e-5)
    assert torch.allclose(tied(x), standard(x), atol=1e-5)
    assert not hasattr(tied, "key")


@pytest.mark.parametrize("name", ["symmetric_h2_no_vo", "merged_h2", "tied_h4", "paper_layout_h2"])
def test_checkpoint_round_trip(name, tmp_path):
    variant = {**VARIANTS, **PAPER_LAYOUT}[name]
    spec = {"family": "minimal_transformer", **SMALL, **variant}
    model = build(variant)
    checkpoint.save_model(model, tmp_path / "model", spec, INFO, [])
    loaded, _ = checkpoint.load_model(tmp_path / "model")
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("name", VARIANTS)
def test_every_variant_trains_with_decreasing_loss(name):
    torch.manual_seed(0)
    labels = torch.arange(48) % 10
    prototypes = torch.randint(0, 256, (10, 1, 8, 8))  # one random image per class, plus noise
    images = (prototypes[labels] + torch.randint(-20, 21, (48, 1, 8, 8))).clamp(0, 255).to(torch.uint8)
    data = ImageTensorDataset(images, labels)
    model = build(VARIANTS[name]).train()
    recipe = {"epochs": 8, "batch_size": 16, "lr": 0.01, "weight_decay": 0.0, "schedule": "constant"}
    losses = fit(model, make_task(INFO), data, torch.device("cpu"), recipe, seed=0, progress=False)["losses"]
    assert len(losses) == 24
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3


@pytest.mark.parametrize("name", PAPER_TOTALS)
def test_catalog_models_have_the_papers_parameter_totals(name):
    torch.manual_seed(0)
    assert count_parameters(build_model(MODELS[name], MNIST, pretrained=False, download=False)) == PAPER_TOTALS[name]


def test_paper_layout_has_one_layernorm_per_encoder_and_197_tokens():
    model = build_model(MODELS["minattn_paper_std_h4"], MNIST, pretrained=False, download=False)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 6 + 1  # one per encoder and the final one
    assert model.pos_embed.shape == (1, 197, 60)
    assert model.blocks[0].mlp[0].out_features == 256 and model.blocks[0].attn.query.bias is not None


def test_study_table_reads_params_and_training_time():
    specs = {name: json.dumps(MODELS[name]) for name in ("minattn_std_h4", "minattn_sym_novo_h1")}
    rows = []
    for seed, (acc_std, acc_min) in enumerate([(0.90, 0.88), (0.92, 0.90)]):
        rows.append({"dataset": "d", "model": "minattn_std_h4", "chain": "base", "seed": seed, "accuracy": acc_std,
                     "params": 1000, "stage_time_s": 10.0 + seed, "model_spec": specs["minattn_std_h4"]})
        rows.append({"dataset": "d", "model": "minattn_sym_novo_h1", "chain": "base", "seed": seed,
                     "accuracy": acc_min, "params": 100, "stage_time_s": 4.0, "model_spec": specs["minattn_sym_novo_h1"]})
    table = study_table(pd.DataFrame(rows), "accuracy").set_index("model")
    assert table.loc["minattn_std_h4", "attention_params_per_block"] == 4 * 128 * 128
    assert table.loc["minattn_sym_novo_h1", "attention_params_total"] == 6 * 8256
    assert table.loc["minattn_sym_novo_h1", "attention_share_pct"] == pytest.approx(100 * 8256 / (4 * 128 * 128))
    assert table.loc["minattn_sym_novo_h1", "params_share_pct"] == pytest.approx(10.0)
    assert table.loc["minattn_std_h4", "train_time_s"] == pytest.approx(10.5)
    assert table.loc["minattn_sym_novo_h1", "accuracy_vs_standard"] == pytest.approx(-0.02)
    assert table.loc["minattn_std_h4", "accuracy_std"] == pytest.approx(0.0141421, rel=1e-4)
