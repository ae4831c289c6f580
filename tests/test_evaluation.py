"""Scoring a checkpoint: threshold chosen on val only, intervals, plots, de-duplicated test."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

import breastcls.scoring.result as scoring_result
from breastcls.data.breastmnist import BreastMNISTDataModule
from breastcls.train import train
from tests.conftest import FAST, compose_train


@pytest.fixture(scope="module")
def scored_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("scored")
    excluded = out / "flagged.csv"
    pd.DataFrame({"index": [0, 1, 2, 3, 4]}).to_csv(excluded, index=False)
    cfg = compose_train([*FAST, f"paths.data_dir={data_dir}", "logger=csv",
                         "evaluation.threshold.method=fbeta", "evaluation.gradcam=2",
                         "evaluation.bootstrap.n_resamples=300",
                         f"evaluation.exclude_test={excluded}"], out)
    return out, train(cfg)


def test_threshold_is_chosen_before_test_is_read(data_dir, monkeypatch, tmp_path):
    events: list[str] = []
    loader = BreastMNISTDataModule.eval_dataloader
    choose = scoring_result.select_threshold

    def logged_loader(self, split):
        events.append(f"load {split}")
        return loader(self, split)

    def logged_choice(*args, **kwargs):
        events.append("choose")
        return choose(*args, **kwargs)

    monkeypatch.setattr(BreastMNISTDataModule, "eval_dataloader", logged_loader)
    monkeypatch.setattr(scoring_result, "select_threshold", logged_choice)
    cfg = compose_train([*FAST, f"paths.data_dir={data_dir}", "logger=none",
                         "evaluation.threshold.method=youden", "evaluation.plots=false",
                         "evaluation.bootstrap.n_resamples=0", "eval_splits=[test,train]"],
                        tmp_path)
    train(cfg)
    assert events == ["load val", "choose", "load test", "load train"]


def test_threshold_is_stored_and_applied(scored_run):
    out, flat = scored_run
    metrics = json.loads((out / "metrics.json").read_text())
    choice = metrics["threshold_selection"]
    assert choice["method"] == "f2" and metrics["threshold"] == choice["threshold"]
    assert metrics["val"]["f2"] == pytest.approx(choice["criterion"], abs=1e-6)
    assert "test@0.5" in metrics  # reports at 0.5 as well
    checkpoint = torch.load(metrics["checkpoint"], weights_only=True)
    assert checkpoint["hyper_parameters"]["threshold"] == choice["threshold"]
    assert checkpoint["hyper_parameters"]["tta"] == []  # chosen on single-view probabilities
    assert flat["test/f2"] == metrics["test"]["f2"]


def test_intervals_hold_the_point_estimates(scored_run):
    metrics = json.loads((scored_run[0] / "metrics.json").read_text())
    assert metrics["bootstrap"]["n_resamples"] == 300
    for split in ("train", "val", "test", "test_dedup"):
        for name, ci in metrics[f"{split}_ci"].items():
            assert ci["low"] <= ci["value"] <= ci["high"], (split, name)
            assert ci["value"] == pytest.approx(metrics[split][name], abs=1e-6)


def test_dedup_split_drops_the_listed_images(scored_run):
    out = scored_run[0]
    metrics = json.loads((out / "metrics.json").read_text())
    assert sum(map(sum, metrics["confusion_matrix"]["test_dedup"])) == 156 - 5
    rows = pd.read_csv(out / "test_dedup_predictions.csv")
    assert rows["index"].min() == 5


def test_plots_are_pngs(scored_run):
    plots = list((scored_run[0] / "plots").glob("*.png"))
    names = {p.stem for p in plots}
    assert {"test_roc", "test_pr", "test_confusion", "test_calibration", "test_mistakes",
            "training_curves", "test_gradcam"} <= names
    for path in plots:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
