"""Images stored as rows of arrays, named ``<file>.npy::<row>`` (memory-mapped) or
``<file>.npz::<key>::<row>``; each array file is opened once per process."""

from __future__ import annotations

import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from breastcls.data.errors import DataError

ROW_SEPARATOR = "::"


def split_row_path(path: str | Path) -> tuple[Path, str | None, int] | None:
    """``(file, npz key or None, row)`` of an array-row path; None for an ordinary file path."""
    text = str(path)
    if ROW_SEPARATOR not in text:
        return None
    file, *parts = text.split(ROW_SEPARATOR)
    suffix = Path(file).suffix.lower()
    expected = {".npy": 1, ".npz": 2}.get(suffix)
    if expected is None or len(parts) != expected:
        raise DataError(f"{text}: array rows are named <file>.npy::<row> or "
                        f"<file>.npz::<key>::<row>")
    try:
        row = int(parts[-1])
    except ValueError:
        raise DataError(f"{text}: the row {parts[-1]!r} is not an integer") from None
    return Path(file), (parts[0] if expected == 2 else None), row


def file_of(path: str | Path) -> Path:
    """The file that holds ``path``'s image (the array file of an array-row path)."""
    parsed = split_row_path(path)
    return Path(path) if parsed is None else parsed[0]


@lru_cache(maxsize=32)
def _open_array(file: str, key: str | None, size: int, mtime_ns: int) -> np.ndarray:
    """The array of a .npy file (memory-mapped) or of an npz key; keyed on the file's size and
    time so that a rewritten file is opened again."""
    path = Path(file)
    try:
        if key is None:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        with np.load(path, allow_pickle=False) as npz:
            if key not in npz.files:
                raise DataError(f"{path}: no array {key!r}; the file holds {npz.files}")
            return npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise DataError(f"{path}: not a readable {path.suffix} array file ({err}); re-copy or "
                        "re-create it") from None


def read_row(path: Path, key: str | None, row: int) -> np.ndarray:
    """Row ``row`` of the array in ``path`` (key ``key`` of an npz) as stored: (H, W) or
    (H, W, 3); booleans as 0/255."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check data.root and the paths in the data set")
    stat = path.stat()
    array = _open_array(str(path), key, stat.st_size, stat.st_mtime_ns)
    name = f"{path}{ROW_SEPARATOR}{key + ROW_SEPARATOR if key else ''}{row}"
    if array.ndim not in (3, 4):
        raise DataError(f"{name}: the array has shape {array.shape}; expected images stacked as "
                        "(N, H, W) or (N, H, W, C)")
    if not 0 <= row < len(array):
        raise DataError(f"{name}: row {row} is outside the array's {len(array)} rows")
    image = np.array(array[row])  # a copy: rows of a memory map are read-only
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] not in (3, 4):
        raise DataError(f"{name}: an image of shape {image.shape}; expected (H, W) or (H, W, 3)")
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    return image[..., :3] if image.ndim == 3 else image
