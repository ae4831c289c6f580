"""Write one round's pre-annotations for review: Label Studio tasks, COCO and the review order."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from breastcls.data.readers import DataError
from breastcls.labelling.boxes import ImageBoxes
from breastcls.labelling.label_studio import (
    DEFAULT_NAMES,
    LabelStudioNames,
    label_config,
    local_file_url,
    to_task,
)
from breastcls.labelling.rounds import (
    LABEL_CONFIG,
    META,
    PROPOSALS_COCO,
    PROPOSALS_LABEL_STUDIO,
    REVIEW_ORDER,
    round_dir,
    rounds,
    write_images,
    write_json,
)
from breastcls.labelling.selection import review_order


@dataclass(frozen=True)
class ProposalSettings:
    """How a round is put up for review (conf/label.yaml ``propose``)."""

    selection: str = "top_box"      # top_box, entropy or random
    min_score: float = 0.5          # boxes shown to the reviewer score at least this
    images_per_round: int | None = None  # k images sent for review; None: all, ordered
    seed: int = 0                   # the random order's seed
    # Label Studio's LOCAL_FILES_DOCUMENT_ROOT; None: the folder above the images' common
    # folder (Label Studio wants its Local Files storage strictly below the root).
    document_root: str | None = None


def write_round(workdir: Path, detections: Sequence[ImageBoxes], class_names: Sequence[str],
                model_version: str, checkpoint: str | None, settings: ProposalSettings,
                names: LabelStudioNames = DEFAULT_NAMES) -> Path:
    """A new round folder with the first ``images_per_round`` images in review order, their
    boxes above ``min_score`` as Label Studio tasks and as COCO."""
    if not detections:
        raise DataError("no unlabelled images to propose: every image of the pool is in the "
                        "labelled pool already, or the pool is empty")
    order, uncertainty = review_order(detections, settings.selection, settings.seed)
    order = order[:settings.images_per_round]
    chosen = [detections[i].above(settings.min_score) for i in order]
    common = os.path.commonpath([str(Path(d.path).resolve().parent) for d in detections])
    root = settings.document_root or str(Path(common).parent)
    number = (rounds(workdir) or [0])[-1] + 1
    folder = round_dir(workdir, number)
    folder.mkdir(parents=True)
    tasks = [to_task(image, model_version, local_file_url(image.path, root), names,
                     extra={"rank": rank, "uncertainty": _finite(uncertainty[i])})
             for rank, (i, image) in enumerate(zip(order, chosen, strict=True), start=1)]
    write_json(folder / PROPOSALS_LABEL_STUDIO, tasks)
    write_images(folder / PROPOSALS_COCO, chosen, class_names)
    (folder / LABEL_CONFIG).write_text(label_config(class_names, names))
    pd.DataFrame({
        "rank": range(1, len(order) + 1), "image": [detections[i].path for i in order],
        "uncertainty": uncertainty[order],
        "top_score": [_top(detections[i]) for i in order],
        "proposed_boxes": [len(image) for image in chosen]}).to_csv(folder / REVIEW_ORDER,
                                                                    index=False)
    write_json(folder / META, {
        "round": number, "model_version": model_version, "checkpoint": checkpoint,
        "class_names": list(class_names), "selection": settings.selection,
        "min_score": settings.min_score, "document_root": root,
        "pool_size": len(detections)})
    return folder


def _top(image: ImageBoxes) -> float:
    return float(max(image.scores)) if image.scores is not None and len(image.scores) else 0.0


def _finite(value: float) -> float | None:
    return None if value != value else float(value)  # NaN (random order) -> null in JSON
