"""CBIS-DDSM end to end: one tiny epoch per task on the generated DICOM tree (and with baseline
pairs in the batch), and the study's prepared arrays format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lightning.pytorch import Callback

from breastcls.data.cbis_ddsm import TASKS, cbis_ddsm_records
from breastcls.data.readers import DataError
from breastcls.loggers import finish_wandb
from breastcls.train import train
from tests.cbis_ddsm_tree import PATCH_OVERRIDES, write_tree
from tests.conftest import FAST, compose_train

QUIET = ["logger=csv", "data.batch_size=8", "data.split.val_fraction=0.3",
         "model.backbone.small_input=true", "evaluation.gradcam=0", "evaluation.plots=false",
         "evaluation.bootstrap.n_resamples=0", "threads=1"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("cbis") / "cbis_ddsm")


def run(root: Path, out: Path, *overrides: str) -> dict[str, float]:
    cfg = compose_train([*FAST, *QUIET, "data=cbis_ddsm", f"data.root={root}",
                         f"paths.cache_dir={out / 'cache'}", *PATCH_OVERRIDES, *overrides],
                        out / "run")
    try:
        return train(cfg)
    finally:
        finish_wandb()


@pytest.mark.parametrize("task", list(TASKS))
def test_one_epoch_per_task(tree, tmp_path, task):
    metrics = run(tree, tmp_path, f"data.task={task}")
    assert 0 <= metrics["test/acc"] <= 1
    preds = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    names = TASKS[task][0].names
    assert list(preds.filter(like="prob_")) == [f"prob_{n}" for n in names]
    assert preds["group"].str.startswith("P_001").all()  # the official test patients


class BatchKeys(Callback):
    """Writes the keys of every training batch, a line each, to ``path`` (the callback is built
    by Hydra, in a module object of its own)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        with self.path.open("a") as f:
            f.write(" ".join(sorted(batch)) + "\n")


def test_one_epoch_with_baseline_pairs(tree, tmp_path):
    keys = tmp_path / "keys.txt"
    run(tree, tmp_path, "data.task=benign_malignant", "data.pairs=true",
        "+callbacks.batch_keys._target_=tests.test_cbis_ddsm_train.BatchKeys",
        f"+callbacks.batch_keys.path={keys}")
    lines = keys.read_text().splitlines()
    assert len(lines) == 2 and all("baseline" in line.split() for line in lines)


def write_arrays(root: Path, per_split: int = 12, side: int = 24) -> Path:
    """The arrays format: train.npz and test.npz with patches, baselines, labels, patients."""
    rng = np.random.default_rng(0)
    (root / "arrays").mkdir(parents=True)
    for split in ("train", "test"):
        labels = np.tile([1, 2, 3, 4], per_split // 4)
        patches = rng.integers(0, 65535, (per_split, side, side)).astype(np.uint16)
        patches[:, :4] = (labels[:, None, None] * 10000).astype(np.uint16)  # a class signal
        np.savez(root / "arrays" / f"{split}.npz", patches=patches,
                 baselines=rng.integers(0, 30000, (per_split, side, side)).astype(np.uint16),
                 labels=labels, patients=[f"{split}{i // 2}" for i in range(per_split)])
    return root


def test_arrays_records(tmp_path):
    root = write_arrays(tmp_path / "cbis_ddsm")
    table = cbis_ddsm_records(root, "four_class", format="arrays", pairs=True,
                              cache_dir=tmp_path / "cache").records
    assert len(table) == 24 and table["label"].tolist()[:4] == [0, 1, 2, 3]
    assert table["path"].iloc[5].endswith("train_patches.npy::5")
    assert table["baseline_path"].iloc[5].endswith("train_baselines.npy::5")
    assert table.loc[table["split"] == "test", "group"].str.startswith("test").all()
    stretched = np.load(table["path"].iloc[0].split("::")[0])
    assert stretched.dtype == np.uint16 and stretched.max() == 65535
    five = cbis_ddsm_records(root, "five_class", format="arrays", cache_dir=tmp_path / "cache")
    assert five.class_counts() == [24, 6, 6, 6, 6]
    with np.load(root / "arrays" / "test.npz") as data:
        arrays = dict(data)
    np.savez(root / "arrays" / "test.npz", **{**arrays, "labels": np.zeros(12, int)})
    with pytest.raises(DataError, match=r"test\.npz: labels\[0\] = 0"):
        cbis_ddsm_records(root, format="arrays", cache_dir=tmp_path / "cache")


def test_arrays_one_epoch(tmp_path):
    root = write_arrays(tmp_path / "cbis_ddsm")
    metrics = run(root, tmp_path, "data.format=arrays", "data.task=mass_calc", "data.pairs=true")
    assert 0 <= metrics["test/acc"] <= 1
