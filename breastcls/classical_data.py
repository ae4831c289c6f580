"""Feature tables for the classical pipeline: read, checked and selected by split.

A table is what ``python -m breastcls.features`` writes (``sample_id, group, label, index, split,
f0..f{D-1}``, CSV or parquet, with ``features.json`` beside it); labels may come from a separate
``sample_id,label[,group]`` CSV instead, joined on ``sample_id``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from breastcls.data.readers import DataError
from breastcls.features import feature_columns

log = logging.getLogger(__name__)

MAKE_FEATURES = "write one with python -m breastcls.features (see docs/classical.md)"


@dataclass
class FeatureSet:
    """Rows of one or more splits: features ``(N, D)``, integer labels, groups and ids."""

    features: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    sample_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def read_table(path: str | Path, labels: str | Path | None = None) -> pd.DataFrame:
    """The feature file at ``path``, with labels (and groups) from ``labels`` when given."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"features={path}: file not found; {MAKE_FEATURES}")
    try:
        frame = (pd.read_parquet(path) if path.suffix == ".parquet"
                 else pd.read_csv(path, dtype={"sample_id": str, "group": str}))
    except (ImportError, ValueError, OSError, pd.errors.ParserError) as err:
        raise DataError(f"features={path} cannot be read ({err}); {MAKE_FEATURES}") from None
    if "sample_id" not in frame:
        raise DataError(f"features={path} has no sample_id column; {MAKE_FEATURES}")
    frame["sample_id"] = frame["sample_id"].astype(str)
    if not feature_columns(frame):
        raise DataError(f"features={path} has no feature columns f0, f1, ...; {MAKE_FEATURES}")
    if labels is not None:
        frame = _join_labels(frame, path, Path(labels))
    if "label" not in frame:
        raise DataError(f"features={path} has no label column: give labels=<csv with "
                        "sample_id,label> or extract features from a labelled data set")
    bad = frame["label"].isna() | (pd.to_numeric(frame["label"], errors="coerce") % 1 != 0)
    if bad.any():
        raise DataError(f"features={path}: {int(bad.sum())} rows have no integer label, e.g. "
                        f"sample_id {frame.loc[bad, 'sample_id'].head(3).tolist()}")
    frame["label"] = frame["label"].astype(int)
    if "group" not in frame:
        log.warning("features=%s has no group column: every sample is its own group, so "
                    "related images may fall into different folds", path)
        frame["group"] = frame["sample_id"]
    return frame


def _join_labels(frame: pd.DataFrame, path: Path, labels: Path) -> pd.DataFrame:
    if not labels.is_file():
        raise DataError(f"labels={labels}: file not found")
    table = pd.read_csv(labels, dtype={"sample_id": str, "group": str})
    if not {"sample_id", "label"} <= set(table.columns):
        raise DataError(f"labels={labels} needs columns sample_id and label, has "
                        f"{list(table.columns)}")
    missing = sorted(set(frame["sample_id"]) - set(table["sample_id"]))
    if missing:
        raise DataError(f"labels={labels} lacks {len(missing)} sample ids of features={path}, "
                        f"e.g. {missing[:3]}: the two files do not describe the same samples")
    keep = [c for c in ("label", "group") if c in table]
    return frame.drop(columns=keep, errors="ignore").merge(
        table[["sample_id", *keep]].drop_duplicates("sample_id"), on="sample_id", how="left")


def select_splits(frame: pd.DataFrame, splits: Sequence[str], source: str) -> FeatureSet:
    """The rows of ``splits`` (all rows when the table has no ``split`` column)."""
    if "split" in frame:
        available = sorted(frame["split"].astype(str).unique())
        unknown = sorted(set(splits) - set(available))
        if unknown:
            raise DataError(f"features={source} has no rows of split(s) {unknown}; it holds "
                            f"{available}")
        frame = frame[frame["split"].astype(str).isin(list(splits))]
    duplicated = frame["sample_id"][frame["sample_id"].duplicated()]
    if len(duplicated):
        raise DataError(f"features={source}: sample ids repeat within {list(splits)}, e.g. "
                        f"{duplicated.head(3).tolist()}; extract each sample once")
    return FeatureSet(frame[feature_columns(frame)].to_numpy(dtype=np.float64),
                      frame["label"].to_numpy(), frame["group"].astype(str).to_numpy(),
                      frame["sample_id"].to_numpy())


def feature_provenance(path: str | Path) -> dict:
    """``features.json`` written beside the feature file, if any."""
    info = Path(path).with_name("features.json")
    return json.loads(info.read_text()) if info.is_file() else {}


def positive_class_of(path: str | Path, configured: int | None) -> int:
    """The configured positive class, else the one its extractor's data set declares."""
    if configured is not None:
        return int(configured)
    declared = {e.get("positive_class") for e in
                feature_provenance(path).get("extractors", {}).values()} - {None}
    if len(declared) != 1:
        raise DataError(f"features={path}: its features.json does not name one positive class "
                        f"({sorted(declared) or 'none'}); set positive_class=<label>")
    return int(declared.pop())
