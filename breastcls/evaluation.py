"""Evaluate a trained classifier on data splits: predictions, metrics and their files."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class
from torch.utils.data import DataLoader

from breastcls.metrics import compute_metrics, confusion_matrix, predict_labels

log = logging.getLogger(__name__)


@dataclass
class Predictions:
    """Class probabilities of one split, rows ordered by dataset index."""

    probs: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    @classmethod
    def from_batches(cls, batches: Sequence[dict[str, torch.Tensor]]) -> Predictions:
        probs, labels, index = (torch.cat([b[k].cpu() for b in batches])
                                for k in ("probs", "labels", "index"))
        order = index.argsort()
        return cls(probs[order], labels[order], index[order])

    def metrics(self, positive_class: int, threshold: float = 0.5) -> dict[str, float]:
        values = compute_metrics(self.probs, self.labels, positive_class, threshold)
        values["auc_acc_mean"] = (values["auc"] + values["acc"]) / 2
        return values

    def to_csv(self, path: Path, class_names: Sequence[str], positive_class: int,
               threshold: float = 0.5) -> None:
        preds = predict_labels(self.probs, positive_class, threshold)
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "label", *(f"prob_{c}" for c in class_names), "pred"])
            for i, y, p, yhat in zip(self.index.tolist(), self.labels.tolist(),
                                     self.probs.tolist(), preds.tolist(), strict=True):
                writer.writerow([i, y, *(f"{v:.8f}" for v in p), yhat])


@dataclass
class EvaluationResult:
    """Metrics per split of one checkpoint, plus what is needed to read them."""

    metrics: dict[str, dict[str, float]]
    confusion: dict[str, list[list[int]]]
    predictions: dict[str, Predictions] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """``{"test/auc": ..., "val/acc": ...}``: the names the training loop logs under."""
        return {f"{split}/{k}": v for split, m in self.metrics.items() for k, v in m.items()}

    def to_json(self, path: Path) -> None:
        payload = {**self.info, **self.metrics, "confusion_matrix": self.confusion}
        path.write_text(json.dumps(payload, indent=2))


def load_checkpoint(path: str | Path, module_class: str) -> tuple[L.LightningModule, dict]:
    """Rebuild a module from its checkpoint with ``weights_only=True`` (no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path.resolve()}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"could not load checkpoint {path}: {err}") from err
    module = get_class(module_class)(**checkpoint["hyper_parameters"])
    module.load_state_dict(checkpoint["state_dict"])
    return module, {"checkpoint": str(path), "epoch": checkpoint.get("epoch"),
                    "global_step": checkpoint.get("global_step")}


def predict(trainer: L.Trainer, model: L.LightningModule, loader: DataLoader) -> Predictions:
    return Predictions.from_batches(trainer.predict(model, dataloaders=loader))


def evaluate_splits(trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule,
                    splits: Sequence[str], output_dir: Path | None = None,
                    info: dict[str, Any] | None = None) -> EvaluationResult:
    """Predict each split with ``model`` and score it; write ``{split}_predictions.csv`` and
    ``metrics.json`` into ``output_dir`` when given."""
    positive = model.hparams.positive_class
    threshold = model.hparams.get("threshold", 0.5)
    predictions = {s: predict(trainer, model, datamodule.eval_dataloader(s)) for s in splits}
    result = EvaluationResult(
        metrics={s: p.metrics(positive, threshold) for s, p in predictions.items()},
        confusion={s: confusion_matrix(p.probs, p.labels, positive, threshold)
                   for s, p in predictions.items()},
        predictions=predictions,
        info={"positive_class": datamodule.class_names[positive], "threshold": threshold,
              "class_names": list(datamodule.class_names), **(info or {})},
    )
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        for split, p in predictions.items():
            p.to_csv(output_dir / f"{split}_predictions.csv", datamodule.class_names, positive,
                     threshold)
        result.to_json(output_dir / "metrics.json")
    return result
