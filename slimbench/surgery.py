"""Structured surgery that really shrinks weights: keep a subset of MLP hidden neurons.

Transformer MLPs come in three spellings here: timm ``Mlp`` (fc1 -> act -> fc2), Hugging Face BERT
(``intermediate.dense`` -> act -> ``output.dense``) and gated Llama MLPs (``act(gate_proj) * up_proj`` ->
``down_proj``). :func:`find_mlps` returns all of them as one :class:`MLP` view, so a pruning criterion is
written once for every model family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn


@dataclass
class MLP:
    """A hidden layer: ``inputs`` produce the hidden neurons (rows), ``output`` consumes them (columns)."""

    name: str
    owner: nn.Module
    input_names: tuple[str, ...]
    output_name: str

    @property
    def inputs(self) -> list[nn.Linear]:
        return [self.owner.get_submodule(n) for n in self.input_names]

    @property
    def output(self) -> nn.Linear:
        return self.owner.get_submodule(self.output_name)

    @property
    def hidden(self) -> int:
        return self.output.in_features


MLP_PATTERNS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("fc1",), "fc2"),  # timm Mlp, and the project's own models
    (("gate_proj", "up_proj"), "down_proj"),  # Llama-family gated MLP
    (("intermediate.dense",), "output.dense"),  # BERT-family layer
)


def _linear(module: nn.Module, path: str) -> nn.Linear | None:
    try:
        found = module.get_submodule(path)
    except AttributeError:
        return None
    return found if isinstance(found, nn.Linear) else None


def find_mlps(model: nn.Module) -> list[MLP]:
    """Every MLP in module order (one per transformer block)."""
    found = []
    for name, module in model.named_modules():
        for inputs, output in MLP_PATTERNS:
            if all(_linear(module, p) is not None for p in (*inputs, output)):
                found.append(MLP(name, module, inputs, output))
                break
    return found


def slice_linear(linear: nn.Linear, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new Linear holding the chosen output rows / input columns of ``linear`` (same dtype, device)."""
    weight = linear.weight.detach()
    bias = linear.bias.detach() if linear.bias is not None else None
    if rows is not None:
        weight = weight[rows]
        bias = bias[rows] if bias is not None else None
    if cols is not None:
        weight = weight[:, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def set_submodule(owner: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    setattr(owner.get_submodule(parent_path) if parent_path else owner, name, module)


def keep_mlp_neurons(mlp: MLP, keep: Sequence[int] | torch.Tensor, output_weight: torch.Tensor | None = None,
                     output_bias: torch.Tensor | None = None) -> None:
    """Keep only hidden neurons ``keep`` (sorted); optionally replace the output layer's weight/bias
    (a correction such as STAT's interpolation matrix folded into the next layer)."""
    index = torch.as_tensor(keep, dtype=torch.long, device=mlp.output.weight.device).sort().values
    for name in mlp.input_names:
        set_submodule(mlp.owner, name, slice_linear(mlp.owner.get_submodule(name), rows=index))
    new_out = slice_linear(mlp.output, cols=index)
    with torch.no_grad():
        if output_weight is not None:
            new_out.weight.copy_(output_weight)
        if output_bias is not None:
            new_out.bias.copy_(output_bias)
    set_submodule(mlp.owner, mlp.output_name, new_out)


def kept_count(hidden: int, ratio_removed: float) -> int:
    """Neurons left after removing ``ratio_removed`` of ``hidden`` (at least one)."""
    return max(1, hidden - int(round(hidden * ratio_removed)))
