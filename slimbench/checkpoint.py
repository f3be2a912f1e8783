"""Save and reload (possibly shrunk or quantized) models as safetensors plus a small JSON; never pickle.

``arch.json`` holds what rebuilds the module tree: the model spec (with e.g. a Hugging Face config), the
dataset info, the stages applied (replayed through their ``rebuild``/``finalize`` hooks), and every module's
simple attributes (``num_heads``, ``out_features``, ...). Tensor shapes come from the safetensors file, so a
pruned model reloads as the smaller model it is, not as a mask. Quantized tensor subclasses (torchao) are
stored as their integer codes and scales, so the file is really smaller.

A saved folder is complete or absent: it is written under a temporary name unique to the process and renamed
into place, with ``arch.json`` (which carries the weights' SHA-256) written last. Reading verifies that
checksum and accepts from ``arch.json`` only registered model families and their options, never an option that
would load code from a model folder (``trust_remote_code``, ``auto_map``), and rebuilds Hugging Face models
from their saved config of a built-in ``model_type`` only, so no folder on disk is consulted.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from slimbench.data import DatasetInfo
from slimbench.errors import DataNotFoundError, UnsafeInputError
from slimbench.integrity import corrupt, file_sha256
from slimbench.models import MODELS, build_model
from slimbench.models.text import REMOTE_CODE_KEYS
from slimbench.stages import STAGES

WEIGHTS, ARCH = "model.safetensors", "arch.json"
WEIGHTS_SHA = "weights_sha256"
HF_FAMILIES = frozenset({"hf_classifier", "hf_causal_lm"})
# Families whose builder forwards extra options to a library constructor that runs no code from files (timm).
PASS_THROUGH_FAMILIES = frozenset({"timm"})
SIMPLE = (int, float, bool, str, type(None))
PACK_SEP = "::"


def module_attributes(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Every module's plain attributes (numbers, strings, tuples of numbers) by module path."""
    found: dict[str, dict[str, Any]] = {}
    for path, module in model.named_modules():
        attrs = {}
        for key, value in vars(module).items():
            if key.startswith("_") or key == "training":
                continue
            if isinstance(value, SIMPLE) or (isinstance(value, (tuple, list)) and all(isinstance(v, SIMPLE) for v in value)):
                attrs[key] = list(value) if isinstance(value, tuple) else value
        if attrs:
            found[path] = attrs
    return found


def restore_attributes(model: nn.Module, saved: dict[str, dict[str, Any]]) -> None:
    modules = dict(model.named_modules())
    for path, attrs in saved.items():
        module = modules.get(path)
        if module is None:
            continue
        for key, value in attrs.items():
            current = getattr(module, key, None)
            setattr(module, key, tuple(value) if isinstance(current, tuple) and isinstance(value, list) else value)


def pack(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str], dict[str, str]]:
    """Split quantized subclasses into plain tensors and drop aliases (tied weights) for safetensors."""
    flat, packed, aliases, seen = {}, {}, {}, {}
    for key, tensor in state.items():
        if type(tensor) not in (torch.Tensor, nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
            names, _ = tensor.__tensor_flatten__()
            if not {"qdata", "scale"} <= set(names):
                raise TypeError(f"cannot save '{key}': {type(tensor).__name__} is not an int8 affine tensor")
            for name in names:
                inner = getattr(tensor, name)
                if inner is not None:
                    flat[f"{key}{PACK_SEP}{name}"] = inner.detach().contiguous().cpu()
            packed[key] = type(tensor).__name__
            continue
        tensor = tensor.detach()
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))
        if tensor.numel() and ident in seen:
            aliases[key] = seen[ident]
            continue
        seen[ident] = key
        flat[key] = tensor.contiguous().cpu()
    return flat, packed, aliases


def unpack(flat: dict[str, torch.Tensor], packed: dict[str, str], aliases: dict[str, str]) -> dict[str, torch.Tensor]:
    """Dequantize packed tensors (w = (q - zero_point) * scale) and restore aliases."""
    state = {k: v for k, v in flat.items() if PACK_SEP not in k}
    for key in packed:
        q = flat[f"{key}{PACK_SEP}qdata"].float()
        zero = flat.get(f"{key}{PACK_SEP}zero_point")
        state[key] = (q - (zero.float() if zero is not None else 0.0)) * flat[f"{key}{PACK_SEP}scale"].float()
    for key, target in aliases.items():
        state[key] = state[target]
    return state


def resize_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every parameter/buffer the saved shape and dtype (structured pruning changed them)."""
    for key, value in state.items():
        owner_path, _, name = key.rpartition(".")
        owner = model.get_submodule(owner_path) if owner_path else model
        current = getattr(owner, name, None)
        if not isinstance(current, torch.Tensor) or current.shape == value.shape:
            continue
        fresh = torch.empty(value.shape, dtype=current.dtype, device=current.device)
        if isinstance(current, nn.Parameter):
            setattr(owner, name, nn.Parameter(fresh, requires_grad=current.requires_grad))
        else:
            owner.register_buffer(name, fresh)


def remote_code_keys(value: Any) -> list[str]:
    """Every key of REMOTE_CODE_KEYS anywhere in a nested spec."""
    if isinstance(value, dict):
        return [k for k in value if k in REMOTE_CODE_KEYS] + [f for v in value.values() for f in remote_code_keys(v)]
    if isinstance(value, list):
        return [f for v in value for f in remote_code_keys(v)]
    return []


def check_spec(spec: Any, where: str) -> None:
    """Accept a model spec only if it names a registered family with that family's options and nothing that
    would run code from a folder; Hugging Face models must carry a config of a built-in model type."""
    if not isinstance(spec, dict) or not isinstance(spec.get("family"), str):
        raise UnsafeInputError(f"{where}: the model spec must be an object with a 'family', got {spec!r}.")
    found = remote_code_keys(spec)
    if found:
        raise UnsafeInputError(f"{where}: option(s) {sorted(set(found))} would run code from a model folder and are "
                               f"never accepted. Fix: remove them; only transformers' built-in architectures load.")
    build = MODELS.get(spec["family"]).build
    named = {n for n, p in inspect.signature(build).parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    unknown = set(spec) - {"family"} - named - {"info", "pretrained", "download"}
    if unknown and spec["family"] not in PASS_THROUGH_FAMILIES | HF_FAMILIES:
        raise UnsafeInputError(f"{where}: unknown option(s) {sorted(unknown)} for model family '{spec['family']}'.")
    if spec["family"] in HF_FAMILIES:
        from transformers import CONFIG_MAPPING  # imported here: 0.6 s that reading a config never needs

        config = spec.get("config")
        if not isinstance(config, dict) or config.get("model_type") not in CONFIG_MAPPING:
            raise UnsafeInputError(f"{where}: a saved {spec['family']} model needs 'config' with a built-in "
                                   f"'model_type' (got {config.get('model_type') if isinstance(config, dict) else None!r}); "
                                   f"it is never rebuilt from a folder.")


def save_model(model: nn.Module, directory: Path, spec: dict[str, Any], info: DatasetInfo,
               stages: list[dict[str, Any]], extra: dict[str, dict[str, Any]] | None = None) -> None:
    """Write ``directory`` atomically: a temporary sibling unique to this process is filled (weights, then the
    ``extra`` JSON files, then ``arch.json`` with the weights' checksum) and renamed into place when complete."""
    directory = Path(directory)
    tmp = directory.with_name(f".{directory.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        flat, packed, aliases = pack(model.state_dict())
        save_file(flat, str(tmp / WEIGHTS))
        for name, record in (extra or {}).items():
            (tmp / name).write_text(json.dumps(record, indent=1, default=str))
        arch = {"model": spec, "dataset": info.to_dict(), "stages": stages, "packed": packed, "aliases": aliases,
                "attributes": module_attributes(model), WEIGHTS_SHA: file_sha256(tmp / WEIGHTS)}
        (tmp / ARCH).write_text(json.dumps(arch, indent=1, default=str))
        shutil.rmtree(directory, ignore_errors=True)
        os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_saved(directory: Path) -> bool:
    """Whether a complete saved model is there (``arch.json`` is written last; checksums are checked on load)."""
    return (Path(directory) / ARCH).is_file()


def read_arch(directory: Path) -> dict[str, Any]:
    """``arch.json`` checked for integrity and safety; a garbled folder is moved aside for rebuilding."""
    directory = Path(directory)
    if not is_saved(directory):
        raise DataNotFoundError(f"no saved model in '{directory}' ({ARCH} missing). Fix: build it first (snakemake "
                                f"or 'slimbench run' on its experiment folder).")
    try:
        arch = json.loads((directory / ARCH).read_text())
        if not isinstance(arch, dict) or not {"model", "dataset", "stages", "packed", "aliases"} <= set(arch):
            raise ValueError("fields missing")
    except (ValueError, UnicodeDecodeError) as error:
        raise corrupt(directory, f"unreadable {ARCH}: {str(error).splitlines()[0]}", "saved model") from None
    check_spec(arch["model"], f"saved model '{directory}'")
    expected = arch.get(WEIGHTS_SHA)
    if expected is not None and (not (directory / WEIGHTS).is_file() or file_sha256(directory / WEIGHTS) != expected):
        raise corrupt(directory, f"{WEIGHTS} does not match the checksum in {ARCH}", "saved model")
    return arch


def replay(model: nn.Module, stages: list[dict[str, Any]], hook: str) -> nn.Module:
    for applied in stages:
        fn = getattr(STAGES.get(applied["name"]), hook)
        if fn is not None:
            model = fn(model, **applied["params"])
    return model


def load_model(directory: Path, device: torch.device | str = "cpu", finalize: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the architecture offline, restore shapes, attributes and weights, then finalize stages.

    ``finalize=False`` returns the float model before e.g. int8 packing: the same architecture and
    arithmetic, which is what FLOPs are counted on (bit widths are accounted for separately).
    """
    directory = Path(directory)
    arch = read_arch(directory)
    info = DatasetInfo(**arch["dataset"])
    model = build_model(arch["model"], info, pretrained=False, download=False)
    model = replay(model, arch["stages"], "rebuild")
    try:
        flat = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError) as error:  # a folder saved before checksums existed
        raise corrupt(directory, f"unreadable {WEIGHTS}: {error}", "saved model") from None
    state = unpack(flat, arch["packed"], arch["aliases"])
    resize_to_state(model, state)
    restore_attributes(model, arch["attributes"])
    model.load_state_dict(state, strict=True)
    if finalize:
        model = replay(model, arch["stages"], "finalize")
        restore_packed(model, flat, arch["packed"])
    return model.to(device).eval(), arch


def restore_packed(model: nn.Module, flat: dict[str, torch.Tensor], packed: dict[str, str]) -> None:
    """Put the saved integer codes and scales back into the re-quantized tensors, bit for bit
    (re-quantizing dequantized weights can move a code by one step)."""
    for key in packed:
        owner_path, _, name = key.rpartition(".")
        tensor = getattr(model.get_submodule(owner_path) if owner_path else model, name)
        for inner in tensor.__tensor_flatten__()[0]:
            saved = flat.get(f"{key}{PACK_SEP}{inner}")
            if saved is not None:
                getattr(tensor, inner).copy_(saved)

