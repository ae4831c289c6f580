"""Score a checkpoint's predictions: metrics per split, intervals, confusion matrices, and the
``metrics.json`` / ``<split>_predictions.csv`` files. Binary tasks are scored at an operating
threshold; multi-class tasks add per-class metrics."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from breastcls.analysis.bootstrap import bootstrap_ci
from breastcls.analysis.thresholds import ThresholdChoice, select_threshold
from breastcls.data.readers import DataError
from breastcls.metrics import confusion_matrix, metric_inputs
from breastcls.scoring.multiclass import per_class_metrics
from breastcls.scoring.predictions import Predictions
from breastcls.scoring.settings import check_exclude_test


@dataclass
class EvaluationResult:
    """Metrics per split of one checkpoint (at its operating threshold), their bootstrap
    intervals, per-class metrics of multi-class tasks, and what is needed to read them."""

    metrics: dict[str, dict[str, float]]
    confusion: dict[str, list[list[int]]]
    predictions: dict[str, Predictions] = field(repr=False)
    intervals: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    per_class: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """``{"test/auc": ..., "val/acc": ...}``: the names the training loop logs under."""
        return {f"{split}/{k}": v for split, m in self.metrics.items() for k, v in m.items()}

    def to_json(self, path: Path) -> None:
        payload = {**self.info, **self.metrics,
                   **{f"{split}_ci": ci for split, ci in self.intervals.items()},
                   **{f"{split}_per_class": pc for split, pc in self.per_class.items()},
                   "confusion_matrix": self.confusion}
        path.write_text(json.dumps(payload, indent=2))


def choose_threshold(val: Predictions, positive: int, rule: Mapping[str, Any]) -> ThresholdChoice:
    """The operating threshold from validation predictions (conf/evaluation ``threshold``)."""
    return select_threshold(*metric_inputs(val.probs, val.labels, positive),
                            method=rule["method"], beta=rule.get("beta", 2.0),
                            target_sensitivity=rule.get("target_sensitivity", 0.9))


def score_predictions(predictions: dict[str, Predictions], positive: int,
                      class_names: Sequence[str], threshold: float,
                      settings: Mapping[str, Any], choice: ThresholdChoice | None = None,
                      info: Mapping[str, Any] | None = None) -> EvaluationResult:
    """Metrics at ``threshold`` (and at 0.5), bootstrap intervals and confusion matrices;
    multi-class tasks (where ``threshold`` is unused) also get per-class metrics."""
    predictions = dict(predictions)
    if settings.get("exclude_test") and "test" in predictions:
        predictions["test_dedup"] = _without(predictions["test"], settings["exclude_test"])
    binary = len(class_names) == 2

    metrics = {s: p.metrics(positive, threshold) for s, p in predictions.items()}
    if binary and threshold != 0.5:
        metrics.update({f"{s}@0.5": p.metrics(positive, 0.5) for s, p in predictions.items()})
    boot = settings.get("bootstrap") or {}
    intervals = {}
    if boot.get("n_resamples"):
        intervals = {s: bootstrap_ci(p.probs, p.labels, positive, threshold,
                                     n_resamples=boot["n_resamples"],
                                     confidence=boot.get("confidence", 0.95),
                                     seed=boot.get("seed", 0),
                                     groups=_resampled_groups(p, s, boot.get("groups", False)))
                     for s, p in predictions.items()}
    per_class = {} if binary else {s: per_class_metrics(p.probs, p.labels, class_names)
                                   for s, p in predictions.items()}
    return EvaluationResult(
        metrics=metrics,
        confusion={s: confusion_matrix(p.probs, p.labels, positive, threshold)
                   for s, p in predictions.items()},
        predictions=predictions,
        intervals=intervals,
        per_class=per_class,
        info={"task": "binary" if binary else "multiclass",
              "positive_class": class_names[positive] if binary else None,
              "threshold": threshold if binary else None,
              "threshold_selection": choice.to_dict() if choice else None,
              "bootstrap": dict(boot) if intervals else None,
              "class_names": list(class_names), **(info or {})},
    )


def _resampled_groups(predictions: Predictions, split: str, by_group: bool
                      ) -> list[str] | None:
    """The group ids ``evaluation.bootstrap.groups=true`` resamples, or a clear refusal."""
    if not by_group:
        return None
    if predictions.groups is None:
        raise DataError(f"evaluation.bootstrap.groups=true, but the {split} predictions carry no "
                        "group ids (patients): this data set has none; set it to false")
    return predictions.groups


def write_result(result: EvaluationResult, output_dir: Path) -> None:
    """``{split}_predictions.csv`` per split and ``metrics.json`` into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    names = result.info["class_names"]
    positive, threshold = operating_point(result)
    for split, p in result.predictions.items():
        p.to_csv(output_dir / f"{split}_predictions.csv", names, positive, threshold)
    result.to_json(output_dir / "metrics.json")


def operating_point(result: EvaluationResult) -> tuple[int, float]:
    """The positive class index and threshold of a binary result; (0, 0.5) (unused) else."""
    name, threshold = result.info.get("positive_class"), result.info.get("threshold")
    positive = result.info["class_names"].index(name) if name is not None else 0
    return positive, 0.5 if threshold is None else threshold


def _without(test: Predictions, csv_path: str | Path) -> Predictions:
    path = check_exclude_test(csv_path)  # ensemble reaches here without evaluate_splits' check
    excluded = torch.tensor(pd.read_csv(path)["index"].to_numpy(), dtype=torch.long)
    return test.subset(~torch.isin(test.index, excluded))
