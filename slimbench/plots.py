"""Tables and figures shared by the studies (seaborn; PNG + PDF), registered by name for the configs."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from slimbench.registry import Registry  # noqa: E402
from slimbench.stages import BASE, parse_chain  # noqa: E402

Figure = Callable[[pd.DataFrame, str, Path], list[Path]]
FIGURES: Registry[Figure] = Registry("figure")
IDENTITY = ["dataset", "model", "chain"]


def method_label(chain: str) -> str:
    """The chain without its values: ``base+mlp_magnitude-0.5+kd`` -> ``mlp_magnitude+kd``."""
    names = [c.name for c in parse_chain(chain)]
    return "+".join(names) if names else "uncompressed"


def summary_table(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and standard deviation over seeds of the task metric and the costs, one row per experiment."""
    columns = [c for c in [metric, "accuracy", "params", "flops", "size_bytes", "latency_cpu_ms", "latency_cuda_ms",
                           "peak_rss_mib", "relative_params_kept", "relative_flops_kept",
                           "relative_stored_bits_kept", "stage_time_s"] if c in frame.columns]
    columns = list(dict.fromkeys(columns))
    grouped = frame.groupby(IDENTITY, sort=False)
    table = grouped[columns].mean()
    table.insert(0, "seeds", grouped.size())
    stds = grouped[[metric]].std().fillna(0.0)
    table.insert(list(table.columns).index(metric) + 1, f"{metric}_std", stds[metric])
    return table.reset_index()


def write_tables(table: pd.DataFrame, out: Path, stem: str = "table") -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.csv", out / f"{stem}.md", out / f"{stem}.tex"]
    table.to_csv(paths[0], index=False)
    paths[1].write_text(table.to_markdown(index=False, floatfmt=".4g") + "\n")
    paths[2].write_text(table.to_latex(index=False, float_format="%.4g"))
    return paths


def save(fig: plt.Figure, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=160, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def metric_vs_cost(frame: pd.DataFrame, metric: str, out: Path, cost: str, stem: str) -> list[Path]:
    """Task metric against the share of a cost kept; one line per method, seeds as a band, base dashed."""
    column = f"relative_{cost}_kept"
    data = frame.copy()
    data["method"] = data["chain"].map(method_label)
    data[column] = data[column] * 100
    panels = data.groupby(["dataset", "model"], sort=False)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, ((dataset, model), panel) in zip(axes[0], panels):
        compressed = panel[panel["chain"] != BASE]
        if not compressed.empty:
            sns.lineplot(data=compressed, x=column, y=metric, hue="method", style="method", markers=True,
                         dashes=False, errorbar="sd", ax=ax)
        base = panel[panel["chain"] == BASE]
        if not base.empty:
            ax.axhline(base[metric].mean(), color="black", ls="--", lw=1, label="uncompressed")
        ax.set_title(f"{model} on {dataset}")
        ax.set_xlabel(f"{cost} kept (% of uncompressed)")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out, stem)


FIGURES.add("metric_vs_params", lambda f, m, o: metric_vs_cost(f, m, o, "params", "metric_vs_params"))
FIGURES.add("metric_vs_flops", lambda f, m, o: metric_vs_cost(f, m, o, "flops", "metric_vs_flops"))
FIGURES.add("metric_vs_stored_bits", lambda f, m, o: metric_vs_cost(f, m, o, "stored_bits", "metric_vs_stored_bits"))
