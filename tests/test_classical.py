"""The classical pipeline on deep features (Table 2 rows): chance on shuffled labels, signal found,
folds equal to scikit-learn's StratifiedGroupKFold, holdout mode, a multirun table, an Optuna
search, and bad feature files as one message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from breastcls.classical import run_classical
from breastcls.classical_report import collect_tables, table_row, write_table
from tests.conftest import compose_train
from tests.test_train import run_cli

ROWS = ("lasso_svm_linear", "lasso_smote_svm_linear", "lasso_svm_rbf", "lasso_smote_svm_rbf",
        "lasso_logistic", "lasso_smote_logistic")


def write_features(folder: Path, n: int = 240, dims: int = 30, signal: float = 0.0,
                   seed: int = 0) -> Path:
    """A features file as ``python -m breastcls.features`` writes it: two images per patient,
    one malignant in three; ``signal`` shifts the first 3 features of malignant rows."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n // 2), 2)
    labels = (rng.random(n // 2) < 1 / 3).astype(int)[groups]
    features = rng.normal(size=(n, dims))
    features[:, :3] += signal * labels[:, None]
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(dims)])
    frame.insert(0, "sample_id", [f"img{i:04d}" for i in range(n)])
    frame.insert(1, "group", [f"patient{g:03d}" for g in groups])
    frame.insert(2, "label", labels)
    frame.insert(3, "split", np.select([groups % 5 == 0, groups % 5 == 1], ["test", "val"],
                                       "train"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "features_resnet50.csv"
    frame.to_csv(path, index=False)
    (folder / "features.json").write_text(json.dumps(
        {"extractors": {"resnet50": {"positive_class": 1}}}))
    return path


def run(features: Path, out: Path, *overrides: str) -> dict[str, float]:
    cfg = compose_train([f"features={features}", "bootstrap.n_resamples=50", *overrides], out,
                        config_name="classical")
    return run_classical(cfg)


@pytest.mark.parametrize("row", ROWS)
def test_shuffled_labels_score_chance(row: str, tmp_path: Path):
    """Labels shuffled across patients: whatever the features say, only a step fitted outside
    the training folds (selection, oversampling, scaling) could score above chance."""
    features = write_features(tmp_path / "features", signal=2.5)
    frame = pd.read_csv(features)
    by_patient = frame.groupby("group")["label"].first()
    shuffled = dict(zip(by_patient.index,
                        np.random.default_rng(1).permutation(by_patient.to_numpy()),
                        strict=True))
    frame["label"] = frame["group"].map(shuffled)
    frame.to_csv(features, index=False)
    metrics = run(features, tmp_path / row, f"classical={row}")
    assert metrics["cv/balanced_acc_mean"] == pytest.approx(0.5, abs=0.1), row


@pytest.mark.parametrize("row", ROWS)
def test_every_table2_row_finds_the_signal(row: str, tmp_path: Path):
    features = write_features(tmp_path / "features", signal=2.5)
    out = tmp_path / "run"
    metrics = run(features, out, f"classical={row}")
    assert metrics["cv/balanced_acc_mean"] > 0.8
    folds = pd.read_csv(out / "folds.csv")
    assert len(folds) == 10
    # Lasso keeps the informative features in every fold.
    assert all({"0", "1", "2"} <= set(kept.split()) for kept in folds["kept"])
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 1 and results["n"].item() == 240


def test_folds_are_stratified_group_kfold_and_out_of_fold(tmp_path: Path):
    features = write_features(tmp_path / "features", signal=1.0)
    out = tmp_path / "run"
    run(features, out, "cv.folds=5", "cv.seed=7")
    predictions = pd.read_csv(out / "cv_predictions.csv", dtype={"group": str})
    frame = pd.read_csv(features, dtype={"group": str})
    assert predictions["sample_id"].tolist() == frame["sample_id"].tolist()
    expected = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=7).split(
        frame, frame["label"], frame["group"])
    for fold, (_, held_out) in enumerate(expected):
        assert set(np.flatnonzero(predictions["fold"] == fold)) == set(held_out)
    # No patient in two folds.
    assert predictions.groupby("group")["fold"].nunique().max() == 1


def test_holdout_fits_train_and_scores_test(tmp_path: Path):
    features = write_features(tmp_path / "features", signal=2.5)
    out = tmp_path / "run"
    metrics = run(features, out, "mode=holdout", "cv.folds=5")
    assert metrics["test/balanced_acc"] > 0.8
    scored = pd.read_csv(out / "test_predictions.csv")
    assert len(scored) == (np.arange(120) % 5 == 0).sum() * 2
    assert len(pd.read_csv(out / "results.csv")) == 2  # the CV row and the test row


def test_multirun_collects_the_table_and_optuna_searches(tmp_path: Path):
    features = write_features(tmp_path / "features", signal=2.5)
    sweep = tmp_path / "sweep"
    run_cli("breastcls.classical", "-m", f"features={features}",
            "classical=lasso_svm_linear,lasso_smote_logistic", "bootstrap.n_resamples=20",
            "cv.folds=3", f"hydra.sweep.dir={sweep}")
    table = pd.read_csv(sweep / "table.csv")
    assert sorted(table["pipeline"]) == ["Lasso + SMOTE + logistic regression",
                                         "Lasso + linear SVM"]
    assert (sweep / "table.md").read_text().startswith("| pipeline |")
    study = tmp_path / "study"
    run_cli("breastcls.classical", "-m", "hparams_search=classical_tpe", f"features={features}",
            "hydra.sweeper.n_trials=3", "bootstrap.n_resamples=20", "cv.folds=3",
            f"hydra.sweep.dir={study}")
    assert (study / "optuna.db").is_file()
    rerun = (study / "best.yaml").read_text().splitlines()[2]
    assert rerun.startswith("# Run it again: python -m breastcls.classical features=")
    assert "classical.selection.alpha=" in rerun  # the best trial's searched values
    assert len(list(study.rglob("metrics.json"))) == 3


def test_collected_table_keeps_each_runs_digits(tmp_path: Path):
    row = table_row("Lasso + linear SVM", "features_resnet50", "test", 12,
                    {"values": {"balanced_acc": 0.8, "acc": 0.75, "auc": 0.9},
                     "ci": {m: {"low": 0.5, "high": 1.0} for m in ("acc", "auc")}}, kept=3.0)
    for run in ("0", "1"):
        (tmp_path / run).mkdir()
        write_table([row], tmp_path / run)
    table = collect_tables(tmp_path)
    assert list(table["balanced acc"]) == ["0.800", "0.800"]  # not shortened to 0.8
    assert "| 0.800 | 0.750 (0.500 to 1.000) |" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize(("edit", "message"), [
    ("missing", "file not found"),
    ("no_labels", "has no label column"),
    ("bad_split", "has no rows of split(s) ['valid']"),
])
def test_bad_feature_files_are_one_message(edit: str, message: str, tmp_path: Path):
    features = write_features(tmp_path / "features")
    overrides = [f"features={features}", f"hydra.run.dir={tmp_path / 'run'}"]
    if edit == "missing":
        overrides[0] = f"features={tmp_path / 'gone.csv'}"
    elif edit == "no_labels":
        pd.read_csv(features).drop(columns="label").to_csv(features, index=False)
    elif edit == "bad_split":
        overrides.append("cv_splits=[train,valid]")
    proc = run_cli("breastcls.classical", *overrides, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
