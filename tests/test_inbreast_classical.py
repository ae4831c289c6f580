"""Table 2 on a generated INbreast release: features of a backbone, then a 2-fold run of every
classical row, for the binary and the BI-RADS task; split settings the data cannot meet are one
message."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from breastcls.classical import run_classical
from breastcls.features import run_extractors
from tests.conftest import compose_train
from tests.inbreast_tree import SMALL, default_images, write_tree
from tests.test_classical import ROWS
from tests.test_train import run_cli

BACKBONE = ("{_target_: breastcls.models.resnet.build_resnet, arch: resnet18, in_channels: 1, "
            "small_input: true}")
CLASSES = {"binary": 2, "birads": 6}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    # 40 patients (about INbreast's 115 cases): enough of every BI-RADS class in each training
    # fold for SMOTE's neighbours and the SVM's probability calibration.
    return write_tree(tmp_path_factory.mktemp("inbreast") / "inbreast", default_images(40))


@pytest.fixture(scope="module", params=sorted(CLASSES))
def features(request, release, tmp_path_factory) -> tuple[str, Path]:
    task, out = request.param, tmp_path_factory.mktemp(f"features_{request.param}")
    cfg = compose_train(["data=inbreast", f"data.root={release}", f"data.task={task}", *SMALL,
                         f"paths.cache_dir={out / 'cache'}", "data.split.folds=2",
                         "data.split.val_fraction=0.3", "threads=1",
                         f"+extractors.tiny.backbone={BACKBONE}"], out, config_name="features")
    return task, run_extractors(cfg)["tiny"]


@pytest.mark.parametrize("row", ROWS)
def test_every_row_runs_two_folds(features, row, tmp_path):
    task, path = features
    smote = ["classical.smote.k_neighbors=3"] if "smote" in row else []
    cfg = compose_train([f"features={path}", f"classical={row}", "cv.folds=2",
                         "bootstrap.n_resamples=20", *smote], tmp_path, config_name="classical")
    metrics = run_classical(cfg)
    assert 0 <= metrics["cv/balanced_acc_mean"] <= 1
    assert len(pd.read_csv(tmp_path / "folds.csv")) == 2
    predictions = pd.read_csv(tmp_path / "cv_predictions.csv")
    assert len(predictions.filter(like="prob_").columns) == CLASSES[task]
    assert set(predictions["fold"]) == {0, 1}
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert (written["positive_class"] is None) == (task == "birads")  # macro scores, no positive


def test_split_the_data_cannot_meet_is_one_message(release, tmp_path):
    proc = run_cli("breastcls.train", "data=inbreast", f"data.root={release}", *SMALL,
                   f"paths.cache_dir={tmp_path / 'cache'}", "data.split.val_fraction=0.01",
                   "logger=none", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "data.split: cannot hold out 0.01" in proc.stderr
