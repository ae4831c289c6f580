"""The classical pipeline on deep features: scaling → Lasso selection → optional SMOTE → SVM or
logistic regression, as one imbalanced-learn Pipeline, so that cross-validation fits every step
(the scaler's statistics, Lasso's selection, SMOTE's synthetic samples) on training folds only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hydra.utils import instantiate
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline
from rich.progress import track
from sklearn.base import clone
from sklearn.feature_selection import SelectFromModel
from sklearn.linear_model import Lasso
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedGroupKFold

from breastcls.classical_data import FeatureSet
from breastcls.data.readers import DataError


class LassoSelection(SelectFromModel):
    """Features with a non-zero Lasso coefficient; at least ``min_features`` (those with the
    largest coefficients), so that a strong penalty on a training fold never leaves the
    classifier without input."""

    def __init__(self, estimator: Any = None, *, threshold: float | str | None = None,
                 max_features: int | None = None, min_features: int = 1) -> None:
        super().__init__(estimator, threshold=threshold, max_features=max_features)
        self.min_features = min_features

    def _get_support_mask(self) -> np.ndarray:
        mask = super()._get_support_mask()
        if mask.sum() >= self.min_features:
            return mask
        strongest = np.argsort(-np.abs(np.ravel(self.estimator_.coef_)), kind="stable")
        mask[strongest[:self.min_features]] = True
        return mask


def build_pipeline(settings: Mapping[str, Any], seed: int) -> Pipeline:
    """The pipeline of one conf/classical row: ``scaler``, ``selection`` (Lasso ``alpha``;
    null: none), ``smote`` (``k_neighbors``; null: none), ``classifier`` (a ``_target_``)."""
    steps: list[tuple[str, Any]] = [("scale", instantiate(settings["scaler"]))]
    selection = settings.get("selection")
    if selection:
        lasso = Lasso(alpha=selection["alpha"], max_iter=selection.get("max_iter", 10000),
                      random_state=seed)
        steps.append(("select", LassoSelection(lasso, threshold=selection.get("threshold"),
                                               max_features=selection.get("max_features"),
                                               min_features=selection.get("min_features", 1))))
    smote = settings.get("smote")
    if smote:
        steps.append(("smote", SMOTE(k_neighbors=smote["k_neighbors"],
                                     sampling_strategy=smote.get("sampling_strategy", "auto"),
                                     random_state=seed)))
    steps.append(("classify", instantiate(settings["classifier"])))
    return Pipeline(steps)


def cv_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """scikit-learn's seeded, shuffled StratifiedGroupKFold: no group in two folds."""
    n_groups = len(np.unique(groups))
    if folds < 2 or folds > n_groups:
        raise DataError(f"cv.folds={folds}: need 2 to {n_groups} folds (the number of groups)")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels, groups))


@dataclass
class FoldResult:
    """One fold's held-out rows and scores, and which features Lasso kept on its training part."""

    fold: int
    rows: np.ndarray
    balanced_acc: float
    kept: np.ndarray = field(repr=False)


@dataclass
class CrossValidation:
    """Out-of-fold class probabilities (every row scored by the fold model that never saw it)."""

    probs: np.ndarray
    folds: list[FoldResult]

    def summary(self) -> dict[str, float]:
        scores = np.array([f.balanced_acc for f in self.folds])
        kept = np.array([f.kept.sum() for f in self.folds])
        return {"balanced_acc_mean": float(scores.mean()),
                "balanced_acc_std": float(scores.std(ddof=1)) if len(scores) > 1 else 0.0,
                "features_kept_mean": float(kept.mean())}


def fit(pipeline: Pipeline, data: FeatureSet, where: str) -> Pipeline:
    """A clone of ``pipeline`` fitted on ``data``; settings the data cannot take (SMOTE's
    neighbours, too few samples of a class) end in one message naming ``where``."""
    model = clone(pipeline)
    try:
        return model.fit(data.features, data.labels)
    except ValueError as err:
        raise DataError(f"the pipeline cannot be fitted on {where} ({len(data)} rows, class "
                        f"counts {np.bincount(data.labels).tolist()}): {str(err).rstrip('.')}. "
                        "With few samples lower classical.smote.k_neighbors, cv.folds or, for "
                        "an SVM, its calibration folds classical.classifier.cv") from None


def kept_features(model: Pipeline, n_features: int) -> np.ndarray:
    """The boolean mask of the features the fitted pipeline passes to its classifier."""
    if "select" in model.named_steps:
        return model.named_steps["select"].get_support()
    return np.ones(n_features, dtype=bool)


def predict_probs(model: Pipeline, features: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities ``(N, n_classes)`` in label order, also for labels a fold lacked."""
    probs = np.zeros((len(features), n_classes))
    probs[:, model.classes_] = model.predict_proba(features)
    return probs


def cross_validate(pipeline: Pipeline, data: FeatureSet, folds: int, seed: int,
                   description: str = "folds") -> CrossValidation:
    """Fit on every fold's training rows, score its held-out rows; a progress bar over folds."""
    n_classes = int(data.labels.max()) + 1
    probs = np.zeros((len(data), n_classes))
    results = []
    splits = cv_folds(data.labels, data.groups, folds, seed)
    for fold, (train, held_out) in enumerate(track(splits, description=description)):
        model = fit(pipeline, subset(data, train), f"the training part of fold {fold}")
        probs[held_out] = predict_probs(model, data.features[held_out], n_classes)
        predicted = probs[held_out].argmax(axis=1)
        results.append(FoldResult(fold, held_out,
                                  float(balanced_accuracy_score(data.labels[held_out],
                                                                predicted)),
                                  kept_features(model, data.features.shape[1])))
    return CrossValidation(probs, results)


def subset(data: FeatureSet, rows: np.ndarray) -> FeatureSet:
    return FeatureSet(data.features[rows], data.labels[rows], data.groups[rows],
                      data.sample_ids[rows])
