"""One image's boxes, and what a reviewer did to the model's boxes.

Boxes are kept with class *names*, not ids, so Label Studio results (which name the label) and
COCO files (whose category ids differ between data sets) compare without a shared id scheme.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_iou

OUTCOMES = ("accepted", "corrected", "rejected")


@dataclass(frozen=True)
class ImageBoxes:
    """Boxes of one image in original pixels, XYXY, with their class names (and a model's
    scores when they are proposals)."""

    path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: tuple[str, ...] = ()
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "labels", tuple(self.labels))
        if len(self.labels) != len(boxes):
            raise ValueError(f"{self.path}: {len(boxes)} boxes but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.boxes)

    def above(self, min_score: float) -> ImageBoxes:
        """Only the boxes scored at least ``min_score`` (all of them when there are no scores)."""
        if self.scores is None:
            return self
        keep = np.asarray(self.scores) >= min_score
        return ImageBoxes(self.path, self.width, self.height, self.boxes[keep],
                          tuple(np.asarray(self.labels, dtype=object)[keep]),
                          np.asarray(self.scores)[keep])


@dataclass(frozen=True)
class Review:
    """How a reviewed image differs from the model's proposal, box by box.

    ``accepted``: every proposed box kept as it was and none added; ``corrected``: some proposed
    box survives (possibly moved or relabelled) but something changed; ``rejected``: no proposed
    box survives (all deleted, or the model found nothing where the reviewer drew boxes).
    """

    outcome: str
    proposed: int
    kept: int
    moved: int
    relabelled: int
    deleted: int
    added: int


def compare(proposed: ImageBoxes, reviewed: ImageBoxes, same_box_iou: float = 0.98,
            moved_box_iou: float = 0.1) -> Review:
    """Match reviewed to proposed boxes one to one (Hungarian on IoU).

    A matched pair at IoU >= ``same_box_iou`` is the same box (kept, or relabelled if its class
    changed); at >= ``moved_box_iou`` the reviewer moved it; below, the proposal was deleted and
    the reviewer's box added.
    """
    kept = moved = relabelled = 0
    matched_proposed: set[int] = set()
    matched_reviewed: set[int] = set()
    if len(proposed) and len(reviewed):
        iou = box_iou(torch.as_tensor(proposed.boxes), torch.as_tensor(reviewed.boxes)).numpy()
        for p, r in zip(*linear_sum_assignment(-iou), strict=True):
            if iou[p, r] < moved_box_iou:
                continue
            matched_proposed.add(p)
            matched_reviewed.add(r)
            if iou[p, r] < same_box_iou:
                moved += 1
            elif proposed.labels[p] != reviewed.labels[r]:
                relabelled += 1
            else:
                kept += 1
    deleted = len(proposed) - len(matched_proposed)
    added = len(reviewed) - len(matched_reviewed)
    if kept == len(proposed) and added == 0:
        outcome = "accepted"
    elif matched_proposed:
        outcome = "corrected"
    else:
        outcome = "rejected"
    return Review(outcome, len(proposed), kept, moved, relabelled, deleted, added)
