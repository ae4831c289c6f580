"""IDC patches: the real sample's names, sizes and labels; generated patients in the real layout
for patient-level splits, edge patches and bad input; one epoch end to end."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breastcls.data import cache
from breastcls.data.build import build_datamodule
from breastcls.data.cache import Preprocessing
from breastcls.data.idc import idc_records
from breastcls.data.readers import DataError, image_size, read_image
from breastcls.heatmaps import heatmaps
from breastcls.loggers import finish_wandb
from breastcls.train import train
from tests.conftest import FAST, compose_train, require_real_data

EDGE = "8975_idx5_x3601_y1701_class0"


def write_patients(root: Path, patients: int = 8, per_class: int = 4) -> Path:
    """Patients ``1000..`` with ``per_class`` patches of each class; each patient's last class-0
    patch is a 30x50 edge patch."""
    rng = np.random.default_rng(0)
    for p in range(1000, 1000 + patients):
        for label in (0, 1):
            folder = root / str(p) / str(label)
            folder.mkdir(parents=True)
            for k in range(per_class):
                h = 30 if (label == 0 and k == per_class - 1) else 50
                pixels = rng.integers(0, 255, (h, 50, 3), dtype=np.uint8)
                pixels[..., label] = 255  # a class signal a model can pick up
                Image.fromarray(pixels).save(folder / f"{p}_idx5_x{50 * k + 1}_y{label * 50 + 1}"
                                                      f"_class{label}.png")
    return root


def datamodule(root: Path, *overrides: str):
    cfg = compose_train(["data=idc", f"data.root={root}", *overrides])
    return build_datamodule(cfg.data)


def test_the_real_sample():
    root = require_real_data("idc_sample/8975", "IDC sample").parent
    table = idc_records(root)
    assert len(table) == 103 and table.class_counts() == [52, 51]
    assert set(table.records["group"]) == {"8975"}
    edge = table.records.set_index("sample_id").loc[EDGE]
    assert (edge["x"], edge["y"], edge["label"]) == (3601, 1701, 0)
    assert image_size(edge["path"]) in {(32, 50), (50, 32)}
    assert len(idc_records(root, edge_patches="drop")) == 102


@pytest.mark.parametrize("split", ["patient_holdout", "patient_kfold"])
def test_no_patient_on_two_sides(tmp_path, split):
    dm = datamodule(write_patients(tmp_path / "idc"), f"data/split={split}",
                    f"paths.cache_dir={tmp_path / 'cache'}", "data.split.test_fraction=0.25")
    dm.setup()
    sides = dm.split_table.groupby("group")["split"].nunique()
    assert len(sides) == 8 and (sides == 1).all()
    assert set(dm.split_table["split"]) == {"train", "val", "test"}
    assert dm.datasets["train"].images.shape[1:] == (3, 50, 50)


def test_edge_patches_padded_or_dropped(tmp_path):
    root = write_patients(tmp_path / "idc", patients=2)
    assert len(idc_records(root)) == 16 and len(idc_records(root, edge_patches="drop")) == 14
    dm = datamodule(root, f"paths.cache_dir={tmp_path / 'cache'}", "data/split=stratified",
                    "data.split.test_fraction=0.25")
    dm.setup()
    padded = dm.records.index[dm.records["sample_id"].str.endswith("x151_y1_class0")]
    row = dm.split_table.set_index("index").loc[padded[0], "split"]
    position = list(dm.datasets[row].indices).index(padded[0])
    image = dm.datasets[row].images[position]
    assert (image[:, :10] == 0).all() and (image[:, -10:] == 0).all()  # 30 rows, centred


def test_bad_layout_is_named(tmp_path, caplog):
    root = write_patients(tmp_path / "idc", patients=2)
    (root / "1000" / "notes.txt").write_text("stray")
    (root / "1000" / "0" / "Thumbs.db").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="breastcls.data.idc"):
        assert len(idc_records(root)) == 16  # stray files: a warning, not an error
    assert "notes.txt" in caplog.text and "Thumbs.db" in caplog.text
    (root / "1000" / "2").mkdir()
    with pytest.raises(DataError, match=r"1000/2: class folder must be named 0 or 1"):
        idc_records(root)
    (root / "1000" / "2").rmdir()
    Image.new("RGB", (50, 50)).save(root / "1001" / "1" / "patch_7.png")
    with pytest.raises(DataError, match=r"patch_7.png: not an IDC patch name"):
        idc_records(root)
    assert len(idc_records(root, on_bad_file="skip").skipped) == 1
    (root / "1001" / "1" / "patch_7.png").rename(root / "1001" / "1" / "1001_idx5_x1_y1_class0.png")
    with pytest.raises(DataError, match="the name says patient 1001, class 0"):
        idc_records(root)


def test_one_epoch_end_to_end(tmp_path):
    root = write_patients(tmp_path / "idc")
    cfg = compose_train([*FAST, "data=idc", f"data.root={root}", "logger=csv",
                         f"paths.cache_dir={tmp_path / 'cache'}", "data.batch_size=8",
                         "model.backbone.small_input=true", "model.class_weights=balanced",
                         "evaluation.gradcam=0",
                         "evaluation.plots=false", "evaluation.bootstrap.n_resamples=50",
                         "evaluation.bootstrap.groups=true"],  # intervals over patients
                        tmp_path / "run")
    try:
        metrics = train(cfg)
    finally:
        finish_wandb()
    assert 0 <= metrics["test/auc"] <= 1
    scores = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert scores["bootstrap"]["groups"] is True and "npv" in scores["test_ci"]
    assert scores["parameters"] > 1e6 and scores["epoch_seconds"] > 0  # the study table's costs
    preds = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    assert list(preds.filter(like="prob_")) == ["prob_non_idc", "prob_idc"]
    assert preds["group"].astype(str).str.startswith("10").all()  # patients, not patches
    maps = heatmaps(compose_train([f"run={tmp_path / 'run'}"], tmp_path / "maps", "heatmaps"))
    assert sorted(p.stem for p in maps) == sorted(preds["group"].astype(str).unique())


def test_truncated_patch_is_named(tmp_path):
    root = write_patients(tmp_path / "idc", patients=2)
    path = root / "1001" / "1" / "1001_idx5_x1_y51_class1.png"
    path.write_bytes(path.read_bytes()[:60])
    dm = datamodule(root, f"paths.cache_dir={tmp_path / 'cache'}", "data/split=stratified",
                    "data.split.test_fraction=0.25")
    with pytest.raises(DataError, match=r"1001_idx5_x1_y51_class1\.png"):
        dm.setup()


def test_parallel_cache_matches_decoding_the_files(tmp_path, monkeypatch):
    root = write_patients(tmp_path / "idc", patients=2)
    paths = idc_records(root).records["path"].tolist()
    (Path(paths[3])).write_bytes(b"not a png")
    settings = Preprocessing(50, "pad", 3)
    monkeypatch.setattr(cache, "CHUNK", 5)  # several chunks over two worker processes
    parallel = cache.load_or_build(paths, settings, tmp_path / "c2", on_bad_file="skip",
                                   workers=2)
    serial = cache.load_or_build(paths, settings, tmp_path / "c1", on_bad_file="skip", workers=1)
    assert list(parallel.failed) == list(serial.failed) == [3]
    np.testing.assert_array_equal(parallel.images, serial.images)
    for i in (0, 7, 15):
        expected = cache.preprocess(read_image(paths[i], "RGB"), settings)
        np.testing.assert_array_equal(parallel.images[i], expected)
    with pytest.raises(DataError, match="not a readable image"):
        cache.load_or_build(paths, settings, tmp_path / "c3", workers=2)
    assert not list((tmp_path / "c3").glob("*.npy"))  # no half-built cache left behind
