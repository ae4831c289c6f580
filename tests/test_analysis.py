"""Bootstrap intervals, threshold selection, duplicate audit, plots, Grad-CAM and the report."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import fbeta_score, roc_curve

from breastcls.analysis.bootstrap import binary_metrics, bootstrap_ci
from breastcls.analysis.duplicates import run_audit
from breastcls.analysis.gradcam import gradcam_figure, save_gradcam
from breastcls.analysis.plots import confident_mistakes, save_all
from breastcls.analysis.references import MEDMNIST_BREASTMNIST
from breastcls.analysis.thresholds import (
    accuracy_threshold,
    candidate_thresholds,
    fbeta_threshold,
    select_threshold,
    sensitivity_threshold,
    youden_threshold,
)
from breastcls.audit import audit
from breastcls.data.arrays import ArrayDataset, build_transform
from breastcls.metrics import compute_metrics
from breastcls.models.classifier import ImageClassifier
from breastcls.report import to_markdown, write_report
from breastcls.scoring.predictions import Predictions, read_predictions_csv
from tests.conftest import compose_train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CLASS_NAMES = ["malignant", "normal_benign"]


def synthetic_predictions(n: int, seed: int = 0, separation: float = 1.0,
                          decimals: int | None = None) -> Predictions:
    """Binary predictions with malignant (label 0) as the positive class, ~27% positives."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) > 0.27).astype(np.int64)
    logit = rng.normal(size=n) + separation * (labels == 0)
    p = 1 / (1 + np.exp(-logit))
    if decimals is not None:
        p = np.round(p, decimals)  # ties
    probs = torch.tensor(np.stack([p, 1 - p], axis=1), dtype=torch.float32)
    return Predictions(probs, torch.from_numpy(labels), torch.arange(n))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5_000, f"{path.name} is only {len(data)} bytes"
    with Image.open(path) as im:
        im.verify()


# -- bootstrap ---------------------------------------------------------------------------------

@pytest.mark.parametrize("decimals", [None, 1])
def test_vectorised_metrics_match_compute_metrics(decimals):
    pred = synthetic_predictions(80, seed=3, decimals=decimals)
    for threshold in (0.3, 0.5):
        expected = compute_metrics(pred.probs, pred.labels, 0, threshold)
        got = binary_metrics(pred.probs[:, 0].numpy()[None], (pred.labels == 0).numpy()[None],
                             threshold)
        for name, value in expected.items():
            assert got[name][0] == pytest.approx(value, abs=1e-6), name


def test_bootstrap_ci_contains_estimate_and_is_fast():
    pred = synthetic_predictions(156, seed=1)
    start = time.perf_counter()
    ci = bootstrap_ci(pred.probs, pred.labels, positive_class=0, n_resamples=1000, seed=0)
    assert time.perf_counter() - start < 10
    expected = pred.metrics(0)
    assert set(ci) == set(expected)
    for name, c in ci.items():
        assert c["value"] == pytest.approx(expected[name], abs=1e-6)
        assert c["low"] <= c["value"] <= c["high"], name
        assert c["low"] >= 0 and c["high"] <= 1


def test_bootstrap_ci_narrows_with_more_samples_and_is_seeded():
    small, large = synthetic_predictions(100, seed=2), synthetic_predictions(2000, seed=2)
    kw = {"positive_class": 0, "n_resamples": 1000, "seed": 7}
    ci_small = bootstrap_ci(small.probs, small.labels, **kw)
    ci_large = bootstrap_ci(large.probs, large.labels, **kw)
    for name in ("auc", "acc", "f1"):
        width = {k: c[name]["high"] - c[name]["low"] for k, c in (("s", ci_small), ("l", ci_large))}
        assert width["l"] < width["s"] / 2, name
    assert bootstrap_ci(small.probs, small.labels, **kw) == ci_small
    assert bootstrap_ci(small.probs, small.labels, **{**kw, "seed": 8}) != ci_small


# -- thresholds --------------------------------------------------------------------------------

def threshold_data(seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    pred = synthetic_predictions(300, seed=seed, separation=1.5, decimals=decimals)
    return pred.probs[:, 0].numpy().astype(np.float64), (pred.labels == 0).numpy().astype(int)


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 2)])
@pytest.mark.parametrize("beta", [1.0, 2.0])
def test_fbeta_threshold_matches_brute_force(seed, decimals, beta):
    scores, targets = threshold_data(seed, decimals)
    best = max(fbeta_score(targets, scores > t, beta=beta, zero_division=0)
               for t in np.unique(np.r_[scores, -1.0]))  # every distinct decision
    choice = fbeta_threshold(scores, targets, beta)
    assert choice.criterion == pytest.approx(best)
    assert fbeta_score(targets, scores > choice.threshold, beta=beta) == pytest.approx(best)


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 2)])
def test_youden_threshold_matches_sklearn(seed, decimals):
    scores, targets = threshold_data(seed, decimals)
    fpr, tpr, _ = roc_curve(targets, scores)
    choice = youden_threshold(scores, targets)
    assert choice.criterion == pytest.approx(np.max(tpr - fpr))
    pred = scores > choice.threshold
    sens, spec = pred[targets == 1].mean(), (~pred[targets == 0]).mean()
    assert sens + spec - 1 == pytest.approx(np.max(tpr - fpr))
    assert (choice.sensitivity, choice.specificity) == pytest.approx((sens, spec))


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 2)])
@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 1.0])
def test_sensitivity_threshold_is_highest_reaching_target(seed, decimals, target):
    scores, targets = threshold_data(seed, decimals)
    choice = sensitivity_threshold(scores, targets, target)
    assert (scores[targets == 1] > choice.threshold).mean() >= target
    # sklearn's rule is score >= t: the highest of its thresholds reaching the target must make
    # exactly the same calls as ours.
    _, tpr, sk_thresholds = roc_curve(targets, scores, drop_intermediate=False)
    sk_best = sk_thresholds[np.flatnonzero(tpr >= target)[0]]
    np.testing.assert_array_equal(scores > choice.threshold, scores >= sk_best)
    # The next candidate above misses the target.
    candidates = candidate_thresholds(scores)
    higher = candidates[candidates > choice.threshold]
    if len(higher):
        assert (scores[targets == 1] > higher[0]).mean() < target


@pytest.mark.parametrize(("seed", "decimals"), [(0, None), (1, 2)])
def test_accuracy_threshold_matches_brute_force(seed, decimals):
    scores, targets = threshold_data(seed, decimals)
    best = max(((scores > t) == targets).mean() for t in np.unique(np.r_[scores, -1.0]))
    choice = accuracy_threshold(scores, targets)
    assert choice.criterion == pytest.approx(best)
    assert ((scores > choice.threshold) == targets).mean() == pytest.approx(best)


def test_select_threshold_dispatches_and_rejects_unknown():
    scores, targets = threshold_data(0)
    assert select_threshold(scores, targets, "youden") == youden_threshold(scores, targets)
    assert select_threshold(scores, targets, "accuracy") == accuracy_threshold(scores, targets)
    assert select_threshold(scores, targets, "fbeta", beta=2).method == "f2"
    assert 0 <= select_threshold(scores, targets, "sensitivity").threshold <= 1
    with pytest.raises(ValueError, match="unknown threshold method"):
        select_threshold(scores, targets, "median")
    with pytest.raises(ValueError, match="single class"):
        youden_threshold(scores, np.ones_like(targets))


# -- duplicate audit ---------------------------------------------------------------------------

def distinct_images(n: int, seed: int) -> np.ndarray:
    """Smooth random images: blurred noise upsampled from 7x7, like low-resolution scans."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((n, 7, 7)).astype(np.float32)
    smooth = np.stack([np.asarray(Image.fromarray(c).resize((28, 28), Image.Resampling.BICUBIC))
                       for c in coarse])
    return (smooth.clip(0, 1) * 255).astype(np.uint8)


def test_audit_finds_planted_duplicates():
    train, test = distinct_images(60, seed=0), distinct_images(20, seed=1)
    rng = np.random.default_rng(2)
    test[3] = train[10]  # exact copy
    noisy = train[20].astype(np.float32) * 0.9 + 12 + rng.normal(0, 3, (28, 28))
    test[7] = noisy.clip(0, 255).astype(np.uint8)  # darker, shifted and noisy copy
    train[40] = train[5]  # duplicate within train
    splits = {"train": (train, np.zeros(60, dtype=int)),
              "test": (test, np.r_[np.zeros(7, int), 1, np.zeros(12, int)])}
    result = run_audit(splits, references=("train",))
    pairs = {(r.split_a, r.index_a, r.split_b, r.index_b): r for r in result.pairs.itertuples()}
    assert set(pairs) == {("train", 10, "test", 3), ("train", 20, "test", 7),
                          ("train", 5, "train", 40)}
    assert pairs["train", 10, "test", 3].kind == "exact"
    assert pairs["train", 20, "test", 7].kind == "near"
    assert pairs["train", 20, "test", 7].labels_disagree
    assert result.flagged["index"].tolist() == [3, 7]
    assert result.flagged["any_label_disagrees"].tolist() == [False, True]
    assert result.counts()["train-test"] == {"exact": 1, "near": 1, "labels_disagree": 1}


def test_audit_finds_nothing_among_distinct_images():
    images = distinct_images(120, seed=5)
    result = run_audit({"train": (images[:80], np.zeros(80, int)),
                        "val": (images[80:100], np.zeros(20, int)),
                        "test": (images[100:], np.zeros(20, int))})
    assert result.pairs.empty and result.flagged.empty


def test_audit_on_real_breastmnist(data_dir, tmp_path):
    cfg = compose_train([f"paths.data_dir={data_dir}"], tmp_path, config_name="audit")
    result = audit(cfg)
    pairs = pd.read_csv(tmp_path / "pairs.csv")
    flagged = pd.read_csv(tmp_path / "test_with_train_duplicate.csv")
    assert len(pairs) == len(result.pairs) > 0
    assert len(flagged) == len(result.flagged)
    # The official split holds at least one pixel-identical train/test pair.
    assert ((pairs.kind == "exact") & (pairs.split_a == "train") & (pairs.split_b == "test")).any()
    assert set(flagged["index"]) <= set(range(156))


# -- plots and Grad-CAM ------------------------------------------------------------------------

def test_save_all_writes_valid_pngs(tmp_path):
    pred = synthetic_predictions(156, seed=4)
    images = np.random.default_rng(0).integers(0, 255, (156, 28, 28), dtype=np.uint8)
    metrics_csv = tmp_path / "metrics.csv"
    rows = []
    for epoch in range(4):
        rows += [{"epoch": epoch, "step": epoch * 10 + 9, "train/loss": 1 / (epoch + 1)},
                 {"epoch": epoch, "step": epoch * 10 + 9, "val/loss": 1.2 / (epoch + 1),
                  "val/auc_acc_mean": 0.6 + 0.05 * epoch}]
    pd.DataFrame(rows).to_csv(metrics_csv, index=False)
    paths = save_all(tmp_path, {"test": pred}, CLASS_NAMES, 0, 0.5, {"test": images},
                     metrics_csv)
    names = {p.name for p in paths}
    assert names == {"test_roc.png", "test_pr.png", "test_confusion.png", "test_calibration.png",
                     "test_mistakes.png", "training_curves.png"}
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert_png(path)


def test_predictions_csv_round_trip_and_mistakes(tmp_path):
    pred = synthetic_predictions(50, seed=6)
    pred.to_csv(tmp_path / "test_predictions.csv", CLASS_NAMES, 0)
    back, names = read_predictions_csv(tmp_path / "test_predictions.csv")
    assert names == CLASS_NAMES
    torch.testing.assert_close(back.probs, pred.probs, atol=1e-7, rtol=0)
    rows = confident_mistakes(pred, 0, limit=None)
    wrong = (pred.probs[:, 0] > 0.5) != (pred.labels == 0)
    assert sorted(rows) == torch.nonzero(wrong).flatten().tolist()
    preds = (pred.probs[:, 0] <= 0.5).long()
    confidence = pred.probs[rows, preds[rows]]
    assert torch.all(confidence[:-1] >= confidence[1:])


def test_gradcam_panels(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone={"_target_": "breastcls.models.resnet.build_resnet", "arch": "resnet18",
                  "in_channels": 1},
        optimizer={"_target_": "torch.optim.SGD", "lr": 0.1})
    images = torch.from_numpy(distinct_images(6, seed=9)).unsqueeze(1)
    dataset = ArrayDataset(images, torch.tensor([0, 1, 0, 1, 0, 1]),
                           build_transform(None, [0.5], [0.5], 1))
    fig = gradcam_figure(model, dataset, [0, 2, 5], CLASS_NAMES, 0)
    assert sum(bool(ax.images) for ax in fig.axes) == 6  # image + overlay per index
    path = save_gradcam(tmp_path / "gradcam.png", model, dataset, [1, 3], CLASS_NAMES, 0,
                        target="positive")
    assert_png(path)


# -- report ------------------------------------------------------------------------------------

def test_report_holds_given_rows(tmp_path):
    metrics = {"auc": 0.88, "acc": 0.84, "auprc": 0.7, "recall": 0.6, "f1": 0.65,
               "precision": 0.7, "f2": 0.62, "specificity": 0.9, "balanced_acc": 0.75}
    run_a = tmp_path / "runs" / "a"
    run_b = tmp_path / "runs" / "b"
    for run in (run_a, run_b):
        run.mkdir(parents=True)
    (run_a / "metrics.json").write_text(json.dumps({"test": metrics}))
    ci = {m: {"value": v, "low": v - 0.05, "high": v + 0.03} for m, v in metrics.items()}
    (run_b / "metrics.json").write_text(json.dumps({"test": {**metrics, "auc": 0.9},
                                                    "test_ci": {**ci, "auc": {"value": 0.9,
                                                                              "low": 0.85,
                                                                              "high": 0.94}}}))
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    pd.DataFrame({"split": ["test", "test", "val"], "metric": ["auc", "acc", "auc"],
                  "count": [5, 5, 5], "mean": [0.87, 0.83, 0.8], "std": [0.01, 0.02, 0.03],
                  "min": [0.85, 0.8, 0.75], "max": [0.89, 0.86, 0.84]}).to_csv(
        sweep / "summary.csv", index=False)
    frame = write_report([tmp_path / "runs", sweep, tmp_path / "missing"], tmp_path / "out")
    names = frame["name"].tolist()
    assert names[:3] == ["runs/a", "runs/b", "sweep (mean of 5)"]
    assert names[3:] == list(MEDMNIST_BREASTMNIST)
    row_b = frame.set_index("name").loc["runs/b"]
    assert (row_b["auc"], row_b["auc_low"], row_b["auc_high"]) == (0.9, 0.85, 0.94)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "0.900 [0.850, 0.940]" in markdown and "0.870 ± 0.010" in markdown
    assert "| ResNet-18 (28) | 0.901 | 0.863 |" in markdown
    assert pd.read_csv(tmp_path / "out" / "report.csv")["name"].tolist() == names
    assert to_markdown(frame).count("\n|") == len(names) + 1


def test_patient_bootstrap_draws_whole_patients():
    from breastcls.analysis.bootstrap import bootstrap_ci, group_resamples

    groups = np.repeat(["p0", "p1", "p2", "p3"], [3, 1, 2, 4])
    for rows in group_resamples(groups, 20, seed=1):
        drawn = pd.Series(groups[rows]).value_counts()
        # every drawn patient comes whole (a multiple of its size), and as many draws as patients
        sizes = pd.Series(groups).value_counts()
        assert ((drawn % sizes[drawn.index]) == 0).all()
        assert (drawn / sizes[drawn.index]).sum() == 4
    # Errors cluster by patient (every 4th patient all wrong): patches are not independent, and
    # only the patient bootstrap's interval shows how uncertain accuracy then is.
    labels = np.tile([0, 1], 200)
    patients = np.repeat(np.arange(20), 20)
    right = patients % 4 != 0
    p1 = np.where(right == (labels == 1), 0.8, 0.2)
    probs = np.stack([1 - p1, p1], axis=1)
    by_patch = bootstrap_ci(probs, labels, 1, n_resamples=300)
    by_patient = bootstrap_ci(probs, labels, 1, n_resamples=300, groups=patients.astype(str))
    assert by_patient["acc"]["value"] == by_patch["acc"]["value"] == pytest.approx(0.75)
    width = {k: v["acc"]["high"] - v["acc"]["low"] for k, v in
             (("patch", by_patch), ("patient", by_patient))}
    assert width["patient"] > 2.5 * width["patch"]
    assert by_patient["npv"]["low"] <= by_patient["npv"]["value"] <= by_patient["npv"]["high"]


def test_idc_table_has_the_study_columns(tmp_path):
    run = tmp_path / "runs" / "xception"
    run.mkdir(parents=True)
    metrics = {"acc": 0.85, "precision": 0.7, "npv": 0.92, "specificity": 0.88, "recall": 0.8,
               "balanced_acc": 0.84, "f1": 0.75, "auc": 0.9}
    ci = {m: {"value": v, "low": v - 0.04, "high": v + 0.04} for m, v in metrics.items()}
    (run / "metrics.json").write_text(json.dumps({"test": metrics, "test_ci": ci,
                                                  "parameters": 20_811_050,
                                                  "epoch_seconds": 312.4}))
    cfg = compose_train(["table=idc", f"inputs=[{tmp_path / 'runs'}]",
                         f"output_dir={tmp_path / 'out'}"], tmp_path, "report")
    frame = write_report(cfg.inputs, cfg.output_dir, cfg.split, cfg.table.reference,
                         list(cfg.table.metrics), cfg.table.costs)
    markdown = (tmp_path / "out" / "report.md").read_text()
    header = markdown.splitlines()[0]
    assert header == ("| run | ACC | Prec | NPV | Spec | Recall | BalACC | F1 | Params | "
                      "s/epoch |")
    assert "| runs/xception | 0.850 [0.810, 0.890] |" in markdown
    assert "20.81M | 312.4 |" in markdown
    assert frame["name"].tolist()[1:] == ["Xception, class weights (study)",
                                          "AlexNet patches (Janowczyk 2016)"]
    assert "Janowczyk & Madabhushi" in markdown and "auc" not in frame.columns
