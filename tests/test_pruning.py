"""Structured MLP pruning, quantization and checkpoints across model families."""

import pytest
import torch

from slimbench import checkpoint
from slimbench.config import load_plugins
from slimbench.metrics.cost import count_parameters
from slimbench.stages import STAGES, Context
from slimbench.surgery import find_mlps
from slimbench.tasks import make_task

from conftest import IMAGE_INFO, LM_INFO, TEXT_INFO, TINY_BERT, TINY_LLAMA, TINY_VIT

load_plugins()


def context(info):
    return Context(make_task(info), train_set=None, eval_set=None, device=torch.device("cpu"), seed=0)


def inputs(kind):
    torch.manual_seed(1)
    if kind == "vit":
        return {"x": torch.randn(3, 1, 8, 8)}
    return {"input_ids": torch.randint(0, 100, (3, 12))}


def run(model, kind):
    with torch.no_grad():
        out = model(inputs(kind)["x"]) if kind == "vit" else model(**inputs(kind)).logits
    return out.float()


MODELS = [("vit", "tiny_vit", IMAGE_INFO, TINY_VIT), ("bert", "tiny_bert", TEXT_INFO, TINY_BERT),
          ("llama", "tiny_llama", LM_INFO, TINY_LLAMA)]


@pytest.mark.parametrize("kind,fixture,info,spec", MODELS)
def test_every_family_exposes_its_mlps(kind, fixture, info, spec, request):
    model = request.getfixturevalue(fixture)
    assert len(find_mlps(model)) == 2


@pytest.mark.parametrize("stage", ["mlp_magnitude", "mlp_random"])
@pytest.mark.parametrize("kind,fixture,info,spec", MODELS)
def test_ratio_zero_leaves_outputs_identical(stage, kind, fixture, info, spec, request):
    model = request.getfixturevalue(fixture)
    before = run(model, kind)
    pruned = STAGES.get(stage)(model, context(info), ratio=0.0)
    assert torch.equal(run(pruned, kind), before)


@pytest.mark.parametrize("stage", ["mlp_magnitude", "mlp_random"])
@pytest.mark.parametrize("kind,fixture,info,spec", MODELS)
def test_pruned_model_is_smaller_with_same_output_shape(stage, kind, fixture, info, spec, request):
    model = request.getfixturevalue(fixture)
    shape, params, hidden = run(model, kind).shape, count_parameters(model), find_mlps(model)[0].hidden
    pruned = STAGES.get(stage)(model, context(info), ratio=0.5)
    assert run(pruned, kind).shape == shape
    assert all(mlp.hidden == hidden // 2 for mlp in find_mlps(pruned))
    assert count_parameters(pruned) < params


def test_magnitude_keeps_the_largest_rows(tiny_vit):
    mlp = find_mlps(tiny_vit)[0]
    norms = mlp.inputs[0].weight.norm(dim=1)
    expected = norms.topk(mlp.hidden // 4).indices.sort().values
    kept_rows = mlp.inputs[0].weight[expected].clone()
    STAGES.get("mlp_magnitude")(tiny_vit, context(IMAGE_INFO), ratio=0.75)
    assert torch.equal(find_mlps(tiny_vit)[0].inputs[0].weight, kept_rows)


@pytest.mark.parametrize("kind,fixture,info,spec", MODELS)
def test_pruned_model_reloads_with_same_logits(kind, fixture, info, spec, request, tmp_path):
    model = request.getfixturevalue(fixture)
    pruned = STAGES.get("mlp_magnitude")(model, context(info), ratio=0.5)
    expected = run(pruned, kind)
    full_spec = {**spec, **({"config": pruned.config.to_dict()} if kind != "vit" else {})}
    params = {"ratio": 0.5}
    checkpoint.save_model(pruned, tmp_path / "m", full_spec, info, [{"name": "mlp_magnitude", "params": params}])
    reloaded, arch = checkpoint.load_model(tmp_path / "m")
    assert count_parameters(reloaded) == count_parameters(pruned)
    assert torch.allclose(run(reloaded, kind), expected, atol=1e-6)
    assert arch["stages"][0]["params"] == params


def test_int8_error_is_bounded_and_survives_reload(tiny_vit, tmp_path):
    reference = run(tiny_vit, "vit")
    float_dir, int8_dir = tmp_path / "float", tmp_path / "int8"
    checkpoint.save_model(tiny_vit, float_dir, TINY_VIT, IMAGE_INFO, [])
    quantized = STAGES.get("int8")(tiny_vit, context(IMAGE_INFO), scheme="weight_only")
    out = run(quantized, "vit")
    relative = (out - reference).norm() / reference.norm()
    assert 0 < relative < 0.05
    checkpoint.save_model(quantized, int8_dir, TINY_VIT, IMAGE_INFO, [{"name": "int8", "params": {"scheme": "weight_only"}}])
    reloaded, _ = checkpoint.load_model(int8_dir)
    assert torch.allclose(run(reloaded, "vit"), out, atol=1e-4)
    ratio = (int8_dir / checkpoint.WEIGHTS).stat().st_size / (float_dir / checkpoint.WEIGHTS).stat().st_size
    assert ratio < 0.45


def test_fp16_halves_the_file_and_reloads(tiny_vit, tmp_path):
    checkpoint.save_model(tiny_vit, tmp_path / "f32", TINY_VIT, IMAGE_INFO, [])
    half = STAGES.get("fp16")(tiny_vit, context(IMAGE_INFO))
    checkpoint.save_model(half, tmp_path / "f16", TINY_VIT, IMAGE_INFO, [{"name": "fp16", "params": {}}])
    reloaded, _ = checkpoint.load_model(tmp_path / "f16")
    assert next(reloaded.parameters()).dtype == torch.float16
    sizes = [(tmp_path / d / checkpoint.WEIGHTS).stat().st_size for d in ("f16", "f32")]
    assert 0.45 < sizes[0] / sizes[1] < 0.55
