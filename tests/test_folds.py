"""Cross-validation folds: disjoint, stratified, seeded, grouped by duplicates."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from breastcls.data.breastmnist import BreastMNISTDataModule
from breastcls.train import train
from tests.conftest import FAST, ROOT, compose_train


@pytest.fixture(scope="module")
def folds(data_dir, tmp_path_factory):
    """The split table of the BreastMNIST DataModule under ``cv`` settings (records order:
    official train, val, test; ``index`` is the pool position of pooled records)."""
    cache = tmp_path_factory.mktemp("cache")

    def table(**cv) -> pd.DataFrame:
        dm = BreastMNISTDataModule(str(data_dir), cv=cv, cache_dir=str(cache))
        dm.setup()
        return dm.split_table

    return table


def test_trainval_folds_are_disjoint_and_stratified(folds):
    val_sets = []
    for fold in range(3):
        table = folds(folds=3, fold=fold)
        pool = table[table.split != "test"]
        train_idx, val_idx = (pool.index[pool.split == s] for s in ("train", "val"))
        assert not set(train_idx) & set(val_idx)
        assert len(train_idx) + len(val_idx) == 546 + 78
        assert (table.split == "test").sum() == 156  # the official test split stays apart
        assert table[table.split == "test"].sample_id.str.startswith("test_").all()
        malignant = (pool[pool.split == "val"].label == 0).mean()
        assert abs(malignant - (pool.label == 0).mean()) < 0.02  # the pool's class balance
        val_sets.append(set(val_idx))
    assert set().union(*val_sets) == set(range(624))
    assert sum(map(len, val_sets)) == 624


def test_all_pool_holds_out_a_test_fold(folds):
    table = folds(folds=5, fold=2, pool="all")
    sizes = table.split.value_counts()
    assert sizes.sum() == 780 and 150 <= sizes["test"] <= 160
    assert set(table[table.split == "test"].fold) == {2}


def test_folds_are_seeded(folds):
    a, b, c = (folds(folds=3, seed=seed) for seed in (1, 1, 2))
    assert a.fold.tolist() == b.fold.tolist() != c.fold.tolist()


def test_duplicate_groups_stay_in_one_fold(folds):
    table = folds(folds=3, groups="duplicates")
    pool = table[table.split != "test"]
    assert (pool.groupby("group").fold.nunique() == 1).all()
    assert (pool.groupby("group").size() > 1).sum() > 10  # BreastMNIST has duplicate clusters


def test_grouped_all_pool_keeps_groups_out_of_val(folds):
    """cv.pool=all cv.groups=duplicates: the val carve-out draws whole duplicate groups, so no
    near-duplicate cluster spans train and val (nor test)."""
    for fold in (0, 3):
        table = folds(folds=5, fold=fold, pool="all", groups="duplicates")
        roles = table.groupby("group").split.nunique()
        assert (roles == 1).all(), table[table.group.isin(roles[roles > 1].index)]
        rest = table[table.split != "test"]
        val = rest[rest.split == "val"]
        assert 0.07 < len(val) / len(rest) < 0.13  # val_fraction 0.1, in whole groups
        assert abs(val.label.mean() - rest.label.mean()) < 0.05  # stratified
        assert (val.groupby("group").size() > 1).any()  # clusters went to val whole


def test_datamodule_under_cv(data_dir):
    dm = BreastMNISTDataModule(str(data_dir), cv={"folds": 4, "fold": 1, "seed": 0})
    dm.setup()
    assert len(dm.dataset("val")) + len(dm.dataset("train")) == 624
    assert np.array_equal(dm.dataset("val").indices.numpy(),
                          dm.split_table.query("split == 'val'")["index"].to_numpy())


@pytest.mark.parametrize("bad", [{"folds": 1}, {"folds": 3, "fold": 3}, {"folds": 3, "pool": "x"},
                                 {"folds": 3, "groups": "patients"},
                                 {"folds": 3, "val_fraction": 0}])
def test_bad_cv_settings(bad, tmp_path):
    with pytest.raises(ValueError, match="cv\\."):
        BreastMNISTDataModule(str(tmp_path), cv=bad)


def test_cv_multirun_writes_folds_and_summary(data_dir, tmp_path):
    sweep = tmp_path / "cv"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "breastcls.train", "-m", "cv.folds=3", "cv.fold=0,1,2",
         f"paths.data_dir={data_dir}", f"hydra.sweep.dir={sweep}", "extras.print_config=false",
         "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
         "eval_splits=[val]", "evaluation.plots=false", "evaluation.bootstrap.n_resamples=0",
         "callbacks.rich_progress_bar=null"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = [pd.read_csv(sweep / str(k) / "splits.csv") for k in range(3)]
    assert all(t.fold.tolist() == tables[0].fold.tolist() for t in tables)  # one assignment
    val_sets = [set(t["index"][t.split == "val"]) for t in tables]
    assert sum(map(len, val_sets)) == len(set().union(*val_sets)) == 624
    for k in range(3):
        scored = pd.read_csv(sweep / str(k) / "val_predictions.csv")
        assert set(scored["index"]) == val_sets[k]
    summary = pd.read_csv(sweep / "summary.csv")
    row = summary[(summary.split == "val") & (summary.metric == "auc")].iloc[0]
    assert row["count"] == 3 and row["std"] >= 0


def test_cv_fold_as_test_gets_its_plots(data_dir, tmp_path):
    """Under cv.pool=all the test split is a fold whose indices are pool indices (up to 779):
    the mistakes grid and Grad-CAM must find those images by row, not by index."""
    fast = [f"++{o}" if o.startswith("trainer.limit_") else o for o in FAST]
    train(compose_train([*fast, f"paths.data_dir={data_dir}", "logger=csv", "cv.folds=5",
                         "cv.fold=4", "cv.pool=all", "eval_splits=[test]",
                         "evaluation.gradcam=2", "evaluation.bootstrap.n_resamples=0"], tmp_path))
    scored = pd.read_csv(tmp_path / "test_predictions.csv")
    assert scored["index"].max() > len(scored)  # pool indices, not positions
    for name in ("test_mistakes.png", "test_gradcam.png"):
        assert (tmp_path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_split_group_equals_cv_settings(data_dir, tmp_path):
    """data/split=kfold (groups: duplicates) is the config-group spelling of cv.folds=5
    cv.groups=duplicates: the same folds and the same groups."""
    group = compose_train(["data/split=kfold", "data.split.fold=2"], tmp_path / "a").data
    alias = compose_train(["cv.folds=5", "cv.fold=2", "cv.groups=duplicates"], tmp_path / "b").data
    tables = []
    for data in (group, alias):
        dm = BreastMNISTDataModule(str(data_dir), cv=dict(data.cv), split=dict(data.split),
                                   cache_dir=str(tmp_path / "cache"))
        dm.setup()
        tables.append(dm.split_table)
    pd.testing.assert_frame_equal(*tables)
