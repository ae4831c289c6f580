"""A data set listed in ``list.csv`` (``path``, ``label``): the smallest record module, used by
the CLI tests to plant bad rows (missing files, unknown file types, labels out of range)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from breastcls.data.records import ClassInfo, RecordTable

CLASSES = ClassInfo(("malignant", "benign"), positive=0)


def listed_records(root: str | Path, task: str = "binary", on_bad_file: str = "error"
                   ) -> RecordTable:
    root = Path(root)
    listed = pd.read_csv(root / "list.csv")
    records = pd.DataFrame({"sample_id": [Path(p).stem for p in listed["path"]],
                            "path": [str(root / p) for p in listed["path"]],
                            "label": listed["label"]})
    records["group"] = records["sample_id"]
    return RecordTable(records, CLASSES)
