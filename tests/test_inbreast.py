"""INbreast on a generated release: the table's quirks, patients from the DICOM header, breast
crop and flip, XML ROI boxes, patient-grouped folds, bad input through the CLI and one-epoch
transfer runs of both tasks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image as PILImage
from sklearn.model_selection import StratifiedGroupKFold

from breastcls.data.build import build_datamodule
from breastcls.data.inbreast import BIRADS, inbreast_records
from breastcls.data.mammogram import MammogramSettings, breast_box, prepare
from breastcls.data.readers import DataError
from breastcls.loggers import finish_wandb
from breastcls.train import train
from tests.conftest import CONF_DIR, FAST, compose_train
from tests.inbreast_tree import (
    NO_HEADER_PATIENT,
    SMALL,
    Image,
    default_images,
    mammogram,
    roi_box,
    write_tree,
)
from tests.inbreast_tree import breast_box as true_breast_box
from tests.test_train import run_cli

TASKS = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "inbreast.yaml").records.tasks)
IMAGES = default_images()
QUIET = ["logger=csv", "evaluation.gradcam=0", "evaluation.plots=false",
         "evaluation.bootstrap.n_resamples=0", "threads=1", "data.batch_size=8"]
# Bad input planted into a copy of the release: rows and a DICOM -> what the message must name.
GHOST = Image("30000001", "P99", "ab" * 8, "L", "CC", "2")
BAD_LINES = ["removed;removed;L;CC;201001;29999999;1;2",   # a row without a DICOM
             f"removed;removed;R;ML;201001;{IMAGES[0].file_id}0;2;7",  # unknown BI-RADS 7
             f"removed;removed;L;ML;201001;{IMAGES[1].file_id}1;2;"]   # blank Bi-Rads cell
BAD_DICOMS = [GHOST,
              Image(f"{IMAGES[0].file_id}0", "P98", "cd" * 8, "R", "ML", "2"),
              Image(f"{IMAGES[1].file_id}1", "P98", "cd" * 8, "L", "ML", "2")]
MESSAGES = ["INbreast.csv line", "(File Name 29999999): no DICOM AllDICOMs/29999999_*_ANON.dcm",
            f"(File Name {IMAGES[0].file_id}0): unknown Bi-Rads '7'",
            f"(File Name {IMAGES[1].file_id}1): blank Bi-Rads cell",
            f"AllDICOMs/{GHOST.dicom_name}: no row of INbreast.csv has File Name {GHOST.file_id}"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("inbreast") / "inbreast")


@pytest.fixture(scope="module")
def bad_tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("inbreast_bad") / "inbreast",
                      extra_lines=BAD_LINES, extra_dicoms=BAD_DICOMS)


def records(root: Path, cache: Path, task: str = "binary", **settings):
    return inbreast_records(root, task, cache_dir=cache, tasks=TASKS, **settings).records


def test_table_quirks_labels_and_patients(tree, tmp_path):
    table = records(tree, tmp_path)
    assert sorted(table["sample_id"]) == sorted(i.file_id for i in IMAGES)
    truth = {i.file_id: i for i in IMAGES}
    for row in table.itertuples():
        image = truth[row.sample_id]
        assert (row.birads, row.laterality, row.view) == (image.birads, image.side, image.view)
        assert row.label == int(image.birads not in ("1", "2", "3"))  # malignant = 1
        # "removed" in the table: the DICOM's PatientID, else the file name's hash
        assert row.group == (image.hash if image.patient == NO_HEADER_PATIENT else image.patient)
    assert set(table["birads"]) == set(BIRADS)
    assert "" in set(table["acr"])
    birads = inbreast_records(tree, "birads", cache_dir=tmp_path, tasks=TASKS)
    assert birads.classes.names == tuple(f"birads_{k}" for k in range(1, 7))
    assert birads.classes.positive is None
    grouped = {"1": 0, "2": 1, "3": 2, "4a": 3, "4b": 3, "4c": 3, "5": 4, "6": 5}
    assert (birads.records["label"] == birads.records["birads"].map(grouped)).all()


def test_task_grouping_is_configurable(tree, tmp_path):
    tasks = {**TASKS, "suspicious": {"low": ["4a"], "high": ["4c", "5"]}}
    table = inbreast_records(tree, "suspicious", cache_dir=tmp_path, tasks=tasks,
                             positive_class="high").records
    assert set(table["birads"]) == {"4a", "4c", "5"}  # values in no class are left out
    with pytest.raises(DataError, match="'4' is not a BI-RADS value"):
        inbreast_records(tree, "x", cache_dir=tmp_path, tasks={"x": {"a": ["1"], "b": ["4"]}})


def test_breast_crop_ignores_the_marker_and_flips():
    for side in ("L", "R"):
        image = next(i for i in IMAGES if i.side == side)
        pixels = mammogram(image).astype(np.float32)
        assert breast_box(pixels, 0.05) == true_breast_box(side)
        out, geometry = prepare(pixels, side, MammogramSettings(long_side=None, flip_to="L"))
        x0, y0, x1, y1 = true_breast_box(side)
        assert out.shape == (y1 - y0, x1 - x0) and geometry.flipped == (side == "R")
        near_top = out[2]  # the half-disc is narrow there; chest wall left, as a left breast
        assert near_top[0] > near_top[-1]


def test_prepared_images_and_roi_boxes(tree, tmp_path):
    table = records(tree, tmp_path, long_side=None).set_index("sample_id")
    for image in IMAGES:
        row = table.loc[image.file_id]
        _, y0, x1, y1 = true_breast_box(image.side)
        png = np.asarray(PILImage.open(row["path"]))
        assert png.shape == (row["height"], row["width"]) == (y1 - y0, x1 - true_breast_box(
            image.side)[0])
        # flipped to L and cropped, a right breast's ROI lies where a left one's does
        expected = [[bx0, by0 - y0, bx1, by1 - y0]
                    for bx0, by0, bx1, by1 in (roi_box(p) for _, p in image.rois)]
        np.testing.assert_allclose(np.reshape(row["boxes"], (-1, 4)), np.reshape(expected, (-1, 4)))
        assert row["roi_names"] == ";".join(name for name, _ in image.rois)
    with_rois = next(i for i in IMAGES if i.rois)
    resized = records(tree, tmp_path, long_side=40, roi_names=["calcification"]).set_index(
        "sample_id").loc[with_rois.file_id]
    _, y0, _, y1 = true_breast_box(with_rois.side)
    scale = 40 / (y1 - y0)
    bx0, by0, bx1, by1 = roi_box(with_rois.rois[1][1])  # one point: a one-pixel box
    np.testing.assert_allclose(resized["boxes"], [[bx0 * scale, (by0 - y0) * scale, bx1 * scale,
                                                   (by1 - y0) * scale]], rtol=0.05)


def test_unreadable_xml_is_named(tree, tmp_path):
    root = write_tree(tmp_path / "inbreast", IMAGES[:8])
    broken = next(i for i in IMAGES[:8] if i.rois)
    (root / "AllXML" / f"{broken.file_id}.xml").write_text("<plist><dict><key>Images")
    with pytest.raises(DataError, match=f"AllXML/{broken.file_id}.xml: not an INbreast ROI"):
        records(root, tmp_path)


def test_folds_group_patients(tree, tmp_path):
    cfg = compose_train(["data=inbreast", f"data.root={tree}", f"paths.cache_dir={tmp_path}",
                         *SMALL, "data.split.folds=5", "data.split.fold=2",
                         "data.split.val_fraction=0.3"], tmp_path)
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    split = datamodule.split_table
    by_patient = split.groupby("group")
    assert (by_patient["fold"].nunique() == 1).all()  # no patient in two folds
    assert (by_patient["split"].nunique() == 1).all()  # nor in train and val
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=0).split(
        split, split["label"], split["group"])
    for k, (_, held) in enumerate(folds):
        assert (split["fold"].to_numpy()[held] == k).all()
    assert set(split.loc[split["fold"] == 2, "split"]) == {"test"}  # pool=all: fold k tests
    assert (split.loc[split["fold"] != 2, "split"]).isin(["train", "val"]).all()


def test_bad_input_is_one_clear_message(bad_tree, tmp_path):
    proc = run_cli("breastcls.train", "data=inbreast", f"data.root={bad_tree}", *SMALL,
                   f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}",
                   "extras.print_config=false", "trainer.max_epochs=1", check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "4 INbreast file problem(s)" in proc.stderr
    for message in MESSAGES:
        assert message in proc.stderr, message
    assert "data.on_bad_file=skip" in proc.stderr


def test_bad_input_skipped_by_config(bad_tree, tmp_path):
    table = inbreast_records(bad_tree, cache_dir=tmp_path, tasks=TASKS, on_bad_file="skip")
    assert sorted(table.records["sample_id"]) == sorted(i.file_id for i in IMAGES)  # none lost
    assert len(table.skipped) == 4
    for message in MESSAGES[1:]:
        assert any(message in problem for problem in table.skipped), message


@pytest.mark.parametrize(("experiment", "task"), [("inbreast_resnet18_transfer", "binary"),
                                                  ("inbreast_squeezenet_transfer", "birads")])
def test_transfer_one_epoch(tree, tmp_path, experiment, task):
    cfg = compose_train([*FAST, *QUIET, f"experiment={experiment}", f"data.task={task}",
                         f"data.root={tree}", f"paths.cache_dir={tmp_path / 'cache'}", *SMALL,
                         "model.backbone.pretrained=null", "data.split.folds=2",
                         "data.split.val_fraction=0.3"], tmp_path / "run")
    try:
        metrics = train(cfg)
    finally:
        finish_wandb()
    assert 0 <= metrics["test/acc"] <= 1
    assert (tmp_path / "run" / "test_predictions.csv").is_file()
