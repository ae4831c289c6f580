"""A small INbreast release, generated: ``INbreast.csv``, ``AllDICOMs/`` and ``AllXML/`` in the
owners' layout, with the released table's quirks.

Ten patients with four views each (L/R x CC/ML, a few missing), every BI-RADS value present
for both tasks' classes. As in the real table the ``Patient ID`` and ``Patient age`` cells read
``removed``; some ``ACR`` cells are blank, ``Bi-Rads`` and ``Laterality`` cells are padded with
spaces, a few lines are empty. The patient is in the DICOM header (PatientID), except for
``NO_HEADER_PATIENT``, whose DICOMs have none: the hash in its file names identifies it. Each
mammogram is 96x64, 16-bit: a bright half-disc of breast against the chest wall (on the left of
a left breast, the right of a right one) on a near-black background, a small brighter marker in
a far corner (not the breast) and a lesion where the image's XML places its ROI.
"""

from __future__ import annotations

import plistlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SHAPE = (96, 64)                    # (height, width) of every mammogram
BACKGROUND, TISSUE, LESION, MARKER = 40, 20000, 45000, 60000
BREAST_RADIUS = 40                  # the half-disc of breast, centred on the chest wall
MARKER_BOX = (2, 2, 6, 6)           # x0, y0, x1, y1 of the marker, measured from the open side
HEADER = ("Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads")
BIRADS_CYCLE = ("1", "2", "3", "4a", "4b", "4c", "5", "6")
NO_HEADER_PATIENT = "P10"
# Small-image settings for the tests: prepared PNGs of long side 48, cached at 32 px.
SMALL = ["data.records.long_side=48", "data.image_size=32"]


@dataclass(frozen=True)
class Image:
    """One mammogram: a row of the table and its DICOM (and XML when it has ROIs)."""

    file_id: str
    patient: str
    hash: str
    side: str            # L or R
    view: str            # CC or ML
    birads: str
    rois: tuple[tuple[str, tuple[tuple[float, float], ...]], ...] = ()

    @property
    def dicom_name(self) -> str:
        return f"{self.file_id}_{self.hash}_MG_{self.side}_{self.view}_ANON.dcm"


def default_images(patients: int = 10) -> list[Image]:
    """Forty-ish images of ten patients (by default); one BI-RADS value per patient and breast,
    cycling through all eight, so both tasks see every class in several patients."""
    images = []
    k = 0
    for p in range(1, patients + 1):
        patient, digest = f"P{p:02d}", f"{p:02x}" * 8
        for s, side in enumerate(("L", "R")):
            birads = BIRADS_CYCLE[(2 * p + s) % len(BIRADS_CYCLE)]
            for view in ("CC", "ML"):
                if p % 4 == 0 and side == "R" and view == "ML":
                    continue  # a few patients lack a view, as in INbreast
                k += 1
                file_id = f"{20586900 + 37 * k}"
                rois = ()
                if birads not in ("1", "2"):
                    mass = ((20.0, 40.0), (28.0, 36.0), (30.0, 48.0), (22.0, 50.0))
                    rois = (("Mass", mass), ("Calcification", ((12.0, 60.0),)))
                images.append(Image(file_id, patient, digest, side, view, birads, rois))
    return images


def write_tree(root: Path, images: list[Image] | None = None, *, extra_lines: list[str] = (),
               extra_dicoms: list[Image] = ()) -> Path:
    """The release under ``root`` (created); ``extra_lines`` are appended to the table as
    written and ``extra_dicoms`` get a DICOM but no row (bad-input cases)."""
    images = default_images() if images is None else images
    (root / "AllDICOMs").mkdir(parents=True, exist_ok=True)
    (root / "AllXML").mkdir(exist_ok=True)
    lines = [HEADER]
    for i, image in enumerate(images):
        acr = "" if i % 5 == 0 else str(1 + i % 4)
        side = f"{image.side} " if i % 3 == 0 else image.side
        birads = f" {image.birads} " if i % 4 == 1 else image.birads
        lines.append(f"removed;removed;{side};{image.view};2010{1 + i % 12:02d};"
                     f"{image.file_id};{acr};{birads}")
        if i % 9 == 4:
            lines.append(";;;;;;;")  # empty lines, as the spreadsheet export leaves them
    lines += list(extra_lines)
    (root / "INbreast.csv").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    for image in [*images, *extra_dicoms]:
        patient = "" if image.patient == NO_HEADER_PATIENT else image.patient
        write_dicom(root / "AllDICOMs" / image.dicom_name, mammogram(image), patient)
        if image.rois:
            write_xml(root / "AllXML" / f"{image.file_id}.xml", image)
    return root


def mammogram(image: Image) -> np.ndarray:
    """The breast (a half-disc on the chest wall), the lesion inside its ROI, a corner marker."""
    h, w = SHAPE
    yy, xx = np.mgrid[:h, :w]
    wall = 0 if image.side == "L" else w - 1
    pixels = np.full(SHAPE, BACKGROUND, dtype=np.uint16)
    pixels[(xx - wall) ** 2 + (yy - h / 2) ** 2 <= BREAST_RADIUS ** 2] = TISSUE
    for _, points in roi_points(image):
        x0, y0, x1, y1 = roi_box(points)
        pixels[int(y0):int(y1), int(x0):int(x1)] = LESION
    mx0, my0, mx1, my1 = marker_box(image.side)
    pixels[my0:my1, mx0:mx1] = MARKER
    return pixels


def breast_box(side: str) -> tuple[int, int, int, int]:
    """Where the breast lies in a DICOM of ``side``: x0, y0, x1, y1 (exclusive)."""
    h, w = SHAPE
    r = BREAST_RADIUS
    y0, y1 = h // 2 - r, h // 2 + r + 1
    return (0, y0, r + 1, y1) if side == "L" else (w - 1 - r, y0, w, y1)


def marker_box(side: str) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = MARKER_BOX
    w = SHAPE[1]
    return (w - x1, y0, w - x0, y1) if side == "L" else (x0, y0, x1, y1)


def roi_box(points: tuple[tuple[float, float], ...]) -> tuple[float, float, float, float]:
    """The box the records must give for ``points`` in DICOM pixels (each point covers its
    pixel)."""
    xs, ys = zip(*points, strict=True)
    return min(xs), min(ys), max(xs) + 1, max(ys) + 1


def roi_points(image: Image) -> list[tuple[str, tuple[tuple[float, float], ...]]]:
    """The ROIs as they lie in the DICOM of ``image`` (mirrored for right breasts)."""
    if image.side == "L":
        return list(image.rois)
    w = SHAPE[1]
    return [(name, tuple((w - 1 - x, y) for x, y in points)) for name, points in image.rois]


def write_xml(path: Path, image: Image) -> None:
    """The ROIs as INbreast stores them: an Apple plist, points as ``(x, y)`` strings."""
    def text(x: float, y: float) -> str:
        return f"({x:.6f}, {y:.6f})"

    rois = []
    for name, points in roi_points(image):
        rois.append({"Area": float(len(points)), "Center": text(*points[0]),
                     "Dev": 0.0, "IndexInImage": len(rois), "Max": 0.0, "Mean": 0.0, "Min": 0.0,
                     "Name": name, "NumberOfPoints": len(points),
                     "Point_mm": [text(x * 0.07, y * 0.07) for x, y in points],
                     "Point_px": [text(x, y) for x, y in points],
                     "Total": 0.0, "Type": 15 if len(points) > 1 else 19})
    plist = {"Images": [{"ImageHeight": SHAPE[0], "ImageIndex": 0, "ImageWidth": SHAPE[1],
                         "NumberOfROIs": len(rois), "ROIs": rois}]}
    path.write_bytes(plistlib.dumps(plist, fmt=plistlib.FMT_XML))


def write_dicom(path: Path, pixels: np.ndarray, patient_id: str) -> None:
    """A 16-bit mammography DICOM of ``pixels``; no PatientID element when ``patient_id`` is
    blank."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # digital mammography
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    if patient_id:
        ds.PatientID = patient_id
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation, ds.SamplesPerPixel = 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
