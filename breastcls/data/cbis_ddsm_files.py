"""Finding a CBIS-DDSM row's DICOM files, and telling its ROI mask from its cropped image.

The CSV paths are ``<folder>/<StudyInstanceUID>/<SeriesInstanceUID>/<file>.dcm``; the NBIA Data
Retriever can instead save descriptive folder names (``07-20-2016-DDSM-74994/1.000000-ROI mask
images-24515/1-1.dcm``). A path that is not found literally (under the root, or under its
``CBIS-DDSM`` folder) is therefore looked up by the two UIDs in the DICOM headers of the tree.

The ROI mask and the cropped image share a series and are swapped in some rows, so they are told
apart by content: a mask is binary and has the full mammogram's size.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from rich.progress import track

from breastcls.data.readers import DataError, read_image

log = logging.getLogger(__name__)

IMAGE_FOLDERS = (".", "CBIS-DDSM")  # where, under the root, the CSV paths may start
UID_TAGS = ["StudyInstanceUID", "SeriesInstanceUID"]


class DicomTree:
    """The DICOM files under ``root``, by literal CSV path or by (study, series) UIDs."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def literal(self, csv_path: str) -> Path | None:
        """The file at the CSV path, if it exists as written."""
        for folder in IMAGE_FOLDERS:
            path = self.root / folder / csv_path
            if path.is_file():
                return path
        return None

    def candidates(self, csv_path: str) -> list[Path]:
        """The file at ``csv_path``, or else every file of the series its UIDs name."""
        path = self.literal(csv_path)
        if path is not None:
            return [path]
        parts = csv_path.split("/")
        if len(parts) < 3:
            return []
        return self.by_uids.get((parts[-3], parts[-2]), [])

    @cached_property
    def by_uids(self) -> dict[tuple[str, str], list[Path]]:
        """Every DICOM file's (StudyInstanceUID, SeriesInstanceUID), read from the headers once,
        the first time a literal path is missing."""
        index: dict[tuple[str, str], list[Path]] = defaultdict(list)
        files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() == ".dcm")
        for path in track(files, description="indexing DICOM UIDs", disable=len(files) < 500):
            try:
                header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=UID_TAGS)
                index[(str(header.StudyInstanceUID), str(header.SeriesInstanceUID))].append(path)
            except (InvalidDicomError, AttributeError, OSError, ValueError) as err:
                log.debug("not indexed (%s): %s", err, path)
        log.info("indexed %d DICOM files by Study/Series UID under %s", len(files), self.root)
        return dict(index)


@dataclass(frozen=True)
class LesionFiles:
    """A row's files as found: the mammogram, and the two ROI files (mask and crop, in the CSV's
    order until the content is read)."""

    image: Path
    mask: Path
    crop: Path | None
    crop_as_listed: bool  # ``crop`` is the literal file of the crop column


def find_files(tree: DicomTree, row: dict[str, str]) -> LesionFiles | str:
    """The row's files, or a message naming the row and what is missing."""
    images = tree.candidates(row["image_path"])
    if not images:
        return (f"{row['source']} ({row['sample_id']}): full mammogram {row['image_path']} not "
                f"found under {tree.root} (neither at that path nor by its Study/Series UIDs)")
    masks = tree.candidates(row["mask_path"])
    crops = tree.candidates(row["crop_path"])
    if not masks and not crops:
        return (f"{row['source']} ({row['sample_id']}): ROI mask {row['mask_path']} not found "
                f"under {tree.root} (neither at that path nor by its Study/Series UIDs)")
    # Files of the mask column first: the literal mask wins unless its content says otherwise.
    ordered = list(dict.fromkeys([*masks, *crops]))
    crop = ordered[1] if len(ordered) > 1 else None
    return LesionFiles(images[0], ordered[0], crop,
                       crop is not None and crop == tree.literal(row["crop_path"]))


def is_binary(array: np.ndarray) -> bool:
    """At most two distinct values (a mask), checked without sorting a full mammogram."""
    lo, hi = array.min(), array.max()
    return not bool(((array != lo) & (array != hi)).any())


def read_mask(files: LesionFiles, row: dict[str, str], shape: tuple[int, int]
              ) -> tuple[np.ndarray, Path]:
    """The lesion's boolean mask at the mammogram's ``shape``, and the file that holds it.

    Warns when it is the file the CSV calls the cropped image (swapped columns); raises a
    DataError naming the file (the caller adds the row) when no candidate is a binary mask of
    that size, or the mask is empty.
    """
    where = f"{row['source']} ({row['sample_id']})"
    wrong_size = None
    for path in [p for p in (files.mask, files.crop) if p is not None]:
        array = read_image(path, "L", voi="none")
        if not is_binary(array):
            continue
        if array.shape != shape:
            wrong_size = wrong_size or (path, array.shape)
            continue
        if path == files.crop and files.crop_as_listed:
            log.warning("%s: the ROI mask and cropped image files are swapped (%s is the mask); "
                        "read by content", where, path)
        mask = array > 0  # masks are 0 outside the lesion
        if not mask.any():
            raise DataError(f"ROI mask {path} is empty (no lesion pixel); remove the "
                            "row or replace the file")
        return mask, path
    if wrong_size is not None:
        path, size = wrong_size
        raise DataError(f"ROI mask {path} is {size[0]}x{size[1]} but its mammogram "
                        f"{files.image} is {shape[0]}x{shape[1]}; a mask must have its image's "
                        "size (re-download the row's ROI series)")
    raise DataError(f"no binary ROI mask among {[str(files.mask), str(files.crop)]}; "
                    "re-download the row's ROI series")
