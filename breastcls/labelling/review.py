"""Read a round's reviewed boxes back and add the reviewed images to the labelled pool."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import pandas as pd

from breastcls.data.readers import DataError
from breastcls.labelling.boxes import ImageBoxes, compare
from breastcls.labelling.label_studio import (
    DEFAULT_NAMES,
    LabelStudioNames,
    ReviewedTask,
    read_export,
)
from breastcls.labelling.rounds import (
    PROPOSALS_COCO,
    grow_pool,
    latest_round,
    provenance_row,
    read_images,
    read_meta,
    read_pool,
    round_dir,
)

log = logging.getLogger(__name__)


def accept_round(workdir: Path, reviewed: Path, number: int | None = None,
                 same_box_iou: float = 0.98, moved_box_iou: float = 0.1,
                 names: LabelStudioNames = DEFAULT_NAMES) -> pd.DataFrame:
    """Compare the reviewed boxes of round ``number`` (the latest by default) with its
    proposals, add the reviewed images to the pool and return their provenance rows.

    ``reviewed`` is a Label Studio JSON export or a COCO file. Skipped tasks (and images the
    COCO file leaves out) are not added: they stay in the unlabelled pool."""
    number = number or latest_round(workdir, "accept")
    folder = round_dir(workdir, number)
    meta = read_meta(folder)
    _, provenance = read_pool(workdir)
    if (provenance["round"] == number).any():
        raise DataError(f"round {number} of {workdir} was accepted already; propose a new "
                        "round, or delete the workdir to start over")
    proposals = {p.path: p for p in read_images(folder / PROPOSALS_COCO)[0]}
    tasks = read_reviews(reviewed, proposals, names)
    class_names = meta["class_names"]
    new, rows = [], []
    for task in tasks:
        if task.boxes is None:
            continue
        unknown = sorted(set(task.boxes.labels) - set(class_names))
        if unknown:
            raise DataError(f"{reviewed}: {task.path} has boxes of class(es) {unknown}, not "
                            f"among the model's classes {class_names}")
        review = compare(proposals[task.path], task.boxes, same_box_iou, moved_box_iou)
        new.append(task.boxes)
        rows.append(provenance_row(task.boxes, number, meta["model_version"],
                                   source=str(reviewed), review=review, reviewer=task.reviewer))
    if not new:
        raise DataError(f"{reviewed}: none of round {number}'s {len(proposals)} images was "
                        "reviewed (all skipped or missing)")
    pool, table = grow_pool(workdir, new, rows, class_names)
    counts = Counter(row["outcome"] for row in rows)
    log.info("round %d: %d reviewed (%s), %d skipped; pool %s, provenance %s", number,
             len(rows), ", ".join(f"{n} {o}" for o, n in sorted(counts.items())),
             len(tasks) - len(rows), pool, table)
    return pd.DataFrame(rows)


def read_reviews(path: Path, proposals: dict[str, ImageBoxes], names: LabelStudioNames
                 ) -> list[ReviewedTask]:
    """The reviewer's boxes per proposed image, from a Label Studio export or a COCO file."""
    sizes = {p: (image.width, image.height) for p, image in proposals.items()}
    try:
        content = json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); re-export it") from None
    if not isinstance(content, dict):  # a Label Studio export is a list (read_export checks)
        return read_export(path, sizes, names)
    reviewed = {image.path: image for image in read_images(path)[0]}
    unknown = sorted(set(reviewed) - set(proposals))
    if unknown:
        raise DataError(f"{path}: image(s) {unknown[:3]} were not proposed in this round; give "
                        "the reviewed COCO of this round's proposals_coco.json")
    return [ReviewedTask(p, reviewed.get(p), None) for p in proposals]
