"""Full-field mammograms prepared once for the image cache: breast crop, one laterality, a long
side, written as 16-bit PNGs.

The generic image cache only resizes whole files, but a mammogram is mostly background, and left
and right breasts face opposite ways. Each DICOM is therefore read as float (modality rescale and
VOI), cropped to the bounding box of the largest connected region above a threshold (the breast;
labels and markers are smaller regions), flipped to ``flip_to`` when its laterality differs,
resized to ``long_side`` and stored as ``<cache_dir>/mammograms-<settings key>/<id>-<file
key>.png`` with a JSON sidecar (crop, flip, size, PatientID). The file key covers the DICOM's path,
size and modification time, so a rewritten file is prepared again and an interrupted run resumes.
Records then point at the PNGs, which the cache reads like any image; :meth:`Geometry.move_boxes`
maps ROI boxes into the prepared pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from PIL import Image
from rich.progress import track
from scipy import ndimage
from torchvision.transforms import v2

from breastcls.data.readers import VOIS, DataError, read_image

LATERALITIES = ("L", "R")
UINT16_MAX = np.iinfo(np.uint16).max
FORMAT_VERSION = 1  # bump when the preparation itself changes, so old PNGs are not reused

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


@dataclass(frozen=True)
class MammogramSettings:
    """How a mammogram DICOM becomes the prepared PNG."""

    long_side: int | None = 512     # the prepared image's longer side (None: crop's own size)
    flip_to: str | None = "L"       # L or R: every image oriented as that breast; None: no flip
    breast_threshold: float = 0.05  # breast = above this share of the image's value range
    voi: str = "auto"               # the DICOM reader's VOI: auto, none

    def __post_init__(self) -> None:
        if self.flip_to not in (*LATERALITIES, None):
            raise DataError(f"data.records.flip_to={self.flip_to!r}; choose L, R or null")
        if self.long_side is not None and self.long_side < 8:
            raise DataError(f"data.records.long_side={self.long_side} is too small (at least 8)")
        if not 0 <= self.breast_threshold < 1:
            raise DataError(f"data.records.breast_threshold={self.breast_threshold} must lie in "
                            "[0, 1)")
        if self.voi not in VOIS or self.voi == "window":
            raise DataError(f"data.records.voi={self.voi!r}; choose auto or none")


@dataclass(frozen=True)
class Geometry:
    """Where a prepared image lies in its DICOM: the crop, the flip and the output size."""

    crop: Box
    flipped: bool
    height: int
    width: int

    def move_boxes(self, boxes: Sequence[Sequence[float]]) -> list[list[float]]:
        """``[x0, y0, x1, y1]`` boxes in DICOM pixels, as they lie in the prepared image; boxes
        clipped away by the crop are dropped."""
        cx0, cy0, cx1, cy1 = self.crop
        sx, sy = self.width / (cx1 - cx0), self.height / (cy1 - cy0)
        out = []
        for x0, y0, x1, y1 in boxes:
            x0, x1 = (float(np.clip(x, cx0, cx1)) - cx0 for x in (x0, x1))
            y0, y1 = (float(np.clip(y, cy0, cy1)) - cy0 for y in (y0, y1))
            if x1 <= x0 or y1 <= y0:
                continue
            if self.flipped:
                x0, x1 = (cx1 - cx0) - x1, (cx1 - cx0) - x0
            out.append([x0 * sx, y0 * sy, x1 * sx, y1 * sy])
        return out


@dataclass(frozen=True)
class Prepared:
    """A prepared mammogram: its PNG, geometry and the DICOM header's PatientID."""

    path: Path
    geometry: Geometry
    patient_id: str


def breast_box(image: np.ndarray, threshold: float) -> Box:
    """The bounding box of the largest connected region above ``threshold`` of the value range;
    the whole image when nothing is above it."""
    lo, hi = float(image.min()), float(image.max())
    regions, count = ndimage.label(image > lo + threshold * (hi - lo))
    if count == 0:
        return 0, 0, image.shape[1], image.shape[0]
    largest = int(np.argmax(np.bincount(regions.ravel())[1:])) + 1
    rows, cols = ndimage.find_objects(regions)[largest - 1]
    return cols.start, rows.start, cols.stop, rows.stop


def prepare(image: np.ndarray, laterality: str, settings: MammogramSettings
            ) -> tuple[np.ndarray, Geometry]:
    """A float mammogram cropped to the breast, flipped and resized, as uint16 over its range."""
    crop = breast_box(image, settings.breast_threshold)
    x0, y0, x1, y1 = crop
    flipped = settings.flip_to is not None and laterality != settings.flip_to
    pixels = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1], dtype=np.float32))
    if flipped:
        pixels = pixels.flip(-1)
    h, w = pixels.shape
    if settings.long_side is not None and max(h, w) != settings.long_side:
        scale = settings.long_side / max(h, w)
        size = [max(1, round(h * scale)), max(1, round(w * scale))]
        pixels = v2.functional.resize(pixels[None], size, antialias=True)[0]
    values = pixels.numpy().astype(np.float64)
    lo, hi = float(values.min()), float(values.max())
    scaled = (values - lo) / (hi - lo) * UINT16_MAX if hi > lo else np.zeros_like(values)
    out = np.clip(np.round(scaled), 0, UINT16_MAX).astype(np.uint16)
    return out, Geometry(crop, flipped, *out.shape)


def prepare_all(items: Sequence[tuple[str, Path, str]], settings: MammogramSettings,
                cache_dir: str | Path, stop_at_error: bool = True
                ) -> tuple[dict[str, Prepared], dict[str, str]]:
    """Every ``(sample_id, dicom, laterality)`` prepared (or read back from the cache), and the
    messages of the DICOMs that could not be read, by sample id (the first only, when
    ``stop_at_error``)."""
    folder = Path(cache_dir).expanduser() / f"mammograms-{_settings_key(settings)}"
    folder.mkdir(parents=True, exist_ok=True)
    done: dict[str, Prepared] = {}
    failed: dict[str, str] = {}
    for sample_id, dicom, laterality in track(items, description="preparing mammograms",
                                              disable=len(items) < 20):
        stem = folder / f"{sample_id}-{_file_key(dicom)}"
        try:
            done[sample_id] = _read_back(stem) or _prepare_one(dicom, laterality, settings, stem)
        except DataError as err:
            failed[sample_id] = str(err)
            if stop_at_error:
                break
    return done, failed


def _prepare_one(dicom: Path, laterality: str, settings: MammogramSettings, stem: Path
                 ) -> Prepared:
    pixels, geometry = prepare(read_image(dicom, "L", voi=settings.voi), laterality, settings)
    patient = str(pydicom.dcmread(dicom, stop_before_pixels=True).get("PatientID", "")).strip()
    png = stem.with_suffix(".png")
    tmp = stem.with_suffix(f".tmp{os.getpid()}.png")
    Image.fromarray(pixels).save(tmp)
    tmp.replace(png)
    # The sidecar is written last: its presence means the PNG is complete.
    stem.with_suffix(".json").write_text(json.dumps({**asdict(geometry), "patient_id": patient}))
    return Prepared(png, geometry, patient)


def _read_back(stem: Path) -> Prepared | None:
    sidecar, png = stem.with_suffix(".json"), stem.with_suffix(".png")
    if not (sidecar.is_file() and png.is_file()):
        return None
    info = json.loads(sidecar.read_text())
    patient = info.pop("patient_id")
    info["crop"] = tuple(info["crop"])
    return Prepared(png, Geometry(**info), patient)


def _settings_key(settings: MammogramSettings) -> str:
    text = json.dumps({**asdict(settings), "version": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _file_key(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return "missing"
    text = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]
