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

from slimbench.stages import Param


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


def replace_output(owner: nn.Module, path: str, cols: torch.Tensor, weight: torch.Tensor | None = None,
                   bias: torch.Tensor | None = None) -> None:
    """Keep the consuming layer's input columns ``cols``; optionally overwrite its weight and bias with a
    correction computed for the kept units (e.g. STAT's interpolation matrix folded in)."""
    new = slice_linear(owner.get_submodule(path), cols=cols)
    with torch.no_grad():
        if weight is not None:
            new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    set_submodule(owner, path, new)


def keep_mlp_neurons(mlp: MLP, keep: Sequence[int] | torch.Tensor, output_weight: torch.Tensor | None = None,
                     output_bias: torch.Tensor | None = None) -> None:
    """Keep only hidden neurons ``keep`` (sorted); optionally replace the output layer's weight/bias
    (a correction such as STAT's interpolation matrix folded into the next layer)."""
    index = torch.as_tensor(keep, dtype=torch.long, device=mlp.output.weight.device).sort().values
    for name in mlp.input_names:
        set_submodule(mlp.owner, name, slice_linear(mlp.owner.get_submodule(name), rows=index))
    replace_output(mlp.owner, mlp.output_name, index, output_weight, output_bias)


def kept_count(hidden: int, ratio_removed: float) -> int:
    """Neurons left after removing ``ratio_removed`` of ``hidden`` (at least one)."""
    return max(1, hidden - int(round(hidden * ratio_removed)))


# ----------------------------------------------------------------------------------------------------------
# Attention heads
# ----------------------------------------------------------------------------------------------------------
# Three spellings: Hugging Face BERT (``self.query/key/value`` + ``output.dense``), Llama-family
# (``q_proj/k_proj/v_proj/o_proj``, possibly with grouped key/value heads) and timm ``Attention`` (one fused
# ``qkv`` whose rows are laid out [q | k | v] x heads x head_dim, then ``proj``). :func:`find_attentions`
# returns them as one :class:`Attention` view; :func:`keep_heads` really shrinks the projections.


@dataclass
class Attention:
    """One multi-head attention: ``heads`` query heads of ``head_dim``; ``kv_heads`` key/value heads."""

    name: str
    owner: nn.Module
    kind: str  # "bert" | "llama" | "timm"

    @property
    def output_name(self) -> str:
        return {"bert": "output.dense", "llama": "o_proj", "timm": "proj"}[self.kind]

    @property
    def output(self) -> nn.Linear:
        """The projection that consumes the concatenated head outputs (columns = heads x head_dim)."""
        return self.owner.get_submodule(self.output_name)

    @property
    def head_dim(self) -> int:
        if self.kind == "bert":
            return self.owner.self.attention_head_size
        return self.owner.head_dim

    @property
    def heads(self) -> int:
        return self.output.in_features // self.head_dim

    @property
    def kv_heads(self) -> int:
        return self.owner.k_proj.out_features // self.head_dim if self.kind == "llama" else self.heads

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 unless grouped-query attention)."""
        return self.heads // self.kv_heads

    @property
    def embed_dim(self) -> int:
        return self.output.out_features


def _attention_kind(module: nn.Module) -> str | None:
    if all(_linear(module, p) is not None for p in ("self.query", "self.key", "self.value", "output.dense")) \
            and hasattr(module.self, "attention_head_size"):
        return "bert"
    if all(_linear(module, p) is not None for p in ("q_proj", "k_proj", "v_proj", "o_proj")) \
            and hasattr(module, "head_dim"):
        return "llama"
    if all(_linear(module, p) is not None for p in ("qkv", "proj")) and hasattr(module, "num_heads") \
            and hasattr(module, "head_dim"):
        return "timm"
    return None


def find_attentions(model: nn.Module) -> list[Attention]:
    """Every supported multi-head attention in module order (one per transformer block)."""
    found = []
    for name, module in model.named_modules():
        kind = _attention_kind(module)
        if kind is not None:
            found.append(Attention(name, module, kind))
    return found


def head_columns(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Feature indices (rows of a q/k/v projection, columns of the output projection) of ``heads``."""
    return (heads.view(-1, 1) * head_dim + torch.arange(head_dim, device=heads.device)).flatten()


# timm Attention attributes that keep_heads knows how to update; any other parameter is refused.
TIMM_KNOWN_PARAMS = ("qkv.", "proj.", "q_norm.", "k_norm.", "gate.")


def _check_timm(attn: Attention) -> None:
    module = attn.owner
    unknown = [n for n, _ in module.named_parameters() if not n.startswith(TIMM_KNOWN_PARAMS)]
    if unknown or not isinstance(getattr(module, "norm", nn.Identity()), nn.Identity):
        extra = unknown or ["norm (scale_norm over all heads)"]
        raise NotImplementedError(f"keep_heads: timm attention '{attn.name}' ({type(module).__name__}) has per-head "
                                  f"state it cannot slice: {extra}. Only plain ViT Attention is supported.")


def _kept_kv_groups(attn: Attention, heads: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention: the kept query heads must be whole groups; returns the kept kv heads."""
    size = attn.group_size
    groups = torch.unique(heads // size)
    if len(heads) != len(groups) * size:
        raise ValueError(f"keep_heads: '{attn.name}' uses grouped-query attention ({attn.heads} query heads, "
                         f"{attn.kv_heads} key/value heads): keep whole groups of {size} query heads "
                         f"(heads g*{size}..g*{size}+{size - 1}), got {heads.tolist()}.")
    return groups


def keep_heads(attn: Attention, heads: Sequence[int] | torch.Tensor, output_weight: torch.Tensor | None = None,
               output_bias: torch.Tensor | None = None) -> None:
    """Keep only the query heads ``heads`` (sorted, at least one); optionally replace the output projection's
    weight ``(embed_dim, len(heads) * head_dim)`` and bias (a correction such as STAT's, folded in).

    Grouped-query Llama attention: ``heads`` must be whole groups (their key/value heads are kept with them).
    """
    device = attn.output.weight.device
    index = torch.unique(torch.as_tensor(heads, dtype=torch.long, device=device))
    if len(index) == 0 or index.min() < 0 or index.max() >= attn.heads:
        raise ValueError(f"keep_heads: '{attn.name}' has {attn.heads} heads; keep at least one valid head, "
                         f"got {list(heads) if not isinstance(heads, torch.Tensor) else heads.tolist()}.")
    d = attn.head_dim
    cols = head_columns(index, d)
    module = attn.owner
    if attn.kind == "bert":
        for name in ("self.query", "self.key", "self.value"):
            set_submodule(module, name, slice_linear(module.get_submodule(name), rows=cols))
        module.self.num_attention_heads = len(index)
        module.self.all_head_size = len(index) * d
    elif attn.kind == "llama":
        kv_cols = head_columns(_kept_kv_groups(attn, index), d)
        set_submodule(module, "q_proj", slice_linear(module.q_proj, rows=cols))
        set_submodule(module, "k_proj", slice_linear(module.k_proj, rows=kv_cols))
        set_submodule(module, "v_proj", slice_linear(module.v_proj, rows=kv_cols))
    else:
        _check_timm(attn)
        width = attn.heads * d
        rows = torch.cat([cols + part * width for part in range(3)])
        set_submodule(module, "qkv", slice_linear(module.qkv, rows=rows))
        if getattr(module, "gate", None) is not None:
            set_submodule(module, "gate", slice_linear(module.gate, rows=cols))
        module.num_heads = len(index)
        if hasattr(module, "attn_dim"):
            module.attn_dim = len(index) * d
    replace_output(module, attn.output_name, cols, output_weight, output_bias)


# Prunable units and their FLOPs: the currency of FLOPs-budget pruning (STAT and its magnitude baseline).
FLOPS_RATIO = Param("ratio", float, 0.4, 0.0, 1.0, high_open=True,
              help="share of the attention-head and MLP-neuron FLOPs removed (0 = unchanged)")
SEQ_LEN = Param("seq_len", int, 128, 1, None, help="sequence length at which attention FLOPs are counted")


@dataclass
class Component:
    """One prunable layer: ``units`` groups of ``width`` columns of ``Z``, each costing ``unit_flops`` per token.

    A unit is an MLP neuron (width 1) or an attention head; with grouped-query attention a unit is one
    key/value head together with its query heads (they can only go together).
    """

    path: str
    view: MLP | Attention

    @property
    def is_attention(self) -> bool:
        return isinstance(self.view, Attention)

    @property
    def width(self) -> int:
        return self.view.head_dim * self.view.group_size if self.is_attention else 1

    @property
    def units(self) -> int:
        return self.view.kv_heads if self.is_attention else self.view.hidden

    def unit_flops(self, seq_len: int) -> int:
        """Multiply-adds x 2 per token. A neuron: its input row(s) and output column. A head group of g query
        heads: q and o projections (2g), its k and v (2), and the scores and weighted sum over ``seq_len``."""
        d_model = self.view.embed_dim if self.is_attention else self.view.output.out_features
        if not self.is_attention:
            return 2 * d_model * (len(self.view.input_names) + 1)
        g, d = self.view.group_size, self.view.head_dim
        return 2 * d_model * d * (2 * g + 2) + 4 * seq_len * d * g


def components(model: nn.Module) -> list[Component]:
    """Every attention and MLP in network order (an attention's output comes before its block's MLP output)."""
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    found = [Component(f"{v.name}.{v.output_name}".lstrip("."), v) for v in (*find_attentions(model), *find_mlps(model))]
    if not found:
        raise ValueError("STAT found no attention or MLP layers it can prune in this model.")
    return sorted(found, key=lambda c: order[c.path])


def prunable_flops(parts: list[Component], kept: list[int], seq_len: int) -> int:
    return sum(k * c.unit_flops(seq_len) for c, k in zip(parts, kept))
