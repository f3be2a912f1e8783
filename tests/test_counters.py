"""Known answers for the cost counters (FLOPs, BitOps), computed by hand from the layer sizes (issue #15).

Each expected value is written out term by term from the architecture, never taken from the counters.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from slimbench import pipeline
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


# ----------------------------------------------------------------------------------------------- model memory
def test_memory_probe_measures_the_saved_model_alone_in_a_fresh_cpu_process(tmp_path) -> None:
    from slimbench import checkpoint
    from slimbench.data import DatasetInfo
    from slimbench.metrics.model_memory import ModelMemoryProbe, capture_inputs

    info = DatasetInfo("toy", "image_classification", "accuracy", 10, 3, 32, (0.0,) * 3, (1.0,) * 3, False)
    spec = {"family": "timm", "arch": "vit_tiny_patch16_224", "patch_size": 8, "embed_dim": 512, "depth": 4,
            "num_heads": 8}
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, embed_dim=512,
                              depth=4, num_heads=8).eval()
    weights_mib = sum(p.numel() for p in model.parameters()) * 4 / 2**20  # 12 D^2 per block + embeddings: ~48 MiB
    checkpoint.save_model(model, tmp_path / "m", spec, info, [])
    x = torch.randn(1, 3, 32, 32)
    inputs = capture_inputs(model, lambda: model(x))
    assert list(inputs) == ["arg.0"] and torch.equal(inputs["arg.0"], x)
    probe = ModelMemoryProbe(tmp_path / "m", checkpoint.read_arch(tmp_path / "m"))
    measured = probe.measure(inputs, threads=1)
    again = probe.measure(inputs, threads=1)  # a second fresh child: the same figure
    # weights as loaded: their bytes plus the allocator's slack (12 MiB seen on a fresh CI machine, 0 here); the
    # runtime (hundreds of MiB) excluded
    assert weights_mib * 0.9 <= measured["model_weights_rss_mib"] < weights_mib + 32
    assert measured["model_weights_rss_mib"] <= measured["model_peak_rss_mib"] < weights_mib + 64
    assert measured["probe_process_peak_rss_mib"] > measured["model_peak_rss_mib"] + 100
    assert measured["probe_threads"] == 1 and measured["probe_cuda_visible"] == ""
    assert again["model_peak_rss_mib"] == pytest.approx(measured["model_peak_rss_mib"], abs=8)


# ----------------------------------------------------------------------------------------------- paired latency
def test_paired_latency_interleaves_the_models_and_reports_the_ratio_with_its_interval() -> None:
    calls, now = [], [0.0]
    # model A takes 3 ms, then 6 ms on the 4th pair (a load spike that hits its partner B too: 2 ms instead of 1)
    durations = {"A": [3, 3, 3, 6, 3], "B": [1, 1, 1, 2, 1]}

    def timed(name: str):
        def call() -> None:
            calls.append(name)
            if len(calls) > 2:  # after the warm-up pair
                now[0] += durations[name][sum(c == name for c in calls[2:]) - 1] / 1e3
        return call

    out = cost.paired_latency(timed("A"), timed("B"), num_threads=1, pairs=5, warmup=1, batch_size=2,
                              clock=lambda: now[0])
    assert calls == ["A", "B"] + ["A", "B", "B", "A"] * 2 + ["A", "B"]  # one warm-up pair, then A B, B A, ...
    assert out["latency_vs_base_ratio"] == pytest.approx(3.0)  # every pair: 3/1 or 6/2
    assert out["latency_vs_base_ci_low"] == pytest.approx(3.0) and out["latency_vs_base_ci_high"] == pytest.approx(3.0)
    assert out["latency_paired_ms"] == pytest.approx(3.0) and out["latency_paired_base_ms"] == pytest.approx(1.0)
    assert out["fps_cpu"] == pytest.approx(2 * 1000 / 3.0)


def test_paired_latency_interval_is_the_bootstrap_of_the_median_ratio() -> None:
    import numpy as np

    ratios = [1.0, 1.2, 0.9, 1.1, 1.3, 0.8, 1.0, 1.05]
    own, base, now = iter(ratios), iter([1.0] * len(ratios)), [0.0]

    def timed(times):
        def call() -> None:
            now[0] += next(times) / 1e3
        return call

    out = cost.paired_latency(timed(own), timed(base), num_threads=1, pairs=len(ratios), warmup=0, resamples=500,
                              clock=lambda: now[0])
    # the same bootstrap by hand: resample the 8 pair ratios with replacement 500 times (seed 0), median of each
    medians = np.median(np.random.default_rng(0).choice(np.array(ratios), (500, 8)), axis=1)
    assert out["latency_vs_base_ratio"] == pytest.approx(np.median(ratios)) == pytest.approx(1.025)
    assert (out["latency_vs_base_ci_low"], out["latency_vs_base_ci_high"]) == pytest.approx(
        tuple(np.percentile(medians, [2.5, 97.5])))
    assert out["latency_vs_base_ci_low"] <= 1.025 <= out["latency_vs_base_ci_high"]


def test_paired_cuda_latency_times_each_call_by_its_events_and_waits_for_it(monkeypatch) -> None:
    """CUDA events faked on a clock that the two models' calls advance: A takes 4 ms, B 2 ms, and a neighbour's
    load doubles both calls of the 2nd pair; the warm-up and each timed call are waited for before the next call."""
    now, log = [0.0], []
    durations = {"A": iter([4, 4, 8, 4]), "B": iter([2, 2, 4, 2])}  # warm-up pair first, then A B, B A, A B

    class Event:
        def __init__(self, enable_timing: bool) -> None:
            assert enable_timing

        def record(self) -> None:
            self.at = now[0]
            log.append("record")

        def elapsed_time(self, end: "Event") -> float:
            return end.at - self.at

    def timed(name: str):
        def call() -> None:
            log.append(name)
            now[0] += next(durations[name])
        return call

    monkeypatch.setattr(cost.torch.cuda, "Event", Event)
    monkeypatch.setattr(cost.torch.cuda, "synchronize", lambda device: log.append("sync"))
    out = cost.paired_cuda_latency(timed("A"), timed("B"), torch.device("cuda"), pairs=3, warmup=1, resamples=100)
    timed_call = ["sync", "record", "{}", "record", "sync"]
    assert log == ["A", "B"] + [step.format(name) for name in "ABBAAB" for step in timed_call]
    assert out["latency_cuda_vs_base_ratio"] == pytest.approx(2.0)  # 4/2, 8/4, 4/2
    assert out["latency_cuda_vs_base_ci_low"] == out["latency_cuda_vs_base_ci_high"] == pytest.approx(2.0)
    assert out["latency_cuda_vs_base_pairs"] == 3
    assert (out["latency_cuda_paired_ms"], out["latency_cuda_paired_base_ms"]) == (4.0, 2.0)


def test_gpu_pairing_loads_the_base_from_its_folder_onto_the_gpu_and_times_at_the_evaluation_batch(
        monkeypatch) -> None:
    """The wiring of ``pipeline.paired_cuda_against_base``, on stand-ins (no GPU here): the compressed model is
    paired with the base loaded from the base's own folder onto the evaluation device, both called on a batch of
    the evaluation's size, with latency.paired_cuda pairs and latency.warmup warm-up pairs."""
    loaded, calls, timed = [], [], {}
    compressed, base = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

    def load_model(path, device):
        loaded.append((path, device))
        return base, {}

    def paired_cuda_latency(forward, base_forward, device, pairs, warmup):
        forward(), base_forward()
        timed.update(device=device, pairs=pairs, warmup=warmup)
        return {"latency_cuda_vs_base_ratio": 0.5}

    task = SimpleNamespace(loader=lambda split, size: iter([f"{split} batch of {size}"]),
                           to_device=lambda batch, device: (batch, device),
                           logits=lambda model, batch: calls.append((model, batch)))
    ws = SimpleNamespace(evaluation={"batch_size": 256, "latency": {"paired_cuda": 7, "warmup": 2}},
                         device=torch.device("cuda"), task=task, splits=SimpleNamespace(eval="eval"),
                         exp=SimpleNamespace(prefix="base", base="the base"),
                         directory=lambda name: Path("results") / name)
    monkeypatch.setattr(pipeline.checkpoint, "load_model", load_model)
    monkeypatch.setattr(pipeline.cost, "paired_cuda_latency", paired_cuda_latency)
    out = pipeline.paired_cuda_against_base(ws, compressed)
    assert loaded == [(Path("results") / "the base" / "model", torch.device("cuda"))]
    batch = ("eval batch of 256", torch.device("cuda"))
    assert calls == [(compressed, batch), (base, batch)]
    assert timed == {"device": torch.device("cuda"), "pairs": 7, "warmup": 2}
    assert out == {"latency_cuda_vs_base_ratio": 0.5, "latency_cuda_vs_base_batch": 256}


def test_evaluation_judges_the_budget_on_the_models_own_memory_and_pairs_latency_with_the_base(tmp_path) -> None:
    """A tiny minimal transformer (a model family a plugin registers, so the probe must import it) fits 256 MiB;
    the evaluating process (torch, data, ~900 MiB RSS) would not."""
    import json

    from test_faults import base_config, write_config

    from slimbench import cli

    config = base_config(tmp_path)
    config["evaluation"]["budget"] = {"name": "tiny device", "memory_mib": 256}
    config["evaluation"]["latency"]["paired"] = 4
    config["studies"]["s"]["chains"] = ["base"]
    config["models"]["mt_nano"] = {"family": "minimal_transformer", "embed_dim": 16, "depth": 1, "patch_size": 7,
                                   "num_heads": 1}
    config["studies"]["s"]["grid"][0]["models"] = ["mt_nano"]
    config["studies"]["lean"] = {**config["studies"]["s"], "evaluation": {"budget": None, "latency": {"paired": 0}}}
    for study in ("s", "lean"):
        assert cli.main(["study", "--config", str(write_config(config, tmp_path / "c.yaml")), "--study", study]) == 0
    (lean,) = (tmp_path / "results" / "faults" / "lean").rglob("metrics.json")
    lean_cost = json.loads(lean.read_text())["cost"]
    assert not {"model_peak_rss_mib", "fits_budget", "latency_vs_base_pairs"} & set(lean_cost)  # its own settings
    assert "latency_cpu_ms" in lean_cost
    (path,) = (tmp_path / "results" / "faults" / "s").rglob("metrics.json")
    measured = json.loads(path.read_text())["cost"]
    assert measured["peak_rss_mib"] > 256  # the whole evaluating process
    assert 0 < measured["model_peak_rss_mib"] < 64 and measured["fits_budget"] is True
    assert measured["fits_budget_measure"] == "model_peak_rss_mib"
    assert measured["latency_vs_base_pairs"] == 4
    assert measured["latency_vs_base_ci_low"] <= measured["latency_vs_base_ratio"] <= measured["latency_vs_base_ci_high"]


def test_memory_probe_server_ends_without_the_interpreter_s_teardown(tmp_path) -> None:
    """The evaluating process waits for its fork server at exit, where Python's teardown of torch, transformers,
    timm and torchao took 1.4 s of each evaluation job on a 2-core VM. The server ends by ``os._exit`` once its
    replies are written: an exit handler that a plugin registers never runs."""
    import json
    import os

    marker, imported = tmp_path / "teardown_ran", tmp_path / "imported"
    plugin = (f"import atexit, pathlib\npathlib.Path({str(imported)!r}).touch()\n"
              f"atexit.register(pathlib.Path({str(marker)!r}).touch)\n")
    (tmp_path / "exit_marker.py").write_text(plugin)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    server = subprocess.Popen([sys.executable, "-m", "slimbench.metrics.model_memory"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    job = {"model_dir": str(tmp_path / "missing"), "inputs": str(tmp_path / "none"), "threads": 1,
           "plugins": ["exit_marker"]}
    server.stdin.write(json.dumps(job) + "\n")
    server.stdin.flush()
    assert "error" in json.loads(server.stdout.readline())  # the job ran (no model there) after the plugin's import
    server.stdin.close()
    assert server.wait(timeout=60) == 0
    assert imported.exists() and not marker.exists()


def test_memory_probe_inputs_keep_positional_and_keyword_tensors() -> None:
    from slimbench.metrics.model_memory import capture_inputs, split_inputs

    class Text(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None, token_type_ids=None):
            return input_ids * attention_mask

    ids, mask = torch.ones(1, 5, dtype=torch.long), torch.zeros(1, 5, dtype=torch.long)
    model = Text()
    flat = capture_inputs(model, lambda: model(input_ids=ids, attention_mask=mask, token_type_ids=None))
    assert set(flat) == {"kwarg.input_ids", "kwarg.attention_mask"}
    args, kwargs = split_inputs({**flat, "arg.1": ids, "arg.0": mask})
    assert args[0] is mask and args[1] is ids and kwargs == {"input_ids": ids, "attention_mask": mask}
    with pytest.raises(TypeError, match="non-tensor inputs"):
        capture_inputs(model, lambda: model(ids, attention_mask=mask, token_type_ids=3))


def test_memory_probe_does_not_charge_a_transformers_model_for_its_library(tmp_path) -> None:
    """A Llama of a few KiB: transformers imports its modeling module on first build (~60 MiB); that is the
    library's, not the model's, so the probe builds the architecture on the meta device before its baseline."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from slimbench import checkpoint
    from slimbench.data import DatasetInfo
    from slimbench.metrics.model_memory import ModelMemoryProbe, capture_inputs
    from slimbench.models import describe_model

    small = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(small).eval()
    info = DatasetInfo("toy", "causal_lm", "perplexity", 64, 0, 0, (), (), False)
    spec = describe_model({"family": "hf_causal_lm", "config": small.to_dict()}, model)
    checkpoint.save_model(model, tmp_path / "m", spec, info, [])
    ids = torch.randint(0, 64, (1, 8))
    probe = ModelMemoryProbe(tmp_path / "m", checkpoint.read_arch(tmp_path / "m"))
    measured = probe.measure(capture_inputs(model, lambda: model(ids)), threads=1)
    assert measured["model_peak_rss_mib"] < 40  # 91.7 MiB when the modeling module was imported after the baseline


@pytest.mark.parametrize("stages, libraries", [([], ""), ([{"name": "int8", "params": {"scheme": "dynamic"}}],
                                                                 "timm,torchao,transformers")])
def test_memory_probe_server_imports_a_library_only_for_a_model_that_replays_a_stage(tmp_path, monkeypatch, stages,
                                                                                     libraries) -> None:
    """Reloading a saved int8 model imports torchao (int8's finalize hook): the fork server imports the libraries a
    replay may import before it forks, so the child's RSS baseline already holds them and one child measures it. A
    model that replays nothing (a minimal transformer, built from torch alone) gets none of their 2-3 s of imports.
    Checked by modules, not RSS: library code pages made the RSS of a few-KiB int8 model 23-62 MiB across fresh
    venvs."""
    from baselines.quantize import int8_quantize
    from slimbench import checkpoint
    from slimbench.data import DatasetInfo
    from slimbench.metrics import model_memory
    from slimbench.models import build_model

    info = DatasetInfo("toy", "image_classification", "accuracy", 10, 1, 8, (0.0,), (1.0,), False)
    spec = {"family": "minimal_transformer", "embed_dim": 16, "depth": 1, "patch_size": 4, "num_heads": 1}
    model = build_model(spec, info, pretrained=False, download=False).eval()
    checkpoint.save_model(int8_quantize(model, "dynamic") if stages else model, tmp_path / "m", spec, info, stages)
    monkeypatch.setattr(model_memory, "_server", None)  # a fresh server: none of an earlier test's imports
    probe = model_memory.ModelMemoryProbe(tmp_path / "m", checkpoint.read_arch(tmp_path / "m"))
    measured = probe.measure({"arg.0": torch.zeros(1, 1, 8, 8)}, threads=1)
    model_memory.stop_server(model_memory.fork_server())
    assert measured["probe_libraries"] == libraries and measured["probe_children"] == 1


LATE_FAMILY = '''import torch
from torch import nn
from slimbench.models.registry import family


@family("late_family")
def build(info, pretrained, download):
    if torch.empty(0).device.type != "meta":  # a real build only, such as the load after the probe's baseline
        import late_package  # noqa: F401
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
'''


def test_memory_probe_measures_again_when_the_load_imports_a_package_after_the_baseline(tmp_path, monkeypatch) -> None:
    """A family (a plugin's) whose real build imports a package that building on the meta device does not: the
    first child sees the package arrive after its baseline and does not report a measurement; the server imports
    the package and a second child measures, its baseline holding it."""
    import os

    from slimbench import checkpoint
    from slimbench.data import DatasetInfo
    from slimbench.metrics import model_memory
    from slimbench.models import MODELS, build_model

    (tmp_path / "late_package").mkdir()
    (tmp_path / "late_package" / "__init__.py").write_text("")
    (tmp_path / "late_family.py").write_text(LATE_FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), *sys.path]))
    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))  # the family is registered for this test alone
    monkeypatch.delitem(sys.modules, "late_family", raising=False)
    import late_family  # noqa: F401

    info = DatasetInfo("toy", "image_classification", "accuracy", 10, 1, 8, (0.0,), (1.0,), False)
    model = build_model({"family": "late_family"}, info, pretrained=False, download=False).eval()
    checkpoint.save_model(model, tmp_path / "m", {"family": "late_family"}, info, [])
    monkeypatch.setattr(model_memory, "_server", None)  # a fresh server, which finds the plugin on its path
    probe = model_memory.ModelMemoryProbe(tmp_path / "m", checkpoint.read_arch(tmp_path / "m"))
    assert probe.job["plugins"] == ["late_family"]
    measured = probe.measure({"arg.0": torch.zeros(1, 1, 8, 8)}, threads=1)
    model_memory.stop_server(model_memory.fork_server())
    assert measured["probe_children"] == 2 and measured["model_weights_rss_mib"] >= 0


def test_memory_probe_server_answers_each_job_once_and_no_prepare_line(tmp_path, monkeypatch) -> None:
    """``slimbench evaluate`` has the server prepare for its model before the job comes: a prepare line gets no
    reply, one that fails (an unknown family) is dropped, and a folder whose arch cannot be read sends none; so the
    one job gets one reply, its own, and nothing else waits in the pipe."""
    import json
    import select

    from slimbench import checkpoint
    from slimbench.data import DatasetInfo
    from slimbench.metrics import model_memory

    info = DatasetInfo("toy", "image_classification", "accuracy", 10, 3, 32, (0.0,) * 3, (1.0,) * 3, False)
    spec = {"family": "timm", "arch": "vit_tiny_patch16_224", "patch_size": 8, "embed_dim": 16, "depth": 1,
            "num_heads": 1}
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, embed_dim=16,
                              depth=1, num_heads=1).eval()
    checkpoint.save_model(model, tmp_path / "m", spec, info, [])
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "arch.json").write_text("{not json")
    monkeypatch.setattr(model_memory, "_server", None)
    model_memory.start_server(tmp_path / "missing")
    model_memory.start_server(tmp_path / "garbled")
    arch = checkpoint.read_arch(tmp_path / "m")
    model_memory.send(model_memory.fork_server(), {"model_dir": str(tmp_path / "other"), "plugins": [],
                                                   "arch": {**arch, "model": {"family": "no_such_family"}}})
    model_memory.start_server(tmp_path / "m")
    measured = model_memory.ModelMemoryProbe(tmp_path / "m", arch).measure({"arg.0": torch.zeros(1, 3, 32, 32)}, 1)
    server = model_memory.fork_server()
    assert measured["model_peak_rss_mib"] > 0 and measured["probe_children"] == 1
    assert not select.select([server.stdout], [], [], 1.0)[0]  # no second reply waiting
    model_memory.stop_server(server)
    assert (tmp_path / "garbled" / "arch.json").exists()  # left where it was: the evaluation's load moves it aside
