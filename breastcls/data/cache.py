"""Decoded, preprocessed images of a record table, cached as one memory-mapped uint8 array.

The cache key hashes every record's path, file size and modification time together with the
preprocessing settings, so an added, removed or rewritten file, or a changed setting, builds a new
cache; later epochs and later runs read the array instead of decoding files again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import track
from torchvision.transforms import v2

from breastcls.data.readers import DataError, read_image, to_uint8

log = logging.getLogger(__name__)

FITS = ("resize", "pad")
BAD_FILE_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class Preprocessing:
    """How a file becomes a (C, size, size) uint8 image."""

    size: int = 128
    fit: str = "resize"      # resize: stretch to a square; pad: keep the aspect, pad with zeros
    channels: int = 1        # 1 gray, 3 RGB
    voi: str = "auto"        # DICOM only: auto, none or window

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise ValueError(f"data.fit={self.fit!r}; choose one of {FITS}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.size < 8:
            raise ValueError(f"data.image_size={self.size} is too small (at least 8)")


def preprocess(array: np.ndarray, settings: Preprocessing) -> np.ndarray:
    """One decoded image (H, W) or (H, W, 3) as a (C, size, size) uint8 array."""
    image = torch.from_numpy(np.ascontiguousarray(to_uint8(array)))
    image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
    side = settings.size
    if settings.fit == "pad":
        h, w = image.shape[-2:]
        scale = side / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        image = v2.functional.resize(image, [nh, nw], antialias=True)
        top, left = (side - nh) // 2, (side - nw) // 2
        image = v2.functional.pad(image, [left, top, side - nw - left, side - nh - top])
    else:
        image = v2.functional.resize(image, [side, side], antialias=True)
    return image.numpy()


def cache_key(paths: Sequence[str], settings: Preprocessing) -> str:
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    return digest.hexdigest()[:16]


@dataclass
class CachedImages:
    images: np.ndarray          # (N, C, size, size) uint8, memory-mapped
    failed: dict[int, str]      # row -> message, for rows whose file could not be read
    path: Path


def load_or_build(paths: Sequence[str], settings: Preprocessing, cache_dir: str | Path,
                  name: str = "images", on_bad_file: str = "error") -> CachedImages:
    """The cached images of ``paths`` (built on a miss, with a progress bar)."""
    if on_bad_file not in BAD_FILE_POLICIES:
        raise ValueError(f"data.on_bad_file={on_bad_file!r}; choose one of {BAD_FILE_POLICIES}")
    cache_dir = Path(cache_dir).expanduser()
    key = cache_key(paths, settings)
    array_path, meta_path = cache_dir / f"{name}-{key}.npy", cache_dir / f"{name}-{key}.json"
    if array_path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("count") == len(paths) and (meta["failed"] == {} or on_bad_file == "skip"):
            return CachedImages(np.load(array_path, mmap_mode="r"),
                                {int(k): v for k, v in meta["failed"].items()}, array_path)
    return _build(paths, settings, array_path, meta_path, on_bad_file)


def _build(paths: Sequence[str], settings: Preprocessing, array_path: Path, meta_path: Path,
           on_bad_file: str) -> CachedImages:
    array_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_suffix(f".tmp{os.getpid()}.npy")
    shape = (len(paths), settings.channels, settings.size, settings.size)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
    mode = "L" if settings.channels == 1 else "RGB"
    failed: dict[int, str] = {}
    start, last_log = time.monotonic(), time.monotonic()
    for i, path in enumerate(track(paths, description=f"Caching {len(paths)} images",
                                   transient=True)):
        try:
            out[i] = preprocess(read_image(path, mode, voi=settings.voi), settings)
        except DataError as err:
            if on_bad_file == "error":
                del out
                tmp.unlink(missing_ok=True)
                raise DataError(f"{err}\n(data.on_bad_file=skip reports unreadable files and "
                                "trains on the rest)") from None
            failed[i] = str(err)
        if time.monotonic() - last_log > 30:  # progress in logs that are not a terminal
            log.info("cached %d/%d images", i + 1, len(paths))
            last_log = time.monotonic()
    out.flush()
    del out
    os.replace(tmp, array_path)
    meta_path.write_text(json.dumps({"count": len(paths), "settings": asdict(settings),
                                     "failed": {str(k): v for k, v in failed.items()}}))
    log.info("Cached %d images (%s) in %.1f s: %s", len(paths), "x".join(map(str, shape[1:])),
             time.monotonic() - start, array_path)
    return CachedImages(np.load(array_path, mmap_mode="r"), failed, array_path)
