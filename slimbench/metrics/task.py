"""Task metrics with GLUE's definitions, computed with scikit-learn (``evaluate.load`` needs the hub)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from slimbench.registry import Registry

CLASSIFICATION_METRICS: Registry[Callable[[Sequence[int], Sequence[int]], float]] = Registry("metric")
CLASSIFICATION_METRICS.add("accuracy", lambda y, p: float(accuracy_score(y, p)))
CLASSIFICATION_METRICS.add("mcc", lambda y, p: float(matthews_corrcoef(y, p)))
CLASSIFICATION_METRICS.add("f1", lambda y, p: float(f1_score(y, p)))


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], primary: str) -> dict[str, float]:
    """The primary metric plus accuracy (always reported, so tables can be compared across tasks)."""
    out = {primary: CLASSIFICATION_METRICS.get(primary)(labels, predictions)}
    out.setdefault("accuracy", CLASSIFICATION_METRICS.get("accuracy")(labels, predictions))
    return out


def perplexity(total_nll: float, total_tokens: int) -> dict[str, float]:
    """exp of the mean negative log-likelihood per predicted token."""
    mean = total_nll / max(total_tokens, 1)
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": float(total_tokens)}
