"""breastcls metrics agree with medmnist's Evaluator and with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from breastcls.metrics import compute_metrics, confusion_matrix
from breastcls.scoring.predictions import Predictions


def random_probs(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Informative but imperfect two-class probabilities, in label order."""
    g = torch.Generator().manual_seed(seed)
    logit = 1.5 * (labels == 1).float() - 0.75 + torch.randn(len(labels), generator=g)
    p1 = torch.sigmoid(logit)
    return torch.stack([1 - p1, p1], dim=1)


@pytest.fixture(scope="module")
def test_labels(data_dir) -> torch.Tensor:
    with np.load(data_dir / "breastmnist.npz") as npz:
        return torch.from_numpy(npz["test_labels"].reshape(-1).astype(np.int64))


@pytest.mark.parametrize("seed", [0, 1])
def test_auc_acc_equal_medmnist_evaluator(data_dir, test_labels, seed):
    from medmnist import Evaluator

    probs = random_probs(test_labels, seed)
    ours = Predictions(probs, test_labels, torch.arange(len(test_labels))).metrics(0)
    reference = Evaluator("breastmnist", "test", root=str(data_dir)).evaluate(probs.numpy())
    assert ours["auc"] == pytest.approx(reference.AUC, abs=1e-6)
    assert ours["acc"] == pytest.approx(reference.ACC, abs=1e-6)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_threshold_metrics_equal_sklearn(test_labels, threshold):
    probs = random_probs(test_labels)
    ours = compute_metrics(probs, test_labels, positive_class=0, threshold=threshold)
    y_true = (test_labels == 0).numpy()  # malignant is positive
    score = probs[:, 0].numpy()
    y_pred = score > threshold
    expected = {
        "acc": skm.accuracy_score(y_true, y_pred),
        "auc": skm.roc_auc_score(y_true, score),
        "auprc": skm.average_precision_score(y_true, score),
        "f1": skm.f1_score(y_true, y_pred),
        "f2": skm.fbeta_score(y_true, y_pred, beta=2),
        "precision": skm.precision_score(y_true, y_pred),
        "recall": skm.recall_score(y_true, y_pred),
        "specificity": skm.recall_score(y_true, y_pred, pos_label=False),
        "balanced_acc": skm.balanced_accuracy_score(y_true, y_pred),
    }
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-6), name
    cm = confusion_matrix(probs, test_labels, 0, threshold)
    labels_pred = np.where(y_pred, 0, 1)
    assert cm == skm.confusion_matrix(test_labels.numpy(), labels_pred, labels=[0, 1]).tolist()


def test_multiclass_metrics_equal_sklearn():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (200,), generator=g)
    probs = (torch.randn(200, 3, generator=g) + 2 * torch.nn.functional.one_hot(labels)).softmax(1)
    ours = compute_metrics(probs, labels, positive_class=0)
    pred = probs.argmax(1).numpy()
    assert ours["acc"] == pytest.approx(skm.accuracy_score(labels, pred), abs=1e-6)
    assert ours["f1"] == pytest.approx(skm.f1_score(labels, pred, average="macro"), abs=1e-6)
    assert ours["balanced_acc"] == pytest.approx(skm.balanced_accuracy_score(labels, pred),
                                                 abs=1e-6)
    assert ours["auc"] == pytest.approx(
        skm.roc_auc_score(labels, probs.numpy(), multi_class="ovr"), abs=1e-6)


def test_per_class_metrics_match_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    from breastcls.scoring.multiclass import per_class_metrics
    from breastcls.scoring.result import score_predictions

    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 3, (120,), generator=g)
    logits = torch.randn(120, 3, generator=g) + 1.5 * torch.nn.functional.one_hot(labels, 3)
    probs = logits.softmax(1)
    names = ["normal", "benign", "malignant"]
    got = per_class_metrics(probs, labels, names)
    y, p = labels.numpy(), probs.numpy()
    precision, recall, f1, support = precision_recall_fscore_support(y, p.argmax(1))
    for c, name in enumerate(names):
        assert got[name]["auc"] == pytest.approx(roc_auc_score(y == c, p[:, c]), abs=1e-5)
        assert got[name]["precision"] == pytest.approx(precision[c], abs=1e-6)
        assert got[name]["recall"] == pytest.approx(recall[c], abs=1e-6)
        assert got[name]["f1"] == pytest.approx(f1[c], abs=1e-6)
        assert got[name]["support"] == support[c]
    result = score_predictions({"test": Predictions(probs, labels, torch.arange(120))}, 0, names,
                               0.5, {"bootstrap": {"n_resamples": 10}})
    assert result.per_class["test"] == got
    assert result.info["task"] == "multiclass" and result.info["threshold"] is None
    assert result.metrics["test"]["auc"] == pytest.approx(
        roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-5)
    assert "test@0.5" not in result.metrics  # no threshold to compare against
