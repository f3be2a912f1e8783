"""Kwon et al. 2022: retraining-free structured pruning of heads and MLP neurons under a FLOPs budget.

Kwon, Kim, Mahoney, Hassoun, Keutzer and Gholami, "A Fast Post-Training Pruning Framework for Transformers"
(NeurIPS 2022, arXiv 2204.09656); the comparator of STAT (``methods/stat.py``). Every head and MLP neuron
gets a mask variable ``m`` (1 = kept) that multiplies its output where it enters the output projection
(``W_O`` / ``W2``), through forward pre-hooks (transformers 5 has no head-mask argument). Three steps on a
small sample of training examples (the paper: 2K; the authors' default ``--num_samples 2048``):

1. Fisher-based mask search (Sec. 4.1). The loss increase of zeroing masks is approximated to second order
   by the empirical Fisher ``I = 1/|D| sum_j g_j g_j^T``, ``g_j = dL(x_j, y_j)/dm`` at ``m = 1``; with its
   diagonal, removing unit ``i`` costs ``I_ii``. Algorithm 1: heads and neurons are each ranked globally by
   ``I_ii``; for every number of kept heads, the most important neurons fill what is left of the FLOPs budget,
   and the pair with the largest kept importance wins.
2. Mask rearrangement (Sec. 4.2). Per layer, with the number pruned from step 1 fixed, the block-diagonal
   Fisher ``I_l`` replaces its diagonal: minimize ``(1-m)^T I_l (1-m) = ||sum_{i pruned} g_i||^2 / |D|`` by
   greedy swaps, candidates taken in ascending ``I_ii``.
3. Mask tuning (Sec. 4.3). Layer by layer in network order, the kept masks are real numbers fitted by linear
   least squares so that the pruned layer's output on the pruned model's input reconstructs the original
   layer's output on the original input, residual included: ``min_m ||x' + layer(x'; m) - (x + layer(x; 1))||``.
   The paper solves it with LSMR; here its normal equations are solved directly in float64 with a ridge
   term ``damping * mean(diag A^T A) * ||m - 1||^2`` (what LSMR's ``damp`` adds, pulling toward ``m = 1``).
   The fitted ``m`` is folded into the kept columns of the output projection, so no extra parameter remains.

The loss is the task's training loss (cross-entropy with the sample's labels for classifiers, as in the
paper; next-token cross-entropy for causal LMs). Per-example gradients come from one backward pass per batch:
each example gets its own copy of the masks, and since the task loss is a mean of equally weighted examples
(sentences, images, equal-length token blocks), ``g_j = batch_size * dL_batch/dm_j``.

Authors' code: github.com/WoosukKwon/retraining-free-pruning at 806ac5a6 (no license: read for
understanding, nothing copied). Differences, and what could not be checked:

* The full paper text was not available offline; section numbers follow the arXiv version as recalled, and
  the FLOPs model is the project's (``slimbench.surgery``: STAT's budget meaning, heads counted at
  ``seq_len``), not the paper's MAC formula (the same terms up to the factor 2).
* Per-example Fisher, as the paper defines it; the authors' code squares gradients of 32-example batches.
* Every layer keeps at least one head and one neuron (the pruned model must stay a valid module); the paper
  may remove whole layers. The unit with the largest ``I_ii`` of each layer is kept first.
* Mask tuning reconstructs against the unpruned model; the authors' code uses an intermediate, less pruned
  teacher mask, skips the first layer's attention, fits only the [CLS] token in the last classifier layer
  and stops tuning at the first fit outside [-10, 10]. Here a fit that is not finite or leaves [-10, 10]
  leaves that layer's masks at 1 and the next layers are still tuned.
* Grouped-query attention: a unit is one key/value head with its query heads (they only go together).
* The latency-constrained search (the paper's second constraint) is not implemented.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from methods.stat import calibration, token_rows
from slimbench.stages import Context, Param, applies_to, removes_value, stage
from slimbench.surgery import (FLOPS_RATIO, SEQ_LEN, Component, components, head_columns, keep_heads,
                               keep_mlp_neurons, prunable_flops)


def attention_mask(batch: Any) -> torch.Tensor | None:
    return batch.get("attention_mask") if isinstance(batch, dict) else None


# --------------------------------------------------------------------------------------------------------
# Step 1: per-example mask gradients, the Fisher information and the FLOPs-constrained search
# --------------------------------------------------------------------------------------------------------
def mask_gradients(model: nn.Module, parts: list[Component], batches: list[Any], ctx: Context) -> list[torch.Tensor]:
    """``dL(x_j, y_j)/dm`` at ``m = 1`` for every example ``j`` and unit, ``(examples, units)`` per component.

    A pre-hook on each output projection multiplies its input, grouped into units of ``width`` columns, by an
    (examples x units) tensor of ones that requires grad; the weights themselves are frozen meanwhile.
    """
    masks: list[torch.Tensor | None] = [None] * len(parts)

    def hook(i: int, units: int) -> Any:
        def apply(module: nn.Module, args: tuple) -> tuple:
            x = args[0]
            masks[i] = torch.ones(x.shape[0], units, device=x.device, requires_grad=True)
            scale = masks[i].to(x.dtype).view(x.shape[0], *([1] * (x.dim() - 2)), units, 1)
            return ((x.unflatten(-1, (units, -1)) * scale).flatten(-2), *args[1:])
        return apply

    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    handles = [p.view.output.register_forward_pre_hook(hook(i, p.units)) for i, p in enumerate(parts)]
    grads: list[list[torch.Tensor]] = [[] for _ in parts]
    model.eval()
    try:
        with torch.enable_grad():
            for batch in batches:
                loss = ctx.task.loss(ctx.task.logits(model, batch).float(), batch)
                for store, mask, grad in zip(grads, masks, torch.autograd.grad(loss, masks)):
                    store.append((grad * mask.shape[0]).float().cpu())
    finally:
        for handle in handles:
            handle.remove()
        for p in trainable:
            p.requires_grad_(True)
    return [torch.cat(g) for g in grads]


def fisher_diagonal(grads: torch.Tensor) -> torch.Tensor:
    """``I_ii = 1/|D| sum_j g_ji^2``: the loss increase (x2) of removing unit ``i`` alone (Sec. 4.1)."""
    return grads.double().pow(2).mean(0)


def ranking(parts: list[Component], fisher: list[torch.Tensor], members: list[int], seq_len: int
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One kind of unit (heads or neurons) of all layers, most important first, each layer's best unit
    ahead of all others (every layer keeps one). Returns (component, unit) of each rank and the cumulative
    FLOPs and importance of the first k ranks (k = 0..n)."""
    zero = torch.zeros(1, dtype=torch.float64)
    if not members:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), zero, zero
    owner, unit, score, cost, key = [], [], [], [], []
    for i in members:
        units = parts[i].units
        importance = fisher[i].cpu()
        owner.append(torch.full((units,), i))
        unit.append(torch.arange(units))
        score.append(importance)
        cost.append(torch.full((units,), float(parts[i].unit_flops(seq_len)), dtype=torch.float64))
        key.append(importance.clone().index_fill_(0, importance.argmax().view(1), torch.inf))
    order = torch.cat(key).argsort(descending=True, stable=True)
    return (torch.cat(owner)[order], torch.cat(unit)[order], torch.cat([zero, torch.cat(cost)[order].cumsum(0)]),
            torch.cat([zero, torch.cat(score)[order].cumsum(0)]))


def search(parts: list[Component], fisher: list[torch.Tensor], ratio: float, seq_len: int) -> list[torch.Tensor]:
    """Algorithm 1 (Sec. 4.1): the kept units of every component under the FLOPs budget.

    For each number ``n`` of kept heads (most important first), the budget left takes the most important
    neurons that fit; the ``n`` with the largest total kept Fisher importance wins (ties: fewer heads).
    """
    budget = (1 - ratio) * prunable_flops(parts, [c.units for c in parts], seq_len)
    heads = [i for i, c in enumerate(parts) if c.is_attention]
    neurons = [i for i, c in enumerate(parts) if not c.is_attention]
    h_owner, h_unit, h_cost, h_score = ranking(parts, fisher, heads, seq_len)
    n_owner, n_unit, n_cost, n_score = ranking(parts, fisher, neurons, seq_len)
    n_heads = torch.arange(len(h_cost))
    n_neurons = torch.searchsorted(n_cost, budget - h_cost, right=True) - 1
    total = h_score + n_score[n_neurons.clamp_min(0)]
    total[(n_neurons < 0) | (n_heads < len(heads)) | (n_neurons < len(neurons))] = -torch.inf  # over budget
    if not torch.isfinite(total).any():
        raise ValueError(f"kwon cannot remove {ratio:.0%} of the prunable FLOPs while keeping one unit per layer.")
    best = int(total.argmax())
    kept = [[] for _ in parts]
    for owner, unit in ((h_owner[:best], h_unit[:best]), (n_owner[: n_neurons[best]], n_unit[: n_neurons[best]])):
        for i, u in zip(owner.tolist(), unit.tolist()):
            kept[i].append(u)
    return [torch.tensor(sorted(k), dtype=torch.long) for k in kept]


# --------------------------------------------------------------------------------------------------------
# Step 2: mask rearrangement with the layer's block of the Fisher
# --------------------------------------------------------------------------------------------------------
def block_fisher(grads: torch.Tensor) -> torch.Tensor:
    """``I_l = 1/|D| sum_j g_j g_j^T`` of one layer's units (float64): the block of the Fisher that step 2 uses."""
    g = grads.double()
    return g.T @ g / len(g)


def rearrange(fisher: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Sec. 4.2: the same number of kept units, chosen to lower ``(1-m)^T I_l (1-m)``, i.e. the Fisher block
    summed over the pruned units (pruned units whose gradients cancel are cheap to remove together).

    Kept units are visited once, least important (diagonal Fisher) first; each is swapped with the pruned
    unit whose exchange lowers the objective most, if any does. ``row[u]`` tracks ``sum_{p pruned} I_up``.
    """
    pruned_mask = torch.ones(len(fisher), dtype=torch.bool, device=fisher.device)
    pruned_mask[kept] = False
    if pruned_mask.all() or not pruned_mask.any():
        return kept
    pruned = pruned_mask.nonzero().flatten()
    row = fisher[:, pruned].sum(1)
    objective = row[pruned].sum()
    diagonal = fisher.diagonal()
    for c in kept[diagonal[kept].argsort()].tolist():
        # objective of (pruned + c - p) for every pruned p
        after = objective + 2 * row[c] + fisher[c, c] - 2 * (row[pruned] + fisher[c, pruned]) + diagonal[pruned]
        p = int(after.argmin())
        if after[p] < objective * (1 - 1e-12):
            objective = after[p]
            row += fisher[:, c] - fisher[:, pruned[p]]
            pruned[p] = c
    pruned_mask[:] = False
    pruned_mask[pruned] = True
    return (~pruned_mask).nonzero().flatten()


# --------------------------------------------------------------------------------------------------------
# Step 3: mask tuning by layer-wise least squares, folded into the output projection
# --------------------------------------------------------------------------------------------------------
class _Stop(Exception):
    """Ends a forward pass once the layer being tuned has been seen."""


def residual_input(model: nn.Module, part: Component) -> tuple[nn.Module, int]:
    """The module and positional argument that carry the residual stream ``x`` the component's output is
    added to: BERT's ``output`` module adds its second argument (``LayerNorm(dense(h) + x)``); pre-norm
    blocks (Llama, timm ViT) add the input of the norm in front of the sublayer."""
    view = part.view
    parent, _, _ = view.output_name.rpartition(".")
    if parent:
        return view.owner.get_submodule(parent), 1
    block = model.get_submodule(view.name.rpartition(".")[0])
    norms, layer_scale = (("input_layernorm", "norm1"), "ls1") if part.is_attention else \
        (("post_attention_layernorm", "norm2"), "ls2")
    for name in norms:
        if hasattr(block, name) and isinstance(getattr(block, layer_scale, nn.Identity()), nn.Identity):
            return block.get_submodule(name), 0
    raise NotImplementedError(f"kwon: cannot find the residual stream around '{view.name}' "
                              f"({type(block).__name__}); mask tuning supports BERT, Llama and plain timm ViT blocks.")


def layer_io(model: nn.Module, part: Component, batch: Any, ctx: Context) -> tuple[torch.Tensor, ...]:
    """For the batch's real tokens: the residual ``x``, the output projection's input ``z`` and output ``y``
    (float64 rows); the forward pass stops right after the projection."""
    seen: dict[str, torch.Tensor] = {}
    module, index = residual_input(model, part)

    def record(linear: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen.update(z=args[0], y=out)
        raise _Stop

    handles = [module.register_forward_pre_hook(lambda m, args: seen.update(x=args[index])),
               part.view.output.register_forward_hook(record)]
    try:
        ctx.task.logits(model, batch)
    except _Stop:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return tuple(token_rows(seen[k], attention_mask(batch)).double() for k in ("x", "z", "y"))


@torch.no_grad()
def normal_equations(model: nn.Module, teacher: nn.Module, part: Component, reference: Component,
                     batches: list[Any], ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """``A^T A`` and ``A^T b`` of ``min_m ||A m - b||``: column ``u`` of ``A`` is unit ``u``'s contribution
    ``W[:, cols_u] z[cols_u]`` to the pruned layer's output, ``b = (x + y)_original - x_pruned - bias``.
    Built from ``Z^T Z`` without forming ``A``: ``(A^T A)_uv = sum over the (u, v) block of Z^T Z * W^T W``."""
    weight = part.view.output.weight.double()
    bias = part.view.output.bias
    gram = weight.new_zeros(weight.shape[1], weight.shape[1])
    cross = weight.new_zeros(weight.shape[1])
    for batch in batches:
        x_ref, _, y_ref = layer_io(teacher, reference, batch, ctx)
        x, z, _ = layer_io(model, part, batch, ctx)
        target = x_ref + y_ref - x - (bias.double() if bias is not None else 0)
        gram.addmm_(z.T, z)
        cross += (z * (target @ weight)).sum(0)
    units, width = weight.shape[1] // part.width, part.width
    ata = (gram * (weight.T @ weight)).view(units, width, units, width).sum((1, 3))
    return ata, cross.view(units, width).sum(1)


def tuned_masks(ata: torch.Tensor, atb: torch.Tensor, damping: float) -> torch.Tensor | None:
    """``argmin ||A m - b||^2 + lam ||m - 1||^2`` with ``lam = damping * mean(diag A^T A)``; None when the fit
    is not finite or leaves [-10, 10] (the authors' code treats that as a failed, unstable fit)."""
    lam = damping * ata.diagonal().mean()
    system = ata + lam * torch.eye(len(atb), dtype=ata.dtype, device=ata.device)
    floor = 1e-12 * float(system.diagonal().max().clamp_min(torch.finfo(ata.dtype).tiny))
    masks = torch.linalg.pinv(system, hermitian=True, atol=floor) @ (atb + lam)
    return masks if torch.isfinite(masks).all() and masks.abs().max() <= 10 else None


def prune_and_tune(model: nn.Module, parts: list[Component], kept: list[torch.Tensor], batches: list[Any],
                   ctx: Context, tune: bool, damping: float) -> nn.Module:
    """Shrink every component to its kept units in network order; with ``tune``, fit each one's masks on the
    model whose earlier components are already pruned and tuned, against the unpruned model, and fold them
    into the output projection's columns."""
    teacher = copy.deepcopy(model) if tune else None
    references = components(teacher) if tune else [None] * len(parts)
    for part, reference, units in zip(parts, references, kept):
        units = units.to(part.view.output.weight.device)
        if len(units) < part.units:
            if part.is_attention:
                keep_heads(part.view, head_columns(units, part.view.group_size))
            else:
                keep_mlp_neurons(part.view, units)
        if not tune:
            continue
        masks = tuned_masks(*normal_equations(model, teacher, part, reference, batches, ctx), damping)
        if masks is not None:
            out = part.view.output.weight
            with torch.no_grad():
                out.mul_(masks.repeat_interleave(part.width).to(out.dtype))
    return model


def kwon_prune(model: nn.Module, ctx: Context, ratio: float, num_examples: int, batch_size: int, seq_len: int,
               rearrangement: bool, tune: bool, damping: float) -> nn.Module:
    """The three steps on one sample; the Fisher comes from the unpruned model."""
    if ratio == 0:
        return model
    model.to(ctx.device).eval()
    batches = calibration(ctx, num_examples, batch_size)
    parts = components(model)
    grads = mask_gradients(model, parts, batches, ctx)
    kept = search(parts, [fisher_diagonal(g) for g in grads], ratio, seq_len)
    if rearrangement:
        kept = [rearrange(block_fisher(g.to(ctx.device)), k.to(ctx.device)).cpu() for g, k in zip(grads, kept)]
    del grads
    return prune_and_tune(model, parts, kept, batches, ctx, tune, damping)


KWON_PARAMS = (
    FLOPS_RATIO,
    Param("num_examples", int, 2048, 1, None, help="sample for the Fisher and mask tuning (the paper: 2K)"),
    Param("batch_size", int, 32, 1, None, help="sample batch size"),
    SEQ_LEN,
    Param("damping", float, 1e-6, 0.0, None, help="mask-tuning ridge toward m=1, relative to mean diag(A^T A)"),
)


@stage("kwon", params=(*KWON_PARAMS, Param("rearrangement", bool, True, help="step 2: block-Fisher swaps"),
                       Param("tune", bool, True, help="step 3: least-squares mask tuning")), primary="ratio",
       applies_to=applies_to("attention_heads", "mlp_neurons"), budget=removes_value)
def kwon(model: nn.Module, ctx: Context, **params: Any) -> nn.Module:
    """Kwon et al. (2022): Fisher mask search, rearrangement and tuning of heads and neurons to a FLOPs budget."""
    return kwon_prune(model, ctx, **params)


@stage("kwon_search", params=(*KWON_PARAMS, Param("rearrangement", bool, False, help="off: the ablation"),
                              Param("tune", bool, False, help="off: the ablation")), primary="ratio",
       applies_to=applies_to("attention_heads", "mlp_neurons"), budget=removes_value)
def kwon_search(model: nn.Module, ctx: Context, **params: Any) -> nn.Module:
    """Kwon et al. ablation: the Fisher mask search alone (no rearrangement, no mask tuning)."""
    return kwon_prune(model, ctx, **params)
