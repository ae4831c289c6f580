"""A small CBIS-DDSM download, generated: the four case-description CSVs with the real columns
and quirks, and the DICOM files (pydicom) their rows name.

Rows follow the real naming (``Mass-Training_P_00001_LEFT_CC_1``, UID folders, ``000000.dcm`` /
``000001.dcm`` with the mask and crop numbered as in the real mass and calc files, the two density
column names, a newline inside the quoted mask or crop path). Each mammogram is 160x128, 16-bit:
a bright rectangle of breast on a near-black background, its lesions brighter still. Files lie
under ``<root>/CBIS-DDSM/`` as the NBIA Data Retriever saves them, by UID, or with descriptive
folder names for the patients in ``descriptive``.

Special rows of :func:`default_rows`: P_00001's mass image holds two lesions (the first one's
right-hand neighbour overlaps the second); P_00002's mass sits in a breast too small for any
baseline patch beside it (``EDGE``); P_00003's calcification has its mask and crop files swapped
(``SWAPPED``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

Box = tuple[int, int, int, int]  # x_min, y_min, x_max, y_max (max exclusive)
SHAPE = (160, 128)               # (height, width) of every mammogram
BREAST: Box = (0, 0, 96, 160)    # the breast: a rectangle against the chest wall
BACKGROUND, TISSUE, LESION = 30, 18000, 40000
# Overrides that fit the study's patch settings to these small images.
PATCH_OVERRIDES = ["data.records.patch_size=32", "data.records.margin=4", "data.image_size=32"]
TRAIN_PATIENTS = [f"P_{i:05d}" for i in range(1, 13)]
TEST_PATIENTS = [f"P_{i:05d}" for i in range(101, 105)]
PATHOLOGIES = ("MALIGNANT", "BENIGN", "BENIGN_WITHOUT_CALLBACK")
EDGE = "Mass-Training_P_00002_LEFT_CC_1"
SWAPPED = "Calc-Training_P_00003_RIGHT_MLO_1"
TWO_LESIONS = ("Mass-Training_P_00001_LEFT_CC_1", "Mass-Training_P_00001_LEFT_CC_2")
DESCRIPTIVE = ("P_00004", "P_00102")
FILES = {("mass", "train"): "mass_case_description_train_set.csv",
         ("mass", "test"): "mass_case_description_test_set.csv",
         ("calc", "train"): "calc_case_description_train_set.csv",
         ("calc", "test"): "calc_case_description_test_set.csv"}


@dataclass(frozen=True)
class Row:
    """One CSV row: a lesion, and the mammogram it lies in."""

    abnormality: str          # mass or calc
    split: str                # train or test
    patient: str
    side: str
    view: str
    abnormality_id: int
    pathology: str
    box: Box                  # the lesion in the mammogram
    breast: Box = BREAST

    @property
    def image_folder(self) -> str:
        kind = {"mass": "Mass", "calc": "Calc"}[self.abnormality]
        split = {"train": "Training", "test": "Test"}[self.split]
        return f"{kind}-{split}_{self.patient}_{self.side}_{self.view}"

    @property
    def sample_id(self) -> str:
        return f"{self.image_folder}_{self.abnormality_id}"

    def csv_paths(self) -> dict[str, str]:
        """The three paths as the CSV writes them (UIDs derived from the names)."""
        study, series = (_uid(self.image_folder, s) for s in ("study", "series"))
        roi_study, roi_series = (_uid(self.sample_id, s) for s in ("study", "series"))
        crop, mask = ("000000", "000001") if self.abnormality == "mass" else ("000001", "000000")
        roi = f"{self.sample_id}/{roi_study}/{roi_series}"
        return {"image": f"{self.image_folder}/{study}/{series}/000000.dcm",
                "crop": f"{roi}/{crop}.dcm", "mask": f"{roi}/{mask}.dcm"}


def default_rows() -> list[Row]:
    """A mass (left CC) and a calcification (right MLO) per patient, pathologies cycling."""
    rows = []
    for split, patients in (("train", TRAIN_PATIENTS), ("test", TEST_PATIENTS)):
        for i, patient in enumerate(patients):
            x, y = 24 + (i % 4) * 4, 56 + (i % 3) * 8
            box = (x, y, x + 20, y + 20)
            rows.append(Row("mass", split, patient, "LEFT", "CC", 1, PATHOLOGIES[i % 3], box))
            rows.append(Row("calc", split, patient, "RIGHT", "MLO", 1, PATHOLOGIES[(i + 1) % 3],
                            box))
    rows[0] = replace(rows[0], box=(30, 60, 50, 80))
    rows.insert(1, replace(rows[0], abnormality_id=2, box=(60, 64, 76, 80)))
    edge = next(i for i, r in enumerate(rows) if r.sample_id == EDGE)
    rows[edge] = replace(rows[edge], box=(8, 70, 32, 94), breast=(0, 50, 40, 110))
    return rows


def write_tree(root: str | Path, rows: list[Row] | None = None,
               descriptive: tuple[str, ...] = DESCRIPTIVE,
               swapped: tuple[str, ...] = (SWAPPED,)) -> Path:
    """The CSVs in ``root`` and the DICOM files under ``root/CBIS-DDSM``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = default_rows() if rows is None else rows
    for (abnormality, split), name in FILES.items():
        chosen = [r for r in rows if (r.abnormality, r.split) == (abnormality, split)]
        _csv(chosen, abnormality).to_csv(root / name, index=False)
    by_image: dict[str, list[Row]] = {}
    for row in rows:
        by_image.setdefault(row.image_folder, []).append(row)
    rng = np.random.default_rng(0)
    for lesions in by_image.values():
        first = lesions[0]
        image = _mammogram(first.breast, [r.box for r in lesions], rng)
        where = _locations(root / "CBIS-DDSM", first, first.patient in descriptive)
        write_dicom(where["image"], image, first.image_folder, first.csv_paths()["image"])
        for row in lesions:
            where = _locations(root / "CBIS-DDSM", row, row.patient in descriptive)
            mask = np.zeros(SHAPE, np.uint8)
            x0, y0, x1, y1 = row.box
            mask[y0:y1, x0:x1] = 255
            crop = image[y0:y1, x0:x1]
            if row.sample_id in swapped:
                mask, crop = crop, mask
            write_dicom(where["mask"], mask, row.sample_id, row.csv_paths()["mask"])
            write_dicom(where["crop"], crop, row.sample_id, row.csv_paths()["crop"])
    return root


def file_of(root: Path, row_id: str, kind: str, rows: list[Row] | None = None) -> Path:
    """Where ``write_tree`` put the ``kind`` (image, mask, crop) file of a UID-layout row."""
    row = next(r for r in (rows or default_rows()) if r.sample_id == row_id)
    return root / "CBIS-DDSM" / row.csv_paths()[kind]


def _csv(rows: list[Row], abnormality: str) -> pd.DataFrame:
    density = "breast_density" if abnormality == "mass" else "breast density"
    shape = ("mass shape", "mass margins") if abnormality == "mass" else (
        "calc type", "calc distribution")
    newline_in = "ROI mask file path" if abnormality == "mass" else "cropped image file path"
    records = []
    for r in rows:
        paths = r.csv_paths()
        record = {"patient_id": r.patient, density: 3, "left or right breast": r.side,
                  "image view": r.view, "abnormality id": r.abnormality_id,
                  "abnormality type": "mass" if abnormality == "mass" else "calcification",
                  shape[0]: "OVAL", shape[1]: "CIRCUMSCRIBED", "assessment": 4,
                  "pathology": r.pathology, "subtlety": 3, "image file path": paths["image"],
                  "cropped image file path": paths["crop"], "ROI mask file path": paths["mask"]}
        record[newline_in] += "\n"  # the real files end these quoted fields with a newline
        records.append(record)
    return pd.DataFrame(records, columns=["patient_id", density, "left or right breast",
                                          "image view", "abnormality id", "abnormality type",
                                          *shape, "assessment", "pathology", "subtlety",
                                          "image file path", "cropped image file path",
                                          "ROI mask file path"])


def _mammogram(breast: Box, lesions: list[Box], rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(0, 2 * BACKGROUND, SHAPE).astype(np.uint16)
    x0, y0, x1, y1 = breast
    image[y0:y1, x0:x1] = rng.integers(TISSUE - 1500, TISSUE + 1500, (y1 - y0, x1 - x0))
    for x0, y0, x1, y1 in lesions:
        image[y0:y1, x0:x1] = rng.integers(LESION - 1500, LESION + 1500, (y1 - y0, x1 - x0))
    return image


def _locations(base: Path, row: Row, descriptive: bool) -> dict[str, Path]:
    """The UID paths of the CSV, or the descriptive names the NBIA Data Retriever can save."""
    paths = row.csv_paths()
    if not descriptive:
        return {kind: base / path for kind, path in paths.items()}
    image_study, image_series = paths["image"].split("/")[1:3]
    roi_study, roi_series = paths["mask"].split("/")[1:3]
    image = (f"{row.image_folder}/07-20-2016-DDSM-{image_study[-5:]}/"
             f"1.000000-full mammogram images-{image_series[-5:]}/1-1.dcm")
    roi = f"{row.sample_id}/08-29-2017-DDSM-{roi_study[-5:]}/1.000000-ROI mask images-" \
          f"{roi_series[-5:]}"
    first, second = ("1-1", "1-2") if row.abnormality == "mass" else ("1-2", "1-1")
    return {"image": base / image, "crop": base / f"{roi}/{first}.dcm",
            "mask": base / f"{roi}/{second}.dcm"}


def _uid(name: str, kind: str) -> str:
    return generate_uid(prefix="1.3.6.1.4.1.9590.100.1.2.", entropy_srcs=[name, kind])


def write_dicom(path: Path, pixels: np.ndarray, patient_id: str, csv_path: str) -> None:
    """A mammography DICOM of ``pixels`` (uint8 or uint16) with the UIDs of ``csv_path``."""
    study, series = csv_path.split("/")[1:3]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID, ds.Modality = patient_id, "MG"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.Rows, ds.Columns = pixels.shape
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
