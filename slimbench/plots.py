"""A study's tables and figures, registered by name for the configs (as timm registers models).

A *table* is ``(frame, metric) -> DataFrame`` written as ``<name>.csv/.md/.tex``; a *figure* is
``(frame, metric) -> matplotlib Figure`` saved as ``<name>.png/.pdf``. Both read only the study's ``runs.csv``
(one row per experiment, :mod:`slimbench.results`), so every file is a declared output of one workflow job, and
the first paragraph of each function's docstring is its caption in ``snakemake --report``. Plotting libraries
are imported when a figure is drawn, not when a job starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from slimbench.atomic import write_atomically
from slimbench.lazy import lazy_module
from slimbench.registry import Registry
from slimbench.results import study_metric
from slimbench.stages import BASE, parse_chain

pd = lazy_module("pandas")

if TYPE_CHECKING:
    from matplotlib.figure import Figure

IDENTITY = ["dataset", "model", "chain"]
TABLE_FORMATS = ("csv", "md", "tex")
FIGURE_FORMATS = ("png", "pdf")
MARKERS = "osD^v<>"
PANELS_PER_ROW = 4


@dataclass(frozen=True)
class Output:
    """A registered table or figure: how to make it and what its caption says."""

    name: str
    make: Callable[[pd.DataFrame, str], Any]

    @property
    def caption(self) -> str:
        text = (self.make.__doc__ or self.name).strip()
        return " ".join(text.split("\n\n")[0].split())


TABLES: Registry[Output] = Registry("table")
FIGURES: Registry[Output] = Registry("figure")


def table(name: str) -> Callable:
    """Register ``fn(frame, metric) -> DataFrame`` as table ``name``."""
    return lambda fn: TABLES.add(name, Output(name, fn)).make


def figure(name: str) -> Callable:
    """Register ``fn(frame, metric) -> Figure`` as figure ``name``."""
    return lambda fn: FIGURES.add(name, Output(name, fn)).make


def pyplot() -> Any:
    """matplotlib.pyplot with a file-only backend, imported on first use (it costs a job ~1 s to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_tables(frame: pd.DataFrame, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.{ext}" for ext in TABLE_FORMATS]
    write_atomically(paths[0], lambda tmp: frame.to_csv(tmp, index=False))
    write_atomically(paths[1], lambda tmp: tmp.write_text(frame.to_markdown(index=False, floatfmt=".4g") + "\n"))
    write_atomically(paths[2], lambda tmp: tmp.write_text(frame.to_latex(index=False, float_format="%.4g")))
    return paths


def save(fig: "Figure", out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.{ext}" for ext in FIGURE_FORMATS]
    write_atomically(paths[0], lambda tmp: fig.savefig(tmp, format="png", dpi=160, bbox_inches="tight"))
    write_atomically(paths[1], lambda tmp: fig.savefig(tmp, format="pdf", bbox_inches="tight"))
    pyplot().close(fig)
    return paths


def render_table(name: str, frame: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    return write_tables(TABLES.get(name).make(frame, metric), out, name)


def render_figure(name: str, frame: pd.DataFrame, metric: str, out: Path) -> list[Path]:
    return save(FIGURES.get(name).make(frame, metric), out, name)


def method_label(chain: str) -> str:
    """The chain without its values: ``base+mlp_magnitude-0.5+kd`` -> ``mlp_magnitude+kd``."""
    names = [c.name for c in parse_chain(chain)]
    return "+".join(names) if names else "uncompressed"


@table("table")
def summary_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Summary of the study: one row per dataset, model and chain; mean over seeds of the task metric (with its
    standard deviation) and of the costs (parameters, FLOPs, size on disk, latency, peak memory), and the share
    of the uncompressed model's parameters, FLOPs and stored bits kept."""
    columns = [c for c in [metric, "accuracy", "params", "flops", "size_bytes", "latency_cpu_ms", "latency_cuda_ms",
                           "peak_rss_mib", "relative_params_kept", "relative_flops_kept",
                           "relative_stored_bits_kept", "stage_time_s"] if c in frame.columns]
    columns = list(dict.fromkeys(columns))
    grouped = frame.groupby(IDENTITY, sort=False)
    summary = grouped[columns].mean()
    summary.insert(0, "seeds", grouped.size())
    stds = grouped[[metric]].std().fillna(0.0)
    summary.insert(list(summary.columns).index(metric) + 1, f"{metric}_std", stds[metric])
    return summary.reset_index()


@table("gpu_speedup")
def gpu_speedup(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Measured GPU speed-up beside the FLOPs ratio: per chain, the same seed's uncompressed model's FLOPs and
    CUDA latency divided by the chain's, at batch 1 and at the large evaluation batch, and ``large_over_flops`` =
    large-batch speed-up / FLOPs ratio (1 = as fast as the FLOPs promise); mean and std over seeds. Runs
    evaluated without a GPU have no CUDA latency: their speed-ups are empty, the FLOPs ratio stays. Where the runs
    paired their GPU calls with the base (``latency_cuda_vs_base_ratio``), ``speedup_paired`` = 1 / that ratio and
    ``paired_over_flops`` follow: the speed-up to read when several jobs shared the GPU, since the two
    single-model medians were then timed minutes apart under different neighbours. Even paired, a shared GPU can
    overstate a small model's speed-up beyond its interval; ``benchmarks/idle_speedup.py`` times the saved models
    alone."""
    needed = ["flops", "latency_cuda_ms", "latency_cuda_large_ms"]
    frame = frame.assign(**{c: float("nan") for c in needed if c not in frame})
    keys = ["dataset", "model", "seed"]
    base = frame[frame["chain"] == BASE].set_index(keys)[needed]
    rows = frame[frame["chain"] != BASE].join(base, on=keys, rsuffix="_base")
    ratios = pd.DataFrame({
        **{k: rows[k] for k in IDENTITY},
        "flops_ratio": rows["flops_base"] / rows["flops"],
        "speedup_batch1": rows["latency_cuda_ms_base"] / rows["latency_cuda_ms"],
        "speedup_large": rows["latency_cuda_large_ms_base"] / rows["latency_cuda_large_ms"]})
    ratios["large_over_flops"] = ratios["speedup_large"] / ratios["flops_ratio"]
    spread = ["speedup_large", "large_over_flops"]
    if "latency_cuda_vs_base_ratio" in frame:
        ratios["speedup_paired"] = 1 / rows["latency_cuda_vs_base_ratio"]
        ratios["paired_over_flops"] = ratios["speedup_paired"] / ratios["flops_ratio"]
        spread += ["speedup_paired", "paired_over_flops"]
    grouped = ratios.groupby(IDENTITY, sort=False)
    summary = grouped.mean()
    for column in spread:
        summary.insert(list(summary.columns).index(column) + 1, f"{column}_std", grouped[column].std())
    summary.insert(0, "seeds", grouped.size())
    if "latency_cuda_large_batch" in frame:
        summary.insert(1, "large_batch", frame.groupby(IDENTITY, sort=False)["latency_cuda_large_batch"].max())
    return summary.reset_index()


def method_styles(methods: list[str]) -> dict[str, tuple[Any, str]]:
    """One colour and marker per method, the same in every panel of a figure: tab20's ten strong hues first, its
    ten light ones after (in tab20's own order a strong hue and its light twin would mark two unrelated methods)."""
    cmap = pyplot().get_cmap("tab20")
    return {m: (cmap((2 * i) % 20 + (i // 10) % 2), MARKERS[i % len(MARKERS)]) for i, m in enumerate(methods)}


def panel_grid(count: int, width: float, height: float) -> tuple["Figure", list[Any]]:
    """A figure of ``count`` panels of ``width`` x ``height`` inches, at most PANELS_PER_ROW a row, spare cells
    hidden (crossbench has seven panels: one row of them was 30 inches wide)."""
    columns = min(count, PANELS_PER_ROW)
    rows = -(-count // columns)
    fig, axes = pyplot().subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def metric_vs_cost(frame: pd.DataFrame, metric: str, cost: str) -> "Figure":
    """Task metric against the share of a cost kept; one line per method, seeds as a band, base dashed; one legend
    for all panels."""
    import seaborn as sns
    from matplotlib.lines import Line2D

    column = f"relative_{cost}_kept"
    data = frame.copy()
    data["method"] = data["chain"].map(method_label)
    data[column] = data[column] * 100
    methods = sorted(data.loc[data["chain"] != BASE, "method"].unique())
    styles = method_styles(methods)
    panels = data.groupby(["dataset", "model"], sort=False)
    fig, axes = panel_grid(len(panels), 5.2, 4)
    for ax, ((dataset, model), panel) in zip(axes, panels):
        own = study_metric(panel, metric)  # a study may mix tasks: each panel plots its own metric
        compressed = panel[panel["chain"] != BASE]
        if not compressed.empty:
            sns.lineplot(data=compressed, x=column, y=own, hue="method", hue_order=methods, style="method",
                         style_order=methods, palette={m: c for m, (c, _) in styles.items()},
                         markers={m: marker for m, (_, marker) in styles.items()}, dashes=False, errorbar="sd",
                         markersize=8, markeredgecolor="white", markeredgewidth=0.8, ax=ax, legend=False)
        base = panel[panel["chain"] == BASE]
        if not base.empty:
            ax.axhline(base[own].mean(), color="black", ls="--", lw=1)
        ax.set_title(f"{model} on {dataset}")
        ax.set_xlabel(f"{cost.replace('_', ' ')} kept (% of uncompressed)")
        ax.set_ylabel(own)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=c, marker=marker, markersize=8, markeredgecolor="white", label=m)
               for m, (c, marker) in styles.items()]
    handles.append(Line2D([], [], color="black", ls="--", lw=1, label="uncompressed"))
    fig.tight_layout()
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    return fig


@figure("metric_vs_params")
def metric_vs_params(frame: pd.DataFrame, metric: str) -> "Figure":
    """Task metric against the share of the uncompressed model's parameters kept, one line per method (seeds
    as a band of one standard deviation), the uncompressed model dashed."""
    return metric_vs_cost(frame, metric, "params")


@figure("metric_vs_flops")
def metric_vs_flops(frame: pd.DataFrame, metric: str) -> "Figure":
    """Task metric against the share of the uncompressed model's FLOPs kept (per example), one line per method
    (seeds as a band of one standard deviation), the uncompressed model dashed."""
    return metric_vs_cost(frame, metric, "flops")


@figure("metric_vs_stored_bits")
def metric_vs_stored_bits(frame: pd.DataFrame, metric: str) -> "Figure":
    """Task metric against the share of the uncompressed model's stored weight bits kept (quantization counts
    here), one line per method (seeds as a band), the uncompressed model dashed."""
    return metric_vs_cost(frame, metric, "stored_bits")


@figure("train_curves")
def train_curves(frame: pd.DataFrame, metric: str) -> "Figure":
    """Training loss per epoch of the runs that record it (today the uncompressed models' training: did it
    converge?), one colour per method and one line per seed, each panel one dataset and model."""
    import json

    column = frame["train_epoch_losses"] if "train_epoch_losses" in frame else pd.Series(dtype=object)
    data = frame[column.notna()].copy()
    if data.empty:
        raise ValueError("no run of this study records per-epoch training losses (train_epoch_losses)")
    data["method"] = data["chain"].map(method_label)
    panels = data.groupby(["dataset", "model"], sort=False)
    fig, axes = panel_grid(len(panels), 6, 4)
    colours = {m: f"C{i}" for i, m in enumerate(dict.fromkeys(data["method"]))}
    for ax, ((dataset, model), panel) in zip(axes, panels):
        for _, run in panel.iterrows():
            losses = json.loads(run["train_epoch_losses"])
            first = not any(line.get_label() == run["method"] for line in ax.get_lines())
            ax.plot(range(1, len(losses) + 1), losses, color=colours[run["method"]], lw=1.2,
                    label=run["method"] if first else "_seed", alpha=0.9)
        ax.set_title(f"{model} on {dataset}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss (epoch mean)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


from slimbench import leaderboard  # noqa: E402,F401  (registers the crossbench's leaderboards, rank plot, skipped table)
