"""Which unlabelled images a reviewer sees first.

Faster R-CNN keeps, for each region, one box per class with that class's softmax score, so the
boxes overlapping the top box approximate that region's class distribution: ``entropy`` scores
it (background taking the mass the classes leave); ``top_box`` scores ``1 - confidence`` of the
most confident box (an image without any box is the most uncertain: the model saw nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from breastcls.labelling.boxes import ImageBoxes

STRATEGIES = ("top_box", "entropy", "random")
REGION_IOU = 0.5  # boxes overlapping the top box this much are the same region


def uncertainty(detections: ImageBoxes, strategy: str) -> float:
    """Higher is more uncertain; ``strategy`` is ``top_box`` or ``entropy``."""
    if strategy not in STRATEGIES[:2]:
        raise ValueError(f"uncertainty {strategy!r}: choose one of {STRATEGIES[:2]}")
    scores = np.zeros(0) if detections.scores is None else np.asarray(detections.scores, float)
    if strategy == "top_box":
        return 1.0 - float(scores.max()) if len(scores) else 1.0
    if not len(scores):
        return 0.0
    top = int(scores.argmax())
    overlap = box_iou(torch.as_tensor(detections.boxes[top:top + 1]),
                      torch.as_tensor(detections.boxes)).numpy()[0] >= REGION_IOU
    per_class: dict[str, float] = {}
    for label, score in zip(np.asarray(detections.labels, dtype=object)[overlap],
                            scores[overlap], strict=True):
        per_class[label] = max(per_class.get(label, 0.0), float(score))
    probs = np.array([*per_class.values(), max(0.0, 1.0 - sum(per_class.values()))])
    probs = probs[probs > 0] / probs.sum()
    return float(-(probs * np.log(probs)).sum())


def review_order(detections: Sequence[ImageBoxes], strategy: str, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Indices of ``detections`` in review order and each image's uncertainty (NaN for
    ``random``); ties keep the input order, so the order is reproducible."""
    if strategy not in STRATEGIES:
        raise ValueError(f"selection {strategy!r}: choose one of {STRATEGIES}")
    if strategy == "random":
        return (np.random.default_rng(seed).permutation(len(detections)),
                np.full(len(detections), np.nan))
    values = np.array([uncertainty(d, strategy) for d in detections])
    return np.argsort(-values, kind="stable"), values
