"""The loop's steps and the simulation's bookkeeping with a stand-in detector (no training).

The stand-in proposes one box per image whose confidence falls with the image's number, and
"fine-tuning" writes a new checkpoint: fast enough to check every file each step writes.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import DictConfig
from PIL import Image

from breastcls.data.readers import DataError
from breastcls.label import step_override
from breastcls.labelling import steps
from breastcls.labelling.boxes import ImageBoxes
from breastcls.labelling.rounds import POOL, read_meta, round_dir, write_images
from breastcls.labelling.simulate import simulate
from tests.conftest import compose_train

CLASSES = ["benign", "malignant"]


class StandInDetector(L.LightningModule):
    """Boxes at a fixed place; ``generation`` counts the fine-tunings it went through."""

    def __init__(self, class_names: list[str], generation: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()


def stand_in_detect(model: StandInDetector, paths: list[Path], batch_size: int,
                    score_threshold: float) -> list[dict]:
    out = []
    for path in paths:
        number = int("".join(filter(str.isdigit, path.stem)) or 0)
        score = max(0.05, 0.95 - 0.04 * number)
        out.append({"boxes": torch.tensor([[10.0, 10.0, 40.0, 30.0]]),
                    "scores": torch.tensor([score]), "labels": torch.tensor([number % 2])})
    return out


def _save(path: Path, generation: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"hyper_parameters": {"class_names": CLASSES, "generation": generation},
                "state_dict": {}}, path)
    return path


@pytest.fixture
def stand_in(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Fine-tuning replaced by writing the next generation's checkpoint; the calls recorded."""
    calls = []

    def fine_tune(annotations, init_from, output_dir, overrides, root_dir, seed):
        pool = json.loads(Path(annotations).read_text())
        generation = torch.load(init_from)["hyper_parameters"]["generation"] + 1 if init_from \
            else 0
        calls.append((len(pool["images"]), init_from, generation))
        return _save(Path(output_dir) / "checkpoints" / "best.ckpt", generation)

    monkeypatch.setattr(steps, "fine_tune", fine_tune)
    return calls


def _config(tmp_path: Path, *overrides: str) -> DictConfig:
    return compose_train([f"workdir={tmp_path / 'loop'}",
                          "detector.module_class=tests.test_labelling_steps.StandInDetector",
                          "detector.detect=tests.test_labelling_steps.stand_in_detect",
                          *overrides], output_dir=tmp_path / "run", config_name="label")


def _images(folder: Path, count: int) -> list[ImageBoxes]:
    """Distinct noise images (identical ones would form one duplicate group when a real run
    splits them) with a box each, and a mask file that the pool must leave out."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    truth = []
    for number in range(count):
        path = folder / f"case ({number}).png"
        Image.fromarray(rng.integers(0, 255, (60, 80), dtype=np.uint8)).save(path)
        truth.append(ImageBoxes(str(path), 80, 60, [[12, 10, 40, 30]], [CLASSES[number % 2]]))
    Image.fromarray(np.zeros((60, 80), np.uint8)).save(folder / "case (0)_mask.png")
    return truth


def test_step_is_the_first_argument() -> None:
    assert step_override(["propose", "pool=x"]) == ["step=propose", "pool=x"]
    assert step_override(["step=accept"]) == ["step=accept"]


def test_propose_accept_retrain(tmp_path: Path, stand_in: list[tuple]) -> None:
    truth = _images(tmp_path / "pool", 6)
    first = _save(tmp_path / "initial.ckpt", 0)
    cfg = _config(tmp_path, f"checkpoint={first}", f"pool={tmp_path / 'pool'}",
                  "propose.images_per_round=2")
    folder = steps.propose(cfg)
    meta = read_meta(folder)
    assert meta["pool_size"] == 6  # the mask file is not proposed
    assert meta["model_version"].startswith(f"{tmp_path.name}/initial@")
    order = pd.read_csv(folder / "review_order.csv")
    assert order["image"].map(lambda p: Path(p).name).tolist() == ["case (5).png",
                                                                   "case (4).png"]
    reviewed = tmp_path / "reviewed.json"
    write_images(reviewed, [truth[5], truth[4]], CLASSES)
    steps.accept(_config(tmp_path, f"reviewed={reviewed}"))
    model = steps.retrain(_config(tmp_path))
    assert model == round_dir(tmp_path / "loop", 1) / "model.ckpt"
    assert stand_in == [(2, str(first), 1)]
    second = steps.propose(_config(tmp_path, f"pool={tmp_path / 'pool'}"))  # the new model
    assert read_meta(second)["checkpoint"] == str(model)
    assert read_meta(second)["pool_size"] == 4  # accepted images are not proposed again
    with pytest.raises(DataError, match="no such folder"):
        steps.propose(_config(tmp_path, f"pool={tmp_path / 'missing'}"))


def test_simulate_writes_the_curve(tmp_path: Path, stand_in: list[tuple]) -> None:
    truth = _images(tmp_path / "data", 12)
    source = tmp_path / "truth.json"
    write_images(source, truth, CLASSES)
    curve = simulate(_config(tmp_path, f"simulate.source={source}",
                             "simulate.initial_images=3", "simulate.images_per_round=2",
                             "simulate.rounds=2", "simulate.test_fraction=0.25"))
    assert curve["labelled_images"].tolist() == [3, 5, 7, 3, 5, 7]
    assert curve["strategy"].tolist() == ["top_box"] * 3 + ["random"] * 3
    assert curve["map_50"].between(0, 1).all()
    loop = tmp_path / "loop"
    assert (loop / "curve.png").stat().st_size > 0 and (loop / "curve.csv").is_file()
    provenance = pd.read_csv(loop / "top_box" / "provenance.csv")
    assert provenance["round"].tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert set(provenance["outcome"]) <= {"initial", "accepted", "corrected", "rejected"}
    assert (provenance["outcome"] == "corrected").sum() >= 1  # boxes moved from 12 to 10 px
    assert len(json.loads((loop / "random" / POOL).read_text())["images"]) == 7
    assert [generation for *_, generation in stand_in] == [0, 1, 2, 0, 1, 2]
