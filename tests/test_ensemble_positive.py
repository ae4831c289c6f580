"""The ensemble scores the class its members scored as positive (their metrics.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from breastcls.ensemble import ensemble
from tests.conftest import compose_train

NAMES = ["malignant", "normal_benign"]
LABELS = {"val": [0, 1] * 10, "test": [0, 1, 1] * 10}


def member(folder: Path, positive: str | None, seed: int) -> Path:
    """A finished run as the ensemble reads it: metrics.json and <split>_predictions.csv."""
    folder.mkdir(parents=True)
    info = {"class_names": NAMES, "threshold": 0.5}
    if positive is not None:
        info["positive_class"] = positive
    (folder / "metrics.json").write_text(json.dumps(info))
    rng = np.random.default_rng(seed)
    for split, labels in LABELS.items():
        p = rng.uniform(size=len(labels))
        pd.DataFrame({"index": range(len(labels)), "label": labels, "prob_malignant": p,
                      "prob_normal_benign": 1 - p, "pred": 0}).to_csv(
            folder / f"{split}_predictions.csv", index=False)
    return folder


def run_ensemble(tmp_path: Path, runs: list[Path], *overrides: str):
    listed = ",".join(str(r) for r in runs)
    return ensemble(compose_train([f"runs=[{listed}]", "evaluation.plots=false",
                                   "evaluation.bootstrap.n_resamples=0", *overrides],
                                  tmp_path / "out", "ensemble"))


def test_ensemble_takes_the_members_positive_class(tmp_path):
    runs = [member(tmp_path / str(i), "normal_benign", i) for i in range(2)]
    result = run_ensemble(tmp_path, runs)
    assert result.info["positive_class"] == "normal_benign"
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["positive_class"] == "normal_benign"
    # Recall of the positive class: the share of label-1 images called 1 at 0.5.
    frame = pd.read_csv(tmp_path / "out" / "test_predictions.csv")
    positives = frame[frame.label == 1]
    assert result.metrics["test"]["recall"] == pytest.approx(
        (positives.prob_normal_benign >= 0.5).mean())
    # An explicit setting that agrees (index or name) is accepted.
    assert run_ensemble(tmp_path, runs, "positive_class=1").info["positive_class"] == NAMES[1]
    assert run_ensemble(tmp_path, runs, "positive_class=normal_benign").info[
        "positive_class"] == NAMES[1]


def test_ensemble_refuses_disagreeing_positive_classes(tmp_path):
    runs = [member(tmp_path / "a", "malignant", 0), member(tmp_path / "b", "normal_benign", 1)]
    with pytest.raises(ValueError, match="different positive classes"):
        run_ensemble(tmp_path, runs)
    agreeing = [runs[0], member(tmp_path / "c", "malignant", 2)]
    with pytest.raises(ValueError, match=r"positive_class=1, but the members scored 'malignant'"):
        run_ensemble(tmp_path, agreeing, "positive_class=1")


def test_ensemble_members_without_positive_class(tmp_path):
    runs = [member(tmp_path / str(i), None, i) for i in range(2)]
    assert run_ensemble(tmp_path, runs).info["positive_class"] == "malignant"  # label 0
    assert run_ensemble(tmp_path, runs, "positive_class=1").info["positive_class"] == NAMES[1]
