"""The top-level ``cv`` settings (k-fold cross-validation of BreastMNIST, made by
:func:`breastcls.data.splits.assign_splits`) and near-duplicate clusters as groups."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

POOLS = ("trainval", "all")


@dataclass(frozen=True)
class CrossValidation:
    """``folds`` folds; run ``fold`` (0-based) of them.

    ``pool=trainval``: train+val are merged and fold ``fold`` is the validation set; the official
    test split stays apart. ``pool=all``: every split is merged, fold ``fold`` is the test set and
    ``val_fraction`` of the rest (stratified) validates. ``groups=duplicates`` keeps near-duplicate
    images (``breastcls.analysis.duplicates``) inside one fold, and (``pool=all``) on one side of
    the train/val carve-out.
    """

    folds: int = 5
    fold: int = 0
    pool: str = "trainval"
    seed: int = 0
    val_fraction: float = 0.1
    groups: str | None = None

    def __post_init__(self) -> None:
        if self.folds < 2 or not 0 <= self.fold < self.folds:
            raise ValueError(f"cv.fold={self.fold} must lie in [0, cv.folds={self.folds}) and "
                             "cv.folds must be at least 2")
        if self.pool not in POOLS:
            raise ValueError(f"cv.pool={self.pool!r}; choose one of {POOLS}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"cv.val_fraction={self.val_fraction} must lie in (0, 1)")
        if self.groups not in (None, "duplicates"):
            raise ValueError(f"cv.groups={self.groups!r}; choose null or 'duplicates'")


def duplicate_groups(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A group id per image: connected components of the audit's duplicate pairs."""
    from breastcls.analysis.duplicates import find_duplicates

    pairs = find_duplicates({"pool": (images, labels)})
    n = len(images)
    graph = coo_matrix((np.ones(len(pairs)), (pairs.index_a, pairs.index_b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]
