"""A data set as a table of sample records plus the class metadata that goes with it.

Every data set module builds a :class:`RecordTable`: one row per sample with a stable
``sample_id``, a ``group`` (patient, case or near-duplicate cluster), an integer ``label``, the
``path`` of its image, an optional official ``split`` and any extra columns (masks, view, ...).
The model, metrics, plots and prediction files read the class metadata from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from breastcls.data.readers import DataError

REQUIRED_COLUMNS = ("sample_id", "group", "label", "path")


@dataclass(frozen=True)
class ClassInfo:
    """Class names in label order, and the label scored as positive in binary tasks."""

    names: tuple[str, ...]
    positive: int | None = None

    def __post_init__(self) -> None:
        if len(self.names) < 2:
            raise ValueError(f"a task needs at least two classes, got {list(self.names)}")
        if len(self.names) == 2 and self.positive not in (0, 1):
            raise ValueError(f"a binary task names its positive class (0 or 1), got "
                             f"{self.positive!r} for classes {list(self.names)}")

    @property
    def num_classes(self) -> int:
        return len(self.names)


@dataclass
class RecordTable:
    """Sample records and their classes; built once per data set and task."""

    records: pd.DataFrame
    classes: ClassInfo
    skipped: list[str] = field(default_factory=list)  # files reported and left out

    def __post_init__(self) -> None:
        check_records(self.records, self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def class_counts(self) -> list[int]:
        counts = self.records["label"].value_counts()
        return [int(counts.get(c, 0)) for c in range(self.classes.num_classes)]


def check_records(records: pd.DataFrame, classes: ClassInfo) -> None:
    """Refuse records without the required columns, duplicated ids or unknown labels."""
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise DataError(f"records lack the column(s) {missing}; every data set module must give "
                        f"{list(REQUIRED_COLUMNS)}")
    if records.empty:
        raise DataError("the data set has no samples: check data.root and data.task")
    duplicated = records["sample_id"][records["sample_id"].duplicated()].tolist()
    if duplicated:
        raise DataError(f"sample_id must be unique; repeated: {_first(duplicated)}")
    bad = records[~records["label"].isin(range(classes.num_classes))]
    if len(bad):
        raise DataError(
            f"{len(bad)} sample(s) have a label outside the classes {list(classes.names)} "
            f"(0..{classes.num_classes - 1}): "
            + _first([f"{s} (label {v!r})" for s, v in zip(bad["sample_id"], bad["label"],
                                                           strict=True)]))


def raise_problems(problems: Sequence[str], on_bad_file: str, data_set: str) -> None:
    """Refuse a data set with file problems, naming the first five, unless ``on_bad_file`` is
    ``skip`` (the records builder then reports them as ``RecordTable.skipped``)."""
    if problems and on_bad_file != "skip":
        raise DataError(f"{len(problems)} {data_set} file problem(s): " + "; ".join(problems[:5])
                        + ("" if len(problems) <= 5 else f"; and {len(problems) - 5} more")
                        + "\n(data.on_bad_file=skip reports them and loads the rest)")


def _first(items: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(map(str, items[:limit])) + more
