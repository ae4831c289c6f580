"""BUSI as a detection data set: one box per mask file, and the detection DataModule.

A mask's box encloses its lesion pixels; connected components under ``min_area`` pixels
(annotation specks) are left out. Normal images are images without boxes. Batches carry a list
of images and a list of ``{"boxes", "labels"}`` targets (labels 0-based into the box classes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch.utils.data import DataLoader

from breastcls.data.arrays import ArrayDataset
from breastcls.data.busi import busi_records
from breastcls.data.coco import image_classes
from breastcls.data.datamodule import RecordsDataModule
from breastcls.data.readers import DataError, read_image
from breastcls.data.records import RecordTable, raise_problems


def mask_box(mask: str | Path, min_area: int = 20) -> list[float] | None:
    """The XYXY box (pixel edges) around a mask's lesion pixels, specks under ``min_area``
    pixels aside; None when nothing is left."""
    pixels = read_image(mask, "L") > 0
    components, count = ndimage.label(pixels)
    if count:
        areas = ndimage.sum_labels(pixels, components, range(1, count + 1))
        pixels = np.isin(components, 1 + np.flatnonzero(areas >= min_area))
    rows, cols = np.nonzero(pixels)
    if not len(rows):
        return None
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


def busi_box_records(root: str | Path, task: str = "detection", on_bad_file: str = "error",
                     classes: Sequence[str] = ("benign", "malignant"), min_area: int = 20
                     ) -> RecordTable:
    """BUSI's images with ``boxes`` and ``box_labels`` (the folder's index in ``classes``);
    label 0 for images without lesions, else 1 + the class index."""
    if task != "detection":
        raise DataError(f"data.task={task!r}: data=busi_detection trains the task 'detection'")
    unknown = sorted(set(classes) - {"benign", "malignant"})
    if unknown:
        raise DataError(f"data.records.classes {unknown}: BUSI's lesion folders are benign and "
                        "malignant")
    table = busi_records(root, "three_class", "skip")  # its problems are raised with ours
    records = table.records[table.records["folder"].isin([*classes, "normal"])].copy()
    boxes, labels, problems, keep = [], [], list(table.skipped), []
    for row in records.itertuples(index=False):
        masks = [m for m in row.masks.split(";") if m]
        found = [b for b in (mask_box(m, min_area) for m in masks) if b is not None]
        if row.folder != "normal" and not found:
            problems.append(f"{row.path}: a {row.folder} image without a lesion mask "
                            f"(or only specks under data.records.min_area={min_area} px)")
            keep.append(False)
            continue
        keep.append(True)
        box_class = classes.index(row.folder) if row.folder != "normal" else None
        boxes.append(found if box_class is not None else [])
        labels.append([box_class] * len(found) if box_class is not None else [])
    raise_problems(problems, on_bad_file, "BUSI")
    records = records[keep].reset_index(drop=True)
    records["boxes"], records["box_labels"] = boxes, labels
    records["label"] = [1 + b[0] if b else 0 for b in labels]
    return RecordTable(records, image_classes(list(classes)), skipped=problems)


class DetectionDataModule(RecordsDataModule):
    """The records DataModule serving detection batches: ``image`` (a list of (C, H, W)
    tensors), ``targets`` (boxes in the cached image's pixels, labels), ``index``, ``label``.
    ``annotations``: a COCO file for ``data=coco`` (passed to its records builder)."""

    def __init__(self, *args: Any, annotations: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if annotations:  # the records builder's own argument; the table is built from it
            self.records_config = {**self.records_config, "annotations": str(annotations)}
        self.hparams.annotations = str(annotations)

    @property
    def box_classes(self) -> tuple[str, ...]:
        return self.class_names[1:]

    def _loader(self, dataset: ArrayDataset, shuffle: bool, batch_size: int) -> DataLoader:
        labels = [torch.as_tensor(v, dtype=torch.long).reshape(-1)
                  for v in self.records["box_labels"]]
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                          collate_fn=lambda samples: detection_collate(samples, labels),
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)


def detection_collate(samples: Sequence[Mapping[str, Any]], box_labels: Sequence[torch.Tensor]
                      ) -> dict[str, Any]:
    """Images and targets as lists (their sizes and box counts differ)."""
    batch: dict[str, Any] = {"image": [s["image"] for s in samples], "targets": []}
    for s in samples:
        labels = box_labels[int(s["index"])]
        if len(labels) != len(s["boxes"]):
            raise ValueError(f"{s.get('sample_id')}: {len(s['boxes'])} boxes, "
                             f"{len(labels)} labels")
        batch["targets"].append({"boxes": s["boxes"], "labels": labels})
    batch["index"] = torch.stack([torch.as_tensor(s["index"]) for s in samples])
    batch["label"] = torch.stack([torch.as_tensor(s["label"]) for s in samples])
    batch["sample_id"] = [s.get("sample_id") for s in samples]
    return batch
