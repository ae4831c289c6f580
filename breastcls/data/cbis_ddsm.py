"""CBIS-DDSM abnormality patches (Sawyer-Lee et al. 2016, TCIA), as the study built them.

Two sources (``data.format``): ``tcia``, the four case-description CSVs with the DICOM tree they
name, from which every lesion's abnormality patch and baseline patch (healthy tissue beside it)
are extracted once (:mod:`breastcls.data.cbis_ddsm_tcia`); or ``arrays``, the study's prepared
patch arrays (:mod:`breastcls.data.cbis_ddsm_arrays`). Either way a lesion carries the study's
code (0 baseline, 1 mass benign, 2 mass malignant, 3 calcification benign, 4 calcification
malignant), its patient (the group) and its official split; ``data.task`` maps the codes to
classes and ``data.pairs`` gives every sample its baseline patch as ``batch["baseline"]``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.utils import get_method

from breastcls.data.cbis_ddsm_arrays import array_lesions
from breastcls.data.cbis_ddsm_csv import ABNORMALITY_TYPES, read_case_descriptions
from breastcls.data.cbis_ddsm_patches import SIDES, PatchSettings
from breastcls.data.cbis_ddsm_tcia import tcia_patches
from breastcls.data.datamodule import RecordsDataModule
from breastcls.data.readers import DataError
from breastcls.data.records import ClassInfo, RecordTable

log = logging.getLogger(__name__)

FORMATS = ("tcia", "arrays")
BENIGN_WITHOUT_CALLBACK = ("benign", "drop")
CODE_NAMES = ("baseline", "mass_benign", "mass_malignant", "calc_benign", "calc_malignant")
TASKS = {  # data.task -> classes, and the label of each study code (1..4; 0 in five_class)
    "mass_calc": (ClassInfo(("mass", "calcification"), positive=1), {1: 0, 2: 0, 3: 1, 4: 1}),
    "benign_malignant": (ClassInfo(("benign", "malignant"), positive=1),
                         {1: 0, 2: 1, 3: 0, 4: 1}),
    "four_class": (ClassInfo(CODE_NAMES[1:]), {1: 0, 2: 1, 3: 2, 4: 3}),
    "five_class": (ClassInfo(CODE_NAMES), {0: 0, 1: 1, 2: 2, 3: 3, 4: 4}),
}


def cbis_ddsm_records(root: str | Path, task: str = "benign_malignant",
                      on_bad_file: str = "error", format: str = "tcia", pairs: bool = False,
                      cache_dir: str | Path = ".cache/breastcls",
                      abnormality_types: Sequence[str] = ABNORMALITY_TYPES,
                      benign_without_callback: str = "benign", patch_size: int = 299,
                      margin: int = 20, baseline_sides: Sequence[str] = SIDES,
                      breast_threshold: float = 0.05, min_breast_fraction: float = 0.95,
                      contrast_stretch: bool = True,
                      percentiles: Sequence[float] = (2.0, 98.0)) -> RecordTable:
    """One record per lesion (and, in ``five_class``, one per baseline patch): its patch,
    patient, official split and the task's label; ``baseline_path`` too when ``pairs``."""
    if task not in TASKS:
        raise DataError(f"data.task={task!r}: CBIS-DDSM has the tasks {list(TASKS)}")
    if format not in FORMATS:
        raise DataError(f"data.format={format!r}; choose one of {list(FORMATS)}")
    if benign_without_callback not in BENIGN_WITHOUT_CALLBACK:
        raise DataError(f"data.records.benign_without_callback={benign_without_callback!r}; "
                        f"choose one of {list(BENIGN_WITHOUT_CALLBACK)}")
    if pairs and task == "five_class":
        raise DataError("data.pairs=true with data.task=five_class: there the baseline patches "
                        "are samples of their own class; pick another task or data.pairs=false")
    root = Path(root).expanduser()
    skipped: list[str] = []
    settings = PatchSettings(patch_size, margin, tuple(baseline_sides), breast_threshold,
                             min_breast_fraction, contrast_stretch, tuple(percentiles))
    if format == "arrays":
        stretch = settings.percentiles if contrast_stretch else None
        lesions = array_lesions(root, stretch, cache_dir)
    else:
        lesions = read_case_descriptions(root, abnormality_types)
        if benign_without_callback == "drop":
            lesions = lesions[lesions["pathology"] != "BENIGN_WITHOUT_CALLBACK"]
        lesions, skipped = tcia_patches(root, lesions.reset_index(drop=True), settings,
                                        cache_dir, on_bad_file)
        lesions = lesions.assign(code=study_codes(lesions)).rename(columns={"patient": "group"})
    records = _task_records(lesions, task, pairs)
    shared = set(records.loc[records["split"] == "train", "group"]) & set(
        records.loc[records["split"] == "test", "group"])
    if shared:
        log.info("%d patient(s) have lesions in both the official train and test sets (the "
                 "official split was drawn separately for masses and calcifications; it is kept "
                 "as published)", len(shared))
    return RecordTable(records, TASKS[task][0], skipped=skipped)


def study_codes(lesions: pd.DataFrame) -> pd.Series:
    """The study's code (1..4) of each CSV lesion; BENIGN_WITHOUT_CALLBACK (left in only when it
    counts as benign) is benign."""
    malignant = (lesions["pathology"] == "MALIGNANT").astype(int)
    return lesions["abnormality"].map({"mass": 1, "calc": 3}) + malignant


def _task_records(lesions: pd.DataFrame, task: str, pairs: bool) -> pd.DataFrame:
    """Labels of ``task``; baseline patches as records of their own (five_class) or as the
    ``baseline_path`` of their lesion (``pairs``), else left out."""
    label_of = TASKS[task][1]
    records = lesions.assign(label=lesions["code"].map(label_of))
    if task == "five_class":
        baselines = lesions.assign(sample_id=lesions["sample_id"] + "_baseline", code=0, label=0,
                                   path=lesions["baseline_path"])
        records = pd.concat([records, baselines], ignore_index=True)
    if not pairs or task == "five_class":
        records = records.drop(columns="baseline_path")
    records["class_code"] = records["code"].map(dict(enumerate(CODE_NAMES)))
    return records.drop(columns="code").reset_index(drop=True)


class CbisDdsmDataModule(RecordsDataModule):
    """The generic record DataModule with the data set's own two switches, ``format`` and
    ``pairs``, as top-level ``data`` settings (conf/data/cbis_ddsm.yaml hands them to the records
    builder) and every key of ``data.records`` checked before anything is read."""

    def __init__(self, records: Mapping[str, Any], root: str, task: str, format: str = "tcia",
                 pairs: bool = False, **settings: Any) -> None:
        accepted = [p for p in inspect.signature(RecordsDataModule.__init__).parameters
                    if p not in ("self", "records", "root", "task")]
        unknown = [f"data.{k}" for k in settings if k not in accepted]
        builder = [p for p in inspect.signature(get_method(records["_target_"])).parameters
                   if p not in ("root", "task", "on_bad_file")]
        unknown += [f"data.records.{k}" for k in records
                    if not k.startswith("_") and k not in builder]
        if unknown:
            raise DataError(f"{', '.join(unknown)}: not CBIS-DDSM setting(s); data takes format, "
                            f"pairs, {', '.join(accepted)}; data.records takes "
                            f"{', '.join(builder)}")
        if format not in FORMATS:
            raise DataError(f"data.format={format!r}; choose one of {list(FORMATS)}")
        super().__init__(records, root, task, **settings)
