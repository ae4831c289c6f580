"""COCO JSON as the interchange format of detection data: read, check, write.

Any detection data set in COCO form (an annotations file and a folder of images) trains with
``data=coco``; detections leave as COCO results JSON (``write_coco_results``), which
pycocotools' ``COCOeval`` scores as it is. Boxes inside breastcls are XYXY pixel boxes
(``[x_min, y_min, x_max, y_max]``); COCO stores ``[x, y, width, height]``.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pycocotools.coco import COCO

from breastcls.data.readers import DataError
from breastcls.data.records import ClassInfo, RecordTable, raise_problems

NO_LESION = "no_lesion"  # the image-level class of an image without boxes


@dataclass
class CocoImage:
    """One image of a COCO file: where it lies, its size and its XYXY boxes with class indices
    (into the file's categories, in id order) and, for detections, scores."""

    path: str
    width: int
    height: int
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    labels: list[int] = field(default_factory=list)
    scores: list[float] | None = None


def load_coco(path: str | Path) -> COCO:
    """``path`` parsed and indexed by pycocotools (its progress prints silenced)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"COCO annotations file not found: {path.resolve()} (data.annotations)")
    try:
        dataset = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err}); is it a truncated COCO file?") from None
    missing = [k for k in ("images", "annotations", "categories")
               if not isinstance(dataset, dict) or k not in dataset]
    if missing:
        raise DataError(f"{path}: a COCO annotations file needs the keys images, annotations and "
                        f"categories; missing {missing}")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def read_coco(path: str | Path, images_root: str | Path | None = None,
              on_bad_file: str = "error") -> tuple[list[CocoImage], list[str], list[str]]:
    """The images of a COCO file with their boxes, the class names (categories in id order)
    and the problems skipped under ``on_bad_file=skip``.

    Relative ``file_name``s lie under ``images_root`` (default: the annotations file's folder).
    A box outside its image, of no area, or of an unknown category, and an image file that is
    missing, are problems naming the file: refused, or with ``skip`` reported and left out (a
    bad box drops its whole image, whose lesions would otherwise count as background).
    """
    path = Path(path).expanduser()
    coco = load_coco(path)
    root = Path(images_root).expanduser() if images_root else path.parent
    categories = sorted(coco.dataset["categories"], key=lambda c: c["id"])
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    images, problems = [], []
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        file = Path(info["file_name"])
        file = file if file.is_absolute() else root / file
        try:
            width, height = int(info["width"]), int(info["height"])
        except (KeyError, TypeError, ValueError):
            problems.append(f"{path}: image id {image_id} ({file}) has no width/height")
            continue
        if not file.is_file():
            problems.append(f"{file}: listed in {path.name} (image id {image_id}) but not found; "
                            "set data.root to the images folder")
            continue
        boxes, labels, bad = [], [], []
        for ann in coco.imgToAnns.get(image_id, []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            if ann["category_id"] not in index_of:
                bad.append(f"annotation {ann['id']} has the unknown category_id "
                           f"{ann['category_id']} (categories: {sorted(index_of)})")
            elif w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width + 0.5 or y + h > height + 0.5:
                bad.append(f"annotation {ann['id']} box {[x, y, w, h]} lies outside the "
                           f"{width}x{height} image or has no area")
            else:
                boxes.append([x, y, min(x + w, width), min(y + h, height)])
                labels.append(index_of[ann["category_id"]])
        if bad:
            problems.append(f"{path} ({file.name}): " + "; ".join(bad))
            continue
        images.append(CocoImage(str(file), width, height,
                                np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels))
    raise_problems(problems, on_bad_file, "COCO")
    return images, [str(c["name"]) for c in categories], problems


def write_coco(path: str | Path, images: Sequence[CocoImage], class_names: Sequence[str],
               relative_to: str | Path | None = None) -> Path:
    """A COCO annotations file of ``images`` (category ids 1..K in ``class_names`` order; image
    ids 1..N in the given order); with ``scores``, each annotation keeps its ``score``.
    ``relative_to``: file names relative to this folder (else as given)."""
    path = Path(path)
    payload = coco_dict(images, class_names, relative_to)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


def coco_dict(images: Sequence[CocoImage], class_names: Sequence[str],
              relative_to: str | Path | None = None) -> dict[str, Any]:
    """The COCO annotations dict :func:`write_coco` writes."""
    out: dict[str, Any] = {"images": [], "annotations": [],
                           "categories": [{"id": i + 1, "name": n, "supercategory": "lesion"}
                                          for i, n in enumerate(class_names)]}
    for image_id, image in enumerate(images, 1):
        name = Path(image.path)
        if relative_to is not None and name.is_relative_to(relative_to):
            name = name.relative_to(relative_to)
        out["images"].append({"id": image_id, "file_name": str(name), "width": int(image.width),
                              "height": int(image.height)})
        for k, (box, label) in enumerate(zip(np.asarray(image.boxes).reshape(-1, 4),
                                             image.labels, strict=True)):
            annotation = {"id": len(out["annotations"]) + 1, "image_id": image_id,
                          "category_id": int(label) + 1, "bbox": xywh(box),
                          "area": float((box[2] - box[0]) * (box[3] - box[1])), "iscrowd": 0}
            if image.scores is not None:
                annotation["score"] = float(image.scores[k])
            out["annotations"].append(annotation)
    return out


def write_coco_results(path: str | Path, image_ids: Sequence[int],
                       detections: Sequence[Mapping[str, Any]]) -> Path:
    """COCO results JSON (``[{image_id, category_id, bbox, score}, ...]``) of per-image
    detections (``boxes`` XYXY, ``labels`` 0-based class indices, ``scores``)."""
    rows = []
    for image_id, found in zip(image_ids, detections, strict=True):
        for box, label, score in zip(np.asarray(found["boxes"]).reshape(-1, 4),
                                     np.asarray(found["labels"]).reshape(-1),
                                     np.asarray(found["scores"]).reshape(-1), strict=True):
            rows.append({"image_id": int(image_id), "category_id": int(label) + 1,
                         "bbox": xywh(box), "score": float(score)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return path


def xywh(box: Sequence[float]) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def coco_records(root: str | Path | None, task: str = "detection", on_bad_file: str = "error",
                 annotations: str | Path = "", classes: Sequence[str] | None = None
                 ) -> RecordTable:
    """Records of a COCO data set for the detection DataModule (``data=coco``): one per image,
    ``boxes`` and ``box_labels`` (indices into ``classes``, default the file's categories),
    and the image-level label (0: no lesion, else 1 + the highest class among its boxes:
    class lists run from the mildest to the most severe, as BI-RADS does)."""
    if task != "detection":
        raise DataError(f"data.task={task!r}: COCO data trains the task 'detection'")
    if not annotations:
        raise DataError("data=coco needs the annotations file: data.annotations=<file.json>")
    images, names, problems = read_coco(annotations, root, on_bad_file)
    keep = list(classes) if classes else names
    unknown = sorted(set(keep) - set(names))
    if unknown:
        raise DataError(f"data.records.classes names {unknown}, which are not categories of "
                        f"{annotations} ({names})")
    remap = {names.index(n): i for i, n in enumerate(keep)}
    rows = []
    for image in images:
        chosen = [k for k, label in enumerate(image.labels) if label in remap]
        labels = [remap[image.labels[k]] for k in chosen]
        rows.append({"sample_id": image.path,
                     "group": image.path, "label": 1 + max(labels) if labels else 0,
                     "path": image.path, "height": image.height, "width": image.width,
                     "boxes": image.boxes[chosen].tolist(), "box_labels": labels})
    return RecordTable(pd.DataFrame(rows), image_classes(keep), skipped=problems)


def image_classes(box_classes: Sequence[str]) -> ClassInfo:
    """The image-level classes of a detection data set: no lesion, then every box class."""
    names = (NO_LESION, *box_classes)
    return ClassInfo(names, positive=1 if len(names) == 2 else None)
