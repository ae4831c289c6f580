"""Meta-learners of a stacking ensemble: any scikit-learn classifier named in conf/stacking/,
or a dense output layer with dropout in torch, behind the same scikit-learn interface so that
cloning, cross-validated predictions and pipelines treat them alike."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from breastcls.data.readers import DataError


class DropoutHeadClassifier(ClassifierMixin, BaseEstimator):
    """A new dense output layer with dropout on the members' outputs or features: dropout,
    optionally one hidden ReLU layer, then a linear layer to the classes. Trained full-batch with
    Adam on cross-entropy (``class_weight``: None, ``"balanced"`` or ``{label: weight}``); the
    seed makes a fit repeatable without touching the global torch random state."""

    def __init__(self, dropout: float = 0.5, hidden: int = 0, lr: float = 0.01,
                 epochs: int = 300, weight_decay: float = 0.0,
                 class_weight: str | Mapping[int, float] | None = None, seed: int = 0) -> None:
        self.dropout = dropout
        self.hidden = hidden
        self.lr = lr
        self.epochs = epochs
        self.weight_decay = weight_decay
        self.class_weight = class_weight
        self.seed = seed

    def _network(self, n_inputs: int, n_classes: int) -> nn.Sequential:
        if not self.hidden:
            return nn.Sequential(nn.Dropout(self.dropout), nn.Linear(n_inputs, n_classes))
        return nn.Sequential(nn.Dropout(self.dropout), nn.Linear(n_inputs, self.hidden),
                             nn.ReLU(), nn.Dropout(self.dropout),
                             nn.Linear(self.hidden, n_classes))

    def fit(self, X: np.ndarray, y: np.ndarray) -> DropoutHeadClassifier:
        self.classes_, targets = np.unique(np.asarray(y), return_inverse=True)
        weights = None
        if self.class_weight is not None:
            weights = torch.tensor(compute_class_weight(
                dict(self.class_weight) if isinstance(self.class_weight, Mapping)
                else self.class_weight, classes=self.classes_, y=np.asarray(y)),
                dtype=torch.float32)
        inputs = torch.as_tensor(np.asarray(X), dtype=torch.float32)
        labels = torch.as_tensor(targets, dtype=torch.long)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.network_ = self._network(inputs.shape[1], len(self.classes_))
            optimizer = torch.optim.Adam(self.network_.parameters(), lr=self.lr,
                                         weight_decay=self.weight_decay)
            loss_fn = nn.CrossEntropyLoss(weight=weights)
            self.network_.train()
            for _ in range(self.epochs):
                optimizer.zero_grad()
                loss = loss_fn(self.network_(inputs), labels)
                loss.backward()
                optimizer.step()
        self.network_.eval()
        self.n_features_in_ = inputs.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = self.network_(torch.as_tensor(np.asarray(X), dtype=torch.float32))
        return logits.softmax(dim=1).double().numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def build_meta_learner(settings: Mapping[str, Any]) -> BaseEstimator | Pipeline:
    """The estimator of a conf/stacking/ file, behind a StandardScaler when ``scale``."""
    estimator = instantiate(settings["estimator"], _convert_="all")
    if not hasattr(estimator, "predict_proba"):
        raise DataError(f"stacking.estimator {settings['estimator']['_target_']} gives no "
                        "class probabilities (predict_proba); wrap it in "
                        "sklearn.calibration.CalibratedClassifierCV (see "
                        "conf/stacking/svm.yaml)")
    return make_pipeline(StandardScaler(), estimator) if settings.get("scale") else estimator


def class_probabilities(meta_learner: BaseEstimator, inputs: np.ndarray, n_classes: int
                        ) -> np.ndarray:
    """(n, n_classes) probabilities in label order, whichever labels the fit data held."""
    probs = np.zeros((len(inputs), n_classes))
    probs[:, meta_learner.classes_.astype(int)] = meta_learner.predict_proba(inputs)
    return probs
