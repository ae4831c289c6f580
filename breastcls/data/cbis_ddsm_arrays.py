"""The study's prepared patch arrays (``data.format=arrays``).

``<root>/arrays/train.npz`` and ``<root>/arrays/test.npz`` (the official split), each with

- ``patches``: (N, H, W) abnormality patches, 16-bit (any integer or float dtype is read);
- ``baselines``: (N, H, W) the baseline patch of each, row for row;
- ``labels``: (N,) the study's codes 1 mass benign, 2 mass malignant, 3 calcification benign,
  4 calcification malignant (0, baseline, is the label of every ``baselines`` row);
- ``patients`` (optional): (N,) patient ids, so that validation is carved by patient; without
  it every patch is its own group (and a warning says so).

The patches are copied once, contrast-stretched when asked, into ``.npy`` files of a settings-keyed
cache folder, and each record's ``path`` is ``<that folder>/<split>_patches.npy::<row>`` (read by
:func:`breastcls.data.readers.read_image` like an image file).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from rich.progress import track

from breastcls.data.cbis_ddsm_patches import UINT16_MAX, contrast_stretch
from breastcls.data.readers import DataError

log = logging.getLogger(__name__)

ARRAY_SPLITS = ("train", "test")
KEYS = ("patches", "baselines", "labels")
CODES = (1, 2, 3, 4)
CHUNK = 256


def array_lesions(root: Path, contrast: tuple[float, float] | None,
                  cache_dir: str | Path) -> pd.DataFrame:
    """One row per abnormality patch of the arrays: ``sample_id``, ``group``, ``code``,
    ``split``, ``path`` and ``baseline_path`` (``::`` row paths into the cached copies)."""
    files = {split: root / "arrays" / f"{split}.npz" for split in ARRAY_SPLITS}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DataError(f"data.format=arrays: {missing} not found; point data.root at the folder "
                        "whose arrays/ holds train.npz and test.npz (keys patches, baselines, "
                        "labels[, patients]; see docs/cbis_ddsm.md)")
    folder = Path(cache_dir).expanduser() / f"cbis_ddsm_arrays-{_key(files, contrast)}"
    folder.mkdir(parents=True, exist_ok=True)
    tables = [_split_rows(path, split, contrast, folder) for split, path in files.items()]
    return pd.concat(tables, ignore_index=True)


def _split_rows(path: Path, split: str, contrast: tuple[float, float] | None,
                folder: Path) -> pd.DataFrame:
    arrays = _load(path)
    patches, baselines, labels = (arrays[k] for k in KEYS)
    count = len(labels)
    ids = [f"{split}_{i:05d}" for i in range(count)]
    patients = arrays.get("patients")
    if patients is None:
        log.warning("%s has no 'patients' key: each patch is its own group, so validation is "
                    "not carved by patient", path)
    out = {}
    for name, stack in (("patches", patches), ("baselines", baselines)):
        target = folder / f"{split}_{name}.npy"
        if not target.is_file():
            _copy(stack, target, contrast, f"{split} {name}")
        out[name] = [f"{target}::{i}" for i in range(count)]
    return pd.DataFrame({"sample_id": ids,
                         "group": ids if patients is None else [str(p) for p in patients],
                         "code": labels.astype(int), "split": split, "path": out["patches"],
                         "baseline_path": out["baselines"]})


def _load(path: Path) -> dict[str, np.ndarray]:
    """The arrays of one file, checked for keys, shapes and labels."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from None
    absent = [k for k in KEYS if k not in arrays]
    if absent:
        raise DataError(f"{path}: keys {absent} missing (it has {sorted(arrays)}); expected "
                        f"{list(KEYS)} and optionally 'patients'")
    for key in ("patches", "baselines"):  # a trailing channel of 1 is dropped
        if arrays[key].ndim == 4 and arrays[key].shape[-1] == 1:
            arrays[key] = arrays[key][..., 0]
    patches, baselines = arrays["patches"], arrays["baselines"]
    if patches.ndim != 3 or patches.shape != baselines.shape:
        raise DataError(f"{path}: 'patches' {patches.shape} and 'baselines' {baselines.shape} "
                        "must both be (N, H, W), one baseline per patch")
    labels = arrays["labels"].reshape(-1)
    if len(labels) != len(patches):
        raise DataError(f"{path}: {len(labels)} labels for {len(patches)} patches")
    bad = np.flatnonzero(~np.isin(labels, CODES))
    if len(bad):
        raise DataError(f"{path}: labels[{bad[0]}] = {labels[bad[0]]} ({len(bad)} such rows); "
                        f"patch labels are {list(CODES)} (1 mass benign, 2 mass malignant, 3 calc "
                        "benign, 4 calc malignant); baselines are stored under 'baselines'")
    arrays["labels"] = labels
    if "patients" in arrays and len(arrays["patients"]) != len(labels):
        raise DataError(f"{path}: {len(arrays['patients'])} patients for {len(labels)} patches")
    return arrays


def _copy(stack: np.ndarray, target: Path, contrast: tuple[float, float] | None,
          what: str) -> None:
    """``stack`` into a .npy file, each patch stretched (in float, to uint16) when asked."""
    dtype = np.uint16 if contrast else stack.dtype
    tmp = target.with_suffix(".tmp.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=stack.shape)
    for first in track(range(0, len(stack), CHUNK), description=f"copying {what}",
                       disable=len(stack) < 10 * CHUNK):
        chunk = stack[first:first + CHUNK]
        if contrast:
            chunk = np.stack([np.round(contrast_stretch(p.astype(np.float64), contrast)
                                       * UINT16_MAX) for p in chunk])
        out[first:first + len(chunk)] = chunk
    out.flush()
    del out
    tmp.replace(target)


def _key(files: dict[str, Path], contrast: tuple[float, float] | None) -> str:
    digest = hashlib.sha256(json.dumps(contrast).encode())
    for path in files.values():
        stat = path.stat()
        digest.update(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]
