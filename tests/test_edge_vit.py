"""Edge ViT compression (methods/edge_vit.py): feature distillation, structured pruning, and quantized memory,
on tiny CPU models with known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from baselines.distill import kd_loss
from methods.edge_vit import (build_student, distillation_pairs, feature_loss, prune_attention_heads,
                              prune_convolutions, prune_linear_rows, stage_outputs, unstructured_prune)
from slimbench import checkpoint
from slimbench.config import load_plugins
from slimbench.data import DatasetInfo
from slimbench.metrics.cost import count_parameters, stored_bits
from slimbench.models import build_model
from slimbench.stages import STAGES, Context
from slimbench.surgery import find_attentions, find_mlps
from slimbench.tasks import make_task

from conftest import IMAGE_INFO

load_plugins()

RGB_INFO = DatasetInfo("tiny_rgb", "image_classification", "accuracy", 10, 3, 16, (0.5,) * 3, (0.5,) * 3)
TINY_RESNET = {"family": "cifar_resnet", "blocks": [1, 1], "width": 8}
SMALL_RESNET = {"family": "cifar_resnet", "blocks": [1, 1, 1, 1], "width": 32}  # a student alias's spec


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model(TINY_RESNET, RGB_INFO, pretrained=False, download=False).eval()


def images(n: int = 4, size: int = 16, channels: int = 3) -> torch.Tensor:
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(3))


def test_feature_and_logit_losses_are_zero_when_student_equals_teacher():
    model, x = tiny_resnet(), images()
    pairs, projections = distillation_pairs(model, model, x)
    assert len(pairs) == 2 and all(isinstance(p, nn.Identity) for p in projections)
    feats = stage_outputs(model, x)
    logits = model(x)
    assert feature_loss(feats, feats, projections, pairs).item() == 0.0
    assert kd_loss(logits, logits, temperature=1.0).abs().item() < 1e-6


def test_feature_loss_is_positive_and_projected_when_widths_differ():
    teacher, x = tiny_resnet(), images()
    torch.manual_seed(1)
    student = build_model({"family": "cifar_resnet", "blocks": [1, 1], "width": 4}, RGB_INFO, False, False).eval()
    pairs, projections = distillation_pairs(student, teacher, x)
    assert all(isinstance(p, nn.Conv2d) for p in projections)
    assert feature_loss(stage_outputs(student, x), stage_outputs(teacher, x), projections, pairs).item() > 0


def test_student_is_rebuilt_from_its_checkpoint(tmp_path):
    teacher = tiny_resnet()
    student = build_student(teacher, SMALL_RESNET)
    assert count_parameters(student) != count_parameters(teacher)
    stages = [{"name": "feature_kd", "params": {"student": SMALL_RESNET}}]
    checkpoint.save_model(student, tmp_path / "m", TINY_RESNET, RGB_INFO, stages)
    loaded, _ = checkpoint.load_model(tmp_path / "m")
    x = images()
    assert torch.equal(loaded(x), student.eval()(x))


def head_inputs(attention: nn.Module, x_model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the output projection receives: the concatenated per-head outputs."""
    seen = []
    handle = attention.proj.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        x_model(x)
    handle.remove()
    return seen[0]


def test_pruning_the_weakest_head_leaves_the_other_heads_outputs_unchanged(tiny_vit):
    attentions = find_attentions(tiny_vit)
    first = attentions[0]
    d, width = first.head_dim, first.heads * first.head_dim
    with torch.no_grad():  # make head 1 of the first block the smallest: the one the stage must remove
        for part in range(3):
            first.owner.qkv.weight[part * width + d: part * width + 2 * d] *= 0.01
        first.owner.proj.weight[:, d: 2 * d] *= 0.01
    x = torch.randn(2, 1, 8, 8)
    before = head_inputs(first.owner, tiny_vit, x)
    prune_attention_heads(tiny_vit, ratio=0.5)
    assert [a.heads for a in find_attentions(tiny_vit)] == [1, 1]
    after = head_inputs(first.owner, tiny_vit, x)
    assert torch.allclose(after, before[..., :d], atol=1e-6)


def test_filter_and_channel_pruning_shrink_a_residual_cnn_and_keep_its_output_shape():
    for criterion in ("filters", "channels"):
        model, x = tiny_resnet(), images()
        params, shape = count_parameters(model), model(x).shape
        prune_convolutions(model, x[:1], ratio=0.5, criterion=criterion)
        assert count_parameters(model) < 0.6 * params
        assert model(x).shape == shape


def test_ratio_zero_structured_pruning_changes_nothing(tiny_vit):
    model, x = tiny_resnet(), images()
    before = model(x)
    prune_convolutions(model, x[:1], ratio=0.0, criterion="filters")
    assert torch.equal(model(x), before)
    vit_x = torch.randn(2, 1, 8, 8)
    vit_before = tiny_vit(vit_x)
    prune_linear_rows(tiny_vit, vit_x[:1], ratio=0.0)
    assert torch.equal(tiny_vit(vit_x), vit_before)


def test_filter_pruning_removes_the_smallest_filter():
    model, x = tiny_resnet(), images()
    stem = model.stem[0]
    with torch.no_grad():
        stem.weight[3].mul_(1e-4)  # stem filter 3 has the smallest L2 norm in its (residual) group
    kept = stem.weight[[i for i in range(8) if i != 3]].clone()
    prune_convolutions(model, x[:1], ratio=1 / 8, criterion="filters")
    assert torch.equal(model.stem[0].weight, kept)


def test_linear_row_pruning_shrinks_the_mlps(tiny_vit):
    hidden = [m.hidden for m in find_mlps(tiny_vit)]
    prune_linear_rows(tiny_vit, torch.randn(1, 1, 8, 8), ratio=0.5)
    assert [m.hidden for m in find_mlps(tiny_vit)] == [h // 2 for h in hidden]
    assert tiny_vit(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_unstructured_pruning_zeroes_the_share_and_keeps_the_size(tiny_vit):
    params = count_parameters(tiny_vit)
    unstructured_prune(tiny_vit, None, ratio=0.5)
    fc1 = find_mlps(tiny_vit)[0].inputs[0].weight
    assert abs((fc1 == 0).float().mean().item() - 0.5) < 0.02
    assert count_parameters(tiny_vit) == params


SEG_INFO = DatasetInfo("seg", "semantic_segmentation", "mean_iou", 11, 3, 32, (0.5,) * 3, (0.25,) * 3,
                      extra={"ignore_index": 11})


def tiny_upernet() -> nn.Module:
    torch.manual_seed(0)
    return build_model({"family": "upernet_mobilevit", "arch": "mobilevit_xxs", "fpn_out": 24}, SEG_INFO,
                       pretrained=False, download=False).eval()


def out_channels(module: nn.Module) -> list[int]:
    return [m.out_channels for m in module.modules() if isinstance(m, nn.Conv2d)]


@pytest.mark.parametrize("criterion", ["filters", "channels"])
def test_structured_pruning_of_a_upernet_shrinks_the_backbone_and_leaves_the_decode_head_whole(criterion):
    """The authors prune the backbone only (train_upernet.py @ 6163879, line 156): every conv of the head keeps its
    outputs (the lists are read before pruning), the backbone loses about half its conv outputs."""
    model, x = tiny_upernet(), images(2, 32)
    head, backbone = out_channels(model.decode_head), out_channels(model.backbone)
    prune_convolutions(model, x[:1], ratio=0.5, criterion=criterion)
    assert out_channels(model.decode_head) == head
    assert sum(out_channels(model.backbone)) < 0.8 * sum(backbone)
    assert model(x).shape == (2, 11, 8, 8)


def test_unstructured_pruning_of_a_upernet_leaves_the_decode_head_as_it_was():
    model = tiny_upernet()
    head = {k: v.clone() for k, v in model.decode_head.state_dict().items()}
    unstructured_prune(model, None, ratio=0.5)
    assert all(torch.equal(v, head[k]) for k, v in model.decode_head.state_dict().items())
    convs = [m.weight for m in model.backbone.modules() if isinstance(m, nn.Conv2d) and m.weight.numel() > 100]
    assert all(abs((w == 0).float().mean().item() - 0.5) < 0.02 for w in convs)


def linear_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256)).eval()


def test_fp16_and_int8_weight_memory_are_a_half_and_a_quarter_of_float32(tmp_path):
    ctx = Context(make_task(IMAGE_INFO), None, None, torch.device("cpu"), 0)
    fp32 = stored_bits(linear_net())
    half = stored_bits(STAGES.get("fp16")(linear_net(), ctx))
    int8 = stored_bits(STAGES.get("int8")(linear_net(), ctx, scheme="dynamic"))
    assert half / fp32 == pytest.approx(0.5, abs=0.01)
    assert int8 / fp32 == pytest.approx(0.25, abs=0.02)


def test_feature_kd_stage_returns_a_trained_student_and_leaves_no_hooks():
    from slimbench.data.base import ImageTensorDataset

    teacher = tiny_resnet()
    data = ImageTensorDataset(torch.randint(0, 255, (16, 3, 16, 16), dtype=torch.uint8), torch.randint(0, 10, (16,)))
    ctx = Context(make_task(RGB_INFO), data, data, torch.device("cpu"), 0, {"epochs": 1, "batch_size": 8, "lr": 1e-3},
                  teacher_loader=lambda: teacher, progress=False)
    kd = STAGES.get("feature_kd")
    # the classification study's setting: KL logit term plus this project's feature term (hooks on both nets)
    params = kd.resolve_models(kd.resolve("small", {"logit_loss": "kl", "beta": 1.0}),
                               {"small": SMALL_RESNET})  # an alias only the config defines
    student = kd(teacher, ctx, **params)
    reference = build_student(teacher, SMALL_RESNET)
    assert count_parameters(student) == count_parameters(reference)
    assert not any(m._forward_hooks for m in teacher.modules())
    assert student(images()).shape == (4, 10)


def test_token_sequences_do_not_pair_with_feature_maps(tiny_vit):
    from methods.edge_vit import pair_by_resolution

    cnn = tiny_resnet()
    maps = stage_outputs(cnn, images())
    tokens = stage_outputs(tiny_vit, torch.randn(2, 1, 8, 8))
    assert pair_by_resolution(maps, tokens) == [] and pair_by_resolution(tokens, maps) == []


def test_feature_kd_defaults_are_the_authors_mse_logit_term_without_features():
    params = STAGES.get("feature_kd").resolve("small")
    assert (params["logit_loss"], params["alpha"], params["beta"]) == ("mse", 1.0, 0.0)


def test_kl_on_segmentation_maps_is_refused_with_the_fix():
    from methods.edge_vit import logit_term
    from slimbench.errors import ConfigError

    with pytest.raises(ConfigError, match="logit_loss: mse"):
        logit_term(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), "kl", 1.0)


def test_label_student_and_mse_kd_stages_train_a_segmentation_student():
    from slimbench.data.camvid import SegmentationDataset

    info = DatasetInfo("seg", "semantic_segmentation", "mean_iou", 11, 3, 32, (0.5,) * 3, (0.25,) * 3,
                       extra={"ignore_index": 11})
    teacher_spec = {"family": "upernet_swin", "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                    "window_size": 4, "hidden_size": 16}
    student_spec = {"family": "upernet_mobilevit", "arch": "mobilevit_xxs", "fpn_out": 24}
    torch.manual_seed(0)
    teacher = build_model(teacher_spec, info, pretrained=False, download=False).eval()
    generator = torch.Generator().manual_seed(0)
    data = SegmentationDataset(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=generator),
                               torch.randint(0, 12, (4, 32, 32), dtype=torch.uint8, generator=generator))
    ctx = Context(make_task(info), data, data, torch.device("cpu"), 0, {"epochs": 1, "batch_size": 4, "lr": 1e-3},
                  teacher_loader=lambda: teacher, progress=False)
    stage = STAGES.get("label_student")
    student = stage(teacher, ctx, **stage.resolve_models(stage.resolve("s"), {"s": student_spec}))
    assert count_parameters(student) == count_parameters(build_model(student_spec, info, False, False))
    before = [p.detach().clone() for p in student.parameters()]
    STAGES.get("mse_kd")(student, ctx, **STAGES.get("mse_kd").resolve(None))
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_budget_table_judges_the_models_own_memory_where_measured():
    import pandas as pd

    from methods.edge_vit import budget_table

    runs = pd.DataFrame({"dataset": ["d", "d"], "model": ["m", "m"], "chain": ["base", "base"], "mean_iou": [0.5, 0.7],
                         "params": [10, 10], "stored_bits": [8 * 2**20] * 2, "peak_rss_mib": [3000.0, 3100.0],
                         "latency_cpu_ms": [20.0, 30.0], "latency_cpu_threads": [4, 4], "latency_batch_size": [1, 1],
                         "fits_budget": [True, True]})
    old = budget_table(runs, "mean_iou")  # runs from before the fresh-process probe: the whole process, so named
    assert old["peak_rss_mib"].tolist() == [3050.0] and "model_peak_rss_mib" not in old
    assert old["fps"].tolist() == [40.0] and old["mean_iou"].tolist() == [pytest.approx(0.6)]
    new = budget_table(runs.assign(model_peak_rss_mib=[100.0, 120.0]), "mean_iou")
    assert new["model_peak_rss_mib"].tolist() == [110.0] and "peak_rss_mib" not in new
