"""Benchmark (not a test): training steps/s of the harness's loop against a bare loop, on the same batches.

    python benchmarks/throughput.py [--device cuda] [--models text,vit,resnet] [--steps 100] [--warmup 20]
        [--compile-modes default,vit:reduce-overhead] [--compile-models text,vit] [--compiled-only]
        [--data-only] [--data-root ../shared/data] [--tiny] [--json out.json]

Models, at the sizes of config/default.yaml: MiniLM-L6-shaped BERT from its config (random weights; SST-2 train
sentences from the data root, else synthetic ones; a WordPiece vocabulary of BERT's size trained on them, as
MiniLM's own tokenizer is not available offline), batch 64, max length 128; ViT-Tiny/4 (``vit_tiny_p4``) on
random 32 px RGB images with flips and crops, batch 256; the CIFAR ResNet of the order study
(``resnet_small_cifar``), batch 512. ``--tiny`` shrinks all three for a CPU run.

Loops, each from the same initial weights on the same batches (same examples in the same order):
* ``harness``: ``slimbench.train.fit`` as the pipeline calls it (eager), data from the raw train set;
* ``harness_compiled_<mode>``: the same with ``compile: <mode>`` in the recipe (``default`` is ``compile: true``;
  ``reduce-overhead`` adds CUDA graphs);
* ``bare``: the batches fit's data path yields, made on the device before timing; per step only autocast
  bf16 forward, cross-entropy, zero_grad, backward, gradient clipping and a fused AdamW step;
* ``bare_static``: the bare loop on the batches of compile mode (text cut to static buckets, see
  ``slimbench.batching.bucket_length``: more padding than eager's multiples of 8);
* ``bare_compiled_<mode>``: the bare loop with ``torch.compile(model, mode)`` on those batches, after one
  step on every distinct batch shape.

Timing: a CUDA event is recorded as each step starts (no synchronization); a step's time is the gap to the
next event on the GPU's timeline, which includes any wait for the host. steps/s = 1 / median step time over
the ``--steps`` steps after ``--warmup`` (robust to a recompilation inside the window); the mean over the
window is printed too. On CPU the host clock replaces the events. Prints one JSON line per model.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from slimbench.data import DatasetInfo, ImageTensorDataset, TextDataset
from slimbench.batching import device_batches
from slimbench.data.images import CIFAR_MEAN, CIFAR_STD
from slimbench.models import build_model
from slimbench.tasks import make_task
from slimbench.train import fit

REPO = Path(__file__).resolve().parents[1]
MINILM_SHAPE = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
                "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
                "num_labels": 2}
TINY_TEXT = {**MINILM_SHAPE, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 64}


class StepClock:
    """Marks the start of every step: CUDA events on a GPU (recorded, never waited for), the host clock on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.marks: list[Any] = []

    def mark(self) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def step_seconds(self, first: int) -> list[float]:
        """Gaps between consecutive marks from step ``first`` on (the last mark closes the last step)."""
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(self.marks[first:], self.marks[first + 1:])]
        return [b - a for a, b in zip(self.marks[first:], self.marks[first + 1:])]


def summary(seconds: list[float]) -> dict[str, float]:
    return {"steps_per_s": 1 / statistics.median(seconds), "mean_steps_per_s": len(seconds) / sum(seconds),
            "steps_timed": len(seconds)}


def text_setup(tiny: bool, data_root: Path, examples: int) -> tuple[Any, TextDataset, dict, DatasetInfo]:
    """SST-2 train sentences (or synthetic ones of similar lengths) and a WordPiece tokenizer trained on them."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    path = data_root / "glue" / "sst2" / "train.tsv"
    if path.exists():
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
        texts, labels = [r[1] for r in rows], [int(r[0]) for r in rows]
        source = f"<data root>/{path.relative_to(data_root)}"  # no machine path in a committed log
    else:
        rng = random.Random(0)
        words = [f"w{i}" for i in range(5000)]
        texts = [" ".join(rng.choices(words, k=rng.randint(2, 50))) for _ in range(20000)]
        labels, source = [rng.randint(0, 1) for _ in texts], "synthetic"
    vocab = 1000 if tiny else MINILM_SHAPE["vocab_size"]
    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=vocab, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    order = random.Random(1).sample(range(len(texts)), min(examples, len(texts)))
    data = TextDataset([texts[i] for i in order], [labels[i] for i in order])
    shape = TINY_TEXT if tiny else MINILM_SHAPE  # MiniLM's vocabulary size even where SST-2 yields fewer pieces
    spec = {"family": "hf_classifier", "config": {**shape, "vocab_size": max(shape["vocab_size"], len(tokenizer))}}
    info = DatasetInfo(f"sst2 sentences ({source})", "text_classification", "accuracy", 2)
    return tokenizer, data, spec, info


def image_setup(examples: int, size: int) -> tuple[ImageTensorDataset, DatasetInfo]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (examples, 3, size, size), dtype=torch.uint8, generator=generator)
    info = DatasetInfo("random 32px RGB", "image_classification", "accuracy", 10, 3, size, CIFAR_MEAN, CIFAR_STD, True)
    return ImageTensorDataset(images, torch.randint(0, 10, (examples,), generator=generator)), info


def catalog_model(name: str) -> dict[str, Any]:
    return yaml.safe_load((REPO / "config" / "catalog.yaml").read_text())["models"][name]


def bare_loop(model: nn.Module, task: Any, batches: list[Any], device: torch.device, lr: float,
              compile_mode: str | None, first: int) -> dict[str, float]:
    """The reference: nothing but the training step, on batches already on the device."""
    model.to(device).train()
    stepped = torch.compile(model, mode=None if compile_mode == "default" else compile_mode,
                            dynamic=False) if compile_mode else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=device.type == "cuda" or None)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(batch: Any) -> None:
        with autocast:
            loss = task.loss(task.logits(stepped, batch), batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    if compile_mode:  # compile every shape before the clock runs
        seen: dict[Any, Any] = {}
        for batch in batches:
            seen.setdefault(tuple(t.shape for t in tensors(batch)), batch)
        for batch in seen.values():
            step(batch)
    clock = StepClock(device)
    for batch in batches:
        clock.mark()
        step(batch)
    clock.mark()
    return summary(clock.step_seconds(first))


def tensors(batch: Any) -> list[torch.Tensor]:
    return list(batch.values()) if isinstance(batch, dict) else list(batch)


def harness(model: nn.Module, task: Any, data: Any, device: torch.device, recipe: dict, first: int) -> dict[str, float]:
    """``fit`` unchanged; a loss wrapper marks each step's start (it adds no work to the step)."""
    clock = StepClock(device)

    def loss_fn(m: nn.Module, batch: Any) -> torch.Tensor:
        clock.mark()
        return task.loss(task.logits(m, batch), batch)

    history = fit(model, task, data, device, recipe, seed=0, loss_fn=loss_fn, progress=False)
    clock.mark()  # after fit's last step: its epoch-end read of the losses has synchronized
    return {**summary(clock.step_seconds(first)), "final_loss": history["losses"][-1]}


def data_path(task: Any, data: Any, batch_size: int, device: torch.device, per_batch: bool) -> dict[str, float]:
    """Host seconds per training batch of the data path alone, no model: ``per_batch`` = the loop before
    this change (collate and ``to_device`` every batch: text tokenized per step); else fit's path now (set
    encoded once, outside the timing, then :func:`device_batches`)."""
    if per_batch:
        source = data.to(device) if hasattr(data, "to") else data
        start = time.perf_counter()
        count = sum(1 for b in task.loader(source, batch_size, shuffle=True, seed=0)
                    for _ in [task.to_device(b, device, train=True)])
    else:
        encoded = task.encode(data, device)
        encoded = encoded.to(device) if hasattr(encoded, "to") else encoded
        start = time.perf_counter()
        count = sum(1 for _ in device_batches(task, encoded, batch_size, 0, device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return {"ms_per_batch": (time.perf_counter() - start) / count * 1e3, "batches": count}


def run_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    tiny = args.tiny
    lr = {"text": 5e-5, "vit": 2e-3, "resnet": 4e-3}[name]
    batch_size = {"text": 64, "vit": 256, "resnet": 512}[name] // (8 if tiny else 1)
    steps = args.warmup + args.steps
    torch.manual_seed(0)
    if name == "text":
        tokenizer, data, spec, info = text_setup(tiny, args.data_root, steps * batch_size)
        task = make_task(info, tokenizer, max_length=128)
    else:
        data, info = image_setup(steps * batch_size, 32)
        task = make_task(info)
        spec = catalog_model("vit_tiny_p4" if name == "vit" else "resnet_small_cifar")
        if tiny:
            spec = {**spec, "embed_dim": 32, "depth": 2, "num_heads": 2} if name == "vit" else {**spec, "width": 8}
    template = build_model(spec, info, pretrained=False, download=False)
    recipe = {"epochs": 1, "batch_size": batch_size, "lr": lr, "weight_decay": 0.01, "grad_clip": 1.0}
    out: dict[str, Any] = {"benchmark": "throughput", "model": name, "batch_size": batch_size,
                           "params": sum(p.numel() for p in template.parameters()), "data": info.name,
                           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                           "torch": torch.__version__}
    fresh = lambda: copy.deepcopy(template)  # noqa: E731

    def staged(static_shapes: bool) -> list[Any]:
        """The batches of fit's first epoch (seed 0), through fit's own data path, made before any timing."""
        encoded = task.encode(data, device, static_shapes)
        encoded = encoded.to(device) if hasattr(encoded, "to") else encoded
        return list(device_batches(task, encoded, batch_size, 0, device))

    def measure(loop: str, run: Callable[[], dict[str, float]]) -> None:
        """One loop; its line is printed at once (a run cut short keeps what it measured), an error recorded."""
        start = time.perf_counter()
        try:
            out[loop] = run()
        except Exception as error:  # a loop that fails (e.g. a compiler error) must not lose the others
            out[loop] = {"error": f"{type(error).__name__}: {error}"[:500]}
        out[loop]["wall_s"] = round(time.perf_counter() - start, 1)
        print(json.dumps({"benchmark": "throughput", "model": name, "loop": loop, **out[loop]}), flush=True)

    if args.data_only:
        measure("data_per_batch_then", lambda: data_path(task, data, batch_size, device, per_batch=True))
        measure("data_per_batch_now", lambda: data_path(task, data, batch_size, device, per_batch=False))
        return out
    if not args.compiled_only:
        measure("harness", lambda: harness(fresh(), task, data, device, recipe, args.warmup))
        measure("bare", lambda: bare_loop(fresh(), task, staged(False), device, lr, None, args.warmup))
    modes = [m.split(":")[-1] for m in args.compile_modes if ":" not in m or m.startswith(name + ":")]
    if modes and name in args.compile_models:
        for mode in modes:
            measure(f"harness_compiled_{mode}", lambda: harness(fresh(), task, data, device,
                                                                {**recipe, "compile": mode}, args.warmup))
        batches = staged(True)
        measure("bare_static", lambda: bare_loop(fresh(), task, batches, device, lr, None, args.warmup))
        for mode in modes:
            measure(f"bare_compiled_{mode}", lambda: bare_loop(fresh(), task, batches, device, lr, mode, args.warmup))
    bare = out.get("bare", {}).get("steps_per_s")
    out["ratios"] = {f"{k}/bare": round(v["steps_per_s"] / bare, 3) for k, v in out.items()
                     if bare and isinstance(v, dict) and "steps_per_s" in v and k != "bare"}
    for a, b in [(f"{loop}_compiled_{m}", "harness" if loop == "harness" else "bare_static")
                 for m in modes for loop in ("harness", "bare")]:
        if "steps_per_s" in out.get(a, {}) and "steps_per_s" in out.get(b, {}):
            out["ratios"][f"{a}/{b}"] = round(out[a]["steps_per_s"] / out[b]["steps_per_s"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="text,vit,resnet")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--compile-modes", default="default",
                        help="torch.compile modes of the bare compiled loop, comma-separated; 'model:mode' for one "
                             "model only (e.g. vit:reduce-overhead); '' = no compiled loops")
    parser.add_argument("--compile-models", default="text,vit", help="models that also get the compiled loops")
    parser.add_argument("--compiled-only", action="store_true", help="only the loops of compile mode")
    parser.add_argument("--data-only", action="store_true", help="only the data path's host time per batch")
    parser.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--tiny", action="store_true", help="tiny models and batches, for a CPU run")
    parser.add_argument("--json", type=Path, help="also append each result line to this file")
    args = parser.parse_args()
    args.compile_modes = [m for m in args.compile_modes.split(",") if m]
    args.compile_models = args.compile_models.split(",")
    device = torch.device(args.device)
    for name in args.models.split(","):
        start = time.perf_counter()
        result = run_model(name, args, device)
        result["wall_s"] = round(time.perf_counter() - start, 1)
        line = json.dumps(result)
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as handle:
                handle.write(line + "\n")


if __name__ == "__main__":
    main()
