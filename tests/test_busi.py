"""BUSI on the real images: records, grouped splits, the cache, and training end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breastcls.data.build import stored_data_config
from breastcls.data.busi import busi_records
from breastcls.data.readers import DataError
from breastcls.eval import evaluate
from breastcls.loggers import finish_wandb
from breastcls.predict import predict
from breastcls.train import train
from tests.conftest import FAST, compose_train, require_real_data
from tests.test_train import run_cli

QUIET = ["extras.print_config=false", "callbacks.rich_progress_bar=null"]


@pytest.fixture(scope="session")
def busi_dir() -> Path:
    """The real BUSI folder."""
    return require_real_data("busi/benign", "BUSI").parent


def test_records_of_the_real_release(busi_dir):
    binary = busi_records(busi_dir, "binary")
    assert len(binary) == 780
    assert binary.class_counts() == [210, 570]  # malignant, normal+benign
    assert binary.classes.names[binary.classes.positive] == "malignant"
    three = busi_records(busi_dir, "three_class")
    assert three.class_counts() == [133, 437, 210]
    masks = [m for ms in three.records["masks"] for m in ms.split(";") if m]
    assert len(masks) == 798
    row = three.records.set_index("sample_id").loc["benign (195)"]
    assert row["masks"].count(";") == 2  # _mask, _mask_1, _mask_2


def _small_busi(busi_dir: Path, root: Path, per_class: int = 4) -> Path:
    """A few real images and masks of each class, copied into a scratch folder."""
    for folder in ("benign", "malignant", "normal"):
        (root / folder).mkdir(parents=True)
        for n in range(1, per_class + 1):
            for src in (busi_dir / folder).glob(f"{folder} ({n})*.png"):
                shutil.copy(src, root / folder / src.name)
    return root


def test_bad_files_are_named_or_skipped(busi_dir, tmp_path):
    root = _small_busi(busi_dir, tmp_path / "busi")
    shutil.copy(root / "benign" / "benign (1)_mask.png", root / "benign" / "benign (99)_mask.png")
    with pytest.raises(DataError, match=r"benign \(99\)_mask.png: mask without an image"):
        busi_records(root, "binary")
    table = busi_records(root, "binary", on_bad_file="skip")
    assert len(table) == 12 and len(table.skipped) == 1
    (root / "benign" / "benign (99)_mask.png").unlink()
    Image.new("L", (7, 5)).save(root / "malignant" / "malignant (2)_mask.png")
    with pytest.raises(DataError, match=r"malignant \(2\)_mask.png: mask of size"):
        busi_records(root, "binary")
    with pytest.raises(DataError, match="tasks"):
        busi_records(root, "birads")


def test_truncated_image_is_one_clear_cli_message(busi_dir, tmp_path):
    root = _small_busi(busi_dir, tmp_path / "busi")
    path = root / "benign" / "benign (3).png"
    path.write_bytes(path.read_bytes()[:200])
    out = tmp_path / "run"
    proc = run_cli("breastcls.train", *QUIET, "experiment=busi_resnet18", f"data.root={root}",
                   f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}",
                   "trainer.max_epochs=1", check=False)
    assert proc.returncode == 1
    assert "benign (3).png" in proc.stderr and "Traceback" not in proc.stderr
    assert "data.on_bad_file=skip" in proc.stderr
    proc = run_cli("breastcls.train", *QUIET, "experiment=busi_resnet18", f"data.root={root}",
                   "data.task=three_class", "evaluation.threshold.method=fbeta",
                   f"hydra.run.dir={out}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "evaluation.threshold.method='fbeta'" in proc.stderr
    proc = run_cli("breastcls.train", *QUIET, "experiment=busi_resnet18", f"data.root={root}",
                   "optimized_metric=val/aucc", f"hydra.run.dir={out}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "optimized_metric='val/aucc'" in proc.stderr


def test_mask_of_the_wrong_size_is_one_clear_cli_message(busi_dir, tmp_path):
    root = _small_busi(busi_dir, tmp_path / "busi")
    Image.new("L", (7, 5)).save(root / "malignant" / "malignant (2)_mask.png")
    proc = run_cli("breastcls.train", *QUIET, "experiment=busi_resnet18", f"data.root={root}",
                   f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}",
                   check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "malignant (2)_mask.png: mask of size (5, 7)" in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("task", ["binary", "three_class"])
def test_busi_trains_end_to_end(busi_dir, tmp_path, task):
    cfg = compose_train([*FAST, "experiment=busi_resnet18", f"data.root={busi_dir}",
                         f"data.task={task}", "data.image_size=64", "evaluation.gradcam=0",
                         "evaluation.bootstrap.n_resamples=20", "logger=csv",
                         f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    try:
        metrics = train(cfg)
    finally:
        finish_wandb()
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 <= metrics["test/auc"] <= 1
    splits = pd.read_csv(tmp_path / "splits.csv")
    assert len(splits) == 780 and set(splits["split"]) == {"train", "val", "test"}
    sides = splits.groupby("group")["split"].nunique()
    assert (sides == 1).all(), "a near-duplicate cluster straddles two splits"
    preds = pd.read_csv(tmp_path / "test_predictions.csv")
    assert np.allclose(preds.filter(like="prob_").sum(axis=1), 1, atol=1e-4)
    test_ids = set(splits.loc[splits["split"] == "test", "sample_id"])
    assert set(preds["sample_id"]) == test_ids  # predictions join on the records' keys
    assert "group" in preds
    if task == "three_class":
        names = ["normal", "benign", "malignant"]
        assert saved["class_names"] == names and saved["task"] == "multiclass"
        assert list(preds.filter(like="prob_")) == [f"prob_{n}" for n in names]
        per_class = saved["test_per_class"]
        assert list(per_class) == names
        for name in ("auc", "recall", "f1"):  # macro = mean over the classes
            mean = np.mean([per_class[c][name] for c in names])
            assert saved["test"][name] == pytest.approx(mean, abs=1e-5), name
        assert sum(per_class[c]["support"] for c in names) == len(preds)
        assert np.array(saved["confusion_matrix"]["test"]).shape == (3, 3)
        assert {"low", "high"} <= set(saved["test_ci"]["auc"])
        rebuilt_from_the_checkpoint(Path(saved["checkpoint"]), preds, busi_dir, tmp_path, names)
    else:
        assert saved["positive_class"] == "malignant" and saved["task"] == "binary"


def rebuilt_from_the_checkpoint(checkpoint: Path, preds: pd.DataFrame, busi_dir: Path,
                                tmp_path: Path, names: list[str]) -> None:
    """eval and predict rebuild the data from the checkpoint alone, away from its run folder."""
    moved = tmp_path / "elsewhere" / "model.ckpt"
    moved.parent.mkdir()
    shutil.copy(checkpoint, moved)
    stored = stored_data_config(moved)
    assert stored["task"] == "three_class" and stored["image_size"] == 64
    out = tmp_path / "eval"
    evaluate(compose_train([f"ckpt_path={moved}", "eval_splits=[test]", "evaluation.plots=false",
                            "evaluation.bootstrap.n_resamples=0"], out, "eval"))
    again = pd.read_csv(out / "test_predictions.csv")
    assert again["sample_id"].tolist() == preds["sample_id"].tolist()
    np.testing.assert_allclose(again.filter(like="prob_"), preds.filter(like="prob_"), atol=1e-5)
    folder = tmp_path / "new_images"
    folder.mkdir()
    sample = preds["sample_id"].iloc[:3].tolist()
    for sample_id in sample:
        shutil.copy(busi_dir / sample_id.split(" ")[0] / f"{sample_id}.png", folder)
    frame = predict(compose_train([f"ckpt_path={moved}", f"input={folder}",
                                   f"output={tmp_path / 'new.csv'}"], tmp_path, "predict"))
    assert list(frame.filter(like="prob_")) == [f"prob_{n}" for n in names]
    expected = preds.set_index("sample_id").loc[sample].filter(like="prob_").to_numpy()
    np.testing.assert_allclose(frame.filter(like="prob_").to_numpy(), expected, atol=1e-4)


def test_a_setting_of_another_data_set_is_one_clear_message(tmp_path):
    proc = run_cli("breastcls.train", *QUIET, "data=busi", "+data.size=28",
                   f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "data.size is not a setting of RecordsDataModule" in proc.stderr
    assert "image_size" in proc.stderr  # the settings it does take
