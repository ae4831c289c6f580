"""Label Studio's JSON task format: pre-annotated tasks out, reviewed exports back in.

A task's ``data`` holds the image URL Label Studio shows (``data.image``) and the image's path
(``data.path``), which the export returns unchanged: reviews are matched to images by path,
whatever URL scheme the server used. Boxes are ``rectanglelabels`` results in percent of the
image's width and height, as Label Studio stores them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
from label_studio_sdk.label_interface import LabelInterface
from label_studio_sdk.label_interface.create import labels as label_tags

from breastcls.data.readers import DataError
from breastcls.labelling.boxes import ImageBoxes

LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio's local-file serving


@dataclass(frozen=True)
class LabelStudioNames:
    """The tag names tying results to the labelling config (``from_name``/``to_name``)."""

    image: str = "image"
    label: str = "label"


DEFAULT_NAMES = LabelStudioNames()


def label_config(class_names: Sequence[str], names: LabelStudioNames = DEFAULT_NAMES
                 ) -> str:
    """The project's labelling config: an image with one rectangle label per class."""
    return LabelInterface.create({
        names.image: "Image",
        names.label: label_tags(list(class_names), tag_type="RectangleLabels"),
    })


def local_file_url(path: str | Path, document_root: str | Path) -> str:
    """The URL Label Studio serves ``path`` at, with ``LOCAL_FILES_DOCUMENT_ROOT=document_root``."""
    relative = Path(path).resolve().relative_to(Path(document_root).resolve())
    return LOCAL_FILES_URL + quote(relative.as_posix())


def to_task(proposal: ImageBoxes, model_version: str, image_url: str,
            names: LabelStudioNames = DEFAULT_NAMES,
            extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One import task: the image and the model's boxes as a prediction with their scores.

    The prediction's ``score`` is the top box's confidence (0 without boxes), which Label
    Studio's "prediction score" sampling orders tasks by."""
    scores = np.zeros(len(proposal)) if proposal.scores is None else np.asarray(proposal.scores)
    result = [_rectangle(proposal, i, names, float(scores[i]))
              for i in range(len(proposal))]
    return {
        "data": {names.image: image_url, "path": proposal.path, **(extra or {})},
        "predictions": [{"model_version": model_version,
                         "score": float(scores.max()) if len(scores) else 0.0,
                         "result": result}],
    }


def _rectangle(image: ImageBoxes, index: int, names: LabelStudioNames, score: float
               ) -> dict[str, Any]:
    x0, y0, x1, y1 = image.boxes[index]
    return {
        "id": f"box{index}", "from_name": names.label, "to_name": names.image,
        "type": "rectanglelabels", "original_width": image.width,
        "original_height": image.height, "image_rotation": 0, "score": score,
        "value": {"x": 100 * x0 / image.width, "y": 100 * y0 / image.height,
                  "width": 100 * (x1 - x0) / image.width,
                  "height": 100 * (y1 - y0) / image.height,
                  "rotation": 0, "rectanglelabels": [image.labels[index]]},
    }


@dataclass(frozen=True)
class ReviewedTask:
    """A task as the reviewer left it: their boxes, or None when they skipped it."""

    path: str
    boxes: ImageBoxes | None
    reviewer: str | None


def read_export(path: str | Path, sizes: Mapping[str, tuple[int, int]],
                names: LabelStudioNames = DEFAULT_NAMES) -> list[ReviewedTask]:
    """The tasks of a Label Studio JSON export (``[{"data": ..., "annotations": [...]}]``).

    ``sizes``: ``{image path: (width, height)}`` of the proposed images, for results without
    ``original_width``. A task's latest annotation counts; a cancelled (skipped) one or none
    leaves the image unreviewed."""
    tasks = _load_json(path)
    if not isinstance(tasks, list):
        raise DataError(f"{path}: not a Label Studio JSON export (a list of tasks); export the "
                        "project as JSON (not JSON_MIN or COCO)")
    reviewed = []
    for task in tasks:
        image = (task.get("data") or {}).get("path")
        if image not in sizes:
            raise DataError(f"{path}: task {task.get('id')} has data.path={image!r}, which was "
                            "not proposed in this round; export the project this round's "
                            "proposals were imported into")
        annotations = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not annotations:
            reviewed.append(ReviewedTask(image, None, None))
            continue
        latest = max(annotations, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0))
        boxes = _boxes(latest.get("result") or [], image, sizes[image], names, path)
        reviewer = latest.get("completed_by")
        reviewed.append(ReviewedTask(image, boxes, None if reviewer is None else str(reviewer)))
    return reviewed


def _boxes(result: Sequence[Mapping[str, Any]], image: str, size: tuple[int, int],
           names: LabelStudioNames, source: str | Path) -> ImageBoxes:
    boxes, labels = [], []
    for item in result:
        if item.get("type") != "rectanglelabels" or item.get("from_name") != names.label:
            continue
        value = item["value"]
        width = item.get("original_width") or size[0]
        height = item.get("original_height") or size[1]
        if value.get("rotation"):
            raise DataError(f"{source}: {image} has a rotated box ({value['rotation']} deg); "
                            "COCO boxes are axis-aligned: redraw it without rotation")
        chosen = value.get("rectanglelabels") or []
        if len(chosen) != 1:
            raise DataError(f"{source}: {image} has a box with labels {chosen}; give every "
                            "box exactly one class")
        x, y = value["x"] * width / 100, value["y"] * height / 100
        boxes.append([x, y, x + value["width"] * width / 100, y + value["height"] * height / 100])
        labels.append(chosen[0])
    return ImageBoxes(image, int(size[0]), int(size[1]), np.array(boxes).reshape(-1, 4), labels)


def _load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: review file not found; export the Label Studio project as "
                        "JSON, or give a COCO file of the reviewed boxes")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err}); re-export it") from None
