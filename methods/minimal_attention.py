"""Minimal transformers: Bermeitinger, Hrycej, Pavone, Kath and Handschuh (2024), "Reducing the Transformer
Architecture to a Minimum", arXiv:2410.13732.

A model family (``minimal_transformer``) whose options select the paper's reductions of the encoder block,
the closed-form count of their attention parameters, and the study's paper-like table and figure.

What the paper proposes and does (arXiv v2 full text: sections 2-6, tables 1-3):
  * omit the MLP of every encoder block (section 2): attention's softmax similarity is itself nonlinear;
  * single head (section 3): with square matrices, collapse ``Wq Wk^T`` into one ``N x N`` matrix ``W_qk``,
    logits ``X W_qk X^T`` (implemented in the paper by setting ``W_K = I``); with ``h > 1`` heads of width
    ``N/h`` a full ``W_qk`` per head is ``h N^2`` and no saving (section 4), so the paper's ``Wqk`` variants are
    single-head only;
  * omit the value and output projections, ``W_V = W_O = I`` (sections 3-4, after He and Hofmann 2024): the
    output is a convex combination of the inputs; the paper's ``noWv.Vo`` variants are single-head only;
  * symmetric similarity (section 5), ``N(N+1)/2`` parameters instead of ``N^2``: "a symmetric matrix ``W_qk``"
    or "a lower triangular matrix ``T`` multiplied by its transpose" (Cholesky); its experiments reuse ``W_Q`` as
    ``W_K``. The paper's symmetric variants keep ``W_V``/``W_O`` and are tabulated with 1 and 4 heads;
  * experiments (section 6): 6 encoders (12 also tried, not better), 1 or 4 heads, with and without MLP, Adam,
    exactly 500 epochs, MNIST and CIFAR-10 with their full training sets and the official test sets as
    validation; train and validation loss and accuracy are reported, and the argument is made from the loss.
    ImageNet "trials" failed for the standard model and converged only without MLP; no ImageNet table is given.

No code of the authors' is public (searched by title, its v1 title and the authors' names); the paper says its
models were built in Keras. So everything below is read from the paper's text, and what it does not say is a
choice made here, named as such.

The paper's layout, from its parameter totals. Its 6-encoder MNIST models have "287,686" parameters (the
standard, with MLP; 1 or 4 heads) and "101,470" (the reduced variant without MLP; 1 or 4 heads). Both are
reproduced exactly by width N = 60, an MLP of 256 hidden units, ONE LayerNorm per encoder, biases on Wq, Wk,
Wv and Wo, 2x2 patches (28x28 -> 196 tokens + a class token = 197), learned positions and a final LayerNorm
before the classifier. Per encoder: attention 4 (60*60 + 60) = 14,640, MLP 2 * 60 * 256 + 256 + 60
= 31,036, LayerNorm 120; embedding 2*2*60 + 60 (patches) + 60 (class token) + 197 * 60 (positions) = 12,180;
head 120 + 60 * 10 + 10 = 730; so 6 * 45,796 + 12,180 + 730 = 287,686 and 6 * 14,760 + 12,180 + 730 = 101,470.
These are the options ``norms_per_block=1, attention_bias=True, patch_size=2, mlp_hidden=256`` of the catalog's
``minattn_paper_*`` models. The counts fix how many LayerNorms there are, not where: here the one LayerNorm
normalises the block's input to attention (pre-norm) and the MLP reads the residual stream after attention.
The collapsed (``merged``) and ``symmetric`` similarity matrices carry no bias (the paper gives no totals that
would tell). In this layout the merged minimum variant (no MLP, merged ``W_qk``, no V/O) has 6 * (3,600 + 120) +
12,180 + 730 = 35,230 parameters, 12.2% of the standard; the symmetric one (no MLP, ``W_qk`` symmetric, no V/O)
6 * (1,830 + 120) + 12,910 = 24,610, 8.6%: the paper's "up to 90%" saved. The paper's 12-encoder
totals (section 6) were not checked against this layout. The catalog's ``minattn_w60_*`` models are N = 60 in this
project's layout (two LayerNorms, no biases, 4x4 patches: 278,866 and 91,930 parameters on MNIST), kept because
committed reports used them.

Choices made here (options of :func:`minimal_transformer`, set per model in config/catalog.yaml):
  * symmetric, two forms: ``qk="tied"`` is the paper's experiment (``W_K = W_Q``, heads of width ``d/h``,
    ``d^2`` parameters for any ``h``); ``qk="symmetric"`` is its Cholesky proposal, ``W_h = L_h L_h^T`` with
    ``L_h`` lower triangular (``d(d+1)/2`` per head: half of the collapsed ``W_qk``, as the issue asks). For one
    head both span the same matrices (symmetric positive semi-definite, so a token is never dissimilar to
    itself); they differ in parameter count and may differ in optimisation. With ``h`` heads the Cholesky form
    is a full ``d x d`` factor per head (``h d(d+1)/2``), no saving, so the catalog uses it single-head only.
    ``sym_novo`` (symmetric and no V/O) goes beyond the paper's table;
  * no V/O with ``h`` heads: head ``h`` mixes its own ``d/h`` slice of the input features (for one head:
    exactly the softmax-weighted sum of the inputs);
  * by default (this project's layout): pre-norm ViT blocks (LayerNorm before attention and before the MLP), a
    class token, learned position embeddings and no biases in the attention maps (so the counts are exactly the
    matrices' sizes); AdamW with warm-up and cosine decay, gradient clipping at 1.0, bf16 autocast on a GPU,
    random crop and flip on CIFAR-10, where the paper trains with Adam for exactly 500 epochs and names no
    schedule, clipping or augmentation. The paper gives neither patch size nor batch size (its totals imply 2x2
    patches, above);
  * initialisation: the merged ``W_qk`` and the Cholesky factor ``L`` start from a truncated normal, std 0.02
    (:meth:`reset_similarity`), like timm's ViT weights. The paper builds ``W_qk`` by fixing ``W_K = I`` and
    training ``W_Q``, so its start is Keras's default for ``W_Q`` (glorot uniform, unless the authors set
    another: not stated): for a 60 x 60 kernel its standard deviation is sqrt(2 / 120) = 0.129, 6.5 times this
    start's. Not checked: a project choice.
"""

from __future__ import annotations

import inspect
import json
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from slimbench.data import DatasetInfo
from slimbench.errors import ConfigError
from slimbench.lazy import lazy_module
from slimbench.models.registry import family
from slimbench.plots import figure, pyplot, table

pd = lazy_module("pandas")

QK_MODES = ("separate", "merged", "symmetric", "tied")
LOSSES = ("train_loss", "eval_loss")


def qk_parameters(embed_dim: int, num_heads: int, qk: str) -> int:
    """Similarity parameters of one block: ``2 d^2`` (Wq, Wk), ``h d^2`` (collapsed W_h),
    ``h d(d+1)/2`` (symmetric W_h = L_h L_h^T) or ``d^2`` (tied: Wq reused as Wk)."""
    if qk == "separate":
        return 2 * embed_dim * embed_dim
    if qk == "tied":
        return embed_dim * embed_dim
    if qk == "merged":
        return num_heads * embed_dim * embed_dim
    if qk == "symmetric":
        return num_heads * embed_dim * (embed_dim + 1) // 2
    raise ConfigError(f"minimal_transformer: qk must be one of {list(QK_MODES)}, not '{qk}'.")


def attention_parameters(embed_dim: int, num_heads: int, qk: str, value_output: bool, bias: bool = False) -> int:
    """Closed-form trainable parameters of one attention layer: similarity plus ``2 d^2`` for Wv and Wo, plus
    ``d`` per bias of the linear maps present (Wq, Wk, Wv, Wo) when ``bias``."""
    linear_maps = {"separate": 2, "tied": 1}.get(qk, 0) + (2 if value_output else 0)
    return (qk_parameters(embed_dim, num_heads, qk) + (2 * embed_dim * embed_dim if value_output else 0)
            + (linear_maps * embed_dim if bias else 0))


def mlp_width(embed_dim: int, mlp_ratio: float, mlp_hidden: Optional[int]) -> int:
    """MLP hidden units: ``mlp_hidden`` when given (the paper's 256), else ``int(d * mlp_ratio)``."""
    return mlp_hidden if mlp_hidden is not None else int(embed_dim * mlp_ratio)


def closed_form_parameters(info: DatasetInfo, embed_dim: int, depth: int, num_heads: int, patch_size: int,
                           mlp: bool, mlp_ratio: float, qk: str, value_output: bool, norms_per_block: int = 2,
                           attention_bias: bool = False, mlp_hidden: Optional[int] = None) -> dict[str, int]:
    """Every parameter of :class:`MinimalTransformer`, by part, counted from the sizes alone."""
    d = embed_dim
    hidden = mlp_width(d, mlp_ratio, mlp_hidden)
    tokens = (info.image_size // patch_size) ** 2 + 1
    attention = attention_parameters(d, num_heads, qk, value_output, attention_bias)
    mlp_block = (2 * d * hidden + hidden + d) if mlp else 0
    norms = 2 * d * (2 if mlp and norms_per_block == 2 else 1)
    embedding = info.in_chans * patch_size**2 * d + d + d + tokens * d  # patch conv + bias, class token, positions
    head = 2 * d + d * info.num_classes + info.num_classes  # final norm + classifier
    block = attention + mlp_block + norms
    return {"attention_per_block": attention, "attention_total": depth * attention, "block": block,
            "embedding": embedding, "head": head, "total": embedding + depth * block + head}


class MinimalAttention(nn.Module):
    """Self-attention with the paper's optional reductions.

    ``qk``: ``separate`` (standard, logits ``(X Wq_h)(X Wk_h)^T``), ``merged`` (one ``d x d`` matrix per head,
    logits ``X W_h X^T``), ``symmetric`` (``W_h = L_h L_h^T``) or ``tied`` (the paper's implementation of symmetry,
    section 5: ``Wq_h`` reused as ``Wk_h``, logits ``(X Wq_h)(X Wq_h)^T``, any number of heads of width ``d/h``).
    ``value_output=False`` drops Wv and Wo, so the
    output is the attention-weighted sum of the inputs. Logits are scaled by ``1/sqrt(d/h)`` in every mode, so a
    merged layer with ``W_h = Wq_h Wk_h^T`` computes exactly the standard layer's logits.
    """

    def __init__(self, embed_dim: int, num_heads: int, qk: str = "separate", value_output: bool = True,
                 bias: bool = False) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ConfigError(f"minimal_transformer: embed_dim {embed_dim} is not divisible by num_heads {num_heads}.")
        qk_parameters(embed_dim, num_heads, qk)  # validates the mode
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.qk, self.value_output = qk, value_output
        self.scale = self.head_dim**-0.5
        if qk in ("separate", "tied"):
            self.query = nn.Linear(embed_dim, embed_dim, bias=bias)
        if qk == "separate":
            self.key = nn.Linear(embed_dim, embed_dim, bias=bias)
        elif qk == "merged":
            self.w_qk = nn.Parameter(torch.empty(num_heads, embed_dim, embed_dim))
        elif qk == "symmetric":
            rows, cols = torch.tril_indices(embed_dim, embed_dim)
            self.register_buffer("tril_rows", rows, persistent=False)
            self.register_buffer("tril_cols", cols, persistent=False)
            self.l_qk = nn.Parameter(torch.empty(num_heads, rows.numel()))
        if value_output:
            self.value = nn.Linear(embed_dim, embed_dim, bias=bias)
            self.proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_similarity()

    def reset_similarity(self, std: float = 0.02) -> None:
        for name in ("w_qk", "l_qk"):
            if hasattr(self, name):
                nn.init.trunc_normal_(getattr(self, name), std=std)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, d) -> (B, h, N, d/h)."""
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def cholesky_factor(self) -> torch.Tensor:
        """The lower-triangular (h, d, d) factors L_h of the symmetric similarity, filled from d(d+1)/2 values."""
        lower = self.l_qk.new_zeros(self.num_heads, self.embed_dim, self.embed_dim)
        lower[:, self.tril_rows, self.tril_cols] = self.l_qk
        return lower

    def similarity_matrix(self) -> torch.Tensor:
        """The collapsed (h, d, d) matrices W_h; for ``separate`` the product Wq_h Wk_h^T (Wq_h Wq_h^T if tied)."""
        if self.qk == "merged":
            return self.w_qk
        if self.qk == "symmetric":
            lower = self.cholesky_factor()
            return lower @ lower.transpose(1, 2)
        wq = self.query.weight.t().reshape(self.embed_dim, self.num_heads, self.head_dim).transpose(0, 1)
        key = self.query if self.qk == "tied" else self.key
        wk = key.weight.t().reshape(self.embed_dim, self.num_heads, self.head_dim).transpose(0, 1)
        return wq @ wk.transpose(1, 2)

    def query_key(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two (B, h, N, k) tensors whose scaled product is the logits: ``(X Wq_h, X Wk_h)``, ``(X W_h, X)`` or
        ``(X L_h, X L_h)`` (so ``X L_h L_h^T X^T`` is formed without building W_h); tied: ``(X Wq_h, X Wq_h)``."""
        if self.qk == "separate":
            return self.heads(self.query(x)), self.heads(self.key(x))
        if self.qk == "tied":
            query = self.heads(self.query(x))
            return query, query
        if self.qk == "merged":
            return torch.einsum("bnd,hde->bhne", x, self.w_qk), x.unsqueeze(1).expand(-1, self.num_heads, -1, -1)
        projected = torch.einsum("bnd,hde->bhne", x, self.cholesky_factor())
        return projected, projected

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scaled attention logits (B, h, N, N), before the softmax."""
        q, k = self.query_key(x)
        return (q @ k.transpose(-2, -1)) * self.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.query_key(x)
        v = self.heads(self.value(x) if self.value_output else x)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(x.shape)
        return self.proj(out) if self.value_output else out


class Block(nn.Module):
    """A pre-norm encoder block; ``mlp=False`` is the paper's MLP-free block. ``norms=1`` is the paper's single
    LayerNorm per encoder (before attention; the MLP then reads the residual stream as it is)."""

    def __init__(self, embed_dim: int, num_heads: int, mlp: bool, mlp_ratio: float, qk: str,
                 value_output: bool, norms: int = 2, bias: bool = False, mlp_hidden: Optional[int] = None) -> None:
        super().__init__()
        if norms not in (1, 2):
            raise ConfigError(f"minimal_transformer: norms_per_block must be 1 or 2, not {norms}.")
        self.norm1 = nn.LayerNorm(embed_dim)
        self.attn = MinimalAttention(embed_dim, num_heads, qk, value_output, bias)
        if mlp:
            hidden = mlp_width(embed_dim, mlp_ratio, mlp_hidden)
            self.norm2 = nn.LayerNorm(embed_dim) if norms == 2 else nn.Identity()
            self.mlp = nn.Sequential(nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x)) if hasattr(self, "mlp") else x


class MinimalTransformer(nn.Module):
    """ViT-style classifier (patch embedding, class token, learned positions) built from :class:`Block`."""

    def __init__(self, info: DatasetInfo, embed_dim: int, depth: int, num_heads: int, patch_size: int, mlp: bool,
                 mlp_ratio: float, qk: str, value_output: bool, norms_per_block: int = 2,
                 attention_bias: bool = False, mlp_hidden: Optional[int] = None) -> None:
        super().__init__()
        if info.image_size % patch_size:
            raise ConfigError(f"minimal_transformer: image size {info.image_size} is not divisible by "
                              f"patch_size {patch_size}.")
        tokens = (info.image_size // patch_size) ** 2 + 1
        self.patch_embed = nn.Conv2d(info.in_chans, embed_dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp, mlp_ratio, qk, value_output, norms_per_block,
                                            attention_bias, mlp_hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, info.num_classes)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def init_weights(module: nn.Module) -> None:
    """ViT initialisation: truncated normal (std 0.02) for every weight matrix, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, MinimalAttention):
        module.reset_similarity()


@family("minimal_transformer")
def minimal_transformer(info: DatasetInfo, pretrained: bool, download: bool, embed_dim: int = 60, depth: int = 6,
                        num_heads: int = 4, patch_size: int = 4, mlp: bool = True, mlp_ratio: float = 4.0,
                        qk: str = "separate", value_output: bool = True, norms_per_block: int = 2,
                        attention_bias: bool = False, mlp_hidden: Optional[int] = None) -> nn.Module:
    """The paper's variants by option (defaults: the standard block with the paper's 6 encoders, 4 heads, width
    N=60 as its parameter totals imply, its MLP multiple h=4, in this project's layout; the paper's own layout is
    ``norms_per_block=1, attention_bias=True, patch_size=2, mlp_hidden=256``, see the module docstring). Always
    trained from scratch, as the paper trains every variant from random initialisation, so
    ``pretrained``/``download`` have nothing to load."""
    return MinimalTransformer(info, embed_dim, depth, num_heads, patch_size, mlp, mlp_ratio, qk, value_output,
                              norms_per_block, attention_bias, mlp_hidden)


def variant_options(spec: dict[str, Any]) -> dict[str, Any]:
    """A catalog spec with the family's defaults filled in (the options that define the architecture)."""
    defaults = {name: p.default for name, p in inspect.signature(minimal_transformer).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {**defaults, **{k: v for k, v in spec.items() if k != "family"}}


def variant_label(options: dict[str, Any]) -> str:
    """E.g. ``h1 noMLP W_qk noVO``: the reductions of the paper's table in words."""
    parts = [f"h{options['num_heads']}", "MLP" if options["mlp"] else "noMLP"]
    parts += {"separate": [], "merged": ["W_qk"], "symmetric": ["W_qk sym"], "tied": ["Wq=Wk sym"]}[options["qk"]]
    parts += [] if options["value_output"] else ["noVO"]
    return " ".join(parts)


def is_standard(options: dict[str, Any]) -> bool:
    return options["mlp"] and options["qk"] == "separate" and options["value_output"]


def recorded_specs(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Each minimal-transformer model's spec as its runs recorded it (runs.csv's ``model_spec`` column)."""
    specs = {}
    for model, spec in zip(frame["model"], frame.get("model_spec", [None] * len(frame))):
        spec = json.loads(spec) if isinstance(spec, str) else None
        if spec and spec.get("family") == "minimal_transformer":
            specs[model] = spec
    return specs


@table("minimal_attention")
def study_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The paper-like table: per dataset and variant, attention parameters per block and in total, all
    parameters, their share of the standard model's, the metric over seeds and the base training time.

    The paper argues from training and validation loss as much as from accuracy, so the table also has the
    last training epoch's mean loss and the eval loss where the metrics record them (runs since 2026-11-24).
    Training time is the base stage's own log (``stage.json`` time_s, which ``run_evaluate`` records as
    ``stage_time_s`` for the base chain); nothing is re-measured here. Parameter counts are the measured
    ``params`` column; the attention counts come from :func:`attention_parameters` (tested to equal the model).
    """
    specs = recorded_specs(frame)
    missing = sorted(set(frame["model"]) - set(specs))
    if missing:
        raise ConfigError(f"minimal_attention table: model(s) {missing} are not minimal_transformer models (or their "
                          f"runs.csv lacks the model_spec column: rebuild it with `slimbench runs`).")
    base = frame[frame["chain"] == "base"]
    grouped = base.groupby(["dataset", "model"], sort=False)
    rows = []
    for (dataset, model), runs in grouped:
        options = variant_options(specs[model])
        per_block = attention_parameters(options["embed_dim"], options["num_heads"], options["qk"],
                                         options["value_output"], options.get("attention_bias", False))
        rows.append({"dataset": dataset, "model": model, "variant": variant_label(options),
                     "standard": is_standard(options), "attention_params_per_block": per_block,
                     "attention_params_total": per_block * options["depth"], "params": int(runs["params"].iloc[0]),
                     metric: runs[metric].mean(), f"{metric}_std": runs[metric].std(ddof=1) if len(runs) > 1 else 0.0,
                     "seeds": len(runs), "train_time_s": runs["stage_time_s"].mean(),
                     **{column: runs[column].mean() for column in LOSSES if column in runs and runs[column].notna().any()}})
    table = pd.DataFrame(rows)
    for dataset, rows_of in table.groupby("dataset", sort=False):
        reference = rows_of[rows_of["standard"]]
        if reference.empty:
            raise ConfigError(f"minimal_attention table: dataset '{dataset}' has no standard variant "
                              f"(mlp: true, qk: separate, value_output: true) to compare with.")
        ref = reference.iloc[0]
        table.loc[rows_of.index, "params_share_pct"] = 100 * rows_of["params"] / ref["params"]
        table.loc[rows_of.index, "attention_share_pct"] = (100 * rows_of["attention_params_total"]
                                                          / ref["attention_params_total"])
        table.loc[rows_of.index, f"{metric}_vs_standard"] = rows_of[metric] - ref[metric]
    order = ["dataset", "model", "variant", "standard", "attention_params_per_block", "attention_params_total",
             "attention_share_pct", "params", "params_share_pct", metric, f"{metric}_std", f"{metric}_vs_standard",
             "seeds", "train_time_s"] + [column for column in LOSSES if column in table]
    return table[order]


TARGET_SHARE, TARGET_DROP = 0.25, 0.01  # the target: within 1 point with at most 25% of the parameters


@figure("minimal_attention_vs_params")
def metric_vs_params(frame: pd.DataFrame, metric: str) -> Any:
    """Metric against all parameters (log scale), one panel per dataset, seeds as standard-deviation bars; the
    target region (at most 25% of the standard's parameters, within 1 point of it) is marked."""
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    plt = pyplot()
    rows_by_dataset = study_table(frame, metric)
    panels = list(rows_by_dataset.groupby("dataset", sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for ax, (dataset, rows) in zip(axes[0], panels):
        for _, row in rows.iterrows():
            ax.errorbar(row["params"], row[metric], yerr=row[f"{metric}_std"], capsize=3, label=row["variant"],
                        fmt="s" if "noMLP" in row["variant"] else "o")
        standard = rows.loc[rows["standard"]].iloc[0]
        ax.axhline(standard[metric], color="black", ls="--", lw=1, label="standard")
        ax.axhline(standard[metric] - TARGET_DROP, color="black", ls=":", lw=1, label="standard - 1 point")
        ax.axvspan(rows["params"].min() / 1.5, TARGET_SHARE * standard["params"], color="tab:green", alpha=0.08,
                   label=f"<= {TARGET_SHARE:.0%} of its parameters")
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 20k, 50k, 100k: labels that never collide
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(dataset)
        ax.set_xlabel("parameters (log scale)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig
