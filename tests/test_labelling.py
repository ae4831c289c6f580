"""A two-round simulated labelling loop on real BUSI images: provenance, and data left as it was.

Ground truth is the default source, BUSI's mask boxes (normal images have none); the loop
proposes, accepts the truth as the review, and retrains, twice per strategy.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from breastcls.data.errors import DataError
from breastcls.labelling.boxes import ImageBoxes
from breastcls.labelling.rounds import POOL
from breastcls.labelling.simulate import simulate, split_by_file
from tests.conftest import real_data_dir, require_real_data
from tests.test_labelling_steps import _config, stand_in  # noqa: F401 (fixture)


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.usefixtures("stand_in")
def test_two_round_simulated_loop_on_busi(tmp_path: Path) -> None:
    busi = require_real_data("busi", "BUSI")
    before = _tree_digest(real_data_dir())

    curve = simulate(_config(tmp_path, f"paths.data_dir={real_data_dir()}",
                             "simulate.max_images=14", "simulate.rounds=2",
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


def test_a_runs_split_keeps_its_test_images_out_of_the_loop(tmp_path: Path) -> None:
    images = [ImageBoxes(f"/data/benign/benign ({n}).png", 64, 64, [], []) for n in range(12)]
    split = ["test" if n % 4 == 0 else "val" if n % 4 == 1 else "train" for n in range(12)]
    pd.DataFrame({"sample_id": [Path(i.path).stem for i in images], "split": split}).to_csv(
        tmp_path / "splits.csv", index=False)
    initial, pool, test = split_by_file(images, tmp_path, 2, None, seed=0)  # the run folder
    assert [i.path for i in test] == [images[n].path for n in (0, 4, 8)]
    labelled = {i.path for i in initial + pool}
    assert len(initial) == 2 and len(labelled) == 9 and not labelled & {i.path for i in test}
    _, capped, _ = split_by_file(images, tmp_path / "splits.csv", 2, 5, seed=0)
    assert len(capped) == 3  # max_images caps the images the loop may label
    with pytest.raises(DataError, match=r"lacks 1 of the 13 images, e\.g\. 'x'"):
        split_by_file([*images, ImageBoxes("/data/x.png", 8, 8, [], [])], tmp_path, 2, None, 0)
    with pytest.raises(DataError, match="initial_images=9"):
        split_by_file(images, tmp_path, 9, None, 0)
    pd.DataFrame({"sample_id": ["a"], "split": ["dev"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match=r"simulate\.split=.*bad\.csv names splits \['dev'\]"):
        split_by_file(images, tmp_path / "bad.csv", 2, None, 0)
