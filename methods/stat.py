"""STAT: Shrinking Transformers After Training (Flynn, Wang, Alvarez, De Sa and Damle, 2024, arXiv 2406.00061).

Structured pruning of a trained transformer without any fine-tuning. For every block, a small unlabeled
calibration set gives the activations that the next weight consumes:

* MLP neurons: ``Z`` = the hidden activations after the nonlinearity (n tokens x hidden);
* attention heads: ``Z`` = the concatenated per-head attention outputs entering the output projection
  (n tokens x heads * head_dim; a head is a group of ``head_dim`` columns).

An interpolative decomposition (ID) ``Z ~ Z[:, S] T`` (Sec. 3, Eq. for the ID: ``A ~ A[:, I] T`` with
``T = R11^{-1} [R11 R12]`` from a column-pivoted QR ``A P = Q R``) chooses the kept columns ``S`` and the
interpolation matrix ``T``; the correction is folded into the next layer, ``W' = T W`` (``W2`` of the MLP,
``W_O`` of the attention), so the pruned block reproduces the original block's output on the calibration
data as closely as the kept columns allow. Heads use the same ID at head granularity: the pivoting step
picks whole heads (groups of columns). The QR's trailing block gives the error of every possible size
(``||Z - Z[:, S] T||_F = ||R22||_F``), which sets each layer's size so that the whole network meets a global
FLOPs budget (Sec. 3, choosing layer sizes). For large calibration sets the randomized variant sketches the
rows of ``Z`` (CountSketch) before the QR (Sec. 3, randomized ID for large models).

Implementation notes. The pivoted QR is computed in its Gram form: a (grouped) pivoted Cholesky of
``G = Z^T Z``, accumulated over calibration batches without storing ``Z``. In exact arithmetic this picks
the same pivots as Businger-Golub column-pivoted QR (tested against LAPACK's) and its factor is the QR's
``R``; the residual Gram's trace after ``k`` pivots is ``||R22||_F^2``. ``T = R11^{-1} R12`` equals the
least-squares solution ``argmin_T ||Z[:, S] T - Z||``, computed here as ``G[S, S]^+ G[S, :]`` in float64. With
a sketch ``Y = Omega Z`` the same code runs on ``Y^T Y``, accumulated batch by batch (``GramCollector``). Blocks are pruned in network order, each on
activations of the model whose earlier blocks are already pruned (``sequential``), so a correction also
absorbs the upstream pruning error. Padding tokens never enter ``G``.

Compared with code released under STAT's name: github.com/nicolehao34/InterpolativeDecompositionPruning,
commit 8ef1b62b5507b7636b507249a4fdaaed7d9c66a9, ``bert-pruning-ID/prune_bert.py`` (BERT) and
``prune_opt.py`` (OPT; "L" = line). It was uploaded in December 2023 by someone not among the paper's
authors, and its BERT and OPT scripts disagree in places, so whether it produced the paper's tables could
not be checked. Same as the release: the correction is the least-squares ``T`` (``pinv(R11) R12``, L335,
L368); output biases are left unchanged and only the kept rows' input biases are kept (L330, L379-407);
padded positions are dropped (rows with attention mask > -1, L161); 512 calibration examples (L38).
Different, kept here on purpose (changing them would move the committed results):

* Head selection. The release runs a pivoted QR on the (tokens x head_dim) x heads reshape, one column per
  head (L203-209). That measures how well one head is a *scalar* multiple of others, while its correction
  is a full block least-squares fit (L215, L368). Here the grouped pivoting picks the head with the largest
  block least-squares residual, which is the quantity the correction removes. When head 3 is an invertible
  8x8 map of head 1 (the setup of the head test in ``tests/test_stat.py``), the release's rule, run by hand
  with scipy, keeps heads 3 and 1 and drops the independent head 0; this rule drops head 1.
* Neuron selection. The release scales column ``j`` of ``Z`` by ``||W2[:, j]||`` before the QR and
  unscales ``T`` afterwards (L170-172, L331-336; prune_opt.py L316-317). The fit is the same, but the
  pivots can differ. Here ``Z`` is not scaled, which is the paper's ID of ``Z``.
* Layer sizes. The release thresholds ``|R_kk|`` of the scaled neuron QR (an estimate of the paper's
  spectral-norm error) and the head error ``||E_k W_O^T||_F`` (L216-228), both in absolute terms, across all
  layers. Each is weighted by ``sqrt(L - l + 1) + 1`` (L251-255, L94-95, L351). For OPT the weight is instead
  a log-linear fit over depth, and heads get ``1.125^(H..1)`` (prune_opt.py L468-482). The heads/neurons split
  comes from a scan over head counts that matches the head cutoff to 2x the mean neuron ``||R22||_F``
  (L267-287). FLOPs use a hand-set MLP share (0.662 for BERT-base, L1; 0.571 for OPT, prune_opt.py L504). Here
  one relative Frobenius tolerance ``||R22||_F / ||Z||_F <= eps`` covers heads and neurons of every layer, and
  exact per-unit FLOPs meet the budget. Since ``||Z - Z[:, S] T||_2 = ||R22||_2 <= ||R22||_F``, this also
  bounds the paper's spectral error, by ``eps ||Z||_F`` instead of ``eps ||Z||_2``.
* Calibration order. The release computes every MLP's statistics on the unpruned model (L163-173). It
  recomputes head statistics only after all MLPs are pruned (L342, L201), never after earlier heads, and
  takes head sizes from the unpruned model (L246-248). For OPT, everything comes from the unpruned model
  (prune_opt.py L272). Here ``sequential: true`` (the default) recalibrates every layer on the model with
  all earlier layers pruned. ``sequential: false`` uses the unpruned model throughout (the release's OPT
  order).
* Sketch. The release's OPT script uses a dense Gaussian sketch, 100 rows per 2048-token sequence
  (prune_opt.py L253-266); its BERT script is exact. Here it is a CountSketch (the paper's kind, Sec. 3) of
  ``sketch_rows`` rows per calibration batch, block-diagonal over batches like the release's per-sequence
  sketch (0, the default, is exact). Until 2026-12-06 it was one CountSketch over all calibration tokens, kept
  whole until the end of the pass: 2.8x the exact statistics' memory at Llama-2-7B scale (issue 17). Whether
  the paper sketches all tokens at once could not be checked (the search tool holds only its abstract and
  introduction).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from slimbench.stages import Context, Param, applies_to, removes_value, stage
from slimbench.surgery import (FLOPS_RATIO, SEQ_LEN, Component, components, head_columns, keep_heads,
                               keep_mlp_neurons, prunable_flops)

# --------------------------------------------------------------------------------------------------------
# Calibration statistics: Z^T Z, exact or through a CountSketch of each batch's rows
# --------------------------------------------------------------------------------------------------------
class GramCollector:
    """Accumulates ``G = Z^T Z`` (float64) over calibration batches; with ``sketch_rows = m`` it accumulates
    ``G = sum_b (Omega_b Z_b)^T (Omega_b Z_b)`` instead, ``Omega_b`` an ``m``-row CountSketch of batch ``b``'s
    token rows (each added with a random sign to a random one of ``m`` rows). That is one block-diagonal
    sketch of all calibration tokens, a block per batch, as the release sketches each sequence on its own
    (prune_opt.py L253-266). Only the Gram is kept between batches, so the sketch needs the exact statistics'
    memory plus one batch's ``m`` x ``c`` block, and forms the Gram from ``m`` rows a batch instead of all
    its tokens."""

    def __init__(self, sketch_rows: int, generator: torch.Generator) -> None:
        self.sketch_rows = sketch_rows
        self.generator = generator
        self.state: torch.Tensor | None = None

    def add(self, rows: torch.Tensor) -> None:
        if self.state is None:
            self.state = torch.zeros(rows.shape[1], rows.shape[1], dtype=torch.float64, device=rows.device)
        if self.sketch_rows:  # signed in place in the float64 copy that the exact Gram makes as well
            bucket = torch.randint(0, self.sketch_rows, (len(rows),), generator=self.generator).to(rows.device)
            sign = (torch.randint(0, 2, (len(rows), 1), generator=self.generator) * 2 - 1).to(self.state)
            signed = rows.to(torch.float64, copy=True).mul_(sign)
            rows = signed.new_zeros(self.sketch_rows, rows.shape[1]).index_add_(0, bucket, signed)
            del signed
        else:
            rows = rows.double()
        self.state.addmm_(rows.T, rows)

    def gram(self) -> torch.Tensor:
        if self.state is None:
            raise RuntimeError("no calibration data reached this layer")
        return self.state


def token_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, tokens, features) -> (real tokens, features); padding tokens carry no signal."""
    rows = x.reshape(-1, x.shape[-1])
    return rows if mask is None else rows[mask.reshape(-1).bool()]


class AllLayersSeen(Exception):
    """Raised by the last hook of a calibration batch: the layers after it cannot change any statistic."""


@torch.no_grad()
def collect_grams(model: nn.Module, parts: list[Component], batches: list[Any], ctx: Context,
                  sketch_rows: int) -> list[torch.Tensor]:
    """One calibration pass; a pre-hook on each component's output layer records that layer's input Z. Each
    batch's forward pass stops once every hook has fired: a pass that recalibrates one block (``sequential``)
    runs only the layers up to it, and its statistics are the same as those of a whole pass. This counts one
    call per output layer and batch: a model that reused a layer within one forward pass would stop early."""
    generator = torch.Generator().manual_seed(ctx.seed)
    collectors = [GramCollector(sketch_rows, generator) for _ in parts]
    current: dict[str, Any] = {"mask": None, "seen": 0}

    def hook(collector: GramCollector) -> Any:
        def record(module: nn.Module, args: tuple[Any, ...]) -> None:
            collector.add(token_rows(args[0], current["mask"]))
            current["seen"] += 1
            if current["seen"] == len(parts):
                raise AllLayersSeen
        return record

    handles = [c.view.output.register_forward_pre_hook(hook(col)) for c, col in zip(parts, collectors)]
    model.eval()
    try:
        for batch in batches:
            current.update(mask=batch.get("attention_mask") if isinstance(batch, dict) else None, seen=0)
            try:
                ctx.task.logits(model, batch)
            except AllLayersSeen:
                pass
    finally:
        for handle in handles:
            handle.remove()
    return [c.gram() for c in collectors]


# --------------------------------------------------------------------------------------------------------
# The (grouped) column-pivoted QR in Gram form and the interpolation matrix
# --------------------------------------------------------------------------------------------------------
def pivoted_qr(gram: torch.Tensor, width: int = 1, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Column-pivoted QR of ``Z`` from ``G = Z^T Z``, pivoting whole groups of ``width`` columns.

    Each step picks the group whose columns have the largest remaining norm (Businger-Golub pivoting; for a
    group, the sum over its columns) and projects it out of all columns. Computed as a pivoted (block)
    Cholesky of ``G`` that keeps only the residual column norms (``R`` is built row by row), so a
    step costs O(columns x pivots so far). Returns the pivot order of the groups and
    ``residual[k] = ||Z - Z[:, S_k] T_k||_F^2`` for the first k pivots (k = 0..steps), the ``||R22||_F^2``
    error estimate the layer sizes are chosen from.

    A step is a few dozen tiny GPU kernels, so its cost is their launches (issue 17): every operation that
    is the identity for single columns (a sum over one column, ``j * 1 + 0``) is skipped, and updates are in
    place. The arithmetic is the same either way, and so are the pivots and errors, bit for bit.
    """
    units = gram.shape[0] // width
    steps = units if steps is None else steps
    norms = gram.diagonal().clone()
    floor = 1e-12 * norms.max().clamp_min(torch.finfo(gram.dtype).tiny)
    factor = gram.new_zeros(steps * width, gram.shape[0])  # rows of R, pivot by pivot
    taken = torch.zeros(units, dtype=torch.bool, device=gram.device)
    offsets = torch.arange(width, device=gram.device)
    order, residual = [], [norms.sum().clamp_min(0)]
    for step in range(steps):  # index tensors, not Python ints: no host sync per step on a GPU
        unit_norms = norms if width == 1 else norms.view(units, width).sum(1)
        j = unit_norms.masked_fill(taken, -math.inf).argmax().view(1)
        cols = j if width == 1 else j * width + offsets
        done, new = factor[: step * width], factor[step * width : (step + 1) * width]
        rows = gram.index_select(0, cols) - done.index_select(1, cols).T @ done  # residual Gram rows (G symmetric)
        torch.matmul(inverse_sqrt(rows.index_select(1, cols), floor), rows, out=new)
        squares = new.pow(2)
        norms.sub_(squares[0] if width == 1 else squares.sum(0)).clamp_min_(0).index_fill_(0, cols, 0)
        taken.index_fill_(0, j, True)
        order.append(j)
        residual.append(norms.sum())
    return torch.cat(order).cpu() if order else torch.zeros(0, dtype=torch.long), torch.stack(residual).cpu()


def inverse_sqrt(block: torch.Tensor, floor: torch.Tensor) -> torch.Tensor:
    """``B^{+1/2}`` of a symmetric PSD block; directions below ``floor`` (~1e-12 of the largest column
    norm^2) count as exactly dependent (round-off of a rank-deficient ``Z``)."""
    if block.numel() == 1:
        return block.clamp_min(floor).rsqrt() * (block > floor)
    values, vectors = torch.linalg.eigh(block)
    keep = values > floor
    return (vectors * (values.clamp_min(floor).rsqrt() * keep)) @ vectors.T


def interpolation_matrix(gram: torch.Tensor, kept_columns: torch.Tensor) -> torch.Tensor:
    """``T`` with ``Z ~ Z[:, S] T`` in the least-squares sense: ``G[S, S]^+ G[S, :]`` (k x columns); this is
    the ID's ``R11^{-1} [R11 R12]`` (un-permuted) when ``Z[:, S]`` has full column rank."""
    g_ss = gram[kept_columns][:, kept_columns]
    floor = 1e-12 * float(g_ss.diagonal().max())
    return torch.linalg.pinv(g_ss, hermitian=True, atol=floor) @ gram[kept_columns]


# --------------------------------------------------------------------------------------------------------
# Layer sizes from the global FLOPs budget
# --------------------------------------------------------------------------------------------------------
def relative_errors(residual: torch.Tensor) -> torch.Tensor:
    """``||Z - Z[:, S_k] T_k||_F / ||Z||_F`` for k = 0..units, made non-increasing (guards round-off)."""
    error = (residual / residual[0].clamp_min(torch.finfo(residual.dtype).tiny)).clamp(0, 1).sqrt()
    return torch.cummin(error, dim=0).values


def sizes_for_tolerance(curves: list[torch.Tensor], tolerance: float) -> list[int]:
    """The fewest units (at least one) whose relative ID error is within ``tolerance``, per layer."""
    return [max(1, int(torch.nonzero(curve <= tolerance)[0])) for curve in curves]


def choose_sizes(parts: list[Component], curves: list[torch.Tensor], ratio: float, seq_len: int) -> list[int]:
    """One error tolerance for every layer, the smallest whose sizes meet the budget (Sec. 3): layers whose
    activations are nearly low-rank shrink most. Exact search over the finitely many distinct tolerances."""
    full = prunable_flops(parts, [c.units for c in parts], seq_len)
    target = (1 - ratio) * full
    candidates = torch.unique(torch.cat([c.double() for c in curves]))
    low, high = 0, len(candidates) - 1
    if prunable_flops(parts, sizes_for_tolerance(curves, float(candidates[high])), seq_len) > target:
        raise ValueError(f"STAT cannot remove {ratio:.0%} of the prunable FLOPs while keeping one unit per layer.")
    while low < high:
        mid = (low + high) // 2
        if prunable_flops(parts, sizes_for_tolerance(curves, float(candidates[mid])), seq_len) <= target:
            high = mid
        else:
            low = mid + 1
    return sizes_for_tolerance(curves, float(candidates[low]))


# --------------------------------------------------------------------------------------------------------
# Pruning one layer with its correction
# --------------------------------------------------------------------------------------------------------
def prune_component(part: Component, gram: torch.Tensor, keep: int, correct: bool) -> None:
    """Keep the first ``keep`` pivots of the (grouped) pivoted QR; fold ``T`` into the next weight: ``W' = W T^T``
    in torch's (out, in) layout, i.e. the paper's ``T W`` for row-vector activations. Biases are unchanged."""
    if keep >= part.units:
        return
    order, _ = pivoted_qr(gram, part.width, steps=keep)
    units = order.sort().values.to(gram.device)
    columns = head_columns(units, part.width) if part.width > 1 else units
    weight = None
    if correct:
        out = part.view.output.weight
        weight = (out.double() @ interpolation_matrix(gram, columns).T).to(out.dtype)
    if part.is_attention:
        heads = head_columns(units, part.view.group_size)  # query heads of the kept key/value groups
        keep_heads(part.view, heads, output_weight=weight)
    else:
        keep_mlp_neurons(part.view, units, output_weight=weight)


def calibration(ctx: Context, num_examples: int, batch_size: int) -> list[Any]:
    return [ctx.task.to_device(b, ctx.device) for b in ctx.calibration_batches(num_examples, batch_size)]


def stat_prune(model: nn.Module, ctx: Context, ratio: float, num_examples: int, batch_size: int, seq_len: int,
               sketch_rows: int, sequential: bool, correct: bool) -> nn.Module:
    """The whole algorithm: error curves from one calibration pass, global sizes, then block-by-block ID."""
    if ratio == 0:
        return model
    model.to(ctx.device).eval()
    batches = calibration(ctx, num_examples, batch_size)
    parts = components(model)
    grams = collect_grams(model, parts, batches, ctx, sketch_rows)
    curves = [relative_errors(pivoted_qr(g, p.width)[1]) for p, g in zip(parts, grams)]
    sizes = choose_sizes(parts, curves, ratio, seq_len)
    for i, (part, keep) in enumerate(zip(parts, sizes)):
        gram = collect_grams(model, [part], batches, ctx, sketch_rows)[0] if sequential and i else grams[i]
        prune_component(part, gram, keep, correct)
        grams[i] = None  # free memory early
    return model


STAT_PARAMS = (
    FLOPS_RATIO,
    Param("num_examples", int, 512, 1, None, help="calibration examples (the paper: several hundred)"),
    Param("batch_size", int, 32, 1, None, help="calibration batch size"),
    SEQ_LEN,
    Param("sketch_rows", int, 0, 0, None, help="rows of the CountSketch of each calibration batch (0 = exact ID)"),
    Param("sequential", bool, True, help="calibrate each block on the model with earlier blocks already pruned"),
)


@stage("stat", params=(*STAT_PARAMS, Param("correct", bool, True, help="fold the ID correction into the next layer")),
       primary="ratio", applies_to=applies_to("attention_heads", "mlp_neurons"), budget=removes_value)
def stat(model: nn.Module, ctx: Context, **params: Any) -> nn.Module:
    """STAT (Flynn et al., 2024): prune heads and neurons by pivoted-QR IDs to a FLOPs budget; no fine-tuning."""
    return stat_prune(model, ctx, **params)


@stage("stat_nocorrect", params=(*STAT_PARAMS, Param("correct", bool, False, help="off: the ablation")),
       primary="ratio", applies_to=applies_to("attention_heads", "mlp_neurons"), budget=removes_value)
def stat_nocorrect(model: nn.Module, ctx: Context, **params: Any) -> nn.Module:
    """STAT ablation: the same kept heads/neurons and sizes, the next layer's weights only sliced (no ``T``)."""
    return stat_prune(model, ctx, **params)

