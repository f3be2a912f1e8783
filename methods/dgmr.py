"""DGMR: Diversity-Guided MLP Reduction (Shen, Zhu, Fang, Wang and Wang, 2025, arXiv 2506.08591).

Three stages, used as ``base+dgmr-0.5+dgmr_kd`` or ``base+dgmr_mlp-1+dgmr_kd``:

``dgmr`` / ``dgmr_mlp`` (paper Sec. 3, "diversity-guided MLP pruning", Fig. 1). An MLP is ``fc2(act(fc1(x)))``
with fc1: N -> M (hidden neurons) and fc2: M -> N. Hidden neuron i is represented by its fc1 weight row
w_i in R^N. Neurons are kept greedily with Gram-Schmidt: keep the neuron whose residual vector has the
largest L2 norm ("connection strength"; the norm is not normalised away, so it acts as the importance
weight), then subtract from every remaining residual its projection onto the kept neuron's normalised
residual, and repeat. Because at most N residuals can be non-zero, selection runs in rounds of N: once a
round has kept N neurons, the next round restarts Gram-Schmidt on the original rows of the neurons not yet
kept ("k-round" selection); the first K neurons in that order are kept. The MLP's output width N is
unchanged, so student and teacher features stay aligned for distillation.

Two names for the size kept, because the paper and this project count differently:
  * ``dgmr-<ratio>``: the chain value is the share of the HIDDEN neurons kept, K = round(ratio * M)
    (``dgmr-1`` keeps everything; ``dgmr-0.25`` keeps a quarter);
  * ``dgmr_mlp-<mlp_ratio>``: the paper's and the released code's "MLP ratio", kept hidden size over the
    embedding width, K = int(mlp_ratio * N) (released ``prune.py``: ``int(in_linear.in_features * mlp_factor)``).
    The paper's EVA-CLIP-E result (71.5% fewer parameters) is MLP ratio 1 ("prune1" configs), i.e.
    ``dgmr_mlp-1``; for a ViT with expansion 4 that equals ``dgmr-0.25``, and "prune2" is ``dgmr_mlp-2``.
    The value is recorded as the stage's ``mlp_ratio`` parameter in every metrics file.

``dgmr_kd`` (paper Sec. 3, recovery by distillation): the pruned student mimics the unpruned teacher on
unlabeled images, loss ``MSE(outputs) + MSE(token features)`` (released ``distill.py``, both coefficients 1).
``recipe: released`` (default) follows the released code: AdamW betas (0.9, 0.95); the peak learning rate is
``lr * batch / 256`` (``lr = base_lr * batch_size / 256``); cosine schedule with 2 of 10 epochs warmup; weight
decay 0.04; features are the PATCH tokens (``module/model_wrapper.py``: timm DeiT ``feat[:, 2:]`` after the
final norm; timm Swin: all tokens after the final norm; EVA: ``feat[:, 1:]`` with the final norm and head
replaced by identities in ``distill.py``, i.e. pre-norm patch tokens and the pre-norm class token as output).
Here a timm ViT drops its ``num_prefix_tokens`` (the DeiT rule; the released wrapper has no plain-ViT case);
no EVA model is built in this project, so the pre-norm rule is not reachable. ``recipe: project`` is the
recipe of the committed reference runs (``reports/default/dgmr``): AdamW betas (0.9, 0.999), ``lr`` used as
is, features = every token after the final norm.

Provenance. Checked against the authors' released code, github.com/visresearch/DGMR at commit
781a6bd9ae3adaca75988dc140da0ce3405922d5: ``prune.py::prune_mlp_diversity_kround`` (fc1 weight rows without
bias, largest residual norm, projection removal, ``ceil(mlp_ratio)`` rounds of N picks, first
``int(N * mlp_ratio)`` kept; fc2 columns and the fc1 bias only follow the kept rows), ``distill.py`` (loss,
``AnyPrecisionAdamW``/``AdamW`` with betas (0.9, 0.95), ``lr = base_lr * batch / 256``, cosine lr to min_lr 1e-6
and weight decay 0.04 -> 0.2) and ``configs/eva/clipe/distill_mse_bf16_1r.yaml`` (10 epochs, 2 warmup, base lr
6e-5, batch 40 per GPU). Not reproduced: the minimum learning rate of 1e-6 (the cosine here decays to 0) and
the weight-decay schedule (fixed here); bf16 "pure" training. The paper body itself could not be opened here;
section/figure numbers follow third-party summaries. The paper distils on ImageNet-1K without labels (0.06% of
the LAION-2B pretraining data); ``fraction`` picks the share of this experiment's train set used unlabeled.

Extensions beyond the paper: gated MLPs (Llama: gate and up projections) use the concatenation of the
neuron's rows in both input projections; BERT-family MLPs use ``intermediate.dense`` rows (``dgmr_kd`` matches
their last hidden state, all tokens). Selection is done in float64, and a kept neuron is never picked twice
(the released code could pick one again once the residuals vanish, which only happens past the rank).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from baselines.distill import recovery_recipe
from slimbench.data import seeded_subset
from slimbench.errors import ConfigError
from slimbench.lazy import lazy_module
from slimbench.plots import figure, pyplot, table
from slimbench.stages import BASE, Context, Param, applies_to, keeps_value, parse_chain, stage
from slimbench.surgery import MLP, find_mlps, keep_mlp_neurons
from slimbench.train import fit

pd = lazy_module("pandas")

RATIO = Param("ratio", float, 0.5, 0.0, 1.0, low_open=True,
              help="share of the HIDDEN neurons kept, kept / original hidden size (1.0 keeps all); "
                   "not the paper's MLP ratio, see dgmr_mlp")
MLP_RATIO = Param("mlp_ratio", float, 1.0, 0.0, None, low_open=True,
                  help="the paper's MLP ratio: kept hidden size / embedding width (1 = the paper's prune1)")
RELEASED_BETAS = (0.9, 0.95)
LR_REFERENCE_BATCH = 256


def kept_hidden(hidden: int, ratio: float) -> int:
    """Hidden size after ``dgmr-<ratio>`` (kept / original), at least one neuron."""
    return max(1, min(hidden, int(round(hidden * ratio))))


def kept_for_mlp_ratio(mlp: MLP, mlp_ratio: float) -> int:
    """Hidden size after ``dgmr_mlp-<mlp_ratio>``: int(width * mlp_ratio), as the released ``prune.py``."""
    width = mlp.output.out_features
    keep = int(width * mlp_ratio + 1e-9)  # 1e-9: 3 * (1/3) must give 1, not 0
    if not 1 <= keep <= mlp.hidden:
        raise ConfigError(f"dgmr_mlp: mlp_ratio={mlp_ratio} keeps {keep} of the {mlp.hidden} hidden neurons of "
                          f"'{mlp.name}' (width {width}); choose a value in [{1 / width:.4g}, "
                          f"{mlp.hidden / width:.4g}].")
    return keep


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


def prune_by_diversity(model: nn.Module, kept: Any) -> nn.Module:
    """Keep ``kept(mlp)`` neurons of every MLP, chosen by :func:`diversity_order`."""
    for mlp in find_mlps(model):
        keep = kept(mlp)
        if keep < mlp.hidden:
            keep_mlp_neurons(mlp, diversity_order(neuron_vectors(mlp), keep))
    return model


@stage("dgmr", params=(RATIO,), primary="ratio", applies_to=applies_to("mlp_neurons"), budget=keeps_value)
def dgmr(model: nn.Module, ctx: Context, ratio: float) -> nn.Module:
    """Keep ``ratio`` of every MLP's hidden neurons by Gram-Schmidt diversity (DGMR, Shen et al. 2025, Sec. 3)."""
    return prune_by_diversity(model, lambda mlp: kept_hidden(mlp.hidden, ratio))


@stage("dgmr_mlp", params=(MLP_RATIO,), primary="mlp_ratio", applies_to=applies_to("mlp_neurons"))
def dgmr_mlp(model: nn.Module, ctx: Context, mlp_ratio: float) -> nn.Module:
    """DGMR at the paper's MLP ratio: keep int(mlp_ratio * width) hidden neurons per MLP (released prune.py)."""
    return prune_by_diversity(model, lambda mlp: kept_for_mlp_ratio(mlp, mlp_ratio))


def outputs_and_features(model: nn.Module, batch: Any, patch_tokens: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Model output (logits) and final-layer token features after the final norm: what the released
    ``ModelWrapper`` returns for timm models. ``patch_tokens`` drops a timm ViT's class/distillation tokens
    (released: DeiT ``feat[:, 2:]``); Swin has none. Hugging Face encoders: the last hidden state."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        images = batch[0]
        dtype = next(model.parameters()).dtype
        features = model.forward_features(images.to(dtype) if dtype.is_floating_point else images)
        logits = model.forward_head(features).float()
        prefix = getattr(model, "num_prefix_tokens", 0) if patch_tokens and features.ndim == 3 else 0
        return logits, features[:, prefix:].float()
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


def kd_recipe(ctx: Context, recipe_name: str, epochs: int, lr: float, warmup: float, weight_decay: float,
              batch_size: Optional[int]) -> dict[str, Any]:
    """Training options of ``dgmr_kd``: the released code's (betas, lr per 256 examples) or the project's."""
    recipe = {**recovery_recipe(ctx, epochs, lr), "schedule": "cosine", "warmup": warmup,
              "weight_decay": weight_decay}
    if batch_size is not None:
        recipe["batch_size"] = batch_size
    if recipe_name == "released":
        recipe["betas"] = RELEASED_BETAS
        recipe["lr"] = lr * recipe.get("batch_size", 64) / LR_REFERENCE_BATCH
    return recipe


@stage("dgmr_kd", params=(
    Param("recipe", str, "released", choices=("released", "project"),
          help="released: the authors' distill.py (betas 0.9/0.95, lr x batch/256, patch-token features); "
               "project: the committed reference runs' recipe (betas 0.9/0.999, lr as is, all tokens)"),
    Param("epochs", int, 10, 0, None, help="distillation epochs over the unlabeled subset (paper: 10)"),
    Param("lr", float, 6e-5, 0.0, None, low_open=True,
          help="released: base lr per 256 examples (paper: 6e-5); project: the peak AdamW lr"),
    Param("warmup", float, 0.2, 0.0, 1.0, help="warmup share of the steps (paper: 2 of 10 epochs)"),
    Param("weight_decay", float, 0.04, 0.0, None, help="AdamW weight decay (paper: 0.04 at the start)"),
    Param("batch_size", int, None, 1, None, help="batch size (default: the base recipe's)"),
    Param("fraction", float, 1.0, 0.0, 1.0, low_open=True,
          help="share of the train set used, without labels (seeded subset)"),
    Param("output_weight", float, 1.0, 0.0, None, help="weight of the output (logit) MSE"),
    Param("feature_weight", float, 1.0, 0.0, None, help="weight of the final-feature MSE"),
), applies_to=applies_to("token_features"))
def dgmr_kd(model: nn.Module, ctx: Context, recipe: str, epochs: int, lr: float, warmup: float,
            weight_decay: float, batch_size: Optional[int], fraction: float, output_weight: float,
            feature_weight: float) -> nn.Module:
    """Recover a pruned model by distilling the uncompressed teacher on unlabeled images (DGMR, Sec. 3)."""
    teacher = ctx.teacher
    unlabeled = seeded_subset(ctx.train_set, max(1, int(round(len(ctx.train_set) * fraction))), ctx.seed)
    patch_tokens = recipe == "released"

    def loss(student: nn.Module, batch: Any) -> torch.Tensor:
        with torch.no_grad():
            target = outputs_and_features(teacher, batch, patch_tokens)
        return distillation_loss(outputs_and_features(student, batch, patch_tokens), target, output_weight,
                                 feature_weight)

    fit(model, ctx.task, unlabeled, ctx.device,
        kd_recipe(ctx, recipe, epochs, lr, warmup, weight_decay, batch_size), ctx.seed, loss_fn=loss,
        progress=ctx.progress, desc="dgmr_kd")
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
    data["mlp_ratio_kept"] = calls.map(lambda c: round(share_kept(c[0]), 6))
    data["recovery"] = calls.map(lambda c: "+".join(x.name for x in c[1:]) or "none")
    keys = ["dataset", "model", "criterion", "mlp_ratio_kept", "recovery"]
    values = [metric, "params", "flops", "relative_params_kept", "relative_flops_kept"]
    return data.groupby(keys, sort=False)[[v for v in values if v in data]].mean().reset_index()


def share_kept(call: Any) -> float:
    """The share of hidden neurons a pruning call keeps: ``dgmr-x`` keeps x, ``dgmr_mlp-r`` the paper's MLP ratio
    r (hidden / width, so r / 4 at the expansion 4 of every ViT, DeiT and Swin here), ``mlp_*-y`` removes y."""
    if call.name == "dgmr":
        return float(call.value)
    if call.name == "dgmr_mlp":
        return float(call.value) / 4
    return 1 - float(call.value)


@figure("dgmr_before_after")
def before_after(frame: pd.DataFrame, metric: str) -> Any:
    """Task metric against the share of parameters removed, per criterion (DGMR and the baselines): pruned only
    (left) and after the distillation recovery (right), one row of panels per model; the uncompressed model
    dashed."""
    import seaborn as sns

    plt = pyplot()
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
    return fig


@table("dgmr_reduction")
def reduction_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The paper's table layout: per model, criterion and MLP share kept, parameters and FLOPs with their
    reductions, and the task metric of the base, pruned and recovered models (means over seeds) with the drop
    after recovery in points."""
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
    return table
