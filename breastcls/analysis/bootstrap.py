"""Stratified bootstrap confidence intervals for the metrics of ``breastcls.metrics``.

Each resample draws, with replacement, as many images of every class as the split holds, so every
resample keeps the class balance and AUC/AUPRC stay defined. With ``groups`` (patients) whole
groups are drawn instead: patches of one patient are correlated, and resampling them as if
independent gives intervals that are too narrow. Intervals are percentile intervals.
Binary tasks are scored for all resamples at once with numpy (the same definitions as the
torchmetrics classes: strict ``score > threshold``, zero where a ratio is 0/0); multi-class tasks
fall back to ``compute_metrics`` per resample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.stats import rankdata

from breastcls.metrics import compute_metrics

ArrayLike = np.ndarray | torch.Tensor


def stratified_resamples(labels: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """``(n_resamples, N)`` row indices; each row keeps the count of every class."""
    rng = np.random.default_rng(seed)
    columns = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        columns.append(members[rng.integers(0, len(members), (n_resamples, len(members)))])
    return np.concatenate(columns, axis=1)


def group_resamples(groups: Sequence[str] | np.ndarray, n_resamples: int, seed: int
                    ) -> list[np.ndarray]:
    """Row indices of ``n_resamples`` resamples, each drawing as many groups as there are, with
    replacement, and taking every row of each group drawn."""
    _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    members = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
    draws = np.random.default_rng(seed).integers(0, len(members), (n_resamples, len(members)))
    return [np.concatenate([members[g] for g in row]) for row in draws]


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def _auroc(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Mann-Whitney U per row; tied scores share their average rank (trapezoidal ROC)."""
    ranks = rankdata(scores, axis=1)
    n_pos = targets.sum(axis=1)
    n_neg = targets.shape[1] - n_pos
    u = (ranks * targets).sum(axis=1) - n_pos * (n_pos + 1) / 2
    return _safe_div(u, n_pos * n_neg)


def _average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Step-wise AP per row: each positive adds the precision at its score's threshold."""
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    t = np.take_along_axis(targets, order, axis=1)
    n = s.shape[1]
    precision = np.cumsum(t, axis=1) / np.arange(1, n + 1)
    # Tied scores form one threshold: use the precision at the last member of each tie group.
    last_of_group = np.ones_like(s, dtype=bool)
    last_of_group[:, :-1] = s[:, :-1] != s[:, 1:]
    group_end = np.where(last_of_group, np.arange(n), n)
    group_end = np.minimum.accumulate(group_end[:, ::-1], axis=1)[:, ::-1]
    at_group_end = np.take_along_axis(precision, group_end, axis=1)
    return _safe_div((at_group_end * t).sum(axis=1), t.sum(axis=1).astype(np.float64))


def binary_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5
                   ) -> dict[str, np.ndarray]:
    """Metrics of ``compute_metrics`` for rows of (positive-class score, 0/1 target), ``(B, N)``."""
    scores = np.atleast_2d(scores)
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    targets = np.atleast_2d(targets).astype(np.int64)
    # Compare in the scores' own precision, as torch does with float32 probabilities.
    preds = scores > scores.dtype.type(threshold)
    pos = targets == 1
    tp = (preds & pos).sum(axis=1).astype(np.float64)
    fp = (preds & ~pos).sum(axis=1).astype(np.float64)
    fn = (~preds & pos).sum(axis=1).astype(np.float64)
    tn = (~preds & ~pos).sum(axis=1).astype(np.float64)
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    specificity = _safe_div(tn, tn + fp)

    def fbeta(beta: float) -> np.ndarray:
        return _safe_div((1 + beta**2) * tp, (1 + beta**2) * tp + beta**2 * fn + fp)

    values = {
        "auc": _auroc(scores, targets), "acc": (tp + tn) / scores.shape[1],
        "auprc": _average_precision(scores, targets), "f1": fbeta(1.0), "f2": fbeta(2.0),
        "precision": precision, "recall": recall, "specificity": specificity,
        "balanced_acc": (recall + specificity) / 2, "npv": _safe_div(tn, tn + fn),
    }
    values["auc_acc_mean"] = (values["auc"] + values["acc"]) / 2
    return values


def _loop_metrics(probs: np.ndarray, labels: np.ndarray, rows: np.ndarray, positive_class: int,
                  threshold: float) -> dict[str, np.ndarray]:
    per_resample = []
    for idx in rows:
        per_resample.append(compute_metrics(torch.from_numpy(probs[idx]),
                                            torch.from_numpy(labels[idx]), positive_class,
                                            threshold))
    return {k: np.array([m[k] for m in per_resample]) for k in per_resample[0]}


def bootstrap_ci(probs: ArrayLike, labels: ArrayLike, positive_class: int,
                 threshold: float = 0.5, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0, groups: Sequence[str] | None = None
                 ) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "low", "high"}}`` for class probabilities ``(N, C)`` and labels.

    ``value`` is the metric on the data as given (``compute_metrics``);
    ``low``/``high`` bound the central ``confidence`` interval of the stratified resamples, or
    of resamples of whole ``groups`` (one id per row) when given.
    """
    if n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need n_resamples >= 1 and 0 < confidence < 1, got {n_resamples}, "
                         f"{confidence}")
    probs = np.asarray(probs, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    point = compute_metrics(torch.from_numpy(probs), torch.from_numpy(labels), positive_class,
                            threshold)
    if groups is not None:
        if len(groups) != len(labels):
            raise ValueError(f"{len(groups)} group ids for {len(labels)} predictions")
        rows = group_resamples(groups, n_resamples, seed)  # resamples differ in length
    else:
        rows = stratified_resamples(labels, n_resamples, seed)
    if probs.shape[1] == 2 and groups is not None:
        targets = (labels == positive_class).astype(np.int64)
        each = [binary_metrics(probs[idx, positive_class], targets[idx], threshold)
                for idx in rows]
        samples = {k: np.concatenate([m[k] for m in each]) for k in each[0]}
    elif probs.shape[1] == 2:
        targets = (labels == positive_class).astype(np.int64)
        samples = binary_metrics(probs[:, positive_class][rows], targets[rows], threshold)
    else:
        samples = _loop_metrics(probs, labels, rows, positive_class, threshold)
    tail = 100 * (1 - confidence) / 2
    out = {}
    for name, value in point.items():
        low, high = np.percentile(samples[name], [tail, 100 - tail])
        out[name] = {"value": float(value), "low": float(low), "high": float(high)}
    return out

