"""eval, predict and export prepare images as the training run did and apply its test-time flips.

One tiny real run trained with non-default data settings (``data.resize=32``, a ``cv.pool=all``
fold) and a threshold chosen on flip-averaged val probabilities (``evaluation.tta=[hflip]``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from breastcls.checkpoints import load_checkpoint
from breastcls.data.arrays import upsample
from breastcls.data.build import stored_data_config
from breastcls.eval import apply_checkpoint_data, apply_run_data, evaluate
from breastcls.export import export
from breastcls.models.classifier import class_probabilities
from breastcls.predict import predict
from breastcls.train import train
from tests.conftest import FAST, ROOT, compose_train

MODULE = "breastcls.models.classifier.ImageClassifier"
PROB_COLUMNS = ["prob_malignant", "prob_normal_benign"]
RUN_DATA = ["data.resize=32", "cv.folds=5", "cv.fold=1", "cv.pool=all"]
QUIET = ["evaluation.plots=false", "evaluation.bootstrap.n_resamples=0"]


@pytest.fixture(scope="module")
def run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run folder, with ``.hydra/config.yaml`` as Hydra writes it (unresolved)."""
    out = tmp_path_factory.mktemp("run")
    fast = [f"++{o}" if o.startswith("trainer.limit_") else o for o in FAST]
    cfg = compose_train([*fast, f"paths.data_dir={data_dir}", "logger=csv",
                         "model.backbone.small_input=false", *RUN_DATA,
                         "evaluation.tta=[hflip]", "evaluation.threshold.method=youden",
                         "eval_splits=[test]", *QUIET], out)
    (out / ".hydra").mkdir()
    OmegaConf.save(cfg, out / ".hydra" / "config.yaml")
    train(cfg)
    return out


@pytest.fixture(scope="module")
def checkpoint(run: Path) -> Path:
    return next(p for p in sorted((run / "checkpoints").glob("*.ckpt")) if p.name != "last.ckpt")


@pytest.fixture(scope="module")
def bare_checkpoint(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights in a folder without the run's config, and without the ``tta`` key and
    the data config (a checkpoint written before training recorded them)."""
    path = tmp_path_factory.mktemp("bare") / "checkpoints" / checkpoint.name
    path.parent.mkdir()
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    ckpt["hyper_parameters"].pop("tta", None)
    ckpt.pop("datamodule_hyper_parameters", None)  # nor the data config
    torch.save(ckpt, path)
    return path


@pytest.fixture(scope="module")
def images(data_dir: Path) -> np.ndarray:
    with np.load(data_dir / "breastmnist.npz") as npz:
        return npz["test_images"][:12]


def eval_config(checkpoint: Path, out: Path, *overrides: str):
    return compose_train([f"ckpt_path={checkpoint}", *QUIET, *overrides], out, "eval")


def test_checkpoint_records_tta_and_threshold(checkpoint):
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["tta"] == ["hflip"] and hparams["threshold"] != 0.5


def test_eval_cli_scores_like_the_training_run(tmp_path, run, checkpoint, data_dir):
    """`python -m breastcls.eval ckpt_path=...` alone: the run's resize, fold (cv.pool=all: the
    fold's test images, not the official test split), flips and threshold."""
    out = tmp_path / "eval"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "breastcls.eval", f"ckpt_path={checkpoint}",
         f"paths.data_dir={data_dir}", f"hydra.run.dir={out}", "extras.print_config=false",
         *QUIET], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    scored = pd.read_csv(out / "test_predictions.csv")
    expected = pd.read_csv(run / "test_predictions.csv")
    assert scored["index"].tolist() == expected["index"].tolist()  # the fold's pool indices
    assert scored["index"].max() >= 624
    np.testing.assert_allclose(scored[PROB_COLUMNS], expected[PROB_COLUMNS], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(scored["pred"], expected["pred"])  # the stored threshold
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["data_config"] == "checkpoint"  # the run's data config, stored at training
    assert saved["tta"] == ["hflip"]
    logged = (out / "eval.log").read_text()
    assert "data settings from the checkpoint" in logged
    assert "test-time augmentation ['hflip']" in logged


def test_checkpoint_stores_the_data_config(checkpoint, bare_checkpoint, tmp_path, caplog):
    stored = stored_data_config(checkpoint)
    assert stored["_target_"].endswith("BreastMNISTDataModule") and stored["resize"] == 32
    assert stored["cv"]["pool"] == "all" and stored["cv"]["fold"] == 1
    assert stored_data_config(bare_checkpoint) is None  # older checkpoints: the run folder
    cfg = eval_config(checkpoint, tmp_path, "cv.fold=2", "data.eval_batch_size=7")
    with caplog.at_level(logging.WARNING, logger="breastcls.eval"):
        assert apply_checkpoint_data(cfg, stored, ["cv.fold=2", "data.eval_batch_size=7"])
    assert cfg.data.resize == 32 and cfg.data.cv.fold == 2 and cfg.data.eval_batch_size == 7
    assert "data.cv.fold=2" in caplog.text


def test_explicit_settings_win_over_the_run(checkpoint, tmp_path, caplog):
    cfg = eval_config(checkpoint, tmp_path)
    apply_run_data(cfg)
    assert cfg.data.resize == 32 and cfg.data.size == 28
    assert OmegaConf.to_container(cfg.data.cv, resolve=True)["pool"] == "all"
    assert (cfg.cv.folds, cfg.cv.fold) == (5, 1)

    cfg = eval_config(checkpoint, tmp_path, "data.resize=64", "cv.fold=2")
    with caplog.at_level(logging.WARNING, logger="breastcls.eval"):
        apply_run_data(cfg)
    assert cfg.data.resize == 64 and (cfg.cv.folds, cfg.cv.fold) == (5, 2)
    assert "data.resize=64 (training run: 32)" in caplog.text

    # A command-line value equal to eval's default still wins (Hydra reports the overrides).
    cfg = eval_config(checkpoint, tmp_path, "cv.folds=null", "data.resize=null")
    apply_run_data(cfg, overrides=["cv.folds=null", "data.resize=null"])
    assert cfg.cv.folds is None and cfg.data.resize is None


def test_eval_without_run_config_warns(bare_checkpoint, tmp_path, caplog):
    cfg = eval_config(bare_checkpoint, tmp_path)
    with caplog.at_level(logging.WARNING, logger="breastcls.eval"):
        assert apply_run_data(cfg) is None
    missing = str(bare_checkpoint.parent.parent / ".hydra" / "config.yaml")
    assert missing in caplog.text and "data.resize=None" in caplog.text
    assert cfg.data.resize is None and cfg.cv.folds is None


def test_explicit_eval_tta_wins_with_a_warning(checkpoint, run, data_dir, tmp_path, caplog):
    cfg = eval_config(checkpoint, tmp_path, f"paths.data_dir={data_dir}", "evaluation.tta=[]")
    with caplog.at_level(logging.WARNING):
        evaluate(cfg)
    assert "threshold was chosen on probabilities averaged over ['hflip']" in caplog.text
    scored = pd.read_csv(tmp_path / "test_predictions.csv")
    expected = pd.read_csv(run / "test_predictions.csv")
    assert scored["index"].tolist() == expected["index"].tolist()
    assert not np.allclose(scored[PROB_COLUMNS], expected[PROB_COLUMNS], atol=1e-6)


def run_predict(tmp_path: Path, checkpoint: Path, images: np.ndarray, *overrides: str
                ) -> pd.DataFrame:
    path = tmp_path / "few.npz"
    np.savez(path, images=images)
    return predict(compose_train([f"ckpt_path={checkpoint}", f"input={path}", *overrides],
                                 tmp_path, "predict"))


def test_predict_defaults_to_the_checkpoint_tta(checkpoint, images, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="breastcls.runs"):
        default = run_predict(tmp_path, checkpoint, images)
    assert "test-time augmentation ['hflip'], as recorded in the checkpoint" in caplog.text
    flipped = run_predict(tmp_path, checkpoint, images, "tta=[hflip]")
    np.testing.assert_allclose(default[PROB_COLUMNS], flipped[PROB_COLUMNS], atol=1e-7)
    model, _ = load_checkpoint(checkpoint, MODULE)
    x = upsample(torch.from_numpy(images).unsqueeze(1), 32)  # the run's data.resize
    with torch.no_grad():
        expected = class_probabilities(model.eval(), (x.float() / 255 - 0.5) / 0.5, ["hflip"])
    np.testing.assert_allclose(default[PROB_COLUMNS], expected.numpy(), atol=1e-5)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="breastcls.runs"):
        plain = run_predict(tmp_path, checkpoint, images, "tta=[]")
    assert "threshold was chosen on probabilities averaged over ['hflip']" in caplog.text
    assert not np.allclose(plain[PROB_COLUMNS], default[PROB_COLUMNS], atol=1e-6)


def test_predict_old_checkpoint_without_config_or_tta(bare_checkpoint, images, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="breastcls.runs"):
        frame = run_predict(tmp_path, bare_checkpoint, images)
    missing = str(bare_checkpoint.parent.parent / ".hydra" / "config.yaml")
    assert f"config {missing} is missing" in caplog.text
    assert "mean 0.5, std 0.5" in caplog.text and "no upsampling" in caplog.text
    model, _ = load_checkpoint(bare_checkpoint, MODULE)
    x = (torch.from_numpy(images).unsqueeze(1).float() / 255 - 0.5) / 0.5  # 28 px, no flips
    with torch.no_grad():
        np.testing.assert_allclose(frame[PROB_COLUMNS], model.eval()(x).softmax(1).numpy(),
                                   atol=1e-5)


def test_eval_and_predict_set_threads(checkpoint, images, tmp_path, other_threads):
    """Eval and predict take train's threads knob; eval records it with the platform."""
    threads, before = other_threads, torch.get_num_threads()
    evaluate(eval_config(checkpoint, tmp_path / "eval", f"threads={threads}"))
    assert torch.get_num_threads() == threads
    torch.set_num_threads(before)  # so that predict has to set it again
    run_predict(tmp_path, checkpoint, images, f"threads={threads}")
    assert torch.get_num_threads() == threads
    recorded = json.loads((tmp_path / "eval" / "metrics.json").read_text())["platform"]
    assert recorded["threads"] == threads and recorded["torch"] == torch.__version__


def test_export_takes_the_resized_side_and_flips(checkpoint, tmp_path):
    path = export(compose_train([f"ckpt_path={checkpoint}", f"output={tmp_path / 'm.onnx'}"],
                                tmp_path, "export"))
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert props["input_shape"] == [1, 32, 32]
    assert props["tta"] == props["threshold_tta"] == ["hflip"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(4, 1, 32, 32)
    (got,) = session.run(None, {"image": x.numpy()})
    model, _ = load_checkpoint(checkpoint, MODULE)
    with torch.no_grad():
        expected = class_probabilities(model.eval(), x, ["hflip"]).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_export_without_run_config_warns(bare_checkpoint, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        path = export(compose_train([f"ckpt_path={bare_checkpoint}", "check=false",
                                     f"output={tmp_path / 'm.onnx'}"], tmp_path, "export"))
    missing = str(bare_checkpoint.parent.parent / ".hydra" / "config.yaml")
    assert f"config {missing} is missing" in caplog.text and "28 x 28 inputs" in caplog.text
    props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    assert props["input_shape"] == [1, 28, 28] and props["tta"] == []
