"""Split assignment and the generic records DataModule on the generated data set: every split
mode grouped and not, stratified folds, seeds, flips of image + baseline + boxes, the cache."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from breastcls.data.arrays import ArrayDataset, collate
from breastcls.data.datamodule import RecordsDataModule
from breastcls.data.readers import DataError
from breastcls.data.records import RecordTable
from breastcls.data.splits import SplitSettings, assign_splits, check_disjoint_groups
from tests.synthetic_dataset import synthetic_records, write_sample, write_synthetic_dataset

RECORDS = {"_target_": "tests.synthetic_dataset.synthetic_records"}
FLIP = {"flip": {"_target_": "torchvision.transforms.v2.RandomHorizontalFlip", "p": 1.0}}
N = 36
# (mode, pool): the official split, a holdout, folds validating, folds testing.
MODES = [("official", "trainval"), ("holdout", "trainval"), ("kfold", "trainval"),
         ("kfold", "all")]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("data") / "synthetic")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the module, so each setup after the first only reads the array."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def records(root: Path) -> pd.DataFrame:
    return synthetic_records(root, "three_class").records


def settings(mode: str, pool: str, grouped: bool, seed: int = 0) -> SplitSettings:
    return SplitSettings(mode=mode, pool=pool, folds=3, val_fraction=0.2, test_fraction=0.2,
                         seed=seed, grouped=grouped)


def datamodule(root: Path, cache: Path, split: dict[str, Any] | None = None,
               **kwargs: Any) -> RecordsDataModule:
    dm = RecordsDataModule(records=RECORDS, root=str(root), task="three_class",
                           image_size=kwargs.pop("image_size", 32), cache_dir=str(cache),
                           split={"groups": "records", **(split or {})}, **kwargs)
    dm.setup()
    return dm


def test_generated_records(records: pd.DataFrame) -> None:
    assert len(records) == N and records["label"].value_counts().tolist() == [12, 12, 12]
    sizes = records.groupby("group").size()
    assert len(sizes) == 12 and sizes.between(2, 4).all()
    assert {"baseline_path", "boxes", "split"} <= set(records)
    assert records["boxes"].map(len).tolist() == [2 if f == "malignant" else 1
                                                  for f in records["folder"]]


@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "ungrouped"])
@pytest.mark.parametrize(("mode", "pool"), MODES, ids=[f"{m}-{p}" for m, p in MODES])
def test_every_mode_splits_every_record_once(records, mode, pool, grouped) -> None:
    table = assign_splits(records, settings(mode, pool, grouped))
    assert list(table.columns[:4]) == ["sample_id", "group", "label", "split"]
    assert table["sample_id"].tolist() == records["sample_id"].tolist()
    assert set(table["split"]) == {"train", "val", "test"}
    official_test = records["split"] == "test"
    if mode == "official" or (mode, pool) == ("kfold", "trainval"):
        # The official test set stays the test set; val is carved out of the official train.
        assert ((table["split"] == "test") == official_test).all()
    if mode == "kfold":
        assert set(table["fold"]) == ({-1, 0, 1, 2} if pool == "trainval" else {0, 1, 2})
        held = "val" if pool == "trainval" else "test"
        assert ((table["fold"] == 0) == (table["split"] == held)).all()
    spread = table.groupby("group")["split"].nunique()
    if grouped:
        check_disjoint_groups(table)
        if mode == "kfold":
            assert (table.groupby("group")["fold"].nunique() == 1).all()
    elif mode != "official":  # without groups, patients are cut (what grouping prevents)
        assert (spread > 1).any()


@pytest.mark.parametrize("pool", ["trainval", "all"])
@pytest.mark.parametrize("grouped", [True, False], ids=["grouped", "ungrouped"])
def test_folds_are_stratified(records, pool, grouped) -> None:
    table = assign_splits(records, settings("kfold", pool, grouped))
    folded = table[table["fold"] >= 0]
    counts = pd.crosstab(folded["fold"], folded["label"])
    assert (counts > 0).all().all(), "every fold holds every class"
    gap = counts.max() - counts.min()
    if grouped:
        # Whole patients move, so a class's folds differ by at most its largest patient.
        largest = folded.groupby(["label", "group"]).size().groupby("label").max()
        assert (gap <= largest).all(), counts
    else:
        assert (gap <= 1).all(), counts


@pytest.mark.parametrize(("mode", "pool"), MODES[1:])
def test_seeds_reproduce_and_differ(records, mode, pool) -> None:
    first = assign_splits(records, settings(mode, pool, True, seed=0))
    pd.testing.assert_frame_equal(first, assign_splits(records, settings(mode, pool, True, 0)))
    # 9-12 patients leave few stratified grouped partitions, so one other seed may repeat one.
    others = [assign_splits(records, settings(mode, pool, True, seed)) for seed in (1, 2, 3)]
    assert any(not first.equals(other) for other in others)


def test_official_split_must_be_complete(records) -> None:
    with pytest.raises(DataError, match="needs a 'split' column"):
        assign_splits(records.drop(columns="split"), settings("official", "trainval", True))
    bad = records.assign(split=records["split"].where(records["sample_id"] != "P03_2", "dev"))
    with pytest.raises(DataError, match="P03_2"):
        assign_splits(bad, settings("official", "trainval", True))


def test_split_file_gives_a_run_the_split_of_another(root, cache, tmp_path) -> None:
    first = datamodule(root, cache, {"mode": "holdout", "val_fraction": 0.2,
                                     "test_fraction": 0.2, "seed": 3})
    saved = tmp_path / "splits.csv"
    first.split_table.iloc[::-1].to_csv(saved, index=False)  # order does not matter
    again = datamodule(root, cache, {"mode": "file", "file": str(saved), "groups": None})
    assert again.split_table["split"].tolist() == first.split_table["split"].tolist()
    assert again.datasets["test"].sample_ids == first.datasets["test"].sample_ids


def test_split_file_must_cover_every_record(records, tmp_path) -> None:
    def refused(table: pd.DataFrame, match: str) -> None:
        path = tmp_path / "splits.csv"
        table.to_csv(path, index=False)
        with pytest.raises(DataError, match=match):
            assign_splits(records, SplitSettings(mode="file", file=str(path)))

    table = assign_splits(records, settings("holdout", "trainval", True))
    refused(table[table["sample_id"] != "P04_1"], r"lacks 1 of the 36 records.*P04_1")
    refused(table.assign(split=table["split"].replace("val", "dev")), r"splits \['dev'\]")
    refused(pd.concat([table, table.head(1)]), "lists sample_ids twice")
    refused(table.drop(columns="split"), "needs the columns sample_id and split")
    with pytest.raises(DataError, match="cannot read it"):
        assign_splits(records, SplitSettings(mode="file", file=str(tmp_path / "none.csv")))
    with pytest.raises(DataError, match=r"needs data\.split\.file"):
        SplitSettings(mode="file")


def test_label_outside_the_classes_is_refused(records, root) -> None:
    table = synthetic_records(root, "three_class")
    bad = records.copy()
    bad.loc[bad["sample_id"] == "P05_2", "label"] = 3
    with pytest.raises(DataError, match=r"P05_2 \(label 3\)"):
        RecordTable(bad, table.classes)
    with pytest.raises(DataError, match="tasks"):
        synthetic_records(root, "birads")


@pytest.mark.parametrize("groups", ["records", None], ids=["grouped", "ungrouped"])
@pytest.mark.parametrize(("mode", "pool"), MODES, ids=[f"{m}-{p}" for m, p in MODES])
def test_datamodule_in_every_mode(root, cache, mode, pool, groups) -> None:
    dm = datamodule(root, cache, {"mode": mode, "pool": pool, "folds": 3, "val_fraction": 0.2,
                                  "test_fraction": 0.2, "groups": groups})
    table = dm.split_table
    assert {"index", "sample_id", "group", "label", "split"} <= set(table)
    assert sum(len(dm.datasets[s]) for s in ("train", "val", "test")) == N
    for split, ds in dm.datasets.items():
        assert ds.sample_ids == table.loc[table["split"] == split, "sample_id"].tolist()
    if groups == "records":
        check_disjoint_groups(table)
        assert (table["group"] == dm.records["group"]).all()  # the patients, not duplicates
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape[1:] == batch["baseline"].shape[1:] == (1, 32, 32)
    assert "boxes" not in batch  # classification batches: boxes stay in dataset[i]
    assert dm.dataset("val")[0]["boxes"].shape[-1] == 4


def _mean(image: torch.Tensor, box: torch.Tensor) -> float:
    """Mean value strictly inside a box (one pixel off its edges, which resizing blurs)."""
    x0, y0, x1, y1 = box.tolist()
    return image[..., int(y0) + 1:int(y1) - 1, int(x0) + 1:int(x1) - 1].mean().item()


@pytest.mark.parametrize("fit", ["resize", "pad"])
def test_flip_moves_image_baseline_and_boxes_together(root, cache, fit) -> None:
    dm = datamodule(root, cache, image_size=48, fit=fit, augmentation=FLIP)
    flipped, plain = dm.dataset("train", augment=True), dm.dataset("train")
    side = 48
    for i in range(len(plain)):
        a, b = flipped[i], plain[i]
        assert torch.equal(a["image"], b["image"].flip(-1))
        assert torch.equal(a["baseline"], b["baseline"].flip(-1))
        assert not torch.equal(b["image"], b["baseline"])  # a different picture
        mirrored = torch.stack([side - b["boxes"][:, 2], b["boxes"][:, 1],
                                side - b["boxes"][:, 0], b["boxes"][:, 3]], dim=1)
        torch.testing.assert_close(a["boxes"], mirrored)
        for before, after in zip(b["boxes"], a["boxes"], strict=True):
            # The bright rectangle is where the (scaled) box says, before and after the flip.
            assert before[2] <= side / 2 <= after[0]
            assert _mean(b["image"], before) > 0.5 and _mean(a["image"], after) > 0.5
            assert _mean(a["image"], before) < -0.2  # and gone from where it was
    left, right = plain[0]["baseline"][..., :8].mean(), plain[0]["baseline"][..., -8:].mean()
    assert left < right  # the baseline's gradient, undone by the flip below
    assert flipped[0]["baseline"][..., :8].mean() > flipped[0]["baseline"][..., -8:].mean()


def test_collate_keeps_boxes_as_a_list(root, cache) -> None:
    ds = datamodule(root, cache).dataset("train")
    batch = next(iter(DataLoader(ds, batch_size=len(ds), collate_fn=collate)))
    assert batch["image"].shape == (len(ds), 1, 32, 32) and len(batch["boxes"]) == len(ds)
    assert {len(b) for b in batch["boxes"]} == {1, 2}
    assert "boxes" not in ds.without_boxes()[0] and ds.without_boxes().images is ds.images


def test_samples_without_extras_reach_the_transform_as_before() -> None:
    seen: list[set[str]] = []
    ds = ArrayDataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]),
                      lambda views: seen.append(set(views)) or views)
    assert set(ds[0]) == {"image", "label", "index"} and seen == [{"image"}]


def test_bad_baseline_goes_with_its_sample(root, tmp_path) -> None:
    copy = Path(shutil.copytree(root, tmp_path / "synthetic"))
    baseline = copy / "baselines" / "benign" / "P06_2.png"
    baseline.write_bytes(baseline.read_bytes()[:60])
    with pytest.raises(DataError, match=r"P06_2\.png"):
        datamodule(copy, tmp_path / "cache")
    dm = datamodule(copy, tmp_path / "cache", on_bad_file="skip")
    assert len(dm.split_table) == N - 1 and "P06_2" not in set(dm.split_table["sample_id"])


def test_cache_rebuilds_on_a_new_file_or_setting(root, tmp_path) -> None:
    copy = Path(shutil.copytree(root, tmp_path / "synthetic"))
    cache = tmp_path / "cache"
    split = {"mode": "holdout"}  # the added patient has no official split

    def arrays() -> dict[str, int]:
        return {p.name: p.stat().st_mtime_ns for p in cache.glob("*.npy")}

    datamodule(copy, cache, split)
    first = arrays()
    assert len(first) == 2  # images and baselines
    datamodule(copy, cache, split)
    assert arrays() == first  # unchanged files and settings: read, not rebuilt
    write_sample(copy, "benign", "P13_1", (50, 60), seed=99)
    dm = datamodule(copy, cache, split)
    assert len(dm.split_table) == N + 1 and len(arrays()) == 4
    assert {n.split("-")[0] for n in set(arrays()) - set(first)} == {
        "synthetic_records", "synthetic_records_baseline"}
    dm = datamodule(copy, cache, split, image_size=40)
    assert len(arrays()) == 6 and dm.dataset("train")[0]["image"].shape == (1, 40, 40)
