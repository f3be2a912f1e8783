"""The crossbench's outputs: every method at matched budgets on every model it applies to (issue 22).

A chain's **budget** is the share of its pruning stage's prunable FLOPs removed, read from the stage's declared
``budget`` (:class:`slimbench.stages.Stage`): ``stat-0.3``, ``kwon-0.3``, ``heads_magnitude-0.3`` remove 30% of
the attention-head and MLP-neuron FLOPs (their ratio is already a FLOPs budget, counted at ``seq_len``);
``mlp_magnitude-0.3`` (and random, activation, Taylor) remove 30% of every MLP's neurons, which is 30% of the MLP
FLOPs (each neuron costs the same); ``dgmr-0.7`` keeps 70% of the neurons, also 30% of the MLP FLOPs. The
prunable FLOPs therefore differ between head-and-neuron and MLP-only methods, so every cell reports the
measured share of the whole model's FLOPs kept beside its metric. Recovery and quantization stages after the
pruning stage (``+dgmr_kd``, ``+int8``) keep its budget; a chain with no or several budgeted stages has none
and is left off the leaderboards.

Cells: the drop of the task metric against the same seed's uncompressed model (positive = worse; for perplexity
the rise, since lower is better), mean and sample standard deviation over seeds; accuracy-like metrics in
points (x100), perplexity in its own units. The best method of each column (smallest mean drop) is marked.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable, Optional

from slimbench.claims import LOWER_IS_BETTER, drop
from slimbench.config import FAMILY_TASKS, chain_skip_reason
from slimbench.lazy import lazy_module
from slimbench.plots import figure, method_label, method_styles, pyplot, table
from slimbench.results import study_metric
from slimbench.stages import BASE, STAGES, parse_chain

pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BUDGETS = (0.3, 0.5)  # the crossbench's pre-registered budgets (share of prunable FLOPs removed)
POINTS = {"accuracy", "mcc", "f1", "mean_iou"}  # metrics in [0, 1]: drops shown in points


def chain_budget(chain: str) -> Optional[float]:
    """The share of prunable FLOPs the chain's one budgeted stage removes; None without exactly one."""
    found = [STAGES.get(c.name).budget(float(c.value)) for c in parse_chain(chain)
             if STAGES.get(c.name).budget is not None and c.value is not None]
    return round(found[0], 6) if len(found) == 1 else None


def column_of(dataset: str, model: str) -> str:
    return f"{model} / {dataset}"


def cells(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """One row per (budget, method, dataset, model): drop mean and std over seeds (in the column's unit), seeds,
    measured share of FLOPs kept, and ``best`` (smallest mean drop of its budget and column)."""
    rows = []
    for (dataset, model), panel in frame.groupby(["dataset", "model"], sort=False):
        own = study_metric(panel, metric)
        scale = 100.0 if own in POINTS else 1.0
        bases = panel[panel["chain"] == BASE].set_index("seed")[own]
        for chain, runs in panel[panel["chain"] != BASE].groupby("chain", sort=False):
            budget = chain_budget(chain)
            paired = runs[runs["seed"].isin(bases.index)]
            if budget is None or paired.empty:
                continue
            lost = pd.Series([drop(bases[s], v, own) * scale for s, v in zip(paired["seed"], paired[own])])
            rows.append({"budget": budget, "method": method_label(chain), "chain": chain, "dataset": dataset,
                         "model": model, "metric": own, "drop_mean": lost.mean(),
                         "drop_std": lost.std(ddof=1), "seeds": len(lost),  # NaN for one seed: no spread known
                         "flops_kept": paired["relative_flops_kept"].mean()
                         if "relative_flops_kept" in paired else float("nan")})
    out = pd.DataFrame(rows, columns=["budget", "method", "chain", "dataset", "model", "metric", "drop_mean",
                                      "drop_std", "seeds", "flops_kept"])
    out["best"] = out.groupby(["budget", "dataset", "model"])["drop_mean"].transform("min") == out["drop_mean"]
    return out


def unit(metric: str) -> str:
    """What a drop is counted in: points for [0, 1] metrics; a rise of a lower-is-better metric (perplexity)."""
    if metric in POINTS:
        return f"{metric} drop, pt"
    return f"{metric} rise" if metric in LOWER_IS_BETTER else f"{metric} drop"


def leaderboard(frame: pd.DataFrame, metric: str, budget: float) -> pd.DataFrame:
    """Rows: methods; columns: model / dataset; cells ``drop +- std [unit] (F% FLOPs)``, best in bold; a cell of one
    seed (a partial run) says so instead of a spread; an empty cell says ``n/a`` where a stage of the method does not
    apply to the model (the skipped table says why) and ``not run`` otherwise."""
    found = cells(frame, metric)
    found = found[(found["budget"] - budget).abs() < 1e-9]
    if found.empty:
        return pd.DataFrame({"method": []})
    found = found.assign(column=[f"{column_of(d, m)} [{unit(x)}]"
                                 for d, m, x in zip(found["dataset"], found["model"], found["metric"])])
    text = [f"{'**' if b else ''}{d:.2f}{f' ± {s:.2f}' if n > 1 else ''}{'**' if b else ''} "
            f"({'' if n > 1 else f'{n} seed, '}{100 * f:.0f}% FLOPs)"
            for d, s, n, f, b in zip(found["drop_mean"], found["drop_std"], found["seeds"], found["flops_kept"],
                                     found["best"])]
    wide = found.assign(cell=text).pivot(index="method", columns="column", values="cell")
    wide = wide[list(dict.fromkeys(found["column"]))]
    chain_of = dict(zip(found["method"], found["chain"]))
    where = dict(zip(found["column"], zip(found["dataset"], found["model"])))
    skips = inapplicable(frame)
    for column in wide.columns:
        for method in wide.index[wide[column].isna()]:
            wide.loc[method, column] = "n/a" if (*where[column], chain_of[method]) in skips else "not run"
    return wide.reset_index().rename_axis(columns=None)


def ranks(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rank of each method within each (budget, column) by mean drop, 1 = best (ties share the mean rank)."""
    found = cells(frame, metric)
    found["rank"] = found.groupby(["budget", "dataset", "model"])["drop_mean"].rank(method="average")
    return found


def board(budget: float) -> Callable[[pd.DataFrame, str], pd.DataFrame]:
    """The registered table of one budget (its docstring is the report caption)."""

    def make(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
        return leaderboard(frame, metric, budget)

    make.__doc__ = (f"Leaderboard at {budget:.0%} of the prunable FLOPs removed: rows are methods, columns model / "
                    f"dataset; each cell is the drop of the task metric against the same seed's uncompressed model "
                    f"(accuracy-like metrics in points, perplexity as its rise), mean +- standard deviation over "
                    f"seeds, and the measured share of the model's FLOPs kept; the best of each column in bold.")
    return make


for _budget in BUDGETS:
    table(f"leaderboard_{round(_budget * 100)}")(board(_budget))


@figure("leaderboard_ranks")
def rank_plot(frame: pd.DataFrame, metric: str) -> "Figure":
    """Rank of every method in every model / dataset column (1 = smallest drop), one panel per budget; the legend
    gives each method's mean rank over the columns it applies to."""
    plt = pyplot()
    found = ranks(frame, metric)
    budgets = sorted(found["budget"].unique()) or [BUDGETS[0]]
    fig, axes = plt.subplots(1, len(budgets), figsize=(8.5 * len(budgets), 5), squeeze=False)
    style = method_styles(sorted(found["method"].unique()))
    for ax, budget in zip(axes[0], budgets):
        part = found[found["budget"] == budget]
        columns = list(dict.fromkeys(column_of(d, m) for d, m in zip(part["dataset"], part["model"])))
        for method, rows in part.groupby("method", sort=True):
            by_column = dict(zip((column_of(d, m) for d, m in zip(rows["dataset"], rows["model"])), rows["rank"]))
            y = [by_column.get(column, float("nan")) for column in columns]  # a gap where the method does not apply
            colour, marker = style[method]
            ax.plot(range(len(columns)), y, marker=marker, color=colour,
                    label=f"{method} (mean {rows['rank'].mean():.1f})")
        ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=7)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.invert_yaxis()
        ax.set_ylabel("rank (1 = smallest drop)")
        ax.set_title(f"{budget:.0%} of the prunable FLOPs removed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)  # beside the lines
    fig.tight_layout()
    return fig


def inapplicable(frame: pd.DataFrame) -> dict[tuple[str, str, str], tuple[str, str]]:
    """(dataset, model, chain) -> (stage, reason) for each chain of the study absent from a (dataset, model) of
    runs.csv because one of its stages does not apply there (the stage's declared applies_to). An absent chain that
    applies is a run not made yet (a partial runs.csv names it in missing.csv), not a skip."""
    chains = list(dict.fromkeys(frame["chain"]))
    found = {}
    for (dataset, model), panel in frame.groupby(["dataset", "model"], sort=False):
        spec = json.loads(panel["model_spec"].iloc[0]) if "model_spec" in panel else {}
        task = FAMILY_TASKS.get(spec.get("family"), "unknown")
        for chain in (c for c in chains if c not in set(panel["chain"])):
            reason = chain_skip_reason(spec, task, model, chain)
            if reason:
                found[(dataset, model, chain)] = reason
    return found


@table("skipped")
def skipped_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """What the study left out as inapplicable (skip_inapplicable): dataset, model, chain, the stage that does not
    apply and why, from each stage's declared applies_to (runs not made yet are in missing.csv, not here)."""
    rows = [{"dataset": d, "model": m, "chain": c, "stage": stage, "reason": reason}
            for (d, m, c), (stage, reason) in inapplicable(frame).items()]
    return pd.DataFrame(rows, columns=["dataset", "model", "chain", "stage", "reason"])
