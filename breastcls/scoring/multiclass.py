"""Per-class scores of a multi-class task: one-vs-rest AUC, precision, recall, specificity, F1."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics.functional.classification import (
    multiclass_auroc,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
    multiclass_specificity,
)

PER_CLASS_METRICS = ("auc", "precision", "recall", "specificity", "f1", "support")


def per_class_metrics(probs: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]
                      ) -> dict[str, dict[str, float]]:
    """``{class name: {metric: value}}``; the split's macro metrics are their means."""
    n = probs.shape[1]
    probs, labels = probs.float(), labels.long()
    args = {"num_classes": n, "average": "none"}
    columns = {
        "auc": multiclass_auroc(probs, labels, **args),
        "precision": multiclass_precision(probs, labels, **args),
        "recall": multiclass_recall(probs, labels, **args),
        "specificity": multiclass_specificity(probs, labels, **args),
        "f1": multiclass_f1_score(probs, labels, **args),
        "support": torch.bincount(labels, minlength=n).float(),
    }
    return {name: {m: float(columns[m][c]) for m in PER_CLASS_METRICS}
            for c, name in enumerate(class_names)}
