"""Slide heatmaps: patch predictions put back at their slide coordinates, beside the truth.

A pathologist judges a patch classifier by where on the slide it fires; a map per patient shows
that at a glance (missed tumour regions, false alarms along tissue edges) where a table cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure

from breastcls.data.readers import DataError


@dataclass(frozen=True)
class SlideMaps:
    """One patient's maps: cell ``[row, col]`` holds the patch at slide pixel
    ``(x0 + col * patch_size, y0 + row * patch_size)``; NaN where the slide has no patch."""

    patient: str
    probability: np.ndarray
    truth: np.ndarray
    origin: tuple[int, int]
    patch_size: int

    @property
    def patches(self) -> int:
        return int(np.isfinite(self.probability).sum())


def slide_maps(patches: pd.DataFrame, patient: str, patch_size: int = 50) -> SlideMaps:
    """Maps of one patient from its patches' ``x``, ``y`` (slide pixels of the top-left corner),
    ``probability`` (of the positive class) and ``positive`` (1 when the truth is positive)."""
    missing = {"x", "y", "probability", "positive"} - set(patches)
    if missing:
        raise ValueError(f"patches lack the columns {sorted(missing)}")
    if patches.empty:
        raise DataError(f"patient {patient!r} has no patches in these predictions")
    x0, y0 = int(patches["x"].min()), int(patches["y"].min())
    cols = ((patches["x"].to_numpy() - x0) // patch_size).astype(int)
    rows = ((patches["y"].to_numpy() - y0) // patch_size).astype(int)
    probability = np.full((rows.max() + 1, cols.max() + 1), np.nan)
    truth = probability.copy()
    probability[rows, cols] = patches["probability"].to_numpy(dtype=float)
    truth[rows, cols] = patches["positive"].to_numpy(dtype=float)
    return SlideMaps(str(patient), probability, truth, (x0, y0), patch_size)


def save_slide_maps(maps: SlideMaps, path: Path, positive_name: str = "positive") -> Path:
    """Predicted probability and ground truth side by side, slide coordinates on the axes."""
    x0, y0 = maps.origin
    rows, cols = maps.probability.shape
    extent = (x0, x0 + cols * maps.patch_size, y0 + rows * maps.patch_size, y0)
    width = 10 * min(1.0, max(0.5, cols / max(rows, 1)))
    fig = Figure(figsize=(width + 2, width / 2 + 1), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = ((maps.probability, f"predicted P({positive_name})", "magma"),
              (maps.truth, f"ground truth ({positive_name} = 1)", "gray"))
    images = []
    for ax, (values, title, cmap) in zip(axes, panels, strict=True):
        colours = colormaps[cmap].with_extremes(bad="#d9e6f2")  # no tissue patch here
        images.append(ax.imshow(np.ma.masked_invalid(values), cmap=colours, vmin=0, vmax=1,
                                extent=extent, interpolation="nearest"))
        ax.set_title(title)
        ax.set_xlabel("slide x (px)")
    axes[0].set_ylabel("slide y (px)")
    fig.colorbar(images[0], ax=axes, shrink=0.8)
    fig.suptitle(f"patient {maps.patient}: {maps.patches} patches")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
