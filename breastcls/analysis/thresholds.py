"""Decision thresholds chosen on validation predictions.

Inputs are the positive-class scores and 0/1 targets (``breastcls.metrics.metric_inputs``). The
rule everywhere in the package is ``positive = score > threshold``, so the candidates are the
midpoints between consecutive distinct scores, plus one just below the lowest score (all
positive) and the highest score itself (all negative). Ties between candidates go to the lower,
more sensitive threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

METHODS = ("fbeta", "youden", "sensitivity", "accuracy")
ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ThresholdChoice:
    method: str
    threshold: float
    criterion: float  # F-beta, Youden's J, sensitivity or accuracy at the threshold
    sensitivity: float
    specificity: float

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def _as_arrays(scores: ArrayLike, targets: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    # Keep float32 scores in float32: candidates must split them the same way once a float32
    # tensor is compared with the chosen threshold.
    s = np.asarray(scores).reshape(-1)
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    t = np.asarray(targets).reshape(-1).astype(bool)
    if len(s) != len(t) or len(s) == 0:
        raise ValueError(f"need as many scores as targets (and at least one): {len(s)}, {len(t)}")
    if t.all() or not t.any():
        raise ValueError("targets hold a single class: no threshold can be chosen")
    return s, t


def candidate_thresholds(scores: np.ndarray) -> np.ndarray:
    """Ascending thresholds, one per distinct way of splitting ``scores`` with ``>``."""
    u = np.unique(scores)
    mid = (u[:-1] + u[1:]) / 2
    mid = np.where(mid < u[1:], mid, u[:-1])  # adjacent floats: the midpoint may round up
    below = np.nextafter(u[:1], np.array([-np.inf], dtype=u.dtype))
    return np.concatenate([below, mid, u[-1:]])


def confusion_counts(scores: np.ndarray, targets: np.ndarray, thresholds: np.ndarray
                     ) -> tuple[np.ndarray, ...]:
    """tp, fp, tn, fn at every threshold (``score > threshold`` is positive)."""
    pos = np.sort(scores[targets])
    neg = np.sort(scores[~targets])
    tp = len(pos) - np.searchsorted(pos, thresholds, side="right")
    fp = len(neg) - np.searchsorted(neg, thresholds, side="right")
    return tp, fp, len(neg) - fp, len(pos) - tp


def _choice(method: str, thresholds: np.ndarray, criterion: np.ndarray, i: int,
            tpr: np.ndarray, tnr: np.ndarray) -> ThresholdChoice:
    # Probabilities live in [0, 1]; torchmetrics refuses thresholds outside it.
    threshold = float(np.clip(thresholds[i], 0.0, 1.0))
    return ThresholdChoice(method, threshold, float(criterion[i]), float(tpr[i]), float(tnr[i]))


def _rates(scores: np.ndarray, targets: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    thresholds = candidate_thresholds(scores)
    tp, fp, tn, fn = (c.astype(np.float64) for c in confusion_counts(scores, targets, thresholds))
    return thresholds, tp, fp, tp / (tp + fn), tn / (tn + fp)


def fbeta_threshold(scores: ArrayLike, targets: ArrayLike, beta: float = 2.0) -> ThresholdChoice:
    """The threshold maximising F-beta (beta > 1 weighs recall higher)."""
    s, t = _as_arrays(scores, targets)
    thresholds, tp, fp, tpr, tnr = _rates(s, t)
    fn = t.sum() - tp
    den = (1 + beta**2) * tp + beta**2 * fn + fp
    f = np.divide((1 + beta**2) * tp, den, out=np.zeros_like(tp), where=den > 0)
    return _choice(f"f{beta:g}", thresholds, f, int(np.argmax(f)), tpr, tnr)


def youden_threshold(scores: ArrayLike, targets: ArrayLike) -> ThresholdChoice:
    """The threshold maximising Youden's J = sensitivity + specificity - 1."""
    s, t = _as_arrays(scores, targets)
    thresholds, _, _, tpr, tnr = _rates(s, t)
    j = tpr + tnr - 1
    return _choice("youden", thresholds, j, int(np.argmax(j)), tpr, tnr)


def sensitivity_threshold(scores: ArrayLike, targets: ArrayLike, target: float = 0.9
                          ) -> ThresholdChoice:
    """The highest threshold whose sensitivity reaches ``target``."""
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity must lie in (0, 1], got {target}")
    s, t = _as_arrays(scores, targets)
    thresholds, _, _, tpr, tnr = _rates(s, t)
    # Sensitivity falls as the threshold rises; the lowest candidate reaches 1.
    i = int(np.flatnonzero(tpr >= target - 1e-12)[-1])
    return _choice(f"sensitivity>={target:g}", thresholds, tpr, i, tpr, tnr)


def accuracy_threshold(scores: ArrayLike, targets: ArrayLike) -> ThresholdChoice:
    """The threshold maximising accuracy (for a reported accuracy; it ignores class balance)."""
    s, t = _as_arrays(scores, targets)
    thresholds, tp, fp, tpr, tnr = _rates(s, t)
    accuracy = (tp + (~t).sum() - fp) / len(t)
    return _choice("accuracy", thresholds, accuracy, int(np.argmax(accuracy)), tpr, tnr)


def select_threshold(scores: ArrayLike, targets: ArrayLike, method: str = "fbeta",
                     beta: float = 2.0, target_sensitivity: float = 0.9) -> ThresholdChoice:
    """Dispatch on ``method``: ``fbeta``, ``youden``, ``sensitivity`` or ``accuracy``."""
    if method == "fbeta":
        return fbeta_threshold(scores, targets, beta)
    if method == "youden":
        return youden_threshold(scores, targets)
    if method == "sensitivity":
        return sensitivity_threshold(scores, targets, target_sensitivity)
    if method == "accuracy":
        return accuracy_threshold(scores, targets)
    raise ValueError(f"unknown threshold method {method!r}; choose one of {METHODS}")
