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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from rich.progress import MofNCompleteColumn, Progress
from torchvision.transforms import v2

from breastcls.data.readers import DataError, read_image, to_uint8
from breastcls.data.row_paths import file_of

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
        if (nh, nw) != (h, w):  # an edge patch already at scale only needs padding
            image = v2.functional.resize(image, [nh, nw], antialias=True)
        top, left = (side - nh) // 2, (side - nw) // 2
        image = v2.functional.pad(image, [left, top, side - nw - left, side - nh - top])
    elif image.shape[-2:] != (side, side):
        image = v2.functional.resize(image, [side, side], antialias=True)
    return image.numpy()


def cache_key(paths: Sequence[str], settings: Preprocessing) -> str:
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    for path in paths:
        try:
            stat = os.stat(file_of(path))  # an array row: the array file's size and time
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
                  name: str = "images", on_bad_file: str = "error",
                  workers: int | None = None) -> CachedImages:
    """The cached images of ``paths`` (built on a miss, with a progress bar, by ``workers``
    processes; None: one per CPU core for large tables)."""
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
    if workers is None:
        workers = (os.cpu_count() or 1) if len(paths) >= PARALLEL_FROM else 1
    return _build(paths, settings, array_path, meta_path, on_bad_file, max(1, workers))


PARALLEL_FROM = 5000  # below this, starting worker processes costs more than it saves
CHUNK = 1000


def _fill(array_path: Path, first: int, paths: Sequence[str], settings: Preprocessing,
          stop_at_error: bool) -> dict[int, str]:
    """Decode ``paths`` into rows ``first...`` of the memory-mapped array; failures by row."""
    out = np.load(array_path, mmap_mode="r+")
    mode = "L" if settings.channels == 1 else "RGB"
    failed: dict[int, str] = {}
    for i, path in enumerate(paths, first):
        try:
            out[i] = preprocess(read_image(path, mode, voi=settings.voi), settings)
        except DataError as err:
            failed[i] = str(err)
            if stop_at_error:
                break
    out.flush()
    return failed


def _build(paths: Sequence[str], settings: Preprocessing, array_path: Path, meta_path: Path,
           on_bad_file: str, workers: int = 1) -> CachedImages:
    array_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = array_path.with_suffix(f".tmp{os.getpid()}.npy")
    shape = (len(paths), settings.channels, settings.size, settings.size)
    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
    chunks = [(first, list(paths[first:first + CHUNK])) for first in range(0, len(paths), CHUNK)]
    failed: dict[int, str] = {}
    start, last_log, done = time.monotonic(), time.monotonic(), 0
    with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), transient=True) as bar:
        task = bar.add_task(f"Caching {len(paths)} images", total=len(paths))
        pool = (ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 1
                else None)
        try:
            jobs = [pool.submit(_fill, tmp, first, chunk, settings, on_bad_file == "error")
                    for first, chunk in chunks] if pool else None
            results = (job.result() for job in jobs) if jobs else (
                _fill(tmp, first, chunk, settings, on_bad_file == "error")
                for first, chunk in chunks)
            for (_, chunk), chunk_failed in zip(chunks, results, strict=True):
                failed |= chunk_failed
                if failed and on_bad_file == "error":
                    break
                done += len(chunk)
                bar.advance(task, len(chunk))
                if time.monotonic() - last_log > 30:  # progress in logs that are not a terminal
                    log.info("cached %d/%d images", done, len(paths))
                    last_log = time.monotonic()
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
    if failed and on_bad_file == "error":
        tmp.unlink(missing_ok=True)
        raise DataError(f"{failed[min(failed)]}\n(data.on_bad_file=skip reports unreadable files "
                        "and trains on the rest)")
    os.replace(tmp, array_path)
    meta_path.write_text(json.dumps({"count": len(paths), "settings": asdict(settings),
                                     "failed": {str(k): v for k, v in failed.items()}}))
    log.info("Cached %d images (%s) in %.1f s with %d process(es): %s", len(paths),
             "x".join(map(str, shape[1:])), time.monotonic() - start, workers, array_path)
    return CachedImages(np.load(array_path, mmap_mode="r"), failed, array_path)
