"""The labelling loop's detector trained for real: breastcls.train on the pool's COCO file, then
fine-tuned again from that round's weights; a simulated round around it."""

from __future__ import annotations

from pathlib import Path

import torch

from breastcls.labelling.rounds import write_images
from breastcls.labelling.simulate import simulate
from breastcls.labelling.training import fine_tune
from breastcls.models.detector import DetectorModule, detect
from tests.conftest import compose_train
from tests.test_labelling_steps import CLASSES, _images

TINY = ["experiment=busi_fasterrcnn_mobilenet", "model.pretrained=null", "data.image_size=64",
        "model.min_size=64", "model.max_size=64", "trainer.max_epochs=1", "logger=none",
        "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


def test_fine_tune_trains_on_the_pool_then_from_its_own_weights(tmp_path: Path) -> None:
    pool = write_images(tmp_path / "pool.json", _images(tmp_path / "images", 40), CLASSES)
    settings = [*TINY, f"paths.cache_dir={tmp_path / 'cache'}"]
    first = fine_tune(pool, None, tmp_path / "round_000", settings, str(tmp_path), 0)
    second = fine_tune(pool, str(first), tmp_path / "round_001", settings, str(tmp_path), 0)

    model = DetectorModule.load_from_checkpoint(second, map_location="cpu")
    assert list(model.hparams.class_names) == CLASSES
    assert model.hparams.init_from == str(first)
    # The second round started from the first round's weights, not from a fresh detector.
    start = DetectorModule(**model.hparams).state_dict()
    first_weights = torch.load(first, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.equal(start[k], v) for k, v in first_weights.items())
    found = detect(model, [tmp_path / "images" / "case (1).png"], batch_size=1,
                   score_threshold=0.0)
    assert set(found[0]) >= {"boxes", "scores", "labels"}


def test_simulated_round_with_real_training(tmp_path: Path) -> None:
    source = write_images(tmp_path / "truth.json", _images(tmp_path / "images", 40), CLASSES)
    overrides = ",".join(f'"{o}"' for o in [*TINY, f"paths.cache_dir={tmp_path / 'cache'}"])
    cfg = compose_train([f"workdir={tmp_path / 'loop'}", f"simulate.source={source}",
                         "simulate.strategies=[random]", "simulate.rounds=1",
                         "simulate.initial_images=20", "simulate.images_per_round=4",
                         f"train.overrides=[{overrides}]"],
                        output_dir=tmp_path / "run", config_name="label")
    curve = simulate(cfg)
    assert curve["labelled_images"].tolist() == [20, 24]
    assert (tmp_path / "loop" / "random" / "round_001" / "model.ckpt").is_file()
