"""Prediction on image files and ONNX export, against a checkpoint from a tiny real run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from PIL import Image

from breastcls.checkpoints import load_checkpoint
from breastcls.data.breastmnist import load_breastmnist
from breastcls.export import export, export_onnx
from breastcls.predict import predict
from breastcls.train import train
from tests.conftest import FAST, compose_train

MODULE = "breastcls.models.classifier.ImageClassifier"
PROB_COLUMNS = ["prob_malignant", "prob_normal_benign"]


@pytest.fixture(scope="module")
def run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real training run: its checkpoint and ``test_predictions.csv``."""
    out = tmp_path_factory.mktemp("run")
    # "++" sets the trainer's limit_* keys whether or not the trainer config declares them.
    fast = [f"++{o}" if o.startswith("trainer.limit_") else o for o in FAST]
    train(compose_train([*fast, f"paths.data_dir={data_dir}", "logger=csv",
                         "eval_splits=[test]"], out))
    return out


@pytest.fixture(scope="module")
def checkpoint(run: Path) -> Path:
    return next(p for p in sorted((run / "checkpoints").glob("*.ckpt")) if p.name != "last.ckpt")


@pytest.fixture(scope="module")
def test_images(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_breastmnist(data_dir)["test"]


def run_predict(tmp_path: Path, checkpoint: Path, source: Path, *overrides: str) -> pd.DataFrame:
    cfg = compose_train([f"ckpt_path={checkpoint}", f"input={source}", *overrides], tmp_path,
                        config_name="predict")
    frame = predict(cfg)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "predictions.csv"), frame,
                                  check_exact=False, atol=1e-7, rtol=0, check_dtype=False)
    return frame


def test_predict_png_folder_matches_eval(tmp_path, run, checkpoint, test_images):
    images = test_images[0]
    folder = tmp_path / "png"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:04d}.png")
    frame = run_predict(tmp_path, checkpoint, folder)
    expected = pd.read_csv(run / "test_predictions.csv")
    assert frame["file"].tolist() == [f"{i:04d}.png" for i in expected["index"]]
    np.testing.assert_allclose(frame[PROB_COLUMNS].to_numpy(), expected[PROB_COLUMNS].to_numpy(),
                               atol=1e-5, rtol=0)
    np.testing.assert_array_equal(frame["pred"], expected["pred"])


@pytest.mark.parametrize("layout", ["images", "test_images"])
def test_predict_npz_matches_eval(tmp_path, run, checkpoint, test_images, layout):
    images, labels = test_images
    path = tmp_path / "test.npz"
    prefix = "test_" if layout == "test_images" else ""
    np.savez(path, **{f"{prefix}images": images, f"{prefix}labels": labels[:, None]})
    split = ["split=test"] if prefix else []
    frame = run_predict(tmp_path, checkpoint, path, *split)
    expected = pd.read_csv(run / "test_predictions.csv")
    np.testing.assert_array_equal(frame["label"], expected["label"])
    np.testing.assert_allclose(frame[PROB_COLUMNS].to_numpy(), expected[PROB_COLUMNS].to_numpy(),
                               atol=1e-5, rtol=0)


def test_predict_tta_averages_flips(tmp_path, checkpoint, test_images):
    images = test_images[0]
    path = tmp_path / "few.npz"
    np.savez(path, images=images[:8])
    plain = run_predict(tmp_path, checkpoint, path)
    tta = run_predict(tmp_path, checkpoint, path, "tta=true")
    np.testing.assert_allclose(tta[PROB_COLUMNS].sum(axis=1), 1, atol=1e-6)
    model, _ = load_checkpoint(checkpoint, MODULE)
    x = (torch.from_numpy(images[:8]).unsqueeze(1).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        views = [model.eval()(v).softmax(dim=1) for v in (x, x.flip(-1), x.flip(-2))]
    np.testing.assert_allclose(tta[PROB_COLUMNS], torch.stack(views).mean(0).numpy(), atol=1e-5)
    assert not np.allclose(tta[PROB_COLUMNS], plain[PROB_COLUMNS], atol=1e-7)


def test_eval_tta_matches_predict_tta(tmp_path, run, checkpoint, data_dir):
    from breastcls.eval import evaluate

    evaluate(compose_train([f"ckpt_path={checkpoint}", f"paths.data_dir={data_dir}",
                            "evaluation.tta=[hflip]", "evaluation.plots=false",
                            "evaluation.bootstrap.n_resamples=0"], tmp_path / "eval", "eval"))
    scored = pd.read_csv(tmp_path / "eval" / "test_predictions.csv")
    flipped = run_predict(tmp_path, checkpoint, data_dir / "breastmnist.npz", "split=test",
                          "tta=[hflip]")
    np.testing.assert_allclose(scored[PROB_COLUMNS], flipped[PROB_COLUMNS], atol=1e-5, rtol=0)
    plain = pd.read_csv(run / "test_predictions.csv")
    assert not np.allclose(scored[PROB_COLUMNS], plain[PROB_COLUMNS], atol=1e-6)


def test_predict_rejects_bad_input(tmp_path, checkpoint):
    with pytest.raises(FileNotFoundError, match=r"no \.png"):
        run_predict(tmp_path, checkpoint, tmp_path)


def test_onnx_export_matches_pytorch(tmp_path, checkpoint, test_images):
    cfg = compose_train([f"ckpt_path={checkpoint}", f"output={tmp_path / 'model.onnx'}"],
                        tmp_path, config_name="export")
    path = export(cfg)
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert props["outputs"] == '"probs"' and props["positive_class"] == "0"
    model, _ = load_checkpoint(checkpoint, MODULE)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    for batch in (1, 5):
        x = (torch.from_numpy(test_images[0][:batch]).unsqueeze(1).float() / 255 - 0.5) / 0.5
        (got,) = session.run(None, {"image": x.numpy()})
        with torch.no_grad():
            expected = model.eval()(x).softmax(dim=1).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_onnx_export_logits(tmp_path, checkpoint):
    model, _ = load_checkpoint(checkpoint, MODULE)
    path = export_onnx(model, tmp_path / "logits.onnx", (1, 28, 28), outputs="logits")
    x = torch.randn(3, 1, 28, 28)
    (got,) = ort.InferenceSession(str(path)).run(["logits"], {"image": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval()(x).numpy(), atol=1e-4, rtol=0)
