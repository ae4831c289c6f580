"""Stacking: the meta-learner is fitted on val before test is read, equals scikit-learn's fit on
the same inputs, moves the threshold to the F-beta optimum, and refuses mismatched members."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import fbeta_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC

import breastcls.ensembles.members as members_module
import breastcls.stacking as stacking_module
from breastcls.analysis.thresholds import candidate_thresholds
from breastcls.data.readers import DataError
from breastcls.ensembles.meta_learners import DropoutHeadClassifier
from breastcls.stacking import held_out_rows, stack
from tests.conftest import FAST, compose_train

NAMES = ["malignant", "benign"]
SIZES = {"train": 40, "val": 60, "test": 45}


def labels_of(split: str) -> np.ndarray:
    return np.random.default_rng(SIZES[split]).permutation(np.arange(SIZES[split]) % 2)


def member(folder: Path, seed: int, rows: dict[str, range] | None = None,
           names: list[str] = NAMES) -> Path:
    """A finished run as training writes it: metrics.json and <split>_predictions.csv with
    sample ids; informative but noisy malignant probabilities."""
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(
        {"class_names": names, "positive_class": names[0], "threshold": 0.5}))
    rng = np.random.default_rng(seed)
    for split, samples in (rows or {s: range(n) for s, n in SIZES.items()}).items():
        index = np.asarray(samples)
        labels = labels_of(split)[index]
        p = np.clip(0.35 + 0.3 * (labels == 0) + rng.normal(0, 0.2, len(index)), 0.01, 0.99)
        pd.DataFrame({"index": index, "sample_id": [f"{split}_{i}" for i in index],
                      "group": [f"{split}_{i}" for i in index], "label": labels,
                      f"prob_{names[0]}": p, f"prob_{names[1]}": 1 - p,
                      "pred": (p <= 0.5).astype(int)}).to_csv(
            folder / f"{split}_predictions.csv", index=False)
    return folder


def members_csv(runs: list[Path], split: str) -> tuple[np.ndarray, np.ndarray]:
    """The meta-learner's inputs as scikit-learn would get them: one malignant column per
    member, at the float32 precision prediction files are read with."""
    frames = [pd.read_csv(r / f"{split}_predictions.csv") for r in runs]
    inputs = np.stack([f["prob_malignant"] for f in frames], 1).astype(np.float32)
    return inputs.astype(np.float64), frames[0]["label"].to_numpy()


def run_stacking(tmp_path: Path, runs: list[Path], *overrides: str):
    listed = ",".join(str(r) for r in runs)
    cfg = compose_train([f"runs=[{listed}]", "evaluation.plots=false",
                         "evaluation.bootstrap.n_resamples=0", *overrides],
                        tmp_path / "out", "stacking")
    return stack(cfg)


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [member(tmp_path / "runs" / str(i), i) for i in range(3)]


def stacked_probs(tmp_path: Path, split: str) -> np.ndarray:
    return pd.read_csv(tmp_path / "out" / "stacking" / f"{split}_predictions.csv")[
        "prob_malignant"].to_numpy()


@pytest.mark.parametrize(("choice", "estimator"), [
    ("logistic", LogisticRegression(C=1.0, max_iter=1000)),
    ("svm", CalibratedClassifierCV(SVC(C=1.0), cv=5, ensemble=False)),
    ("linear_svm", CalibratedClassifierCV(LinearSVC(max_iter=10000, random_state=0), cv=5)),
])
def test_stacking_equals_scikit_learn(tmp_path, runs, choice, estimator):
    run_stacking(tmp_path, runs, f"stacking={choice}", "evaluation.threshold.method=null")
    x_val, y_val = members_csv(runs, "val")
    x_test, _ = members_csv(runs, "test")
    expected = make_pipeline(StandardScaler(), estimator).fit(x_val, y_val)
    # Label 0 (malignant) is the positive class: scikit-learn's first probability column.
    assert np.allclose(stacked_probs(tmp_path, "test"), expected.predict_proba(x_test)[:, 0],
                       atol=1e-6)
    assert np.allclose(stacked_probs(tmp_path, "val"), expected.predict_proba(x_val)[:, 0],
                       atol=1e-6)


def test_average_and_stacking_side_by_side(tmp_path, runs):
    results = run_stacking(tmp_path, runs)
    out = tmp_path / "out"
    comparison = pd.read_csv(out / "comparison.csv")
    assert set(zip(comparison.method, comparison.split, strict=True)) >= {
        ("average", "test"), ("stacking", "test"), ("average", "test@0.5")}
    averaged = pd.read_csv(out / "average" / "test_predictions.csv")
    assert np.allclose(averaged["prob_malignant"], members_csv(runs, "test")[0].mean(1),
                       atol=1e-6)
    saved = json.loads((out / "stacking" / "metrics.json").read_text())
    assert saved["method"] == "stacking" and saved["meta_learner"]["name"] == "logistic"
    assert saved["fit_samples"] == SIZES["val"] and len(saved["members"]) == 3
    row = comparison[(comparison.method == "stacking") & (comparison.split == "test")]
    assert row["auc"].item() == pytest.approx(results["stacking"].metrics["test"]["auc"])


@pytest.mark.parametrize("threshold_on", ["fit", "held_out"])
def test_meta_learner_is_fitted_before_test_is_read(tmp_path, runs, monkeypatch, threshold_on):
    events: list[str] = []
    read, build = members_module.read_predictions_csv, stacking_module.build_meta_learner
    choose = stacking_module.choose_threshold

    def logged_read(path):
        events.append(f"read {Path(path).stem.removesuffix('_predictions')}")
        return read(path)

    def logged_build(settings):
        estimator = build(settings)
        fit = estimator.fit

        def logged_fit(*args, **kwargs):
            events.append("fit")
            return fit(*args, **kwargs)

        estimator.fit = logged_fit
        return estimator

    def logged_choice(*args, **kwargs):
        events.append("choose")
        return choose(*args, **kwargs)

    monkeypatch.setattr(members_module, "read_predictions_csv", logged_read)
    monkeypatch.setattr(stacking_module, "build_meta_learner", logged_build)
    monkeypatch.setattr(stacking_module, "choose_threshold", logged_choice)
    run_stacking(tmp_path, runs, f"threshold_on={threshold_on}", "splits=[test,train]")
    first_test = events.index("read test")
    assert events[:4] == ["read val"] * 3 + ["fit"]
    assert events.index("choose") < first_test  # the stacking threshold, then the average's
    assert events[first_test:] == ["read test"] * 3 + ["read train"] * 3


def test_threshold_is_the_f2_optimum_of_the_fit_data(tmp_path, runs):
    result = run_stacking(tmp_path, runs)["stacking"]
    val = pd.read_csv(tmp_path / "out" / "stacking" / "val_predictions.csv")
    scores, positive = val["prob_malignant"].to_numpy(), (val["label"] == 0).to_numpy()
    candidates = candidate_thresholds(scores.astype(np.float32))
    f2 = [fbeta_score(positive, scores > t, beta=2) for t in candidates]
    choice = result.info["threshold_selection"]
    assert choice["method"] == "f2"
    assert choice["criterion"] == pytest.approx(max(f2), abs=1e-6)
    assert result.metrics["val"]["f2"] == pytest.approx(max(f2), abs=1e-5)
    assert fbeta_score(positive, scores > result.info["threshold"], beta=2) == pytest.approx(
        max(f2), abs=1e-5)


def test_threshold_on_a_held_out_part_with_beta_from_config(tmp_path, runs):
    result = run_stacking(tmp_path, runs, "threshold_on=held_out", "held_out_fraction=0.3",
                          "evaluation.threshold.beta=1")["stacking"]
    x_val, y_val = members_csv(runs, "val")
    groups = pd.read_csv(runs[0] / "val_predictions.csv")["group"].to_numpy()
    fit, held = held_out_rows(y_val, groups, 0.3, seed=0)
    assert not set(fit) & set(held) and len(fit) + len(held) == len(y_val)
    meta = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        x_val[fit], y_val[fit])
    scores = meta.predict_proba(x_val[held])[:, 0]
    f1 = max(fbeta_score(y_val[held] == 0, scores > t, beta=1)
             for t in candidate_thresholds(scores.astype(np.float32)))
    choice = result.info["threshold_selection"]
    assert choice["method"] == "f1" and choice["criterion"] == pytest.approx(f1, abs=1e-6)
    assert result.info["fit_samples"] == len(fit) and result.info["threshold_samples"] == len(
        held)


@pytest.fixture
def one_thread():
    """Full-batch steps this small only wait on a second thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_dropout_head_is_a_repeatable_scikit_learn_classifier(one_thread):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 3))
    y = (x[:, 0] + 0.3 * rng.normal(size=80) > 0).astype(int)
    head = DropoutHeadClassifier(dropout=0.2, epochs=150, class_weight="balanced")
    probs = cross_val_predict(head, x, y, cv=4, method="predict_proba")  # clones it per fold
    assert ((probs[:, 1] > 0.5) == y).mean() > 0.85
    again = DropoutHeadClassifier(dropout=0.2, epochs=150, class_weight="balanced")
    assert np.array_equal(head.fit(x, y).predict_proba(x), again.fit(x, y).predict_proba(x))


def test_out_of_fold_members_from_fold_folders(tmp_path):
    """members_are=folders: each family's two CV folds pool into one member: val out-of-fold
    (each fold scored the half it held out), test averaged over the fold models."""
    folders = [tmp_path / f"family{family}" for family in range(2)]
    for family, folder in enumerate(folders):
        for fold in range(2):
            member(folder / str(fold), 10 * family + fold,
                   rows={"val": range(30 * fold, 30 * fold + 30), "test": range(45)})
    result = run_stacking(tmp_path, folders, "members_are=folders")["stacking"]
    assert result.info["fit_samples"] == SIZES["val"]
    assert result.predictions["test"].index.tolist() == list(range(SIZES["test"]))


def test_members_with_other_samples_are_refused(tmp_path, runs):
    short = member(tmp_path / "short", 7, rows={"val": range(60), "test": range(44)})
    with pytest.raises(DataError,
                       match=r"different test samples: .*short has 44, .* lacks 1 .*test_44"):
        run_stacking(tmp_path, [*runs[:2], short])
    relabelled = member(tmp_path / "relabelled", 8)
    frame = pd.read_csv(relabelled / "val_predictions.csv")
    frame.loc[3, "label"] = 1 - frame.loc[3, "label"]
    frame.to_csv(relabelled / "val_predictions.csv", index=False)
    with pytest.raises(DataError, match=r"relabelled labels val sample_id 'val_3'"):
        run_stacking(tmp_path, [runs[0], relabelled])
    other_task = member(tmp_path / "other", 9, names=["mass", "calcification"])
    with pytest.raises(DataError, match=r"stack runs of one task|different positive classes"):
        run_stacking(tmp_path, [runs[0], other_task])
    with pytest.raises(DataError, match="at least 2"):
        run_stacking(tmp_path, runs[:1])


def test_settings_are_checked_before_members_are_read(tmp_path, runs):
    with pytest.raises(DataError, match=r"threshold_on='oops'; choose one of"):
        run_stacking(tmp_path, runs, "threshold_on=oops")
    with pytest.raises(DataError, match=r"evaluation.threshold.method='f3'"):
        run_stacking(tmp_path, runs, "evaluation.threshold.method=f3")
    with pytest.raises(DataError, match=r"inputs='logits'"):
        run_stacking(tmp_path, runs, "inputs=logits")
    with pytest.raises(DataError, match="predict_proba"):
        run_stacking(tmp_path, runs, "stacking=svm",
                     "stacking.estimator._target_=sklearn.svm.SVC", "~stacking.estimator.method",
                     "~stacking.estimator.cv", "~stacking.estimator.ensemble",
                     "~stacking.estimator.estimator")


def test_features_input_reads_each_members_checkpoint(tmp_path, runs, monkeypatch):
    """The meta-learner reads the members' penultimate features (breastcls.features), val
    first; the average still reads their probabilities."""
    calls: list[tuple[str, str]] = []
    rng = np.random.default_rng(0)

    def checkpoint_features(ckpt_path, splits, data_overrides=None, tta=None):
        (split,) = splits
        calls.append((Path(ckpt_path).parents[1].name, split))
        frame = pd.read_csv(Path(ckpt_path).parents[1] / f"{split}_predictions.csv")
        features = pd.DataFrame(rng.normal(size=(len(frame), 4))).add_prefix("f")
        features["f0"] += 2 * (frame["label"] == 0)
        return {split: pd.concat([frame[["sample_id", "group", "label", "index"]], features],
                                 axis=1).sample(frac=1, random_state=0)}

    monkeypatch.setitem(sys.modules, "breastcls.features",
                        types.SimpleNamespace(checkpoint_features=checkpoint_features))
    for run in runs:
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "epoch_003.ckpt").write_bytes(b"")
    result = run_stacking(tmp_path, runs, "inputs=features")["stacking"]
    assert calls == [(r.name, "val") for r in runs] + [(r.name, "test") for r in runs]
    assert result.info["meta_inputs"] == 12 and result.metrics["test"]["auc"] > 0.8


@pytest.fixture(scope="module")
def real_member(data_dir, tmp_path_factory) -> Path:
    """One tiny BreastMNIST run, trained and scored as `breastcls.train` does."""
    from breastcls.train import train

    out = tmp_path_factory.mktemp("real_member")
    train(compose_train([*FAST, f"paths.data_dir={data_dir}", "logger=none",
                         "evaluation.plots=false", "evaluation.bootstrap.n_resamples=0"], out))
    return out


def test_stacks_a_real_run(tmp_path, real_member):
    """A run as training writes it stacks with another over the same images (its copy with
    other probabilities), on their probabilities and on their penultimate features."""
    other = tmp_path / "other"
    shutil.copytree(real_member, other)
    rng = np.random.default_rng(0)
    for split in ("val", "test"):
        frame = pd.read_csv(real_member / f"{split}_predictions.csv")
        frame["prob_malignant"] = rng.uniform(size=len(frame))
        frame["prob_normal_benign"] = 1 - frame["prob_malignant"]
        frame.sample(frac=1, random_state=0).to_csv(other / f"{split}_predictions.csv",
                                                    index=False)
    result = run_stacking(tmp_path, [real_member, other], "evaluation.plots=true")["stacking"]
    assert result.info["positive_class"] == "malignant"
    assert len(result.predictions["test"].labels) == 156
    assert (tmp_path / "out" / "stacking" / "plots" / "test_roc.png").is_file()
    features = run_stacking(tmp_path, [real_member, other], "inputs=features",
                            "threshold_on=cross_val")["stacking"]
    assert features.info["meta_inputs"] == 2 * 512  # ResNet-18's pooled features, each member
    assert features.predictions["test"].sample_ids == result.predictions["test"].sample_ids


def test_multiclass_members_stack_every_class_probability(tmp_path):
    classes = ["benign_mass", "malignant_mass", "benign_calc", "malignant_calc"]
    labels = np.arange(48) % 4
    rng = np.random.default_rng(0)
    runs = []
    for m in range(2):
        folder = tmp_path / str(m)
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"class_names": classes}))
        for split in ("val", "test"):
            logits = 2 * np.eye(4)[labels] + rng.normal(size=(48, 4))
            probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
            frame = pd.DataFrame(probs, columns=[f"prob_{c}" for c in classes])
            frame.insert(0, "label", labels)
            frame.insert(0, "index", range(48))
            frame.to_csv(folder / f"{split}_predictions.csv", index=False)
        runs.append(folder)
    with pytest.raises(DataError, match=r"set evaluation.threshold.method=null"):
        run_stacking(tmp_path, runs)
    result = run_stacking(tmp_path, runs, "evaluation.threshold.method=null")["stacking"]
    inputs = {s: np.hstack([pd.read_csv(r / f"{s}_predictions.csv")[
        [f"prob_{c}" for c in classes]].to_numpy(np.float32) for r in runs]).astype(np.float64)
        for s in ("val", "test")}
    expected = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(
        inputs["val"], labels).predict_proba(inputs["test"])
    assert result.info["meta_inputs"] == 8 and result.per_class["test"].keys() == set(classes)
    assert np.allclose(result.predictions["test"].probs.numpy(), expected, atol=1e-6)
