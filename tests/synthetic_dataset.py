"""A small generated data set in a real data set's layout, and its records function.

``write_synthetic_dataset(root)`` writes::

    <root>/images/<class>/<patient>_<n>.png      gray PNGs of a few sizes around 64x48
    <root>/baselines/<class>/<patient>_<n>.png   a second, different picture per sample
    <root>/boxes.csv                             image,x_min,y_min,x_max,y_max (one row a box)
    <root>/official_split.csv                    patient,split (train or test), optional

Three classes, four patients each with 2-4 images: 36 images. Every box is a bright rectangle in
the left half of its image (on a dark, noisy background), so a flip can be checked on the pixels;
the baseline is a left-to-right gradient, asymmetric as well. ``synthetic_records`` reads it in
the style of :func:`breastcls.data.busi.busi_records`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from breastcls.data.readers import DataError
from breastcls.data.records import ClassInfo, RecordTable

CLASSES = ("normal", "benign", "malignant")
TASKS = {
    "three_class": (ClassInfo(CLASSES), {"normal": 0, "benign": 1, "malignant": 2}),
    "binary": (ClassInfo(("malignant", "non_malignant"), positive=0),
               {"malignant": 0, "benign": 1, "normal": 1}),
}
IMAGES_PER_PATIENT = (2, 3, 4, 3)           # per class: 12 images of 4 patients
SIZES = ((48, 64), (64, 48), (40, 72), (56, 56))  # (height, width), cycled over the images
BRIGHT, DARK = 230, 40
BOX_COLUMNS = ["image", "x_min", "y_min", "x_max", "y_max"]


def sample_boxes(height: int, width: int, n_boxes: int, shift: int) -> list[list[int]]:
    """Boxes [x_min, y_min, x_max, y_max] of a sample, all in the left half of the image."""
    boxes = [[4 + shift, height // 5, width // 3 + shift, height // 5 + height // 3]]
    if n_boxes > 1:  # a second, smaller box below the first
        boxes.append([6, height - height // 4, 6 + width // 6, height - 4])
    return boxes


def write_sample(root: Path, label: str, stem: str, size: tuple[int, int], n_boxes: int = 1,
                 seed: int = 0) -> list[list[int]]:
    """One image (bright boxes on noise), its baseline (a gradient) and its rows of boxes.csv."""
    height, width = size
    rng = np.random.default_rng(seed)
    image = rng.integers(DARK - 20, DARK + 20, size=(height, width), dtype=np.uint8)
    boxes = sample_boxes(height, width, n_boxes, shift=seed % 3)
    for x0, y0, x1, y1 in boxes:
        image[y0:y1, x0:x1] = BRIGHT
    ramp = np.linspace(10, 250, width, dtype=np.float32)[None, :].repeat(height, 0)
    for folder, array in (("images", image), ("baselines", ramp.astype(np.uint8))):
        (root / folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / folder / label / f"{stem}.png")
    rows = pd.DataFrame([[f"{label}/{stem}.png", *b] for b in boxes], columns=BOX_COLUMNS)
    csv = root / "boxes.csv"
    rows.to_csv(csv, mode="a", header=not csv.exists(), index=False)
    return boxes


def write_synthetic_dataset(root: str | Path, official_split: bool = True) -> Path:
    """The data set under ``root``; one patient of each class is official test."""
    root = Path(root)
    splits, k = [], 0
    for c, label in enumerate(CLASSES):
        for p, count in enumerate(IMAGES_PER_PATIENT):
            patient = f"P{c * len(IMAGES_PER_PATIENT) + p + 1:02d}"
            splits.append({"patient": patient, "split": "test" if p == 1 else "train"})
            for n in range(1, count + 1):
                write_sample(root, label, f"{patient}_{n}", SIZES[k % len(SIZES)],
                             n_boxes=2 if label == "malignant" else 1, seed=k)
                k += 1
    if official_split:
        pd.DataFrame(splits).to_csv(root / "official_split.csv", index=False)
    return root


def synthetic_records(root: str | Path, task: str = "three_class", on_bad_file: str = "error"
                      ) -> RecordTable:
    """One record per image: its patient as group, label of ``task``, baseline, boxes and,
    when ``official_split.csv`` is there, the official split of its patient."""
    if task not in TASKS:
        raise DataError(f"data.task={task!r}: the synthetic data set has the tasks {list(TASKS)}")
    classes, label_of = TASKS[task]
    root = Path(root).expanduser()
    if not (root / "images").is_dir():
        raise DataError(f"{root / 'images'} not found: point data.root at the folder holding "
                        "images/, baselines/ and boxes.csv")
    boxes = _read_boxes(root / "boxes.csv")
    official = root / "official_split.csv"
    split_of = (pd.read_csv(official).set_index("patient")["split"].to_dict()
                if official.is_file() else None)
    rows, problems, seen = [], [], set()
    for label in CLASSES:
        for path in sorted((root / "images" / label).glob("*.png")):
            key = f"{label}/{path.name}"
            seen.add(key)
            baseline = root / "baselines" / label / path.name
            if not baseline.is_file():
                problems.append(f"{path}: no baseline image {baseline}")
                continue
            patient = path.stem.split("_")[0]
            row = {"sample_id": path.stem, "group": patient, "label": label_of[label],
                   "path": str(path), "baseline_path": str(baseline),
                   "boxes": boxes.get(key, []), "folder": label}
            if split_of is not None:
                row["split"] = split_of.get(patient)
            rows.append(row)
    problems += [f"{root / 'boxes.csv'}: boxes for {key}, which is not an image"
                 for key in sorted(set(boxes) - seen)]
    if problems and on_bad_file != "skip":
        raise DataError(f"{len(problems)} file problem(s): " + "; ".join(problems[:5])
                        + "\n(data.on_bad_file=skip reports them and loads the rest)")
    return RecordTable(pd.DataFrame(rows), classes, skipped=problems)


def _read_boxes(path: Path) -> dict[str, list[list[float]]]:
    """boxes.csv as image -> its boxes; no file means no boxes."""
    if not path.is_file():
        return {}
    table = pd.read_csv(path)
    return {image: rows[BOX_COLUMNS[1:]].to_numpy(dtype=float).tolist()
            for image, rows in table.groupby("image", sort=False)}
