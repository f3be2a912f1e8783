"""Semantic segmentation (issue #15): mIoU, the CamVid loader, the UPerNet models, the task's training step and
the edge-ViT authors' distillation loss, on tiny CPU inputs with answers computed by hand or by scikit-learn."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import jaccard_score

from slimbench.data import DatasetInfo, load_dataset
from slimbench.data.camvid import CAMVID_VOID, SegmentationDataset
from slimbench.errors import DataNotFoundError
from slimbench.metrics.cost import count_flops, count_parameters
from slimbench.metrics.task import confusion_matrix, segmentation_metrics
from slimbench.models import build_model
from slimbench.stages import Context
from slimbench.tasks import make_task, scale_crop_flip
from slimbench.train import fit

IGNORE = 11
INFO = DatasetInfo("tiny_seg", "semantic_segmentation", "mean_iou", 11, 3, 32, (0.5,) * 3, (0.25,) * 3, True,
                   extra={"ignore_index": IGNORE, "crop": [24, 32], "scale": [0.5, 2.0]})
TINY_STUDENT = {"family": "upernet_mobilevit", "arch": "mobilevit_xxs", "fpn_out": 24}
TINY_TEACHER = {"family": "upernet_swin", "embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1],
                "window_size": 4, "hidden_size": 16}


# ----------------------------------------------------------------------------------------------------------------
# mIoU from a confusion matrix.
# ----------------------------------------------------------------------------------------------------------------


def test_miou_pixel_and_class_accuracy_match_a_hand_computed_case():
    labels = torch.tensor([[0, 0, 1], [1, 2, 255]])
    predictions = torch.tensor([[0, 1, 1], [1, 2, 0]])  # the ignored pixel's prediction must not count
    confusion = confusion_matrix(labels, predictions, num_classes=4, ignore_index=255)
    assert confusion.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    metrics = segmentation_metrics(confusion)
    # IoU: class 0 = 1 / (2 + 1 - 1), class 1 = 2 / (2 + 3 - 2), class 2 = 1; class 3 absent everywhere: left out.
    assert metrics["mean_iou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert metrics["pixel_accuracy"] == pytest.approx(4 / 5)
    assert metrics["mean_class_accuracy"] == pytest.approx((1 / 2 + 1 + 1) / 3)


def test_confusion_and_miou_agree_with_scikit_learn():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 6, (3, 20, 30), generator=generator)  # 5 = ignore
    predictions = torch.randint(0, 5, (3, 20, 30), generator=generator)
    confusion = confusion_matrix(labels, predictions, num_classes=5, ignore_index=5)
    keep = (labels != 5).flatten().numpy()
    y, p = labels.flatten().numpy()[keep], predictions.flatten().numpy()[keep]
    assert np.array_equal(confusion.numpy(), sk_confusion(y, p, labels=list(range(5))))
    expected = jaccard_score(y, p, labels=list(range(5)), average="macro")
    assert segmentation_metrics(confusion)["mean_iou"] == pytest.approx(expected)


def test_a_label_outside_the_classes_is_an_error():
    with pytest.raises(ValueError, match="labels must be 0..2"):
        confusion_matrix(torch.tensor([0, 3]), torch.tensor([0, 1]), num_classes=3, ignore_index=255)


# ----------------------------------------------------------------------------------------------------------------
# The CamVid loader.
# ----------------------------------------------------------------------------------------------------------------


def encoded(array: np.ndarray, kind: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format=kind)
    return out.getvalue()


def write_camvid(root: Path, sizes: dict[str, int], height: int = 6, width: int = 8) -> dict[str, np.ndarray]:
    """CamVid-layout zips of flat-colour images and random label maps; returns each split's label maps."""
    rng = np.random.default_rng(0)
    written = {}
    (root / "camvid").mkdir(parents=True)
    for split, count in sizes.items():
        maps = rng.integers(0, CAMVID_VOID + 1, (count, height, width), dtype=np.uint8)
        with zipfile.ZipFile(root / "camvid" / f"{split}.zip", "w") as archive:
            for i in reversed(range(count)):  # stored out of order: the loader sorts by name
                archive.writestr(f"images/{split}_{i:02d}.jpg",
                                 encoded(np.full((height, width, 3), 10 * i, dtype=np.uint8), "JPEG"))
                archive.writestr(f"labels/{split}_{i:02d}.png", encoded(maps[i], "PNG"))
        written[split] = maps
    return written


def test_camvid_loader_reads_pairs_in_name_order_with_exact_labels(tmp_path):
    maps = write_camvid(tmp_path, {"train": 3, "val": 2, "test": 2})
    splits = load_dataset({"loader": "camvid", "crop": [4, 4]}, tmp_path, False, tmp_path / "cache")
    assert isinstance(splits.train, SegmentationDataset)
    assert splits.train.images.shape == (3, 3, 6, 8) and splits.train.labels.shape == (3, 6, 8)
    assert np.array_equal(splits.train.labels.numpy(), maps["train"])
    assert np.array_equal(splits.eval.labels.numpy(), maps["test"])  # eval = test by default
    assert [int(splits.train.images[i].float().mean().round()) for i in range(3)] == [0, 10, 20]
    info = splits.info
    assert (info.task, info.metric, info.num_classes, info.extra["ignore_index"]) == \
        ("semantic_segmentation", "mean_iou", 11, 11)
    both = load_dataset({"loader": "camvid", "train_split": "train+val", "eval_split": "val"}, tmp_path, False,
                        tmp_path / "cache")
    assert len(both.train) == 5 and len(both.eval) == 2


def test_camvid_loader_names_the_missing_zip_and_the_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"camvid/train\.zip(.|\n)*Fix: put CamVid's train\.zip"):
        load_dataset({"loader": "camvid"}, tmp_path, False, tmp_path / "cache")


REAL_ROOT = Path(os.environ.get("SLIMBENCH_DATA_ROOT") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.mark.skipif(not (REAL_ROOT / "camvid" / "test.zip").exists(), reason="real CamVid zips not present")
def test_real_camvid_has_the_standard_split_sizes(tmp_path):
    splits = load_dataset({"loader": "camvid", "eval_split": "val"}, REAL_ROOT, False, tmp_path)
    assert (len(splits.train), len(splits.eval)) == (367, 101)
    assert splits.train.images.shape[1:] == (3, 360, 480) and splits.train.labels.dtype == torch.uint8
    assert int(splits.train.labels.max()) == CAMVID_VOID and int(splits.train.labels.min()) == 0


# ----------------------------------------------------------------------------------------------------------------
# Augmentation, models, a training step.
# ----------------------------------------------------------------------------------------------------------------


def test_augmentation_at_scale_one_keeps_pixels_and_labels_aligned_or_flipped():
    torch.manual_seed(0)
    y = torch.randint(0, 11, (6, 8, 10))
    x = y[:, None].float().expand(-1, 3, -1, -1).clone()  # every channel carries the label: alignment visible
    ax, ay = scale_crop_flip(x, y, (1.0, 1.0), (8, 10), IGNORE)
    for i in range(6):
        assert torch.equal(ay[i], y[i]) or torch.equal(ay[i], y[i].flip(-1))
        assert torch.equal(ax[i, 0], ay[i].float())


def test_augmentation_pads_labels_with_the_ignore_index():
    torch.manual_seed(0)
    y = torch.zeros(2, 4, 4, dtype=torch.long)
    ax, ay = scale_crop_flip(torch.ones(2, 3, 4, 4), y, (1.0, 1.0), (6, 6), IGNORE)
    assert ax.shape == (2, 3, 6, 6) and ay.shape == (2, 6, 6)
    assert int((ay == IGNORE).sum()) == 2 * (36 - 16) and float(ax.sum()) == 2 * 3 * 16


def test_both_upernets_return_stride_4_logit_maps_and_the_task_upsamples_them():
    task = make_task(INFO)
    batch = (torch.randint(0, 256, (2, 3, 64, 96), dtype=torch.uint8), torch.randint(0, 12, (2, 64, 96)))
    x, y = task.to_device(batch, torch.device("cpu"))
    for spec in (TINY_STUDENT, TINY_TEACHER):
        torch.manual_seed(0)
        model = build_model(spec, INFO, pretrained=False, download=False).eval()
        with torch.no_grad():
            raw = model(x)
            assert raw.shape[:2] == (2, 11) and raw.shape[-2] in (16, 64)  # student at stride 4, HF upsamples
            assert task.logits(model, (x, y)).shape == (2, 11, 64, 96)
        assert count_flops(lambda: model(x[:1])) > 0


def test_student_is_mobilevit_s_with_the_authors_stage_widths():
    model = build_model({"family": "upernet_mobilevit"}, INFO, pretrained=False, download=False)
    assert model.backbone.channels == [64, 96, 128, 160]  # the authors' feature_channels for mobilevit
    assert 5.3e6 < count_parameters(model) < 5.8e6  # the paper's student: about 5.6M parameters


def tiny_splits(n: int = 6) -> SegmentationDataset:
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 12, (n, 32, 32), dtype=torch.uint8, generator=generator)
    return SegmentationDataset(images, labels)


def test_one_training_step_changes_the_student_and_evaluation_reports_miou():
    task, data = make_task(INFO), tiny_splits()
    torch.manual_seed(0)
    model = build_model(TINY_STUDENT, INFO, pretrained=False, download=False)
    before = [p.detach().clone() for p in model.parameters()]
    history = fit(model, task, data, torch.device("cpu"), {"epochs": 1, "batch_size": 6, "lr": 1e-3}, seed=0,
                  progress=False)
    assert history["steps"] == 1 and np.isfinite(history["losses"][0])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    metrics = task.evaluate(model, data, torch.device("cpu"), batch_size=4)
    assert 0.0 <= metrics["mean_iou"] <= 1.0 and metrics["eval_loss"] > 0


def hand_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore: int) -> torch.Tensor:
    """-log softmax at the true class, averaged over the labelled pixels, written out."""
    log_probs = logits - logits.exp().sum(1, keepdim=True).log()
    keep = labels != ignore
    picked = log_probs.permute(0, 2, 3, 1)[keep]  # (pixels, classes)
    return -picked[torch.arange(len(picked)), labels[keep]].sum() / keep.sum()


def test_distillation_loss_is_cross_entropy_plus_mse_of_the_logit_maps():
    from methods.edge_vit import Distiller, FeatureTap, distillation_loss

    task, data = make_task(INFO), tiny_splits(2)
    torch.manual_seed(0)
    teacher = build_model(TINY_TEACHER, INFO, pretrained=False, download=False).eval()
    student = build_model(TINY_STUDENT, INFO, pretrained=False, download=False).eval()
    ctx = Context(task, data, data, torch.device("cpu"), 0)
    batch = task.to_device(data.collate([0, 1]), torch.device("cpu"))
    loss = distillation_loss(ctx, teacher, FeatureTap.nothing(), [], "mse", 1.0, 1.0, 0.0)
    got = loss(Distiller(student, torch.nn.ModuleList()), batch)
    with torch.no_grad():
        s, t = student(batch[0]), teacher(batch[0])
    s = F.interpolate(s, size=(32, 32), mode="bilinear", align_corners=False)  # student: stride 4 -> input size
    expected = hand_cross_entropy(s, batch[1], IGNORE) + ((s - t) ** 2).sum() / s.numel()
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_teacher_with_a_pretrained_backbone_keeps_its_weights_and_rebuilds_offline(tmp_path):
    from transformers import Swinv2Backbone, Swinv2Config

    from slimbench import checkpoint
    from slimbench.models import describe_model

    torch.manual_seed(0)
    saved = Swinv2Backbone(Swinv2Config(embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
                                        out_features=["stage1", "stage2", "stage3", "stage4"]))
    saved.save_pretrained(tmp_path / "backbone")  # a local folder stands in for the hub repository
    spec = {"family": "upernet_swin", "version": 2, "hidden_size": 16, "weights": "backbone_hub",
            "hub": str(tmp_path / "backbone")}
    model = build_model(spec, INFO, pretrained=True, download=False).eval()
    for name, tensor in saved.state_dict().items():
        assert torch.equal(model.net.backbone.state_dict()[name], tensor), name
    checkpoint.save_model(model, tmp_path / "m", describe_model(spec, model), INFO, [])
    loaded, _ = checkpoint.load_model(tmp_path / "m")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


@pytest.mark.parametrize("name", ["upernet_swinv2_tiny", "upernet_swin_tiny", "upernet_mobilevit_s",
                                  "upernet_swinv2_t_authors"])
def test_declared_structures_match_the_segmentation_models(name):
    """slimbench.architectures decides from the spec which stages apply; here the real model answers: surgery
    finds MLPs, head removal runs, and most FLOPs (torch's counter, at 480x360) are in Linear layers or not."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    from slimbench.architectures import structures
    from slimbench.config import REPO, load_config
    from slimbench.surgery import find_attentions, find_mlps, keep_heads

    spec = load_config(REPO / "config" / "default.yaml")["models"][name]
    torch.manual_seed(0)
    model = build_model(spec, INFO, pretrained=False, download=False).eval()
    found = {"mlp_neurons"} if find_mlps(model) else set()
    try:
        trial = copy.deepcopy(model)
        keep_heads(find_attentions(trial)[0], [0])
        with torch.no_grad():
            trial(torch.randn(1, 3, 64, 64))
        found.add("attention_heads")
    except (IndexError, RuntimeError):
        pass
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, 360, 480))
    linear = sum(v for op, v in counter.get_flop_counts()["Global"].items() if str(op).split(".")[1] in ("addmm", "mm"))
    if linear / counter.get_total_flops() > 0.5:
        found.add("linear_compute")
    assert structures(spec) == frozenset(found)


def test_the_authors_teacher_reads_torchvisions_swin_stages_without_their_norm_as_nchw_maps():
    """Written out as the authors' swin_v2_t_forward (upernet.py @ 6163879, lines 329-337): torchvision's blocks 1, 3,
    5 and 7, each (B, H, W, C) -> (B, C, H, W), at strides 4-32 with 96-768 channels; the model's logits are their
    UPerNet head's at stride 4."""
    import torchvision

    model = build_model({"family": "upernet_swin_tv"}, INFO, pretrained=False, download=False).eval()
    reference = torchvision.models.swin_v2_t().eval()
    reference.features.load_state_dict(model.backbone.features.state_dict())
    x = torch.randn(1, 3, 64, 96)
    expected, h = [], x
    with torch.no_grad():
        for i, block in enumerate(reference.features):
            h = block(h)
            if i in (1, 3, 5, 7):
                expected.append(h.transpose(1, 2).transpose(1, 3))
        found = model.backbone(x)
        assert [tuple(f.shape) for f in found] == [(1, 96, 16, 24), (1, 192, 8, 12), (1, 384, 4, 6), (1, 768, 2, 3)]
        assert all(torch.equal(a, b) for a, b in zip(found, expected))
        assert torch.equal(model(x), model.decode_head(expected))


def test_the_authors_teacher_loads_a_local_torchvision_state_dict_and_refuses_another_file(tmp_path):
    import torchvision

    from slimbench.errors import ConfigError

    torch.manual_seed(1)
    saved = torchvision.models.swin_v2_t()
    torch.save(saved.state_dict(), tmp_path / "swin.pth")
    spec = {"family": "upernet_swin_tv", "weights": "checkpoint", "checkpoint": str(tmp_path / "swin.pth")}
    model = build_model(spec, INFO, pretrained=True, download=False)
    assert all(torch.equal(model.backbone.features.state_dict()[k], v)
               for k, v in saved.features.state_dict().items())
    torch.save({"model_state": saved.state_dict()}, tmp_path / "authors.pkl")  # the authors' checkpoint layout
    with pytest.raises(ConfigError, match="not a state dict of torchvision's swin_v2_t.*Fix"):
        build_model({**spec, "checkpoint": str(tmp_path / "authors.pkl")}, INFO, pretrained=True, download=False)


def test_the_authors_teacher_refuses_hub_weights_without_downloads_and_a_missing_checkpoint():
    from slimbench.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="download: true"):
        build_model({"family": "upernet_swin_tv", "weights": "hub"}, INFO, pretrained=True, download=False)
    with pytest.raises(DataNotFoundError, match="not found"):
        build_model({"family": "upernet_swin_tv", "weights": "checkpoint", "checkpoint": "/nonexistent.pth"}, INFO,
                    pretrained=True, download=False)


def test_augmentation_without_its_settings_is_refused_with_the_fix():
    from slimbench.errors import ConfigError

    bare = DatasetInfo("bare", "semantic_segmentation", "mean_iou", 11, 3, 32, (0.5,) * 3, (0.25,) * 3, True)
    with pytest.raises(ConfigError, match=r"no \['crop', 'scale'\].*Fix"):
        make_task(bare)
