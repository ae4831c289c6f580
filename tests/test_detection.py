"""1-epoch detection runs on a BUSI subset: COCO predictions, mAP equal to COCOeval, tables; a
detector started from a classifier run on that run's split."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from breastcls.models.resnet import build_resnet
from breastcls.train import train
from tests.conftest import FAST, compose_train, require_real_data


@pytest.fixture
def busi_subset(tmp_path: Path) -> Path:
    """Six images per folder (with their masks), linked."""
    source = require_real_data("busi", "BUSI")
    for folder in ("benign", "malignant", "normal"):
        (tmp_path / folder).mkdir()
        for n in range(1, 7):
            for file in source.glob(f"{folder}/{folder} ({n})*.png"):
                (tmp_path / folder / file.name).symlink_to(file)
    return tmp_path


def test_one_epoch_detection_run(busi_subset: Path, tmp_path: Path):
    out = tmp_path / "run"
    cfg = compose_train(["experiment=busi_fasterrcnn_mobilenet", *FAST, "logger=none",
                         f"data.root={busi_subset}", f"paths.cache_dir={tmp_path / 'cache'}",
                         "data.image_size=128", "model.min_size=128", "model.max_size=128",
                         "model.pretrained=null", "data.split.groups=null", "threads=1",
                         "data.split.val_fraction=0.25", "data.split.test_fraction=0.35"], out)
    metrics = train(cfg)
    for name in ("metrics.json", "test_predictions_coco.json", "test_image_level.csv",
                 "test_boxes.png"):
        assert (out / name).is_file(), name
    table = pd.read_csv(out / "test_image_level.csv")
    assert {"sample_id", "true", "predicted", "top_score"} <= set(table.columns)
    saved = json.loads((out / "metrics.json").read_text())
    assert len(saved["test/lesion"]["confusion"]) == 2
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(out / "test_ground_truth_coco.json"))
        found = truth.loadRes(str(out / "test_predictions_coco.json"))
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert metrics["test/map"] == pytest.approx(evaluation.stats[0], abs=1e-6)
    assert metrics["test/map_50"] == pytest.approx(evaluation.stats[1], abs=1e-6)
    per_class = {k.removeprefix("test/ap_") for k in metrics if k.startswith("test/ap_")}
    assert per_class and per_class <= {"benign", "malignant"}  # BUSI's box classes, by name


def test_detector_from_a_classifier_run_keeps_its_split(busi_subset: Path, tmp_path: Path):
    """experiment=busi_fasterrcnn_r18 takes a classifier run folder: its best checkpoint starts
    the backbone, its splits.csv is the detector's split (no test image seen by either)."""
    run = tmp_path / "classifier"
    (run / "checkpoints").mkdir(parents=True)
    classifier = build_resnet("resnet18", in_channels=1, num_classes=2, small_input=False)
    state = {f"backbone.{k}": v for k, v in classifier.state_dict().items()}
    torch.save({"state_dict": state}, run / "checkpoints" / "epoch_002.ckpt")
    # The run may have moved since: the checkpoint is found in its own checkpoints/ folder.
    (run / "metrics.json").write_text(json.dumps({"checkpoint": "/gone/epoch_002.ckpt"}))
    split = {n: "train" for n in (1, 2, 3)} | {4: "val", 5: "test", 6: "test"}
    rows = [{"sample_id": f"{folder} ({n})", "split": split[n]}
            for folder in ("benign", "malignant", "normal") for n in range(1, 7)]
    pd.DataFrame(rows).to_csv(run / "splits.csv", index=False)
    out = tmp_path / "run"
    cfg = compose_train(["experiment=busi_fasterrcnn_r18", f"backbone_run={run}", *FAST,
                         "logger=none", f"data.root={busi_subset}", "threads=1",
                         f"paths.cache_dir={tmp_path / 'cache'}", "data.image_size=128",
                         "model.min_size=128", "model.max_size=128"], out)
    metrics = train(cfg)
    assert "test/map_50" in metrics
    used = pd.read_csv(out / "splits.csv").set_index("sample_id")["split"]
    assert used.to_dict() == {r["sample_id"]: r["split"] for r in rows}
