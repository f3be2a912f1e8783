"""Task metrics: GLUE's accuracy, MCC and F1 (``evaluate.load`` needs the hub), perplexity, and segmentation's
mean IoU and pixel accuracy from a confusion matrix.

Accuracy is the mean of ``label == prediction``, the same float as scikit-learn's ``accuracy_score``, so that
training jobs and the evaluations scored by accuracy never pay scikit-learn's 1.5-2 s of imports (CPU; issue 17,
start-up per job); MCC and F1 are scikit-learn's, imported when first computed."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from slimbench.registry import Registry

Metric = Callable[[Sequence[int], Sequence[int]], float]


def sklearn_metric(name: str) -> Metric:
    """``sklearn.metrics.<name>`` as a float, imported when first computed."""
    def compute(labels: Sequence[int], predictions: Sequence[int]) -> float:
        from sklearn import metrics

        return float(getattr(metrics, name)(labels, predictions))
    return compute


def accuracy(labels: Sequence[int], predictions: Sequence[int]) -> float:
    """The fraction of predictions equal to their label."""
    if len(labels) != len(predictions) or len(labels) == 0:
        raise ValueError(f"accuracy needs as many predictions as labels, at least one: got {len(predictions)} "
                         f"predictions for {len(labels)} labels.")
    return sum(label == guess for label, guess in zip(labels, predictions)) / len(labels)


CLASSIFICATION_METRICS: Registry[Metric] = Registry("metric")
CLASSIFICATION_METRICS.add("accuracy", accuracy)
CLASSIFICATION_METRICS.add("mcc", sklearn_metric("matthews_corrcoef"))
CLASSIFICATION_METRICS.add("f1", sklearn_metric("f1_score"))


def classification_metrics(labels: Sequence[int], predictions: Sequence[int], primary: str) -> dict[str, float]:
    """The primary metric plus accuracy (always reported, so tables can be compared across tasks)."""
    out = {primary: CLASSIFICATION_METRICS.get(primary)(labels, predictions)}
    out.setdefault("accuracy", CLASSIFICATION_METRICS.get("accuracy")(labels, predictions))
    return out


def perplexity(total_nll: float, total_tokens: int) -> dict[str, float]:
    """exp of the mean negative log-likelihood per predicted token."""
    mean = total_nll / max(total_tokens, 1)
    return {"perplexity": math.exp(mean), "nll": mean, "tokens": float(total_tokens)}


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int,
                     ignore_index: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = true class, columns = predicted class, over the pixels
    whose label is not ``ignore_index`` (one bincount, on the tensors' device). A label outside the classes
    is an error: silently dropping it would raise mIoU."""
    keep = labels != ignore_index
    truth, guess = labels[keep].long(), predictions[keep].long()
    if truth.numel() and (int(truth.min()) < 0 or int(truth.max()) >= num_classes):
        raise ValueError(f"segmentation labels must be 0..{num_classes - 1} or the ignore index {ignore_index}; "
                         f"found {int(truth.min())}..{int(truth.max())}. Fix: check the dataset's label maps "
                         f"and its num_classes.")
    counts = torch.bincount(truth * num_classes + guess, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes)


def segmentation_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """Mean IoU, pixel accuracy and mean class accuracy of a confusion matrix, as the edge-ViT authors'
    ``metrics.py`` (runningScore, from wkentaro/pytorch-fcn; chensy7/efficient-vit @ 6163879) computes them:
    IoU_c = TP / (TP + FP + FN), averaged over the classes whose union is non-empty (their ``np.nanmean``)."""
    hist = confusion.double()
    true_positive, truth, guessed = hist.diag(), hist.sum(1), hist.sum(0)
    union = truth + guessed - true_positive
    present = union > 0
    seen = truth > 0
    return {"mean_iou": float((true_positive[present] / union[present]).mean()) if present.any() else float("nan"),
            "pixel_accuracy": float(true_positive.sum() / hist.sum()) if hist.sum() > 0 else float("nan"),
            "mean_class_accuracy": float((true_positive[seen] / truth[seen]).mean()) if seen.any() else float("nan")}
