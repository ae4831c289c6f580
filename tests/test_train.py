"""End-to-end training and evaluation on the real BreastMNIST."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from breastcls.loggers import finish_wandb
from breastcls.metrics import TABLE_METRICS
from breastcls.train import train
from tests.conftest import FAST, ROOT, compose_train

QUIET = ["extras.print_config=false", "callbacks.rich_progress_bar=null"]


def run_cli(module: str, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", module, *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cli_run(data_dir, tmp_path_factory) -> tuple[Path, str]:
    """One real epoch over the whole train split through the command line."""
    out = tmp_path_factory.mktemp("cli_run")
    proc = run_cli("breastcls.train", *QUIET, f"paths.data_dir={data_dir}", f"hydra.run.dir={out}",
                   "trainer.max_epochs=1", "logger=[csv,tensorboard]", "seed=3")
    return out, proc.stdout


def test_run_writes_every_output(cli_run):
    out, stdout = cli_run
    assert (out / ".hydra" / "config.yaml").is_file()
    assert (out / "checkpoints" / "last.ckpt").is_file()
    assert (out / "checkpoints" / "epoch_000.ckpt").is_file()
    assert (out / "csv" / "metrics.csv").is_file()
    assert any((out / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["best_epoch"] == 0 and metrics["monitor"] == "val/auc_acc_mean"
    assert metrics["positive_class"] == "malignant"
    for split in ("train", "val", "test"):
        for name in (*TABLE_METRICS, "auc_acc_mean"):
            assert 0.0 <= metrics[split][name] <= 1.0, (split, name)
    assert metrics["val"]["auc_acc_mean"] == pytest.approx(metrics["best_score"], abs=1e-6)
    assert sum(map(sum, metrics["confusion_matrix"]["test"])) == 156
    rows = read_csv(out / "test_predictions.csv")
    assert len(rows) == 156
    assert list(rows[0]) == ["index", "sample_id", "group", "label", "prob_malignant",
                             "prob_normal_benign", "pred"]
    assert [int(r["index"]) for r in rows] == list(range(156))
    assert rows[5]["sample_id"] == "test_5"
    for header in ("AUC", "ACC", "AUPRC", "Recall", "F1", "Prec", "F2", "Spec"):
        assert header in stdout


def test_progress_lines_without_a_terminal(cli_run):
    out, _ = cli_run  # captured output is not a terminal: plain progress lines go to the log
    log = (out / "train.log").read_text()
    assert re.search(r"epoch 1/1 step \d+ val/auc_acc_mean 0\.\d{4} val/loss \d", log), log[-2000:]


def test_checkpoint_is_weights_only(cli_run):
    checkpoint = torch.load(cli_run[0] / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["hyper_parameters"]["backbone"]["arch"] == "resnet18"


def test_medmnist_evaluator_scores_the_saved_predictions(cli_run, data_dir):
    from medmnist import Evaluator

    out = cli_run[0]
    rows = read_csv(out / "test_predictions.csv")
    y_score = np.array([[float(r["prob_malignant"]), float(r["prob_normal_benign"])]
                        for r in rows])
    reference = Evaluator("breastmnist", "test", root=str(data_dir)).evaluate(y_score)
    test = json.loads((out / "metrics.json").read_text())["test"]
    assert test["auc"] == pytest.approx(reference.AUC, abs=1e-6)
    assert test["acc"] == pytest.approx(reference.ACC, abs=1e-6)


def test_eval_reproduces_test_metrics(cli_run, data_dir, tmp_path):
    out = cli_run[0]
    run_cli("breastcls.eval", "extras.print_config=false", f"paths.data_dir={data_dir}",
            f"ckpt_path={out / 'checkpoints' / 'epoch_000.ckpt'}", f"hydra.run.dir={tmp_path}")
    trained = json.loads((out / "metrics.json").read_text())["test"]
    evaluated = json.loads((tmp_path / "metrics.json").read_text())["test"]
    assert evaluated == pytest.approx(trained, abs=1e-6)
    assert read_csv(tmp_path / "test_predictions.csv") == read_csv(out / "test_predictions.csv")


def fast_cfg(data_dir: Path, out: Path, *overrides: str):
    return compose_train([*FAST, f"paths.data_dir={data_dir}", "logger=csv", *overrides], out)


def test_resume_from_last_checkpoint(data_dir, tmp_path):
    train(fast_cfg(data_dir, tmp_path / "first", "eval_splits=[val]"))
    first = json.loads((tmp_path / "first" / "metrics.json").read_text())
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0
    train(fast_cfg(data_dir, tmp_path / "resumed", "eval_splits=[val]", "trainer.max_epochs=2",
                   f"ckpt_path={last}"))
    resumed = torch.load(last, weights_only=True)  # checkpoints continue in the first folder
    assert resumed["global_step"] == 4  # 2 batches x 2 epochs
    rows = read_csv(tmp_path / "resumed" / "csv" / "metrics.csv")
    epochs = {r["epoch"] for r in rows if r["epoch"]}  # final test metrics carry no epoch
    assert epochs == {"1"}  # only the epoch after the checkpoint was trained
    # The best checkpoint is chosen over both epochs, not the resumed one alone.
    second = [float(r["val/auc_acc_mean"]) for r in rows if r.get("val/auc_acc_mean")]
    info = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert info["best_score"] == pytest.approx(max(first["best_score"], second[-1]))
    assert Path(info["checkpoint"]).parent == last.parent


def test_same_seed_same_metrics(data_dir, tmp_path):
    runs = [train(fast_cfg(data_dir, tmp_path / str(i), f"seed={seed}"))
            for i, seed in enumerate((7, 7, 8))]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_balanced_class_weights_with_weight_averaging(data_dir, tmp_path):
    """Balanced weights come from the train split at setup; weight averaging (EMA), which
    copies the module before that and swaps it in for validation, must not trip over them."""
    import lightning as L
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import EMAWeightAveraging

    cfg = fast_cfg(data_dir, tmp_path, "model.class_weights=balanced")
    model = instantiate(cfg.model)
    datamodule = instantiate(cfg.data)
    L.Trainer(fast_dev_run=True, logger=False, enable_progress_bar=False,
              enable_model_summary=False, callbacks=[EMAWeightAveraging()]
              ).fit(model, datamodule=datamodule)
    expected = torch.tensor([546 / (2 * 147), 546 / (2 * 399)])
    assert torch.allclose(model.loss_weights, expected)


def test_threads_are_set_and_recorded(data_dir, tmp_path, other_threads):
    """On CPU the thread count changes a seeded run's numbers, so each run records it."""
    threads = other_threads
    train(fast_cfg(data_dir, tmp_path, f"threads={threads}", "eval_splits=[val]"))
    assert torch.get_num_threads() == threads
    recorded = json.loads((tmp_path / "metrics.json").read_text())["platform"]
    assert recorded["threads"] == threads
    assert recorded["torch"] == torch.__version__ and recorded["cpu_capability"]


def test_wandb_offline_without_account(data_dir, tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc, no saved login
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    try:
        train(fast_cfg(data_dir, tmp_path / "run", "logger=wandb", "eval_splits=[test]"))
    finally:
        finish_wandb()
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # Offline runs are a binary record log (synced later with `wandb sync`); history and config
    # records keep their keys and JSON values as plain text.
    (log_file,) = runs[0].glob("run-*.wandb")
    data = log_file.read_bytes()
    for key in (b"test/auc", b"val/auc_acc_mean", b"train/loss", b"lr-SGD",
                b"breastcls.models.classifier.ImageClassifier"):
        assert key in data, key


def test_ddp_two_cpu_processes(data_dir, tmp_path):
    limits = ["trainer.max_epochs=1", "trainer.limit_train_batches=2",
              "trainer.limit_val_batches=1", "logger=csv"]
    run_cli("breastcls.train", *QUIET, f"paths.data_dir={data_dir}",
            f"hydra.run.dir={tmp_path / 'ddp'}", "trainer=ddp_cpu", *limits)
    train(fast_cfg(data_dir, tmp_path / "single", *limits))
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single = json.loads((tmp_path / "single" / "metrics.json").read_text())
    assert set(ddp) == set(single)
    for split in ("train", "val", "test"):
        assert set(ddp[split]) == set(single[split])
    assert len(read_csv(tmp_path / "ddp" / "test_predictions.csv")) == 156
    # Each rank validated half of the 78 images in its one batch; the logged val/loss is the
    # mean over both halves: the cross-entropy of rank 0's re-scored val predictions.
    val = pd.read_csv(tmp_path / "ddp" / "val_predictions.csv")
    assert len(val) == 78
    probs = val.filter(like="prob_").to_numpy()
    cross_entropy = -np.log(probs[np.arange(len(val)), val["label"]]).mean()
    logged = pd.read_csv(tmp_path / "ddp" / "csv" / "metrics.csv")["val/loss"].dropna()
    assert logged.iloc[-1] == pytest.approx(cross_entropy, abs=1e-4)


def test_cli_missing_data_is_explained(tmp_path):
    proc = run_cli("breastcls.train", *QUIET, f"paths.data_dir={tmp_path / 'nowhere'}",
                   f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert "breastmnist.npz" in proc.stderr and "data.download=true" in proc.stderr


def test_cli_unknown_key_is_refused(tmp_path):
    proc = run_cli("breastcls.train", "model.optimizer.lrr=0.1", f"hydra.run.dir={tmp_path}",
                   check=False)
    assert proc.returncode != 0 and "Could not override 'model.optimizer.lrr'" in proc.stderr


def test_image_the_model_cannot_take(data_dir, tmp_path):
    cfg = fast_cfg(data_dir, tmp_path, "data.as_rgb=true", "model.backbone.in_channels=1")
    with pytest.raises(ValueError, match=r"cannot take images of shape \(3, 28, 28\)"):
        train(cfg)


def test_ema_weights_change_the_scored_model(data_dir, tmp_path):
    runs = [train(fast_cfg(data_dir, tmp_path / name, "eval_splits=[val]",
                           "trainer.limit_train_batches=4", *extra))
            for name, extra in (("plain", []), ("ema", ["callbacks=[default,ema]"]))]
    assert runs[0]["val/auc"] != runs[1]["val/auc"]
    best = json.loads((tmp_path / "ema" / "metrics.json").read_text())["checkpoint"]
    assert torch.load(best, weights_only=True)["state_dict"]
