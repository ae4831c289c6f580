"""Penultimate-layer features: equal to the backbone's activations, keyed by sample id, combined
over extractors only when they hold the same samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from breastcls.data.build import CHECKPOINT_KEY, build_datamodule
from breastcls.data.readers import DataError
from breastcls.features import (
    KEY_COLUMNS,
    checkpoint_features,
    combine_extractors,
    run_extractors,
)
from breastcls.models.classifier import ImageClassifier
from tests.conftest import compose_train

BACKBONE = {"_target_": "breastcls.models.resnet.build_resnet", "arch": "resnet18",
            "in_channels": 1, "small_input": True}
SPLIT_SIZES = {"train": 12, "val": 6, "test": 8}


def write_tiny_breastmnist(folder: Path) -> Path:
    """A breastmnist.npz in medmnist's layout with a few random 28-px images per split."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in SPLIT_SIZES.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "breastmnist.npz", **arrays)
    return folder


def data_config(data_dir: Path) -> dict:
    return OmegaConf.to_container(compose_train([f"paths.data_dir={data_dir}"]).data,
                                  resolve=True)


def save_checkpoint(path: Path, data: dict, seed: int = 0) -> ImageClassifier:
    """A tiny untrained classifier saved as Lightning does, with its data config."""
    torch.manual_seed(seed)
    model = ImageClassifier(backbone=BACKBONE, optimizer={"_target_": "torch.optim.SGD",
                                                          "lr": 0.1})
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                CHECKPOINT_KEY: data}, path)
    return model.eval()


@pytest.fixture
def tiny(tmp_path) -> tuple[Path, dict, ImageClassifier]:
    data = data_config(write_tiny_breastmnist(tmp_path / "data"))
    ckpt = tmp_path / "epoch_000.ckpt"
    return ckpt, data, save_checkpoint(ckpt, data)


@pytest.mark.parametrize("tta", [[], ["hflip"]])
def test_features_are_the_backbones_penultimate_activations(tiny, tta):
    ckpt, data, model = tiny
    features = checkpoint_features(ckpt, ["train", "test"], tta=tta)
    batch = next(iter(build_datamodule(data).eval_dataloader("test")))
    with torch.no_grad():
        views = [batch["image"], *([batch["image"].flip(-1)] if tta else [])]
        expected = torch.stack([model.backbone(v) for v in views]).mean(0)
        logits = model(batch["image"])
    test = features["test"]
    values = torch.tensor(test.filter(regex=r"^f\d+$").to_numpy(), dtype=torch.float32)
    assert list(test.columns[:4]) == list(KEY_COLUMNS) and values.shape == (8, 512)
    torch.testing.assert_close(values, expected, rtol=1e-5, atol=1e-5)
    assert test["label"].tolist() == batch["label"].tolist()
    assert test["sample_id"].tolist() == list(batch["sample_id"])
    if not tta:  # the head on these features gives the model's logits: nothing after them
        torch.testing.assert_close(model.head(values), logits, rtol=1e-4, atol=1e-5)
    assert len(features["train"]) == SPLIT_SIZES["train"]


def test_data_overrides_move_the_data(tiny, tmp_path):
    ckpt, _, _ = tiny
    moved = write_tiny_breastmnist(tmp_path / "elsewhere")
    stored = torch.load(ckpt, weights_only=True)
    stored[CHECKPOINT_KEY]["data_dir"] = str(tmp_path / "gone")
    torch.save(stored, ckpt)
    features = checkpoint_features(ckpt, ["val"], {"data_dir": str(moved)})
    assert len(features["val"]) == SPLIT_SIZES["val"]


def features_config(tmp_path: Path, data_dir: Path, extractors: dict, **settings):
    cfg = compose_train([f"paths.data_dir={data_dir}", "splits=[train,test]"], tmp_path,
                        config_name="features")
    OmegaConf.update(cfg, "extractors", extractors, force_add=True)
    for key, value in settings.items():
        OmegaConf.update(cfg, key, value)
    return cfg


def test_cli_writes_each_extractor_their_average_and_provenance(tiny, tmp_path):
    ckpt, data, _ = tiny
    other = tmp_path / "other.ckpt"
    save_checkpoint(other, data, seed=1)
    weights = tmp_path / "resnet18.pth"  # a local weights file, as users without internet pass
    torch.save(ImageClassifier(backbone=BACKBONE, optimizer={}).backbone.state_dict(), weights)
    cfg = features_config(tmp_path, Path(data["data_dir"]), {
        "a": {"ckpt_path": str(ckpt)}, "b": {"ckpt_path": str(other)},
        "pre": {"backbone": {**BACKBONE, "pretrained": str(weights)}}}, combine="concat")
    written = run_extractors(cfg)
    assert sorted(written) == ["a", "b", "concat", "pre"]
    a, b = (pd.read_csv(written[n], dtype={"sample_id": str}) for n in ("a", "b"))
    assert a["split"].value_counts().to_dict() == {"train": 12, "test": 8}
    concat = pd.read_csv(written["concat"])
    assert concat.shape[1] == len(KEY_COLUMNS) + 1 + 3 * 512
    average = combine_extractors({"a": a[a.split == "test"], "b": b[b.split == "test"]},
                                 "average")
    np.testing.assert_allclose(average["f3"], (a[a.split == "test"]["f3"]
                                               + b[b.split == "test"]["f3"]).to_numpy() / 2)
    info = json.loads((tmp_path / "features.json").read_text())
    assert info["extractors"]["a"]["dim"] == 512 and info["rows"] == {"train": 12, "test": 8}


def test_extractors_over_other_samples_are_refused(tiny):
    ckpt, _, _ = tiny
    features = checkpoint_features(ckpt, ["train", "test"])
    with pytest.raises(DataError, match="hold different samples"):
        combine_extractors({"a": features["train"], "b": features["test"]}, "average")
    half = features["test"].iloc[:, :len(KEY_COLUMNS) + 10]
    with pytest.raises(DataError, match="same number of features"):
        combine_extractors({"a": features["test"], "b": half}, "average")


def test_no_or_ambiguous_extractor_is_a_clear_error(tmp_path, tiny):
    ckpt, data, _ = tiny
    with pytest.raises(DataError, match="no extractor given"):
        run_extractors(features_config(tmp_path, Path(data["data_dir"]), {}))
    both = {"x": {"ckpt_path": str(ckpt), "backbone": BACKBONE}}
    with pytest.raises(DataError, match=r"extractors\.x: give exactly one"):
        run_extractors(features_config(tmp_path, Path(data["data_dir"]), both))
