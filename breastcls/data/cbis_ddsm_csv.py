"""The four CBIS-DDSM case-description CSVs (TCIA) as one table of lesions.

The real files differ in small ways a parser must survive: the density column is
``breast_density`` in the mass files and ``breast density`` in the calcification files, and some
quoted path fields end in a newline. Every row becomes one lesion with its official split, its
abnormality type, its pathology and the three DICOM paths, plus where it came from (file and row)
so that any later problem can name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from breastcls.data.readers import DataError

CSV_FILES = {  # (abnormality type, official split) -> file name in the TCIA download
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
    ("calc", "train"): "calc_case_description_train_set.csv",
    ("calc", "test"): "calc_case_description_test_set.csv",
}
ABNORMALITY_TYPES = ("mass", "calc")
PATHOLOGIES = ("BENIGN", "BENIGN_WITHOUT_CALLBACK", "MALIGNANT")
PATH_COLUMNS = {"image file path": "image_path", "cropped image file path": "crop_path",
                "ROI mask file path": "mask_path"}
RENAMED = {"patient_id": "patient", "breast_density": "density", "breast density": "density",
           "left or right breast": "side", "image view": "view",
           "abnormality id": "abnormality_id", "pathology": "pathology", **PATH_COLUMNS}
REQUIRED = ("patient_id", "left or right breast", "image view", "abnormality id", "pathology",
            *PATH_COLUMNS)


def read_case_descriptions(root: str | Path,
                           abnormality_types: Sequence[str] = ABNORMALITY_TYPES) -> pd.DataFrame:
    """One row per lesion of the CSVs of ``abnormality_types`` found in ``root``.

    Columns: ``sample_id`` (the ROI's folder name, unique per lesion), ``patient``, ``split``,
    ``abnormality`` (mass or calc), ``pathology``, ``side``, ``view``, ``abnormality_id``,
    ``density``, the three DICOM paths as written (``image_path`` is shared by the lesions of one
    mammogram) and ``source`` ("<csv> row <n>", n counting data rows from 1).
    """
    unknown = [t for t in abnormality_types if t not in ABNORMALITY_TYPES]
    if unknown or not abnormality_types:
        raise DataError(f"data.records.abnormality_types={list(abnormality_types)}: choose from "
                        f"{list(ABNORMALITY_TYPES)}")
    root = Path(root).expanduser()
    files = {key: root / name for key, name in CSV_FILES.items() if key[0] in abnormality_types}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise DataError(f"CBIS-DDSM description file(s) {missing} not found in {root.resolve()}: "
                        "point data.root at the folder holding the four TCIA CSVs "
                        f"({', '.join(CSV_FILES.values())}) and the CBIS-DDSM DICOM folder")
    tables = [_read_one(path, abnormality, split) for (abnormality, split), path in files.items()]
    lesions = pd.concat(tables, ignore_index=True)
    repeated = lesions["sample_id"][lesions["sample_id"].duplicated()].tolist()
    if repeated:
        raise DataError(f"ROI folders listed twice in the CSVs: {repeated[:5]}")
    return lesions


def _read_one(path: Path, abnormality: str, split: str) -> pd.DataFrame:
    """One CSV: columns renamed to one vocabulary, paths stripped of stray whitespace."""
    try:
        # The C parser keeps newlines inside quoted fields; dtype=str keeps ids like "1" intact.
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a readable CSV ({err})") from None
    absent = [c for c in REQUIRED if c not in table.columns]
    if absent:
        raise DataError(f"{path}: columns {absent} missing; is this a CBIS-DDSM case-description "
                        f"file? It has {list(table.columns)}")
    table = table.rename(columns=RENAMED)
    for column in (*PATH_COLUMNS.values(), "patient", "pathology", "side", "view"):
        table[column] = table[column].str.strip()
    unmapped = table.loc[~table["pathology"].isin(PATHOLOGIES), "pathology"]
    if len(unmapped):
        row = int(unmapped.index[0]) + 1
        raise DataError(f"{path.name} row {row}: pathology {unmapped.iloc[0]!r} is not one of "
                        f"{list(PATHOLOGIES)}")
    table["sample_id"] = table["mask_path"].str.split("/").str[0]
    table["abnormality"] = abnormality
    table["split"] = split
    table["source"] = [f"{path.name} row {i + 1}" for i in range(len(table))]
    keep = ["sample_id", "patient", "split", "abnormality", "pathology", "side", "view",
            "abnormality_id", "density", *PATH_COLUMNS.values(), "source"]
    if "density" not in table:
        table["density"] = ""
    return table[keep]
