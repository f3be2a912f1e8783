"""A new run against a reference run, experiment by experiment: does the result reproduce?

Both sides are report folders (``<reports>/<config>/<study>/runs.csv``): a run's ``results/reports/<config>`` and
a committed ``reports/<config>``. For every experiment (dataset, model, chain) of the reference, the task metric's
reference mean and seed spread, the new mean, their difference and a verdict: **ok** when the difference is at
most the tolerance, the larger of ``sigmas`` standard deviations of the reference seeds and the metric's
``floor`` (0 on CPU, where runs are deterministic); **changed** beyond it; **missing** when the run lacks it
or has fewer seeds of it. Each experiment is compared on its own task metric.
Structural costs (``exact``: parameters, FLOPs) must match exactly. Only studies present in the run are compared,
so a partial run checks what it ran.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from slimbench.atomic import write_atomically
from slimbench.config import REPO
from slimbench.lazy import lazy_module
from slimbench.results import RUNS_FILE, read_runs, study_metric

pd = lazy_module("pandas")

KEYS = ["dataset", "model", "chain"]
DEFAULTS = {"sigmas": 2.0, "floor": {}, "exact": ["params", "flops"]}


def reference_for(settings: dict[str, Any], default: str, kernels: str) -> str | None:
    """The reference folder a run on a CPU of kernel family ``kernels`` (:func:`slimbench.provenance.cpu_kernels`)
    is compared with: its own in ``settings["references"]``, else ``settings["reference"]`` (else ``default``)."""
    return settings.get("references", {}).get(kernels, settings.get("reference", default))


def tolerance_for(settings: dict[str, Any], kernels: str,
                  reference: str | Path | None = None) -> tuple[dict[str, Any], bool]:
    """The tolerance settings for a run on a CPU of kernel family ``kernels`` compared with the folder
    ``reference`` (None: the one :func:`reference_for` picks; a relative path is read from the working
    directory), and whether they are ``other_family``'s. Only the family's own reference in
    ``settings["references"]`` (a path below the checkout, as the workflow reads it) can be equalled exactly; any
    other folder holds another family's runs, so ``other_family`` (if set) replaces the top level's sigmas and
    floor. The structural columns (``exact``) stay exact on every family."""
    other = settings.get("other_family")
    own = settings.get("references", {}).get(kernels)
    exact = own is not None and (reference is None or Path(reference).resolve() == (REPO / own).resolve())
    if other is None or exact:
        return settings, False
    return {**settings, **other}, True


def compare_study(run: pd.DataFrame, reference: pd.DataFrame, study: str, settings: dict[str, Any]) -> pd.DataFrame:
    rows = []
    new = run.groupby(KEYS, sort=False)
    mine = {key: group for key, group in new}
    for key, ref in reference.groupby(KEYS, sort=False):
        metric = study_metric(ref)  # each experiment on its own task metric
        columns = [(metric, settings["sigmas"], settings["floor"].get(metric, 0.0))]
        columns += [(c, 0.0, 0.0) for c in settings["exact"] if c in ref and ref[c].notna().any()]
        for column, sigmas, floor in columns:
            ref_mean, ref_std = float(ref[column].mean()), float(ref[column].std(ddof=1)) if len(ref) > 1 else 0.0
            tolerance = max(sigmas * ref_std, floor)
            group = mine.get(key)
            value = float(group[column].mean()) if group is not None and column in group else math.nan
            difference = value - ref_mean
            status = ("missing" if group is None or math.isnan(value) or len(group) < len(ref) else
                      "ok" if abs(difference) <= tolerance + 1e-12 * max(1.0, abs(ref_mean)) else "changed")
            rows.append({"study": study, **dict(zip(KEYS, key)), "column": column, "reference": ref_mean,
                         "reference_std": ref_std, "reference_seeds": len(ref),
                         "new": value, "new_seeds": 0 if group is None else len(group), "difference": difference,
                         "tolerance": tolerance, "verdict": status})
    return pd.DataFrame(rows)


def compare_runs(run_dir: Path, reference_dir: Path, settings: dict[str, Any] | None = None) -> pd.DataFrame:
    """Every study that has a runs.csv on both sides (one missing on the run side is skipped: partial runs)."""
    settings = {**DEFAULTS, **(settings or {})}
    references = sorted(reference_dir.glob(f"*/{RUNS_FILE}"))
    if not references:
        raise FileNotFoundError(f"no reference runs under {reference_dir} (expected <study>/{RUNS_FILE}).")
    present = [path for path in references if (run_dir / path.parent.name / RUNS_FILE).exists()]
    skipped = sorted(set(path.parent.name for path in references) - set(path.parent.name for path in present))
    if skipped:
        logging.getLogger("slimbench").warning("not compared (no runs.csv in %s): %s", run_dir, ", ".join(skipped))
    tables = [compare_study(read_runs(run_dir / path.parent.name / RUNS_FILE), read_runs(path), path.parent.name,
                            settings) for path in present]
    if not tables:
        raise FileNotFoundError(f"no study of {reference_dir} has runs under {run_dir}: run the workflow first.")
    return pd.concat(tables, ignore_index=True)


def summary(table: pd.DataFrame) -> str:
    counts = table["verdict"].value_counts()
    return ", ".join(f"{counts.get(v, 0)} {v}" for v in ("ok", "changed", "missing"))


def write_comparison(table: pd.DataFrame, out: Path, title: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "compare.csv", out / "compare.md"]
    write_atomically(paths[0], lambda tmp: table.to_csv(tmp, index=False))
    failing = table[table["verdict"] != "ok"]
    body = f"# {title}\n\n{len(table)} checks: {summary(table)}.\n\n"
    if len(failing):
        body += "## Outside the tolerance\n\n" + failing.to_markdown(index=False, floatfmt=".6g") + "\n\n## All\n\n"
    text = body + table.to_markdown(index=False, floatfmt=".6g") + "\n"
    write_atomically(paths[1], lambda tmp: tmp.write_text(text))
    return paths
