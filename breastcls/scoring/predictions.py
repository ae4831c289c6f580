"""Class probabilities of one split, and their ``<split>_predictions.csv`` files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from breastcls.metrics import compute_metrics, predict_labels


@dataclass
class Predictions:
    """Class probabilities of one split, rows ordered by dataset index.

    ``sample_ids`` and ``groups`` (the data set's record keys, when it has them) are written as
    columns so that ensembles and stacking join members on them.
    """

    probs: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    sample_ids: list[str] | None = None
    groups: list[str] | None = None

    @classmethod
    def from_batches(cls, batches: Sequence[dict]) -> Predictions:
        probs, labels, index = (torch.cat([b[k].cpu() for b in batches])
                                for k in ("probs", "labels", "index"))
        order = index.argsort()
        keys = {k: [str(v) for b in batches for v in b[k]] if k in batches[0] else None
                for k in ("sample_id", "group")}
        keys = {k: [v[i] for i in order.tolist()] if v is not None else None
                for k, v in keys.items()}
        return cls(probs[order], labels[order], index[order], keys["sample_id"], keys["group"])

    def subset(self, keep: torch.Tensor) -> Predictions:
        rows = keep.nonzero().flatten().tolist() if keep.dtype == torch.bool else keep.tolist()
        return Predictions(self.probs[keep], self.labels[keep], self.index[keep],
                           _take(self.sample_ids, rows), _take(self.groups, rows))

    def metrics(self, positive_class: int, threshold: float = 0.5) -> dict[str, float]:
        return compute_metrics(self.probs, self.labels, positive_class, threshold)

    def frame(self, class_names: Sequence[str], positive_class: int,
              threshold: float = 0.5) -> pd.DataFrame:
        """One row per sample: index, [sample_id, group,] label, prob_<class>..., pred."""
        preds = predict_labels(self.probs, positive_class, threshold)
        columns: dict[str, object] = {"index": self.index.tolist()}
        if self.sample_ids is not None:
            columns["sample_id"] = self.sample_ids
        if self.groups is not None:
            columns["group"] = self.groups
        columns["label"] = self.labels.tolist()
        for c, name in enumerate(class_names):
            columns[f"prob_{name}"] = self.probs[:, c].tolist()
        columns["pred"] = preds.tolist()
        return pd.DataFrame(columns)

    def to_csv(self, path: Path, class_names: Sequence[str], positive_class: int,
               threshold: float = 0.5) -> None:
        self.frame(class_names, positive_class, threshold).to_csv(path, index=False,
                                                                  float_format="%.8f")


def _take(values: list[str] | None, rows: list[int]) -> list[str] | None:
    return None if values is None else [values[i] for i in rows]


def read_predictions_csv(path: str | Path) -> tuple[Predictions, list[str]]:
    """A ``<split>_predictions.csv`` back as Predictions, with its class names."""
    frame = pd.read_csv(path, dtype={"sample_id": str, "group": str})
    prob_columns = [c for c in frame.columns if c.startswith("prob_")]
    probs = torch.tensor(frame[prob_columns].to_numpy(), dtype=torch.float32)
    optional = {k: frame[k].tolist() if k in frame else None for k in ("sample_id", "group")}
    pred = Predictions(probs, torch.tensor(frame["label"].to_numpy()),
                       torch.tensor(frame["index"].to_numpy()),
                       optional["sample_id"], optional["group"])
    return pred, [c.removeprefix("prob_") for c in prob_columns]
