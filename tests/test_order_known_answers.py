"""Known answers for the stages of the pre-registered order study (methods/order_stages.py): QAT that really
quantizes, early exit that really exits and leaves the backbone alone, BitOps of a chain by hand.

Expected values come from outside the code under test: weights and inputs are read where torch's conv/linear
receive them (a TorchFunctionMode), MACs from torch's FlopCounterMode, thresholds and expected costs by hand.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.flop_counter import FlopCounterMode

from methods.order import FakeQuant, prune_channels
from methods.order_stages import NEVER, TunedExit, choose_threshold
from slimbench.data import DatasetInfo, ImageTensorDataset
from slimbench.metrics.bitops import expected_bitops, segment_bitops, total_bitops
from slimbench.models import build_model
from slimbench.stages import STAGES, Context
from slimbench.tasks import make_task
from slimbench.train import fit

INFO = DatasetInfo("toy", "image_classification", "accuracy", 10, 3, 16, (0.0,) * 3, (1.0,) * 3, False)
SPEC = {"family": "cifar_resnet", "blocks": [1, 1, 1], "width": 4}
RECIPE = {"epochs": 1, "batch_size": 32, "lr": 0.01, "weight_decay": 0.0}


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Any:
    """One torch thread: on a shared 2-core machine this runs ~10x faster than two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model(SPEC, INFO, pretrained=False, download=False).eval()


def easy_data(n: int, seed: int = 0) -> ImageTensorDataset:
    """Class k is a flat image of grey level 20 k (+- 3 of noise): every layer separates the classes."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    noise = torch.randint(-3, 4, (n, 3, 16, 16), generator=generator)
    return ImageTensorDataset((labels[:, None, None, None] * 20 + 30 + noise).clamp(0, 255).to(torch.uint8), labels)


def context(data: ImageTensorDataset, **recipe: Any) -> Context:
    return Context(make_task(INFO), data, data, torch.device("cpu"), seed=0, recipe={**RECIPE, **recipe},
                   progress=False)


def macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward, from torch's own FLOP counter (2 FLOPs per MAC)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return counter.get_total_flops() // 2


class LayerCalls(TorchFunctionMode):
    """Every conv2d/linear call's (input, weight), as torch receives them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in (F.conv2d, F.linear):
            self.calls.append((args[0].detach().clone(), args[1].detach().clone()))
        return func(*args, **(kwargs or {}))


def apply(name: str, model: nn.Module, ctx: Context, value: str | None = None, **settings: Any) -> nn.Module:
    stage = STAGES.get(name)
    return stage(model, ctx, **stage.resolve(value, settings))


# ----------------------------------------------------------------------------------------------- quantization
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_qat_computes_on_at_most_2_to_the_b_values_per_channel(bits: int) -> None:
    data = easy_data(64)
    model = apply("qat", tiny_resnet(), context(data), str(bits), calibration=32)
    recorder = LayerCalls()
    with torch.no_grad(), recorder:
        model.eval()(torch.randn(4, 3, 16, 16))
    wrapped = sum(isinstance(m, FakeQuant) for m in model.modules())
    assert len(recorder.calls) == wrapped == 10  # stem, 2 + 3 + 3 block convs, fc
    for x, weight in recorder.calls:
        edge = weight.shape[1] == 3 or weight.shape[0] == 10  # the stem conv and the classifier: 8 bits
        width = 8 if edge else bits
        levels = 2 ** (width - 1) - 1
        for row in weight.flatten(1):  # symmetric per output channel: k * max|w| / levels, |k| <= levels
            assert row.unique().numel() <= 2**width
            codes = row * levels / row.abs().max()
            assert torch.allclose(codes, codes.round(), atol=1e-3) and codes.abs().max() <= levels + 1e-3
        assert x.unique().numel() <= 2**width  # inputs: one affine grid of 2^width levels per tensor


def test_qat_bitops_follow_by_hand() -> None:
    model, x = tiny_resnet(), torch.randn(1, 3, 16, 16)
    all_macs = macs(model, x)
    stem = 4 * 16 * 16 * 3 * 9  # 4 output maps of 16x16, each 3 input channels x 3x3
    classifier = 16 * 10
    quantized = apply("qat", model, context(easy_data(64)), "4", calibration=32, epochs=0)
    expected = (all_macs - stem - classifier) * 4 * 4 + (stem + classifier) * 8 * 8
    assert total_bitops(quantized, x) == expected
    assert expected < all_macs * 32 * 32 / 40  # ~ 64x fewer than float, less the 8-bit edges


# ----------------------------------------------------------------------------------------------- early exit
def test_threshold_is_the_lowest_keeping_held_out_accuracy() -> None:
    # 4 held-out examples, exits 0 and 1 then the final classifier (always right here).
    confidences = torch.tensor([[0.95, 0.60, 0.30, 0.97],
                                [0.99, 0.90, 0.40, 0.50],
                                [0.99, 0.99, 0.99, 0.99]])
    correct = torch.tensor([[True, False, False, False],
                            [True, True, False, True],
                            [True, True, True, True]])
    # at t: example 0 exits at 0 (right) for t <= 0.95; example 3 at 0 (wrong) for t <= 0.97, else at 1 for
    # t <= 0.50 (right), else final; example 1 at 0 (wrong) for t <= 0.60, else at 1 (right) for t <= 0.90;
    # example 2 at 0 (wrong) for t <= 0.30, at 1 (wrong) for t <= 0.40, else final (right).
    # Exact accuracy (max_drop 0) needs t > 0.97: 0.98. One wrong of four allowed: t > 0.60 -> 0.61. Two: t > 0.40
    # -> 0.41. Three: any t -> 0.01.
    assert choose_threshold(confidences, correct, 0.0) == 0.98
    assert choose_threshold(confidences, correct, 0.25) == 0.61
    assert choose_threshold(confidences, correct, 0.5) == 0.41
    assert choose_threshold(confidences, correct, 0.75) == 0.01
    hopeless = torch.ones(3, 1), torch.tensor([[False], [False], [True]])  # the heads are wrong even at 1.0
    assert choose_threshold(*hopeless, 0.0) == NEVER


@pytest.fixture(scope="module")
def trained_exit() -> tuple[nn.Module, dict[str, torch.Tensor], nn.Module]:
    """A tiny ResNet trained on the easy data, then the early-exit stage on it; (model, backbone before, copy)."""
    data = easy_data(200)
    model = tiny_resnet()
    ctx = context(data, epochs=12, lr=0.05)
    fit(model, ctx.task, data, ctx.device, ctx.recipe, 0, progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    exited = apply("early_exit", model, context(data, epochs=10, lr=0.05), "0.0", exits=2, width=8, holdout=0.2)
    return exited, before, model


def test_early_exit_leaves_the_backbone_unchanged(trained_exit: Any) -> None:
    exited, before, _ = trained_exit
    after = exited.backbone.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("name, value, settings", [("exit", "0.9", {"exits": 2}),
                                                   ("early_exit", "0.0", {"exits": 2, "width": 8, "holdout": 0.2})])
def test_exit_stages_leave_a_quantized_backbone_and_its_input_ranges_unchanged(name: str, value: str,
                                                                              settings: dict[str, Any]) -> None:
    """QAT leaves input ranges narrower than the calibration min/max (an EMA of batch min/max); here they are halved
    by hand. Adding exits must calibrate the new heads only: every backbone tensor, ranges included, stays bit for bit,
    and so do the final classifier's logits."""
    data = easy_data(64)
    model = apply("qat", tiny_resnet(), context(data), "4", calibration=32, epochs=0)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, FakeQuant):
                layer.act_low.mul_(0.5), layer.act_high.mul_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = data.images[:8].float() / 255
    with torch.no_grad():
        logits = model.eval()(x)
    exited = apply(name, model, context(data, epochs=0), value, **settings)
    after = exited.backbone.state_dict()
    assert set(after) == set(before)
    assert [k for k in before if not torch.equal(after[k], before[k])] == []
    with torch.no_grad():
        assert torch.equal(exited.eval().backbone(x), logits)


def test_easy_examples_leave_at_the_first_exit_and_cost_drops_by_hand(trained_exit: Any) -> None:
    exited, _, _ = trained_exit
    assert isinstance(exited, TunedExit) and exited.threshold < 1.0  # chosen on held-out data, not "never"
    images, labels = easy_data(200, seed=1).images, easy_data(200, seed=1).labels
    x = images.float() / 255
    with torch.no_grad():
        logits = exited.eval()(x)
    taken = exited.last_exit
    counts = torch.bincount(taken, minlength=3).tolist()
    assert counts[0] >= 0.9 * len(labels)  # stated share: at least 90% leave at the first of two exits
    assert (logits.argmax(1) == labels).float().mean() >= 0.9
    backbone, one = tiny_resnet(), x[:1]  # the same architecture without the exit hooks (they would run heads)
    # segment costs by hand (32-bit float: MACs x 32 x 32): stem + first stage + head 0, then the rest
    after_stem = backbone.stem(one)
    first = backbone.layers[0](after_stem)
    second = backbone.layers[1](first)
    segment0 = macs(backbone.stem, one) + macs(backbone.layers[0], after_stem) + macs(exited.heads[0], first)
    segment1 = macs(backbone.layers[1], first) + macs(exited.heads[1], second)
    segment2 = macs(backbone, one) - macs(backbone.stem, one) - macs(backbone.layers[0], after_stem) \
        - macs(backbone.layers[1], first)
    segments = [1024 * segment0, 1024 * segment1, 1024 * segment2]
    assert segment_bitops(exited, lambda: exited(one)) == segments
    by_hand = sum(n * sum(segments[: j + 1]) for j, n in enumerate(counts)) / sum(counts)
    assert expected_bitops(segments, counts) == pytest.approx(by_hand)
    assert by_hand <= 0.9 * 1024 * macs(backbone, one)  # E alone saves BitOps on easy data


def test_the_metrics_record_the_exit_histogram_and_threshold(trained_exit: Any) -> None:
    from slimbench.metrics.bitops import cost_record

    exited, _, _ = trained_exit
    data = easy_data(200, seed=1)
    with torch.no_grad():
        exited.eval()(data.images.float() / 255)
    counts = torch.bincount(exited.last_exit, minlength=3).tolist()  # the histogram, taken by hand
    record = cost_record(exited, context(data).task, data, torch.device("cpu"), 64)
    assert record["exit_counts"] == counts and record["exit_threshold"] == exited.threshold
    assert record["bitops"] == pytest.approx(expected_bitops(record["exit_segment_bitops"], counts))


def test_the_threshold_is_chosen_on_the_datasets_holdout_when_it_has_one(monkeypatch: Any) -> None:
    """With a holdout no training saw (the dataset's holdout_fraction), the heads train on all of train and the
    threshold is chosen on the holdout; without one, on a share of train the heads did not see."""
    import methods.order_stages as order_stages

    seen: dict[str, Any] = {}
    monkeypatch.setattr(order_stages, "train_heads", lambda model, ctx, data, *a: seen.update(train=data))
    monkeypatch.setattr(order_stages, "held_out_outputs", lambda model, ctx, data: (
        seen.update(held=data), (torch.ones(3, len(data)), torch.ones(3, len(data), dtype=torch.bool)))[1])
    train, holdout = easy_data(40), easy_data(10, seed=1)
    ctx = context(train)
    ctx.holdout_set = holdout
    apply("early_exit", tiny_resnet(), ctx, "0.0", exits=2, width=8, holdout=0.2)
    assert seen["train"] is train and seen["held"] is holdout
    apply("early_exit", tiny_resnet(), context(train), "0.0", exits=2, width=8, holdout=0.2)
    assert (len(seen["train"]), len(seen["held"])) == (32, 8)


def test_the_threshold_survives_save_and_reload(trained_exit: Any, tmp_path: Any) -> None:
    from slimbench import checkpoint

    exited, _, _ = trained_exit
    stages = [{"name": "early_exit", "params": STAGES.get("early_exit").resolve(
        "0.0", {"exits": 2, "width": 8, "holdout": 0.2})}]
    checkpoint.save_model(exited, tmp_path / "m", SPEC, INFO, stages)
    loaded, _ = checkpoint.load_model(tmp_path / "m")
    assert isinstance(loaded, TunedExit) and loaded.threshold == exited.threshold


# ----------------------------------------------------------------------------------------------- chains
def test_chain_bitops_are_the_product_of_its_stages() -> None:
    """P then Q (all layers at 4 bits): BitOps = float BitOps x (pruned MACs / MACs) x (4 x 4) / (32 x 32)."""
    x = torch.randn(1, 3, 16, 16)
    base = tiny_resnet()
    base_bitops = total_bitops(base, x)
    pruned = prune_channels(tiny_resnet(), 0.5, x)
    keep = macs(pruned, x) / macs(tiny_resnet(), x)
    chain = apply("qat", pruned, context(easy_data(64)), "4", first_last_bits=4, calibration=32, epochs=0)
    assert total_bitops(chain, x) == pytest.approx(base_bitops * keep * 16 / 1024, rel=1e-12)
    assert keep < 0.35  # half the channels of every conv: about a quarter of the MACs
