"""BUSI breast ultrasound (Al-Dhabyani et al. 2020) in its ``Dataset_BUSI_with_GT`` layout.

``<root>/<benign|malignant|normal>/<class> (<n>).png`` with its lesion masks beside it:
``<class> (<n>)_mask.png``, ``..._mask_1.png``, one lesion per mask file. Images come at their
native sizes, gray or RGB; the masks are kept as an extra column for detection.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from breastcls.data.readers import DataError, image_size
from breastcls.data.records import ClassInfo, RecordTable, raise_problems

FOLDERS = ("benign", "malignant", "normal")
TASKS = {
    # The BreastMNIST convention: label 0 = malignant, scored as the positive class.
    "binary": (ClassInfo(("malignant", "normal_benign"), positive=0),
               {"malignant": 0, "benign": 1, "normal": 1}),
    "three_class": (ClassInfo(("normal", "benign", "malignant")),
                    {"normal": 0, "benign": 1, "malignant": 2}),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
MASK_NAME = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$")


def busi_records(root: str | Path, task: str = "binary", on_bad_file: str = "error"
                 ) -> RecordTable:
    """One record per image: label of ``task``, its mask paths (``;``-joined) and size."""
    if task not in TASKS:
        raise DataError(f"data.task={task!r}: BUSI has the tasks {list(TASKS)}")
    classes, label_of = TASKS[task]
    root = Path(root).expanduser()
    missing = [f for f in FOLDERS if not (root / f).is_dir()]
    if missing:
        raise DataError(f"BUSI folder(s) {missing} not found under {root.resolve()}: point "
                        "data.root (or paths.data_dir / BREASTCLS_DATA_DIR) at the folder that "
                        f"holds {list(FOLDERS)} (the Dataset_BUSI_with_GT layout)")
    rows, problems = [], []
    for folder in FOLDERS:
        images, masks = _scan(root / folder)
        for stem, mask_list in masks.items():
            if stem not in images:
                problems += [f"{m}: mask without an image (expected {stem}.png beside it)"
                             for m in mask_list]
        for stem, path in sorted(images.items()):
            mask_list = sorted(masks.get(stem, []))
            problem = _check_masks(path, mask_list)
            if problem:
                problems.append(problem)
                continue
            rows.append({"sample_id": stem, "group": stem, "label": label_of[folder],
                         "path": str(path), "folder": folder,
                         "masks": ";".join(map(str, mask_list))})
    raise_problems(problems, on_bad_file, "BUSI")
    return RecordTable(pd.DataFrame(rows), classes, skipped=problems)


def _scan(folder: Path) -> tuple[dict[str, Path], dict[str, list[Path]]]:
    images: dict[str, Path] = {}
    masks: dict[str, list[Path]] = {}
    for path in folder.iterdir():
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        match = MASK_NAME.match(path.stem)
        if match:
            masks.setdefault(match["stem"], []).append(path)
        else:
            images[path.stem] = path
    return images, masks


def _check_masks(image: Path, masks: list[Path]) -> str | None:
    """A message when a mask cannot be read or has another size than its image."""
    try:
        size = image_size(image)
        for mask in masks:
            if image_size(mask) != size:
                return (f"{mask}: mask of size {image_size(mask)} for an image of size {size} "
                        f"({image.name})")
    except DataError as err:
        return str(err)
    return None
