"""Train/val/test assignment of sample records: official, holdout or k-fold; stratified, seeded,
optionally grouped so that a group (patient, case, near-duplicate cluster) never spans two splits;
or read from a ``splits.csv`` an earlier run wrote (``file``), so that two runs share one split.

Grouped holdouts draw one fold of ``round(1 / fraction)`` stratified group folds
(:class:`~sklearn.model_selection.StratifiedGroupKFold`), so the realised fraction is only
approximately the one asked for: whole groups move, and ``1 / n_splits`` rarely equals it exactly.
A fraction of 0 means that split is not made (e.g. ``test_fraction=0`` gives train/val only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, StratifiedShuffleSplit

from breastcls.data.errors import DataError

MODES = ("official", "holdout", "kfold", "file")
POOLS = ("trainval", "all")
SPLITS = ("train", "val", "test")
COLUMNS = ("sample_id", "group", "label")


@dataclass(frozen=True)
class SplitSettings:
    """How to split records; see the module docstring and :func:`assign_splits`.

    ``pool`` (kfold only): ``trainval`` keeps the official (or a holdout) test apart and makes
    ``folds`` folds of the rest, fold ``fold`` validating; ``all`` makes folds of every record,
    fold ``fold`` is the test set and ``val_fraction`` of the rest validates.
    """

    mode: str = "holdout"
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    folds: int = 5
    fold: int = 0
    seed: int = 0
    grouped: bool = True
    pool: str = "trainval"
    file: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise DataError(f"data.split.mode={self.mode!r}; choose one of {MODES}")
        if self.mode == "file" and not self.file:
            raise DataError("data.split.mode='file' needs data.split.file=<a run's splits.csv>")
        if self.pool not in POOLS:
            raise DataError(f"data.split.pool={self.pool!r}; choose one of {POOLS}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise DataError(f"data.split.{name}={value} must lie in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            raise DataError(f"data.split.val_fraction + data.split.test_fraction = "
                             f"{self.val_fraction + self.test_fraction} must be below 1")
        if self.folds < 2:
            raise DataError(f"data.split.folds={self.folds} must be at least 2")
        if not 0 <= self.fold < self.folds:
            raise DataError(f"data.split.fold={self.fold} must lie in "
                             f"[0, data.split.folds={self.folds}), i.e. one of "
                             f"{list(range(self.folds))}")


def _holdout(idx: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, fraction: float,
             seed: int) -> np.ndarray:
    """About ``fraction`` of the positions ``idx``, stratified by label and, with ``groups``,
    made of whole groups."""
    if fraction == 0 or len(idx) == 0:
        return idx[:0]
    if groups is None:
        splitter = StratifiedShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
        _, held = next(splitter.split(idx, labels[idx]))
        return idx[held]
    # One fold of k stratified group folds: sklearn's only stratified *and* grouped holdout.
    n_splits = max(2, round(1 / fraction))
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    try:
        _, held = next(splitter.split(idx, labels[idx], groups[idx]))
    except ValueError as err:  # e.g. fewer groups than splits: say which knob to turn
        raise DataError(f"data.split: cannot hold out {fraction} of {len(idx)} records in "
                        f"whole groups ({err}); use a larger fraction or more groups") from err
    return idx[held]


def _fold_of(idx: np.ndarray, labels: np.ndarray, groups: np.ndarray | None, folds: int,
             seed: int, size: int) -> np.ndarray:
    """A fold index per record (-1 outside ``idx``), folds made over the positions ``idx``."""
    fold_of = np.full(size, -1, dtype=np.int64)
    splitter = (StratifiedGroupKFold if groups is not None else StratifiedKFold)(
        n_splits=folds, shuffle=True, random_state=seed)
    try:
        parts = list(splitter.split(idx, labels[idx], None if groups is None else groups[idx]))
    except ValueError as err:
        raise DataError(f"data.split: cannot make {folds} folds of {len(idx)} records "
                        f"({err}); use fewer folds") from err
    for k, (_, held) in enumerate(parts):
        fold_of[idx[held]] = k
    return fold_of


def _official(records: pd.DataFrame) -> np.ndarray:
    """The records' official split, refused when absent, incomplete or unknown."""
    if "split" not in records:
        raise DataError("data.split.mode='official' needs a 'split' column in the records")
    split = records["split"]
    bad = split.isna() | ~split.isin(SPLITS)
    if bad.any():
        ids = records.loc[bad, "sample_id"].head(5).tolist()
        raise DataError(f"{int(bad.sum())} records have an official split outside {SPLITS} "
                         f"or none, e.g. sample_ids {ids}")
    return split.to_numpy(dtype=object)


def read_split_file(file: str | Path, setting: str = "data.split.file") -> pd.Series:
    """A run's saved split (its ``splits.csv``: ``sample_id``, ``split``, or the run folder
    holding it) as a split per sample_id; ``setting`` names the key in the messages."""
    path = Path(file).expanduser()
    if path.is_dir():  # a run folder
        path = path / "splits.csv"
    try:
        saved = pd.read_csv(path, dtype={"sample_id": str, "split": str})
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{setting}={file}: cannot read it ({err})") from None
    if not {"sample_id", "split"} <= set(saved.columns):
        raise DataError(f"{setting}={file} needs the columns sample_id and split "
                        f"(a run's splits.csv); it has {list(saved.columns)}")
    bad = saved.loc[~saved["split"].isin(SPLITS), "split"].unique().tolist()
    if bad:
        raise DataError(f"{setting}={file} names splits {bad[:5]} outside {SPLITS}")
    if saved["sample_id"].duplicated().any():
        dup = saved.loc[saved["sample_id"].duplicated(), "sample_id"].head(5).tolist()
        raise DataError(f"{setting}={file} lists sample_ids twice, e.g. {dup}")
    return saved.set_index("sample_id")["split"]


def _from_file(records: pd.DataFrame, file: str) -> np.ndarray:
    """Each record's split as ``file`` (see :func:`read_split_file`) gives it; every record
    must be listed there, other ids are ignored."""
    split = records["sample_id"].astype(str).map(read_split_file(file))
    if split.isna().any():
        ids = records.loc[split.isna(), "sample_id"].head(5).tolist()
        raise DataError(f"data.split.file={file} lacks {int(split.isna().sum())} of the "
                        f"{len(records)} records, e.g. sample_ids {ids}")
    return split.to_numpy(dtype=object)


def assign_splits(records: pd.DataFrame, settings: SplitSettings) -> pd.DataFrame:
    """A split table (``sample_id, group, label, split`` and, for kfold, ``fold``) in the
    records' order and index.

    ``fold`` is the fold each record belongs to, -1 for the test set kept apart
    (``pool=trainval``). Raises ``DataError`` when the records cannot meet the settings (a split
    that was asked for comes out empty, too few groups for a fraction or the folds).
    """
    missing = [c for c in COLUMNS if c not in records]
    if missing:
        raise ValueError(f"records lack the columns {missing}")
    if records["sample_id"].duplicated().any():
        dup = records.loc[records["sample_id"].duplicated(), "sample_id"].head(5).tolist()
        raise ValueError(f"records repeat sample_ids, e.g. {dup}")
    s = settings
    n = len(records)
    labels = records["label"].to_numpy()
    # Ungrouped splits simply pass no groups, so every record stands alone.
    groups = records["group"].to_numpy() if s.grouped else None
    everything = np.arange(n)
    split = np.full(n, "train", dtype=object)
    expected = {"train"}
    table = records.loc[:, list(COLUMNS)].copy()

    if s.mode == "file":
        split = _from_file(records, s.file)
        expected |= set(split)
    elif s.mode == "official":
        split = _official(records)
        expected |= set(split)
        if "val" not in expected and s.val_fraction > 0:
            train = np.flatnonzero(split == "train")
            split[_holdout(train, labels, groups, s.val_fraction, s.seed)] = "val"
            expected.add("val")
    elif s.mode == "holdout":
        # Any official split is ignored on purpose: holdout is drawn over all records.
        test = _holdout(everything, labels, groups, s.test_fraction, s.seed)
        split[test] = "test"
        rest = np.flatnonzero(split == "train")
        # val_fraction is of the total, so rescale it to the part left after the test.
        val_share = s.val_fraction / (1 - s.test_fraction)
        split[_holdout(rest, labels, groups, val_share, s.seed)] = "val"
        expected |= {name for name, f in (("test", s.test_fraction), ("val", s.val_fraction))
                     if f > 0}
    elif s.pool == "trainval":
        official = records.get("split", None)
        if official is not None and (official == "test").any():
            split[(official == "test").to_numpy()] = "test"
        else:
            split[_holdout(everything, labels, groups, s.test_fraction, s.seed)] = "test"
        if (split == "test").any() or s.test_fraction > 0:
            expected.add("test")
        pool = np.flatnonzero(split != "test")
        fold_of = _fold_of(pool, labels, groups, s.folds, s.seed, n)
        split[fold_of == s.fold] = "val"
        expected.add("val")
        table["fold"] = fold_of
    else:  # kfold over every record: the held-out fold tests, val is carved from the rest
        fold_of = _fold_of(everything, labels, groups, s.folds, s.seed, n)
        split[fold_of == s.fold] = "test"
        rest = np.flatnonzero(fold_of != s.fold)
        split[_holdout(rest, labels, groups, s.val_fraction, s.seed)] = "val"
        expected |= {"test"} | ({"val"} if s.val_fraction > 0 else set())
        table["fold"] = fold_of

    table.insert(3, "split", split)
    for name in SPLITS:
        if name in expected and not (split == name).any():
            raise DataError(f"data.split: split {name!r} came out empty (mode={s.mode!r}, {n} "
                            "records); use smaller fractions or fewer folds")
    return table


def check_disjoint_groups(table: pd.DataFrame) -> None:
    """Refuse a split table in which a group appears in more than one split."""
    spread = table.groupby("group")["split"].unique()
    shared = spread[spread.map(len) > 1]
    if len(shared):
        group = shared.index[0]
        raise ValueError(f"group {group!r} is in several splits {sorted(shared.iloc[0])} "
                         f"({len(shared)} such groups)")


def split_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Record counts per split (rows, in train/val/test order) and label (columns), plus total."""
    counts = pd.crosstab(table["split"], table["label"])
    counts = counts.reindex([s for s in SPLITS if s in counts.index])
    counts["total"] = counts.sum(axis=1)
    counts.columns.name = "label"
    return counts
