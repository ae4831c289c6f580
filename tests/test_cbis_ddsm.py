"""CBIS-DDSM records: the real CSVs parse completely; on a generated DICOM tree the patches sit on
the mask's box, baselines lie beside them inside the breast and clear of every lesion, edge
lesions are dropped, swapped and descriptively named files are found, validation is carved by
patient, and bad rows give one message naming the row and file."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from breastcls.data.build import build_datamodule
from breastcls.data.cbis_ddsm import TASKS, cbis_ddsm_records, study_codes
from breastcls.data.cbis_ddsm_csv import CSV_FILES, PATHOLOGIES, read_case_descriptions
from breastcls.data.readers import DataError, read_image
from tests.cbis_ddsm_tree import (
    DESCRIPTIVE,
    EDGE,
    SHAPE,
    SWAPPED,
    TWO_LESIONS,
    default_rows,
    file_of,
    write_dicom,
    write_tree,
)
from tests.conftest import compose_train, require_real_data

SMALL = {"patch_size": 32, "margin": 4}
ROW_COUNT = len(default_rows())


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("cbis") / "cbis_ddsm")


def records(root: Path, cache: Path, **settings) -> pd.DataFrame:
    return cbis_ddsm_records(root, cache_dir=cache, **{**SMALL, **settings}).records


def box(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def test_the_real_csvs_parse_completely():
    root = require_real_data("cbis_ddsm/mass_case_description_train_set.csv", "CBIS-DDSM CSVs")
    lesions = read_case_descriptions(root.parent)
    counts = lesions.groupby(["abnormality", "split"]).size()
    assert {key: counts[key] for key in CSV_FILES} == {
        ("mass", "train"): 1318, ("mass", "test"): 378,
        ("calc", "train"): 1546, ("calc", "test"): 326}
    assert lesions["pathology"].isin(PATHOLOGIES).all()
    assert (lesions["density"] != "").all()  # both density column names read
    for column in ("image_path", "mask_path", "crop_path"):  # quoted newlines stripped
        assert not lesions[column].str.contains(r"\s").any()
        assert lesions[column].str.endswith(".dcm").all()
    codes = study_codes(lesions)
    assert codes.isin([1, 2, 3, 4]).all()
    for task, (_, label_of) in TASKS.items():
        assert codes.map(label_of).notna().all(), task
    assert lesions["sample_id"].is_unique


def test_the_real_csvs_without_images_say_where_to_get_them(tmp_path):
    root = require_real_data("cbis_ddsm/mass_case_description_train_set.csv", "CBIS-DDSM CSVs")
    with pytest.raises(DataError, match=r"none of the 3568 CSV rows' DICOM files .* from TCIA"):
        cbis_ddsm_records(root.parent, cache_dir=tmp_path)


def test_patch_on_the_mask_box_and_baseline_beside_it(tree, tmp_path):
    table = records(tree, tmp_path, contrast_stretch=False, pairs=True)
    rows = {r.sample_id: r for r in default_rows()}
    assert set(table["sample_id"]) == set(rows) - {EDGE}
    for record in table.itertuples():
        row = rows[record.sample_id]
        image = read_image(record.image_file, voi="none")
        patch, base = box(record.patch_box), box(record.baseline_box)
        x0, y0, x1, y1 = row.box
        assert patch[0] <= x0 - 4 and patch[1] <= y0 - 4 and patch[2] >= x1 + 4
        assert patch[3] >= y1 + 4 and patch[2] - patch[0] == 32
        # Stored unstretched at native scale: the PNG is exactly the mammogram's pixels there.
        np.testing.assert_array_equal(read_image(record.path),
                                      image[patch[1]:patch[3], patch[0]:patch[2]])
        np.testing.assert_array_equal(read_image(record.baseline_path),
                                      image[base[1]:base[3], base[0]:base[2]])
        shifts = {"left": (-32, 0), "right": (32, 0), "above": (0, -32), "below": (0, 32)}
        dx, dy = shifts[record.baseline_side]
        assert base == (patch[0] + dx, patch[1] + dy, patch[2] + dx, patch[3] + dy)
        bx0, by0, bx1, by1 = row.breast
        assert bx0 <= base[0] and by0 <= base[1] and base[2] <= bx1 and base[3] <= by1
        for other in (r for r in rows.values() if r.image_folder == row.image_folder):
            assert not (base[0] < other.box[2] and other.box[0] < base[2]
                        and base[1] < other.box[3] and other.box[1] < base[3])
    first = table.set_index("sample_id").loc[TWO_LESIONS[0]]
    assert first["baseline_side"] == "above"  # its right-hand square holds the second lesion


def test_edge_lesion_reported_and_dropped(tree, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        table = records(tree, tmp_path)
    assert EDGE not in set(table["sample_id"]) and len(table) == ROW_COUNT - 1
    assert "dropped 1 lesion(s) with no baseline patch" in caplog.text and EDGE in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the second run reads the stored patches
        assert len(records(tree, tmp_path)) == ROW_COUNT - 1
    assert EDGE in caplog.text


def test_swapped_and_descriptively_named_files_are_found(tree, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        table = records(tree, tmp_path).set_index("sample_id")
    assert "swapped" in caplog.text and SWAPPED in caplog.text
    assert table.loc[SWAPPED, "mask_file"] == str(file_of(tree, SWAPPED, "crop"))
    assert read_image(table.loc[SWAPPED, "path"]).max() > 0
    named = table[table["group"].isin(DESCRIPTIVE)]
    assert len(named) == 4
    assert named["image_file"].str.contains("full mammogram images").all()
    assert named["mask_file"].map(lambda p: read_image(p).max() == 255).all()


def test_patches_are_written_once_and_stretched(tree, tmp_path):
    table = records(tree, tmp_path / "cache")
    patch = read_image(table["path"].iloc[0])
    assert patch.dtype == np.uint16 and patch.shape == (32, 32)
    x0, y0, x1, y1 = box(table["patch_box"].iloc[0])
    raw = read_image(table["image_file"].iloc[0], voi="none")[y0:y1, x0:x1].astype(float)
    low, high = np.percentile(raw, [2, 98])  # mapped to 0 and 65535, clipped beyond
    expected = np.clip((raw - low) / (high - low), 0, 1) * 65535
    np.testing.assert_allclose(patch, expected, atol=0.51)
    folder = Path(table["path"].iloc[0]).parent
    assert folder.name.startswith("cbis_ddsm_patches-") and (folder / "lesions.csv").is_file()
    other = records(tree, tmp_path / "cache", percentiles=[1, 99])
    assert Path(other["path"].iloc[0]).parent != folder  # another setting, another folder


@pytest.mark.parametrize("task", list(TASKS))
def test_tasks(tree, tmp_path, task):
    table = cbis_ddsm_records(tree, task, cache_dir=tmp_path, **SMALL)
    lesions = ROW_COUNT - 1
    assert len(table) == (2 * lesions if task == "five_class" else lesions)
    assert all(table.class_counts()), table.class_counts()
    mass = table.records["sample_id"].str.startswith("Mass") & ~table.records[
        "sample_id"].str.endswith("_baseline")
    if task == "mass_calc":
        assert (table.records.loc[mass, "label"] == 0).all()
    dropped = cbis_ddsm_records(tree, task, cache_dir=tmp_path, benign_without_callback="drop",
                                **SMALL)
    assert "BENIGN_WITHOUT_CALLBACK" not in set(dropped.records["pathology"])
    assert len(dropped) < len(table)


def test_validation_patients_disjoint_from_training(tree, tmp_path):
    cfg = compose_train(["data=cbis_ddsm", f"data.root={tree}", f"paths.cache_dir={tmp_path}",
                         "data.records.patch_size=32", "data.records.margin=4",
                         "data.image_size=32", "data.pairs=true", "data.split.val_fraction=0.3"])
    datamodule = build_datamodule(cfg.data)
    datamodule.setup()
    table = datamodule.split_table
    train, val = (set(table.loc[table["split"] == s, "group"]) for s in ("train", "val"))
    assert val and train and not train & val
    official_test = {r.sample_id for r in default_rows() if r.split == "test"}
    assert set(table.loc[table["split"] == "test", "sample_id"]) == official_test
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["baseline"].shape == batch["image"].shape
    assert batch["image"].shape[1:] == (1, 32, 32)
    assert not torch.equal(batch["baseline"], batch["image"])


def _missing(root: Path) -> Path:
    path = file_of(root, "Calc-Test_P_00103_RIGHT_MLO_1", "image")
    path.unlink()
    return path


def _resized_mask(root: Path) -> Path:
    path = file_of(root, "Mass-Training_P_00005_LEFT_CC_1", "mask")
    mask = np.zeros((SHAPE[0] // 2, SHAPE[1] // 2), np.uint8)
    mask[10:20, 10:20] = 255
    write_dicom(path, mask, "x", path.relative_to(root / "CBIS-DDSM").as_posix())
    return path


def _empty_mask(root: Path) -> Path:
    path = file_of(root, "Mass-Training_P_00006_LEFT_CC_1", "mask")
    write_dicom(path, np.zeros(SHAPE, np.uint8), "x", path.relative_to(root / "CBIS-DDSM")
                .as_posix())
    return path


def _truncated(root: Path) -> Path:
    path = file_of(root, "Calc-Training_P_00007_RIGHT_MLO_1", "image")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])  # half its pixel data
    return path


@pytest.mark.parametrize(("damage", "row", "message"), [
    (_missing, "calc_case_description_test_set.csv row 3", "not found"),
    (_resized_mask, "mass_case_description_train_set.csv row 6", "is 80x64 but its mammogram"),
    (_empty_mask, "mass_case_description_train_set.csv row 7", "is empty"),
    (_truncated, "calc_case_description_train_set.csv row 7", "could not decode the pixel data"),
])
def test_bad_rows_named_or_skipped(tmp_path, damage, row, message):
    root = write_tree(tmp_path / "cbis_ddsm")
    path = damage(root)
    with pytest.raises(DataError) as err:
        records(root, tmp_path / "cache")
    text = str(err.value)
    assert row in text and message in text and path.name in text
    assert "1 CBIS-DDSM file problem(s)" in text and "data.on_bad_file=skip" in text
    table = cbis_ddsm_records(root, cache_dir=tmp_path / "cache", on_bad_file="skip", **SMALL)
    assert len(table) == ROW_COUNT - 2 and len(table.skipped) == 1 and row in table.skipped[0]


def test_settings_checked(tree, tmp_path):
    with pytest.raises(DataError, match=r"data\.records\.marginn"):
        build_datamodule(compose_train(["data=cbis_ddsm", "+data.records.marginn=3"]).data)
    with pytest.raises(DataError, match=r"data\.sizee: not CBIS-DDSM setting"):
        build_datamodule(compose_train(["data=cbis_ddsm", "+data.sizee=3"]).data)
    with pytest.raises(DataError, match=r"data\.task='three_class'"):
        cbis_ddsm_records(tree, "three_class", cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"data\.records\.percentiles"):
        records(tree, tmp_path, percentiles=[98, 2])
    with pytest.raises(DataError, match=r"data\.pairs=true with data\.task=five_class"):
        cbis_ddsm_records(tree, "five_class", pairs=True, cache_dir=tmp_path)
    with pytest.raises(DataError, match=r"mass_case_description_train_set\.csv"):
        cbis_ddsm_records(tmp_path / "nowhere", cache_dir=tmp_path)
    csvs_only = tmp_path / "csvs"
    csvs_only.mkdir()
    for name in CSV_FILES.values():
        (csvs_only / name).write_bytes((tree / name).read_bytes())
    with pytest.raises(DataError, match=r"the CBIS-DDSM images .* come from TCIA"):
        cbis_ddsm_records(csvs_only, cache_dir=tmp_path)
