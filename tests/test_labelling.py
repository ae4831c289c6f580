"""A two-round simulated labelling loop on real BUSI images: provenance, and data left as it was.

Ground truth is one box per BUSI mask file (normal images have none); the loop proposes,
accepts the truth as the review, and retrains, twice per strategy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breastcls.labelling.boxes import ImageBoxes
from breastcls.labelling.rounds import POOL, write_images
from breastcls.labelling.simulate import simulate
from tests.conftest import real_data_dir, require_real_data
from tests.test_labelling_steps import CLASSES, _config, stand_in  # noqa: F401 (fixture)

PER_FOLDER = {"benign": 6, "malignant": 6, "normal": 2}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _mask_box(mask: Path) -> list[float]:
    rows, cols = np.nonzero(np.asarray(Image.open(mask).convert("L")) > 127)
    return [float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)]


def _busi_truth(root: Path) -> list[ImageBoxes]:
    truth = []
    for folder, count in PER_FOLDER.items():
        images = sorted(p for p in (root / folder).glob("*.png") if "_mask" not in p.name)
        for image in images[:count]:
            masks = sorted(root.joinpath(folder).glob(f"{image.stem}_mask*.png"))
            boxes = [] if folder == "normal" else [_mask_box(m) for m in masks]
            width, height = Image.open(image).size
            truth.append(ImageBoxes(str(image), width, height, boxes,
                                    [folder] * len(boxes)))
    return truth


@pytest.mark.usefixtures("stand_in")
def test_two_round_simulated_loop_on_busi(tmp_path: Path) -> None:
    busi = require_real_data("busi", "BUSI")
    before = _tree_digest(real_data_dir())
    source = tmp_path / "busi_truth.json"
    write_images(source, _busi_truth(busi), CLASSES)

    curve = simulate(_config(tmp_path, f"simulate.source={source}", "simulate.rounds=2",
                             "simulate.initial_images=4", "simulate.images_per_round=3",
                             "simulate.test_fraction=0.25"))

    assert curve["labelled_images"].tolist() == [4, 7, 10] * 2
    for strategy in ("top_box", "random"):
        provenance = pd.read_csv(tmp_path / "loop" / strategy / "provenance.csv")
        assert provenance["round"].tolist() == [0] * 4 + [1] * 3 + [2] * 3
        reviewed = provenance[provenance["round"] > 0]
        assert set(reviewed["outcome"]) <= {"accepted", "corrected", "rejected"}
        assert reviewed["model_version"].str.match(r"round_00[01]/model@[0-9a-f]{8}$").all()
        assert set(provenance.loc[provenance["round"] == 0, "outcome"]) == {"initial"}
        pool = json.loads((tmp_path / "loop" / strategy / POOL).read_text())
        assert len(pool["images"]) == 10
        assert all(Path(i["file_name"]).is_relative_to(busi.resolve()) for i in pool["images"])
    assert (tmp_path / "loop" / "curve.png").stat().st_size > 0
    assert _tree_digest(real_data_dir()) == before
