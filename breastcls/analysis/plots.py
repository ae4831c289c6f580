"""PNG figures of a run: ROC, precision-recall, confusion matrix, calibration, training curves
and the most confidently misclassified images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

from breastcls.metrics import confusion_matrix, predict_labels
from breastcls.scoring.predictions import Predictions

# Figures are built with matplotlib's object API (no pyplot): no backend or global state, so
# plotting works on headless machines and never leaks open figures.
DPI = 120


def _one_vs_rest(pred: Predictions, class_names: Sequence[str], positive_class: int
                 ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Score and 0/1 target per curve: the positive class for binary tasks, every class else."""
    probs, labels = pred.probs.numpy(), pred.labels.numpy()
    classes = [positive_class] if probs.shape[1] == 2 else range(probs.shape[1])
    return {class_names[c]: (probs[:, c], (labels == c).astype(int)) for c in classes}


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path


def plot_roc(pred: Predictions, class_names: Sequence[str], positive_class: int, path: Path,
             title: str = "ROC") -> Path:
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    curves = _one_vs_rest(pred, class_names, positive_class)
    for k, (name, (score, target)) in enumerate(curves.items()):
        RocCurveDisplay.from_predictions(target, score, name=name, ax=ax,
                                         plot_chance_level=k == len(curves) - 1)
    ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title=title)
    return _save(fig, path)


def plot_pr(pred: Predictions, class_names: Sequence[str], positive_class: int, path: Path,
            title: str = "Precision-recall") -> Path:
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, (score, target) in _one_vs_rest(pred, class_names, positive_class).items():
        PrecisionRecallDisplay.from_predictions(target, score, name=name, ax=ax,
                                                plot_chance_level=True)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title=title)
    return _save(fig, path)


def plot_confusion(pred: Predictions, class_names: Sequence[str], positive_class: int,
                   path: Path, threshold: float = 0.5, title: str = "Confusion matrix") -> Path:
    """Counts (left) and rows normalised to 1 (right): rows true class, columns predicted."""
    counts = np.array(confusion_matrix(pred.probs, pred.labels, positive_class, threshold))
    rows = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    fig = Figure(figsize=(9, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, values, fmt in ((axes[0], counts, "d"), (axes[1], normalised, ".2f")):
        ax.imshow(values / max(values.max(), 1e-12), cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, format(v, fmt), ha="center", va="center",
                    color="white" if values[i, j] > values.max() / 2 else "black")
        ticks = range(len(class_names))
        ax.set(xticks=ticks, yticks=ticks, xticklabels=class_names, yticklabels=class_names,
               xlabel="predicted", ylabel="true")
    axes[0].set_title("counts")
    axes[1].set_title("normalised by true class")
    fig.suptitle(f"{title} (threshold {threshold:g})")
    return _save(fig, path)


def expected_calibration_error(score: np.ndarray, target: np.ndarray, n_bins: int = 10) -> float:
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.clip(np.digitize(score, edges[1:-1]), 0, n_bins - 1)
    error = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            error += sel.mean() * abs(target[sel].mean() - score[sel].mean())
    return float(error)


def plot_calibration(pred: Predictions, class_names: Sequence[str], positive_class: int,
                     path: Path, n_bins: int = 10, title: str = "Calibration") -> Path:
    """Reliability diagram (observed frequency against mean predicted probability per bin) over
    a histogram of the scores."""
    fig = Figure(figsize=(4.5, 6), layout="constrained")
    ax, hist = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    for name, (score, target) in _one_vs_rest(pred, class_names, positive_class).items():
        observed, predicted = calibration_curve(target, score, n_bins=n_bins, strategy="uniform")
        ece = expected_calibration_error(score, target, n_bins)
        ax.plot(predicted, observed, "o-", label=f"{name} (ECE {ece:.3f})")
        hist.hist(score, bins=n_bins, range=(0, 1), alpha=0.6)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=0.8)
    ax.set(ylabel="observed frequency", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    hist.set(xlabel="predicted probability", ylabel="images")
    return _save(fig, path)


def plot_training_curves(metrics_csv: str | Path, path: Path,
                         monitor: str = "val/auc_acc_mean") -> Path:
    """Train/val loss and ``monitor`` per epoch from the CSV logger's ``metrics.csv``."""
    frame = pd.read_csv(metrics_csv)
    # The logger writes one sparse row per logging call: keep each epoch's last value per column.
    per_epoch = frame.dropna(subset=["epoch"]).groupby("epoch").last()
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    for column in ("train/loss", "val/loss"):
        if column in per_epoch:
            series = per_epoch[column].dropna()
            loss_ax.plot(series.index, series.to_numpy(), "o-", ms=3, label=column)
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    if monitor in per_epoch:
        series = per_epoch[monitor].dropna()
        metric_ax.plot(series.index, series.to_numpy(), "o-", ms=3, color="C2")
        if len(series):
            best = series.idxmax()
            metric_ax.axvline(best, ls="--", color="grey", lw=0.8)
            metric_ax.set_title(f"{monitor} (best {series[best]:.3f} at epoch {int(best)})")
    metric_ax.set(xlabel="epoch", ylabel=monitor)
    return _save(fig, path)


def confident_mistakes(pred: Predictions, positive_class: int, threshold: float = 0.5,
                       limit: int | None = 16) -> list[int]:
    """Rows of misclassified images, most confident first (probability of the predicted class)."""
    preds = predict_labels(pred.probs, positive_class, threshold)
    wrong = torch.nonzero(preds != pred.labels).flatten()
    confidence = pred.probs[wrong, preds[wrong]]
    order = wrong[confidence.argsort(descending=True, stable=True)].tolist()
    return order if limit is None else order[:limit]


def plot_mistakes(pred: Predictions, images: np.ndarray | torch.Tensor,
                  class_names: Sequence[str], positive_class: int, path: Path,
                  threshold: float = 0.5, limit: int = 16, columns: int = 8) -> Path:
    """The most confident mistakes; ``images`` are the split's raw images in the rows' order
    (sorted by ``index``, as ``Predictions`` are; (N, H, W), (N, C, H, W) or (N, H, W, C))."""
    images = np.asarray(images)
    rows_idx = confident_mistakes(pred, positive_class, threshold, limit)
    preds = predict_labels(pred.probs, positive_class, threshold)
    n_rows = max(1, -(-len(rows_idx) // columns))
    fig = Figure(figsize=(1.6 * columns, 1.9 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows_idx, strict=False):
        index, true, guess = int(pred.index[row]), int(pred.labels[row]), int(preds[row])
        ax.imshow(_display(images[row]), cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"#{index} true {class_names[true]}\npred {class_names[guess]} "
                     f"p={float(pred.probs[row, guess]):.2f}", fontsize=6)
    if not rows_idx:
        axes.flat[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    fig.suptitle(f"Most confident mistakes ({len(rows_idx)} shown)", fontsize=9)
    return _save(fig, path)


def _display(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[0] in (1, 3):  # channels first
        image = np.moveaxis(image, 0, -1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return image


def save_all(output_dir: str | Path, predictions: Mapping[str, Predictions],
             class_names: Sequence[str], positive_class: int, threshold: float = 0.5,
             images: Mapping[str, np.ndarray | torch.Tensor] | None = None,
             metrics_csv: str | Path | None = None, split: str = "test") -> list[Path]:
    """Every figure for ``split`` into ``output_dir/plots``; returns the files written.

    ``images``: raw images per split (needed for the mistakes grid); ``metrics_csv``: the CSV
    logger's file (``<run>/csv/metrics.csv``), skipped when missing.
    """
    out = Path(output_dir) / "plots"
    pred = predictions[split]
    args = (pred, class_names, positive_class)
    paths = [plot_roc(*args, out / f"{split}_roc.png", f"ROC ({split})"),
             plot_pr(*args, out / f"{split}_pr.png", f"Precision-recall ({split})"),
             plot_confusion(*args, out / f"{split}_confusion.png", threshold,
                            f"Confusion matrix ({split})"),
             plot_calibration(*args, out / f"{split}_calibration.png",
                              title=f"Calibration ({split})")]
    if images is not None and split in images:
        paths.append(plot_mistakes(pred, images[split], class_names, positive_class,
                                   out / f"{split}_mistakes.png", threshold))
    if metrics_csv is not None and Path(metrics_csv).is_file():
        paths.append(plot_training_curves(metrics_csv, out / "training_curves.png"))
    return paths
