"""DGMR: Diversity-Guided MLP Reduction (Shen, Zhu, Fang, Wang and Wang, 2025, arXiv 2506.08591).

Two stages, used as ``base+dgmr-0.5+dgmr_kd``:

``dgmr`` (paper Sec. 3, "diversity-guided MLP pruning", Fig. 1). An MLP is ``fc2(act(fc1(x)))`` with
fc1: N -> M (hidden neurons) and fc2: M -> N. Hidden neuron i is represented by its fc1 weight row
w_i in R^N. Neurons are kept greedily with Gram-Schmidt: keep the neuron whose residual vector has the
largest L2 norm ("connection strength"; the norm is not normalised away, so it acts as the importance
weight), then subtract from every remaining residual its projection onto the kept neuron's normalised
residual, and repeat. Because at most N residuals can be non-zero, selection runs in rounds of N: once a
round has kept N neurons, the next round restarts Gram-Schmidt on the original rows of the neurons not yet
kept ("k-round" selection); the first ``ratio * M`` neurons in that order are kept. The MLP's output width
N is unchanged, so student and teacher features stay aligned for distillation.

``dgmr_kd`` (paper Sec. 3, "knowledge distillation" / recovery). The pruned student mimics the unpruned
teacher on unlabeled images: mean squared error between the model outputs plus mean squared error between
the final-layer token features (after the final norm, before pooling). AdamW, cosine schedule with warmup,
10 epochs, lr 6e-5, weight decay 0.04 by default.

Provenance of the details. Section/figure numbers above follow the paper's structure as summarised by
third-party readers (the paper body itself could not be opened here); the concrete choices were checked
against the authors' released code (github.com/visresearch/DGMR): ``prune.py::prune_mlp_diversity_kround``
(fc1 weight rows without bias, largest residual norm, projection removal, rounds of N picks, first
``ratio * M`` kept) and ``distill.py`` (loss ``mse(pred, target) + mse(feat, target_feat)`` with both
coefficients 1; EVA-CLIP-E config: 10 epochs, 2 warmup, base lr 6e-5, min lr 1e-6, weight decay 0.04 ->
0.2, batch 40/GPU). Not reproduced: the minimum learning rate of 1e-6 (the cosine here decays to 0) and the
weight-decay schedule (fixed here). The paper distils on ImageNet-1K without labels (0.06% of the
LAION-2B pretraining data); ``fraction`` picks the share of this experiment's train set used unlabeled.

Extensions beyond the paper: gated MLPs (Llama: gate and up projections) use the concatenation of the
neuron's rows in both input projections; BERT-family MLPs use ``intermediate.dense`` rows. Selection is done
in float64, and a kept neuron is never picked twice (the released code could pick one again once the
residuals vanish, which only happens past the rank of the weight matrix).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from torch import nn

from baselines.distill import recovery_recipe
from slimbench.data import seeded_subset
from slimbench.plots import FIGURES, plt, save, write_tables
from slimbench.stages import BASE, Context, Param, parse_chain, stage
from slimbench.surgery import MLP, find_mlps, keep_mlp_neurons
from slimbench.train import fit

RATIO = Param("ratio", float, 0.5, 0.0, 1.0, low_open=True,
              help="MLP ratio: hidden neurons kept / original hidden size (1.0 keeps all)")


def kept_hidden(hidden: int, ratio: float) -> int:
    """Hidden size after DGMR with MLP ratio ``ratio`` (kept / original), at least one neuron."""
    return max(1, min(hidden, int(round(hidden * ratio))))


def neuron_vectors(mlp: MLP) -> torch.Tensor:
    """(M, N) matrix whose row i represents hidden neuron i: its fc1 weight row (paper Sec. 3; bias excluded,
    as in the released code). Gated MLPs concatenate the neuron's gate and up rows (extension)."""
    return torch.cat([lin.weight.detach().double() for lin in mlp.inputs], dim=1)


def gram_schmidt_round(vectors: torch.Tensor, count: int) -> torch.Tensor:
    """One Gram-Schmidt round (paper Sec. 3, Fig. 1): ``count`` row indices of ``vectors`` in selection order.

    Each step keeps the row with the largest residual L2 norm, then removes from every residual its component
    along that row's normalised residual. This is column-pivoted QR (Businger-Golub) of ``vectors.T``.
    """
    residual = vectors.double().clone()
    available = torch.ones(len(vectors), dtype=torch.bool, device=vectors.device)
    picked = []
    for _ in range(count):
        norms = residual.square().sum(dim=1).masked_fill(~available, -1.0)
        index = int(norms.argmax())
        picked.append(index)
        available[index] = False
        length = residual[index].norm()
        if length > 0:
            direction = residual[index] / length
            residual -= torch.outer(residual @ direction, direction)
    return torch.tensor(picked, dtype=torch.long)


def diversity_order(vectors: torch.Tensor, count: int) -> torch.Tensor:
    """The first ``count`` neurons in DGMR's k-round order: rounds of at most N = ``vectors.shape[1]`` picks
    (the rank bound), each a fresh Gram-Schmidt over the original rows of the neurons not yet kept."""
    remaining = torch.arange(len(vectors))
    kept: list[torch.Tensor] = []
    left = min(count, len(vectors))
    while left > 0:
        take = min(left, vectors.shape[1], len(remaining))
        local = gram_schmidt_round(vectors[remaining.to(vectors.device)], take)
        kept.append(remaining[local])
        mask = torch.ones(len(remaining), dtype=torch.bool)
        mask[local] = False
        remaining = remaining[mask]
        left -= take
    return torch.cat(kept)


@stage("dgmr", params=(RATIO,), primary="ratio")
def dgmr(model: nn.Module, ctx: Context, ratio: float) -> nn.Module:
    """Keep ``ratio`` of every MLP's hidden neurons by Gram-Schmidt diversity (DGMR, Shen et al. 2025, Sec. 3)."""
    for mlp in find_mlps(model):
        keep = kept_hidden(mlp.hidden, ratio)
        if keep < mlp.hidden:
            keep_mlp_neurons(mlp, diversity_order(neuron_vectors(mlp), keep))
    return model


def outputs_and_features(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Model output (logits) and final-layer token features (after the final norm, before pooling): what the
    released ``ModelWrapper`` returns for timm Swin/DeiT. Hugging Face encoders: last hidden state."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        images = batch[0]
        dtype = next(model.parameters()).dtype
        features = model.forward_features(images.to(dtype) if dtype.is_floating_point else images)
        return model.forward_head(features).float(), features.float()
    if isinstance(batch, dict):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = model(**inputs, output_hidden_states=True)
        return out.logits.float(), out.hidden_states[-1].float()
    raise TypeError(f"dgmr_kd cannot read features of {type(model).__name__}: it needs a timm model "
                    f"(forward_features/forward_head) or a Hugging Face model with hidden states.")


def distillation_loss(student: tuple[torch.Tensor, torch.Tensor], teacher: tuple[torch.Tensor, torch.Tensor],
                      output_weight: float, feature_weight: float) -> torch.Tensor:
    """DGMR recovery loss (released ``distill.py``): w_o * MSE(outputs) + w_f * MSE(final features)."""
    return (output_weight * F.mse_loss(student[0], teacher[0])
            + feature_weight * F.mse_loss(student[1], teacher[1]))


@stage("dgmr_kd", params=(
    Param("epochs", int, 10, 0, None, help="distillation epochs over the unlabeled subset (paper: 10)"),
    Param("lr", float, 6e-5, 0.0, None, low_open=True, help="peak AdamW learning rate (paper: 6e-5)"),
    Param("warmup", float, 0.2, 0.0, 1.0, help="warmup share of the steps (paper: 2 of 10 epochs)"),
    Param("weight_decay", float, 0.04, 0.0, None, help="AdamW weight decay (paper: 0.04 at the start)"),
    Param("batch_size", int, None, 1, None, help="batch size (default: the base recipe's)"),
    Param("fraction", float, 1.0, 0.0, 1.0, low_open=True,
          help="share of the train set used, without labels (seeded subset)"),
    Param("output_weight", float, 1.0, 0.0, None, help="weight of the output (logit) MSE"),
    Param("feature_weight", float, 1.0, 0.0, None, help="weight of the final-feature MSE"),
))
def dgmr_kd(model: nn.Module, ctx: Context, epochs: int, lr: float, warmup: float, weight_decay: float,
            batch_size: Optional[int], fraction: float, output_weight: float, feature_weight: float) -> nn.Module:
    """Recover a pruned model by distilling the uncompressed teacher on unlabeled images (DGMR, Sec. 3)."""
    teacher = ctx.teacher
    unlabeled = seeded_subset(ctx.train_set, max(1, int(round(len(ctx.train_set) * fraction))), ctx.seed)
    recipe = {**recovery_recipe(ctx, epochs, lr), "schedule": "cosine", "warmup": warmup,
              "weight_decay": weight_decay}
    if batch_size is not None:
        recipe["batch_size"] = batch_size

    def loss(student: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            target = outputs_and_features(teacher, batch)
        return distillation_loss(outputs_and_features(student, batch), target, output_weight,
                                 feature_weight)

    fit(model, ctx.task, unlabeled, ctx.device, recipe, ctx.seed, loss_fn=loss, progress=ctx.progress,
        desc="dgmr_kd")
    return model


# ---- Study outputs: accuracy before/after recovery and the paper-style reduction table -----------------------

def pruning_rows(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per pruned chain: criterion, MLP ratio kept, whether recovered, metric and cost, seed-averaged.

    The MLP ratio kept is ``dgmr``'s own value; the baselines' chain value is the share removed (1 - kept).
    """
    data = frame.copy()
    calls = data["chain"].map(parse_chain)
    data = data[calls.map(len) > 0].copy()
    calls = calls[data.index]
    data["criterion"] = calls.map(lambda c: c[0].name)
    data["mlp_ratio_kept"] = calls.map(
        lambda c: round(float(c[0].value) if c[0].name == "dgmr" else 1 - float(c[0].value), 6))
    data["recovery"] = calls.map(lambda c: "+".join(x.name for x in c[1:]) or "none")
    keys = ["dataset", "model", "criterion", "mlp_ratio_kept", "recovery"]
    values = [metric, "params", "flops", "relative_params_kept", "relative_flops_kept"]
    return data.groupby(keys, sort=False)[[v for v in values if v in data]].mean().reset_index()


def before_after(frame: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    """Metric vs share of parameters removed, pruned only (left) and after recovery (right), per model."""
    rows = pruning_rows(frame, metric)
    rows["params removed (%)"] = (1 - rows["relative_params_kept"]) * 100
    bases = frame[frame["chain"] == BASE].groupby(["dataset", "model"])[metric].mean()
    panels = list(rows.groupby(["dataset", "model"], sort=False))
    criteria = sorted(rows["criterion"].unique(), key=lambda c: (c != "dgmr", c))
    palette = dict(zip(criteria, sns.color_palette(n_colors=len(criteria))))
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3.8 * len(panels)), squeeze=False)
    for row_axes, ((dataset, model), panel) in zip(axes, panels):
        for ax, recovered in zip(row_axes, (False, True)):
            part = panel[(panel["recovery"] != "none") == recovered]
            sns.lineplot(data=part, x="params removed (%)", y=metric, hue="criterion", style="criterion",
                         hue_order=criteria, style_order=criteria, palette=palette, markers=True, dashes=False,
                         ax=ax)
            ax.axhline(bases[(dataset, model)], color="black", ls="--", lw=1, label="uncompressed")
            recovery = ", ".join(sorted(set(part["recovery"]))) if recovered else "none"
            ax.set_title(f"{model} on {dataset}: {'after ' + recovery if recovered else 'before recovery'}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out, "dgmr_before_after")


def reduction_table(frame: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    """The paper's table layout: parameters and FLOPs with their reductions, metric before/after recovery."""
    rows = pruning_rows(frame, metric)
    bases = frame[frame["chain"] == BASE].groupby(["dataset", "model"])[metric].mean()
    keys = ["dataset", "model", "criterion", "mlp_ratio_kept"]
    pruned = rows[rows["recovery"] == "none"].set_index(keys)
    recovered = rows[rows["recovery"] != "none"].set_index(keys)
    table = pd.DataFrame({
        "params_M": pruned["params"] / 1e6,
        "params_reduction_%": (1 - pruned["relative_params_kept"]) * 100,
        "flops_G": pruned["flops"] / 1e9,
        "flops_reduction_%": (1 - pruned["relative_flops_kept"]) * 100,
        f"{metric}_base": [bases[k[:2]] for k in pruned.index],
        f"{metric}_pruned": pruned[metric],
        f"{metric}_recovered": recovered[metric].reindex(pruned.index),
    })
    table["drop_recovered_pts"] = (table[f"{metric}_base"] - table[f"{metric}_recovered"]) * 100
    table = table.reset_index().sort_values(["dataset", "model", "mlp_ratio_kept", "criterion"],
                                            ascending=[True, True, False, True])
    return write_tables(table, out, "dgmr_reduction")


FIGURES.add("dgmr_before_after", before_after)
FIGURES.add("dgmr_reduction_table", reduction_table)
