"""Detection data: BUSI mask boxes (all real masks), box-aware augmentation, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from breastcls.data.build import build_datamodule
from breastcls.data.busi_boxes import busi_box_records, mask_box
from breastcls.data.coco import coco_records
from breastcls.data.readers import DataError, read_image
from tests.conftest import compose_train, require_real_data


def test_every_real_mask_box_covers_its_lesion():
    root = require_real_data("busi", "BUSI")
    table = busi_box_records(root, min_area=20)
    records = table.records
    assert table.classes.names == ("no_lesion", "benign", "malignant")
    masks = [m for row in records["masks"] for m in row.split(";") if m]
    assert len(masks) == 798
    for row in records.itertuples():
        files = [m for m in row.masks.split(";") if m]
        if row.folder == "normal":
            assert row.boxes == [] and row.label == 0
            continue
        assert len(row.boxes) == len(files) and row.label == 1 + row.box_labels[0]
        for file, (x0, y0, x1, y1) in zip(files, row.boxes, strict=True):
            mask = read_image(file, "L") > 0
            inside = np.zeros_like(mask)
            inside[int(y0):int(y1), int(x0):int(x1)] = True
            outside = mask & ~inside  # only specks may lie outside the box
            assert outside.sum() < 20 * 10, file


def _write(path: Path, size=(40, 30), box=None) -> None:
    array = np.zeros(size[::-1], dtype=np.uint8)
    if box:
        x0, y0, x1, y1 = box
        array[y0:y1, x0:x1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def tiny_busi(tmp_path: Path) -> Path:
    for folder in ("benign", "malignant", "normal"):
        _write(tmp_path / folder / f"{folder} (1).png", box=(1, 1, 2, 2))
        _write(tmp_path / folder / f"{folder} (1)_mask.png",
               box=None if folder == "normal" else (5, 6, 15, 20))
    _write(tmp_path / "benign" / "benign (1)_mask_1.png", box=(20, 2, 30, 8))
    return tmp_path


def test_boxes_from_masks_and_specks(tiny_busi: Path):
    records = busi_box_records(tiny_busi).records.set_index("folder")
    assert records.loc["benign", "boxes"] == [[5, 6, 15, 20], [20, 2, 30, 8]]
    assert records.loc["malignant", "box_labels"] == [1]
    assert records.loc["normal", "boxes"] == []
    assert mask_box(tiny_busi / "benign" / "benign (1)_mask_1.png", min_area=61) is None


def test_bad_busi_files(tiny_busi: Path):
    _write(tiny_busi / "benign" / "benign (2).png")  # abnormal image without a mask
    _write(tiny_busi / "benign" / "benign (3)_mask.png", box=(1, 1, 5, 5))  # no image
    _write(tiny_busi / "malignant" / "malignant (2).png")
    _write(tiny_busi / "malignant" / "malignant (2)_mask.png", size=(20, 20), box=(1, 1, 5, 5))
    with pytest.raises(DataError) as err:
        busi_box_records(tiny_busi)
    for name in ("benign (2).png", "benign (3)_mask.png", "malignant (2)_mask.png"):
        assert name in str(err.value)
    table = busi_box_records(tiny_busi, on_bad_file="skip")
    assert len(table) == 3 and len(table.skipped) == 3


def test_boxes_move_with_flips():
    image = tv_tensors.Image(torch.zeros(1, 30, 40, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes([[5, 6, 15, 20]], format="XYXY", canvas_size=(30, 40))
    out = v2.RandomHorizontalFlip(p=1)({"image": image, "boxes": boxes})
    assert out["boxes"].tolist() == [[25, 6, 35, 20]]
    out = v2.RandomVerticalFlip(p=1)({"image": image, "boxes": boxes})
    assert out["boxes"].tolist() == [[5, 10, 15, 24]]


def _coco(tmp_path: Path, bbox, category=1) -> Path:
    _write(tmp_path / "a.png")
    payload = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": category,
                                "bbox": bbox, "area": 1, "iscrowd": 0}],
               "categories": [{"id": 1, "name": "benign"}, {"id": 2, "name": "malignant"}]}
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(payload))
    return path


def test_coco_records_and_bad_boxes(tmp_path: Path):
    table = coco_records(None, annotations=_coco(tmp_path, [1, 2, 10, 10], 2))
    assert table.records["boxes"][0] == [[1, 2, 11, 12]] and table.records["label"][0] == 2
    for bbox, category, words in (([30, 2, 20, 5], 1, "outside"), ([1, 2, 3, 3], 7, "unknown")):
        with pytest.raises(DataError, match=words) as err:
            coco_records(None, annotations=_coco(tmp_path, bbox, category))
        assert "ann.json" in str(err.value)
    skipped = coco_records(None, annotations=_coco(tmp_path, [1, 2, 3, 3], 1), on_bad_file="skip")
    assert len(skipped) == 1


def test_coco_data_config_reads_its_annotations_file(tmp_path: Path):
    cfg = compose_train(["experiment=busi_fasterrcnn_mobilenet", "data=coco",
                         f"data.annotations={_coco(tmp_path, [1, 2, 10, 10], 2)}",
                         f"paths.cache_dir={tmp_path / 'cache'}"], output_dir=tmp_path / "run")
    datamodule = build_datamodule(cfg.data)
    assert datamodule.box_classes == ("benign", "malignant")
    assert datamodule.table.records["boxes"][0] == [[1, 2, 11, 12]]
