"""Classification metrics on torchmetrics.

Binary tasks are scored for one *positive* class (for BreastMNIST: malignant, label 0): the score is
the softmax probability of that class and the target is ``label == positive_class``. Multi-class
tasks use macro averages over the class probabilities.
"""

from __future__ import annotations

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryAveragePrecision,
    BinaryF1Score,
    BinaryFBetaScore,
    BinaryNegativePredictiveValue,
    BinaryPrecision,
    BinaryRecall,
    BinarySpecificity,
    BinaryStatScores,
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassAveragePrecision,
    MulticlassF1Score,
    MulticlassFBetaScore,
    MulticlassNegativePredictiveValue,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassSpecificity,
)

# Order of the study's results table, then the extra columns.
TABLE_METRICS = ("auc", "acc", "auprc", "recall", "f1", "precision", "f2", "specificity",
                 "balanced_acc", "npv")


class BinaryBalancedAccuracy(BinaryStatScores):
    """Mean of sensitivity and specificity."""

    def compute(self) -> torch.Tensor:
        tp, fp, tn, fn = self._final_state()
        tpr = tp / (tp + fn).clamp(min=1)
        tnr = tn / (tn + fp).clamp(min=1)
        return (tpr + tnr).float() / 2


def classification_metrics(num_classes: int = 2, threshold: float = 0.5,
                           sync_on_compute: bool = True) -> MetricCollection:
    """AUROC, accuracy, AUPRC, F1, F2, precision, recall, specificity, balanced accuracy and
    NPV (the precision of the negative class).

    Binary: update with (positive-class probability, binary target). Multi-class: update with
    (class probabilities (N, C), class index). ``sync_on_compute`` gathers the states of all
    processes under DDP; turn it off for predictions that one process holds in full.
    """
    s = {"sync_on_compute": sync_on_compute}
    if num_classes == 2:
        t = {"threshold": threshold, **s}
        metrics = {
            "auc": BinaryAUROC(**s), "acc": BinaryAccuracy(**t),
            "auprc": BinaryAveragePrecision(**s), "f1": BinaryF1Score(**t),
            "f2": BinaryFBetaScore(beta=2.0, **t), "precision": BinaryPrecision(**t),
            "recall": BinaryRecall(**t), "specificity": BinarySpecificity(**t),
            "balanced_acc": BinaryBalancedAccuracy(**t),
            "npv": BinaryNegativePredictiveValue(**t),
        }
    else:
        c = {"num_classes": num_classes, "average": "macro", **s}
        metrics = {
            "auc": MulticlassAUROC(**c),
            "acc": MulticlassAccuracy(num_classes, average="micro", **s),
            "auprc": MulticlassAveragePrecision(**c), "f1": MulticlassF1Score(**c),
            "f2": MulticlassFBetaScore(beta=2.0, **c), "precision": MulticlassPrecision(**c),
            "recall": MulticlassRecall(**c), "specificity": MulticlassSpecificity(**c),
            "balanced_acc": MulticlassRecall(**c),
            "npv": MulticlassNegativePredictiveValue(**c),
        }
    return MetricCollection(metrics)


def metric_inputs(probs: torch.Tensor, labels: torch.Tensor, positive_class: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``classification_metrics`` is updated with, from class probabilities and labels."""
    if probs.shape[1] == 2:
        return probs[:, positive_class], (labels == positive_class).long()
    return probs, labels


def confusion_matrix(probs: torch.Tensor, labels: torch.Tensor, positive_class: int,
                     threshold: float = 0.5) -> list[list[int]]:
    """Counts with rows = true class and columns = predicted class, in label order."""
    preds = predict_labels(probs, positive_class, threshold)
    n = probs.shape[1]
    counts = torch.bincount(labels * n + preds, minlength=n * n).reshape(n, n)
    return counts.tolist()


def predict_labels(probs: torch.Tensor, positive_class: int, threshold: float = 0.5
                   ) -> torch.Tensor:
    """Class labels: binary tasks call the positive class when its probability > threshold."""
    if probs.shape[1] == 2:
        positive = probs[:, positive_class] > threshold
        return torch.where(positive, positive_class, 1 - positive_class)
    return probs.argmax(dim=1)


def compute_metrics(probs: torch.Tensor, labels: torch.Tensor, positive_class: int,
                    threshold: float = 0.5) -> dict[str, float]:
    """All table metrics of one set of predictions, plus the monitored ``auc_acc_mean``."""
    collection = classification_metrics(probs.shape[1], threshold, sync_on_compute=False)
    collection.update(*metric_inputs(probs.float(), labels.long(), positive_class))
    values = {name: float(value) for name, value in collection.compute().items()}
    values["auc_acc_mean"] = (values["auc"] + values["acc"]) / 2
    return values
