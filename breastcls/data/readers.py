"""Image files (PNG, JPEG, BMP, TIFF, DICOM) and array rows as numpy arrays, with errors a user
can act on.

``read_image`` keeps the values as stored (uint8, uint16, or float32 for DICOM after the modality
rescale and VOI); ``to_uint8`` maps any of them to uint8 for the image cache. Array-backed data
sets name one image per record as ``<file>.npy::<row>`` (memory-mapped) or
``<file>.npz::<key>::<row>``; each file is opened once per process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

from breastcls.data.errors import DataError
from breastcls.data.row_paths import read_row, split_row_path

try:  # pydicom >= 3
    from pydicom.pixels import apply_rescale, apply_voi_lut
except ImportError:  # pydicom 2.x
    from pydicom.pixel_data_handlers.util import apply_modality_lut as apply_rescale
    from pydicom.pixel_data_handlers.util import apply_voi_lut

PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")
MODES = ("L", "RGB")
VOIS = ("auto", "none", "window")
DECODER_HINT = ("pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
                "(or pip install python-gdcm)")
# Errors PIL and pydicom raise on corrupt or truncated files.
_CORRUPT = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError)


def _supported() -> str:
    return (" ".join((*PIL_SUFFIXES, *DICOM_SUFFIXES)) + " (or DICOM files without a suffix), "
            "<file>.npy::<row> and <file>.npz::<key>::<row>")


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found; check data.root and the paths in the data set")
    if not path.is_file():
        raise DataError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty (0 bytes); re-copy or remove it")


def _is_dicom(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES:
        return True
    if suffix:
        return False
    with path.open("rb") as f:
        return f.read(132)[128:132] == b"DICM"


def _kind(path: Path) -> str:
    _check_file(path)
    if path.suffix.lower() in PIL_SUFFIXES:
        return "pil"
    if _is_dicom(path):
        return "dicom"
    raise DataError(f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; "
                    f"supported: {_supported()}")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; choose one of {MODES}")


def read_image(path: str | Path, mode: str = "L", *, voi: str = "auto",
               window: tuple[float, float] | None = None) -> np.ndarray:
    """The image at ``path`` as (H, W) for mode "L" or (H, W, 3) for "RGB", values as stored.

    uint8 for 8-bit files, uint16 for 16-bit ones, float32 for DICOM (``voi``/``window``: see
    :func:`read_dicom`; ignored for other files).
    """
    _check_mode(mode)
    row_path = split_row_path(path)
    if row_path is not None:
        return _as_mode(read_row(*row_path), mode)
    path = Path(path)
    if _kind(path) == "dicom":
        return _as_mode(read_dicom(path, voi=voi, window=window), mode)
    return _read_pil(path, mode)


def _read_pil(path: Path, mode: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # decodes now, so a truncated file fails here rather than later
            return _pil_to_array(img, mode)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a readable image (unknown or corrupt format); "
                        "re-export or remove the file") from None
    except Image.DecompressionBombError as err:
        raise DataError(f"{path}: {err}") from None
    except _CORRUPT as err:
        raise DataError(f"{path}: truncated or corrupt image ({err}); "
                        "re-copy or re-export the file, or remove it") from None


def _pil_to_array(img: Image.Image, mode: str) -> np.ndarray:
    src = img.mode
    if src in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        gray = np.asarray(img)
        if gray.dtype != np.uint16:  # mode "I" is int32 holding 16-bit values
            gray = np.clip(gray, 0, np.iinfo(np.uint16).max).astype(np.uint16)
        return _as_mode(gray, mode)
    if src == "F":
        return _as_mode(np.asarray(img, dtype=np.float32), mode)
    if src in ("P", "PA"):  # a palette may be in colour: go through RGB before gray
        img = img.convert("RGB")
    return np.asarray(img.convert(mode))  # '1' -> 0/255, LA/RGBA drop alpha, RGB -> L by PIL


def _as_mode(array: np.ndarray, mode: str) -> np.ndarray:
    """Gray stacked to 3 channels for "RGB"; colour to ITU-R 601 luma (as PIL) for "L"."""
    if mode == "RGB" and array.ndim == 2:
        return np.stack([array] * 3, axis=-1)
    if mode == "L" and array.ndim == 3:
        luma = array[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if np.issubdtype(array.dtype, np.integer):
            return np.round(luma).astype(array.dtype)
        return luma
    return array


def to_uint8(array: np.ndarray) -> np.ndarray:
    """``array`` as uint8: uint8 unchanged, anything else min-max scaled over its own range."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(array.shape, np.uint8)
    return np.round((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def read_dicom(path: str | Path, voi: str = "auto",
               window: tuple[float, float] | None = None) -> np.ndarray:
    """A DICOM image as float32, (H, W) or (H, W, 3), rescaled, VOI-applied, bright = dense.

    voi: "auto" applies the file's VOI LUT or window (giving [0, 1]) when it has one, "none"
    keeps the rescaled values, "window" applies ``window=(center, width)``. Multi-frame: frame 0.
    """
    if voi not in VOIS:
        raise ValueError(f"voi={voi!r}; choose one of {VOIS}")
    if voi == "window" and window is None:
        raise ValueError("voi='window' needs window=(center, width)")
    path = Path(path)
    _check_file(path)
    ds = _dcmread(path)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError(f"{path}: the DICOM file has no pixel data (a report, structured report "
                        "or presentation state?); remove it from the data set")
    pixels = _decode(ds, path)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if frames > 1 and pixels.ndim == (3 if samples == 1 else 4):
        pixels = pixels[0]
    if samples > 1:  # colour: rescale and VOI are defined for grayscale only
        return pixels.astype(np.float32)
    values = np.asarray(apply_rescale(pixels, ds), dtype=np.float64)
    lo, hi = _rescaled_range(ds)
    if voi == "window":
        assert window is not None
        values, lo, hi = _linear_window(values, *window, path=path), 0.0, 1.0
    elif voi == "auto":
        if "VOILUTSequence" in ds:
            values, lo, hi = _voi_lut(values, ds, path), 0.0, 1.0
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
            values, lo, hi = _linear_window(values, center, width, path=path), 0.0, 1.0
    if photometric == "MONOCHROME1":  # low values are bright: invert so that bright = dense
        values = lo + hi - values
    return values.astype(np.float32)


def _decode(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    try:
        return ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError, ImportError) as err:
        syntax = _transfer_syntax(ds)
        detail = " ".join(str(err).split())
        raise DataError(f"{path}: could not decode the pixel data (transfer syntax {syntax}): "
                        f"{detail}. If no decoder for it is installed: {DECODER_HINT}") from None


def _transfer_syntax(ds: pydicom.Dataset) -> str:
    uid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return f"{uid.name} ({uid})" if uid is not None else "unknown (no file meta)"


def _first(value: object) -> float:
    """The first of a possibly multi-valued attribute (files may list several windows)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return float(value[0])
    return float(value)  # type: ignore[arg-type]


def _rescaled_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The nominal value range of the stored pixels after the modality rescale."""
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)))
    if int(ds.get("PixelRepresentation", 0)) == 1:
        stored = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    else:
        stored = np.array([0, 2**bits - 1])
    ends = np.asarray(apply_rescale(stored, ds), dtype=np.float64)
    return float(ends.min()), float(ends.max())


def _linear_window(values: np.ndarray, center: float, width: float, *, path: Path) -> np.ndarray:
    """The linear VOI window of DICOM PS3.3 C.11.2.1.2, as floats in [0, 1]."""
    if width < 1:
        raise DataError(f"{path}: window width {width} is below 1; give voi=none or a window "
                        "(center, width) with width >= 1")
    if width == 1:
        return (values > center - 0.5).astype(np.float64)
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)


def _voi_lut(values: np.ndarray, ds: pydicom.Dataset, path: Path) -> np.ndarray:
    try:
        out = np.asarray(apply_voi_lut(values, ds, prefer_lut=True), dtype=np.float64)
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    except _CORRUPT as err:
        raise DataError(f"{path}: the VOI LUT could not be applied ({err}); "
                        "read it with voi=none or voi=window") from None
    return np.clip(out / (2**bits - 1), 0.0, 1.0)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image without decoding its pixels."""
    row_path = split_row_path(path)
    if row_path is not None:
        return tuple(read_row(*row_path).shape[:2])  # type: ignore[return-value]
    path = Path(path)
    if _kind(path) == "pil":
        try:
            with Image.open(path) as img:
                width, height = img.size
        except UnidentifiedImageError:
            raise DataError(f"{path}: not a readable image (unknown or corrupt format); "
                            "re-export or remove the file") from None
        except _CORRUPT as err:
            raise DataError(f"{path}: corrupt image header ({err}); re-copy or remove it") from None
        return height, width
    ds = _dcmread(path, stop_before_pixels=True)
    try:
        return int(ds.Rows), int(ds.Columns)
    except AttributeError:
        raise DataError(f"{path}: the DICOM file has no Rows/Columns, so no image; "
                        "remove it from the data set") from None


def _dcmread(path: Path, **kwargs: object) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path, **kwargs)
    except InvalidDicomError:
        raise DataError(f"{path}: not a valid DICOM file (no DICOM file meta header); re-export "
                        "it from the archive or remove it") from None
    except _CORRUPT as err:
        raise DataError(f"{path}: truncated or corrupt DICOM file ({err}); re-copy or re-export "
                        "it, or remove it") from None
