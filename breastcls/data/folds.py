"""K-fold splits over a pool of labelled images: stratified, seeded, optionally grouped."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

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


def carve_val(rest: np.ndarray, labels: np.ndarray, groups: np.ndarray | None,
              cv: CrossValidation) -> np.ndarray:
    """``cv.val_fraction`` of the pool indices ``rest`` to validate on, stratified by label.

    With ``groups`` whole groups are drawn (one fold of ``round(1 / val_fraction)`` stratified
    group folds), so no near-duplicate cluster spans train and val.
    """
    if groups is None:
        _, val = train_test_split(rest, test_size=cv.val_fraction, random_state=cv.seed,
                                  stratify=labels[rest])
        return val
    splitter = StratifiedGroupKFold(n_splits=max(2, round(1 / cv.val_fraction)), shuffle=True,
                                    random_state=cv.seed)
    _, held = next(splitter.split(rest, labels[rest], groups[rest]))
    return rest[held]


def assign_folds(arrays: Mapping[str, tuple[np.ndarray, np.ndarray]], cv: CrossValidation
                 ) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], pd.DataFrame]:
    """``{split: (images, labels, pool indices)}`` for this fold, and a table of every pooled
    image's source split, source index, fold and role."""
    pooled = ("train", "val") if cv.pool == "trainval" else tuple(arrays)
    images = np.concatenate([arrays[s][0] for s in pooled])
    labels = np.concatenate([arrays[s][1] for s in pooled])
    groups = duplicate_groups(images, labels) if cv.groups else None
    splitter = (StratifiedGroupKFold if cv.groups else StratifiedKFold)(
        n_splits=cv.folds, shuffle=True, random_state=cv.seed)
    fold_of = np.empty(len(labels), dtype=np.int64)
    for k, (_, held) in enumerate(splitter.split(images, labels, groups)):
        fold_of[held] = k
    held_out = fold_of == cv.fold
    rest = np.flatnonzero(~held_out)
    role = np.where(held_out, "val" if cv.pool == "trainval" else "test", "train")
    if cv.pool == "all":
        role[carve_val(rest, labels, groups, cv)] = "val"
    table = pd.DataFrame({
        "pool_index": np.arange(len(labels)),
        "source_split": np.concatenate([[s] * len(arrays[s][1]) for s in pooled]),
        "source_index": np.concatenate([np.arange(len(arrays[s][1])) for s in pooled]),
        "label": labels, "group": np.arange(len(labels)) if groups is None else groups,
        "fold": fold_of, "role": role})
    out = {r: (images[role == r], labels[role == r], np.flatnonzero(role == r))
           for r in ("train", "val", "test") if (role == r).any()}
    if cv.pool == "trainval":
        test_images, test_labels = arrays["test"]
        out["test"] = (test_images, test_labels, np.arange(len(test_labels)))
    return out, table
