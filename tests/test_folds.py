"""Cross-validation folds: disjoint, stratified, seeded, grouped by duplicates."""

from __future__ import annotations

import numpy as np
import pytest

from breastcls.data.breastmnist import BreastMNISTDataModule, load_breastmnist
from breastcls.data.folds import CrossValidation, assign_folds


@pytest.fixture(scope="module")
def arrays(data_dir):
    return load_breastmnist(data_dir)


def test_trainval_folds_are_disjoint_and_stratified(arrays):
    val_sets = []
    for fold in range(3):
        splits, table = assign_folds(arrays, CrossValidation(folds=3, fold=fold))
        train_idx, val_idx = splits["train"][2], splits["val"][2]
        assert not set(train_idx) & set(val_idx)
        assert len(train_idx) + len(val_idx) == 546 + 78
        assert len(splits["test"][1]) == 156  # the official test split stays apart
        malignant = splits["val"][1].mean()
        assert abs(malignant - table.label.mean()) < 0.02  # same class balance as the pool
        val_sets.append(set(val_idx))
    assert set().union(*val_sets) == set(range(624))
    assert sum(map(len, val_sets)) == 624


def test_all_pool_holds_out_a_test_fold(arrays):
    splits, table = assign_folds(arrays, CrossValidation(folds=5, fold=2, pool="all"))
    sizes = {r: len(v[1]) for r, v in splits.items()}
    assert sum(sizes.values()) == 780 and 150 <= sizes["test"] <= 160
    assert set(table[table.role == "test"].fold) == {2}


def test_folds_are_seeded(arrays):
    a = assign_folds(arrays, CrossValidation(folds=3, seed=1))[1]
    b = assign_folds(arrays, CrossValidation(folds=3, seed=1))[1]
    c = assign_folds(arrays, CrossValidation(folds=3, seed=2))[1]
    assert a.fold.tolist() == b.fold.tolist() != c.fold.tolist()


def test_duplicate_groups_stay_in_one_fold(arrays):
    _, table = assign_folds(arrays, CrossValidation(folds=3, groups="duplicates"))
    grouped = table.groupby("group").fold.nunique()
    assert (grouped == 1).all()
    assert (table.groupby("group").size() > 1).sum() > 10  # BreastMNIST has duplicate clusters


def test_datamodule_under_cv(data_dir):
    dm = BreastMNISTDataModule(str(data_dir), cv={"folds": 4, "fold": 1, "seed": 0})
    dm.setup()
    assert len(dm.dataset("val")) + len(dm.dataset("train")) == 624
    assert np.array_equal(dm.dataset("val").indices.numpy(),
                          dm.split_table.query("role == 'val'").pool_index.to_numpy())


@pytest.mark.parametrize("bad", [{"folds": 1}, {"folds": 3, "fold": 3}, {"folds": 3, "pool": "x"},
                                 {"folds": 3, "groups": "patients"}])
def test_bad_cv_settings(bad, tmp_path):
    with pytest.raises(ValueError, match="cv\\."):
        BreastMNISTDataModule(str(tmp_path), cv=bad)
