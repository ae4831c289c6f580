"""Where the study's patches lie in a mammogram, and how they are cut and stored.

The abnormality patch is a square around the ROI mask's bounding box (``margin`` pixels on each
side, at least ``patch_size`` wide, moved inside the image); the baseline patch is a square of the
same size right next to it (left, right, above or below, tried in ``baseline_sides`` order) that
lies inside the breast and overlaps no lesion of that mammogram. Patches are resized to
``patch_size`` and kept 16-bit; contrast stretching (a percentile rescale) is applied in float
before they are stored, since the image cache later quantises every file to 8 bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from breastcls.data.readers import DataError

Box = tuple[int, int, int, int]  # x_min, y_min, x_max, y_max; max exclusive, in pixels
SIDES = ("left", "right", "above", "below")
UINT16_MAX = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class PatchSettings:
    """The knobs of ``data.records`` that decide a patch's pixels (they key the patch folder)."""

    patch_size: int = 299
    margin: int = 20
    baseline_sides: tuple[str, ...] = SIDES
    breast_threshold: float = 0.05
    min_breast_fraction: float = 0.95
    contrast_stretch: bool = True
    percentiles: tuple[float, float] = (2.0, 98.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "baseline_sides", tuple(self.baseline_sides))
        object.__setattr__(self, "percentiles", tuple(float(p) for p in self.percentiles))
        unknown = [s for s in self.baseline_sides if s not in SIDES]
        checks = {
            "patch_size": self.patch_size >= 8,
            "margin": self.margin >= 0,
            "baseline_sides": bool(self.baseline_sides) and not unknown,
            "breast_threshold": 0 <= self.breast_threshold < 1,
            "min_breast_fraction": 0 < self.min_breast_fraction <= 1,
            "percentiles": len(self.percentiles) == 2
            and 0 <= self.percentiles[0] < self.percentiles[1] <= 100,
        }
        wanted = {"patch_size": "at least 8", "margin": "0 or more pixels",
                  "baseline_sides": f"a non-empty list from {list(SIDES)}",
                  "breast_threshold": "in [0, 1)", "min_breast_fraction": "in (0, 1]",
                  "percentiles": "[low, high] with 0 <= low < high <= 100"}
        for key, ok in checks.items():
            if not ok:
                raise DataError(f"data.records.{key}={getattr(self, key)!r}: must be "
                                f"{wanted[key]}")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def mask_box(mask: np.ndarray) -> Box:
    """The bounding box of a non-empty boolean mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def lesion_square(box: Box, shape: tuple[int, int], settings: PatchSettings) -> Box:
    """The abnormality patch: the box plus margin, squared around its centre, at least
    ``patch_size`` wide, shifted (not cut) to lie inside an image of ``shape``."""
    x0, y0, x1, y1 = box
    height, width = shape
    side = max(x1 - x0, y1 - y0) + 2 * settings.margin
    side = min(max(side, settings.patch_size), height, width)
    left = min(max((x0 + x1 - side) // 2, 0), width - side)
    top = min(max((y0 + y1 - side) // 2, 0), height - side)
    return left, top, left + side, top + side


def overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def breast_region(image: np.ndarray, threshold: float) -> np.ndarray:
    """The breast as the pixels above ``threshold`` of the image's value range (the background
    of a mammogram is near its minimum)."""
    lo, hi = float(image.min()), float(image.max())
    return image > lo + threshold * (hi - lo)


def baseline_square(square: Box, lesions: Sequence[Box], breast: np.ndarray,
                    settings: PatchSettings) -> tuple[str, Box] | None:
    """The first side (in ``settings.baseline_sides`` order) whose adjacent square of the same
    size is inside the image and the breast and clear of every lesion box; None if no side is."""
    x0, y0, x1, y1 = square
    side = x1 - x0
    height, width = breast.shape
    moves = {"left": (-side, 0), "right": (side, 0), "above": (0, -side), "below": (0, side)}
    for name in settings.baseline_sides:
        dx, dy = moves[name]
        box = (x0 + dx, y0 + dy, x1 + dx, y1 + dy)
        if box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height:
            continue
        if any(overlaps(box, lesion) for lesion in lesions):
            continue
        if breast[box[1]:box[3], box[0]:box[2]].mean() >= settings.min_breast_fraction:
            return name, box
    return None


def cut(image: np.ndarray, box: Box, settings: PatchSettings) -> np.ndarray:
    """The pixels of ``box`` resized to ``patch_size`` (antialiased, in float), stretched when
    asked, as uint16."""
    x0, y0, x1, y1 = box
    patch = torch.from_numpy(np.ascontiguousarray(image[y0:y1, x0:x1], dtype=np.float32))
    size = settings.patch_size
    if patch.shape != (size, size):
        patch = v2.functional.resize(patch[None], [size, size], antialias=True)[0]
    values = patch.numpy().astype(np.float64)
    if settings.contrast_stretch:
        values = contrast_stretch(values, settings.percentiles) * UINT16_MAX
    return np.clip(np.round(values), 0, UINT16_MAX).astype(np.uint16)


def contrast_stretch(values: np.ndarray, percentiles: tuple[float, float]) -> np.ndarray:
    """``values`` rescaled so that the two percentiles map to 0 and 1, clipped to [0, 1]."""
    lo, hi = np.percentile(values, percentiles)
    if hi <= lo:
        return np.zeros_like(values)
    return np.clip((values - lo) / (hi - lo), 0.0, 1.0)


def write_png16(patch: np.ndarray, path: Path) -> None:
    """A uint16 patch as a 16-bit grayscale PNG, written atomically (an interrupted run leaves no
    half file behind)."""
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(patch).save(tmp)
    tmp.replace(path)
