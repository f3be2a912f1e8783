"""The one training loop: base training, fine-tuning and every recovery/distillation stage use it.

AdamW (or SGD) with a one-cycle/cosine schedule, bf16 autocast on CUDA, gradient clipping, a tqdm bar,
and a resume file after every epoch but the last (the model is saved next) so a killed run continues from its
last finished epoch. A step does no host work and reads nothing back from the device (batches:
:mod:`slimbench.batching`; losses are read once per epoch), so the host queues work ahead of the GPU.
``compile`` in the recipe runs the model's forward and backward through ``torch.compile`` (opt-in;
``benchmarks/throughput.py`` measures both modes on the same batches).
"""

from __future__ import annotations

import logging
import math
import os
import random
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from slimbench.atomic import atomic_target
from slimbench.batching import device_batches
from slimbench.errors import ConfigError

LossFn = Callable[[nn.Module, Any], torch.Tensor]
RECIPE_KEYS = {"epochs", "batch_size", "lr", "weight_decay", "optimizer", "schedule", "warmup", "grad_clip",
               "max_steps", "eval_batch_size", "betas", "compile"}
# compile: false = eager; true = torch.compile's default mode; or one of its modes by name
# ("reduce-overhead" adds CUDA graphs).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def check_recipe(recipe: dict[str, Any], where: str) -> None:
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown training option(s) {sorted(unknown)}. Known: {sorted(RECIPE_KEYS)}.")
    if recipe.get("epochs", 1) < 0 or recipe.get("batch_size", 1) <= 0 or recipe.get("lr", 1.0) <= 0:
        raise ConfigError(f"{where}: epochs must be >= 0, batch_size and lr > 0 (got {recipe}).")
    if recipe.get("optimizer", "adamw") not in ("adamw", "sgd"):
        raise ConfigError(f"{where}: optimizer must be adamw or sgd.")
    if recipe.get("schedule", "onecycle") not in ("onecycle", "cosine", "constant"):
        raise ConfigError(f"{where}: schedule must be onecycle, cosine or constant.")
    setting = recipe.get("compile", False)
    if not isinstance(setting, bool) and setting not in COMPILE_MODES:
        raise ConfigError(f"{where}: compile must be true, false or one of {list(COMPILE_MODES)} (got {setting!r}).")


def make_optimizer(model: nn.Module, recipe: dict[str, Any]) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.get("weight_decay", 0.05)},
              {"params": no_decay, "weight_decay": 0.0}]
    if recipe.get("optimizer", "adamw") == "sgd":
        return torch.optim.SGD(groups, lr=recipe["lr"], momentum=0.9, nesterov=True)
    fused = all(p.is_cuda for group in groups for p in group["params"])
    betas = tuple(recipe.get("betas", (0.9, 0.999)))  # AdamW's defaults unless a recipe names others
    return torch.optim.AdamW(groups, lr=recipe["lr"], betas=betas, fused=fused or None)


def lr_factor(step: int, total: int, schedule: str, warmup: float) -> float:
    warm = max(1, int(total * warmup))
    if schedule == "constant":
        return 1.0
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def step_module(model: nn.Module, setting: bool | str) -> nn.Module:
    """What each step calls: the model (eager) or ``torch.compile``'s wrapper, which shares its parameters
    (state dicts and checkpoints stay the model's own). Static shapes (``dynamic=False``): batch lengths come
    in a few buckets, so each shape gets its own kernels rather than slower shape-generic ones."""
    if setting is False:
        return model
    return torch.compile(model, mode=None if setting in (True, "default") else setting, dynamic=False)


def fit(model: nn.Module, task: Any, train_set: Any, device: torch.device, recipe: dict[str, Any], seed: int,
        loss_fn: Optional[LossFn] = None, resume: Optional[Path] = None, progress: bool = True,
        desc: str = "train") -> dict[str, Any]:
    """Train ``model`` in place; returns the loss history (per step and per-epoch means). ``loss_fn(model,
    batch)`` overrides the task loss."""
    epochs, batch_size = recipe.get("epochs", 1), recipe.get("batch_size", 64)
    if epochs == 0 or len(train_set) == 0:
        return {"losses": [], "epoch_losses": [], "steps": 0}
    seed_everything(seed)
    model.to(device).train()
    compile_setting = recipe.get("compile", False)
    train_set = task.encode(train_set, device, static_shapes=compile_setting is not False)
    if hasattr(train_set, "to"):
        train_set = train_set.to(device)  # small in-memory sets live on the device: no copy per step
    optimizer = make_optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(train_set) / batch_size)
    total = min(steps_per_epoch * epochs, recipe.get("max_steps") or 10**12)
    schedule = recipe.get("schedule", "onecycle")
    warmup = recipe.get("warmup", 0.1 if schedule == "onecycle" else 0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, schedule, warmup))
    loss_fn = loss_fn or (lambda m, b: task.loss(task.logits(m, b), b))
    stepped = step_module(model, compile_setting)
    clip = recipe.get("grad_clip", 1.0)
    parameters = [p for p in model.parameters() if p.requires_grad]
    history: dict[str, Any] = {"losses": [], "epoch_losses": [], "steps": 0}
    start_epoch = 0
    if resume is not None and resume.exists():
        saved = torch.load(resume, map_location=device, weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        history, start_epoch = {"epoch_losses": [], **saved["history"]}, saved["epoch"]
        torch.set_rng_state(saved["rng"].cpu())  # augmentation draws continue where they stopped
        logging.getLogger("slimbench").info("%s: resumed from %s after epoch %d of %d (step %d)", desc, resume,
                                            start_epoch, epochs, history["steps"])
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    bar = tqdm(total=total, initial=history["steps"], desc=desc, disable=not progress, dynamic_ncols=True)
    for epoch in range(start_epoch, epochs):
        model.train()
        losses = []  # kept on the device; read once per epoch so the GPU never waits for the host
        for batch in device_batches(task, train_set, batch_size, seed * 1000 + epoch, device):
            if history["steps"] >= total:
                break
            with autocast:
                loss = loss_fn(stepped, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip:
                nn.utils.clip_grad_norm_(parameters, clip)
            optimizer.step()
            scheduler.step()
            history["steps"] += 1
            losses.append(loss.detach())
            bar.update(1)
        if losses:
            history["losses"] += torch.stack(losses).float().cpu().tolist()
            history["epoch_losses"].append(sum(history["losses"][-len(losses):]) / len(losses))
            bar.set_postfix(loss=f"{history['losses'][-1]:.4f}", epoch=epoch)
        if resume is not None and epoch + 1 < epochs and history["steps"] < total:  # the last: saved by the caller
            with atomic_target(resume) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch + 1,
                            "rng": torch.get_rng_state()}, tmp)
    bar.close()
    if resume is not None and resume.exists():
        resume.unlink()
    model.eval()
    return history
