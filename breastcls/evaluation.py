"""Evaluate a trained classifier on data splits: predictions, metrics, intervals and files."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from hydra.utils import get_class
from torch.utils.data import DataLoader

from breastcls.analysis.bootstrap import bootstrap_ci
from breastcls.analysis.thresholds import METHODS, ThresholdChoice, select_threshold
from breastcls.data.arrays import ArrayDataset
from breastcls.metrics import (
    TABLE_METRICS,
    compute_metrics,
    confusion_matrix,
    metric_inputs,
    predict_labels,
)
from breastcls.models.classifier import check_input_shape, tta_views

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

    def subset(self, keep: torch.Tensor) -> Predictions:
        return Predictions(self.probs[keep], self.labels[keep], self.index[keep])

    def metrics(self, positive_class: int, threshold: float = 0.5) -> dict[str, float]:
        return compute_metrics(self.probs, self.labels, positive_class, threshold)

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
    """Metrics per split of one checkpoint (at its operating threshold), their bootstrap
    intervals, and what is needed to read them."""

    metrics: dict[str, dict[str, float]]
    confusion: dict[str, list[list[int]]]
    predictions: dict[str, Predictions] = field(repr=False)
    intervals: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> dict[str, float]:
        """``{"test/auc": ..., "val/acc": ...}``: the names the training loop logs under."""
        return {f"{split}/{k}": v for split, m in self.metrics.items() for k, v in m.items()}

    def to_json(self, path: Path) -> None:
        payload = {**self.info, **self.metrics,
                   **{f"{split}_ci": ci for split, ci in self.intervals.items()},
                   "confusion_matrix": self.confusion}
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


def store_threshold(path: str | Path, threshold: float,
                    tta: bool | Sequence[str] | None = None) -> None:
    """Write the operating threshold, and the test-time flips it was chosen with (``tta``: a
    plain list of strings, ``[]`` for none), into a checkpoint's hyperparameters, so eval and
    predict apply both unchanged. Plain values only: checkpoints load with weights_only=True."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["threshold"] = float(threshold)
    checkpoint["hyper_parameters"]["tta"] = tta_views(tta)
    torch.save(checkpoint, path)


def predict(trainer: L.Trainer, model: L.LightningModule, loader: DataLoader) -> Predictions:
    return Predictions.from_batches(trainer.predict(model, dataloaders=loader))


def evaluate_splits(trainer: L.Trainer, model: L.LightningModule, datamodule: L.LightningDataModule,
                    splits: Sequence[str], output_dir: Path | None = None,
                    info: Mapping[str, Any] | None = None,
                    settings: Mapping[str, Any] | None = None,
                    checkpoint: str | Path | None = None) -> EvaluationResult:
    """Predict and score each split; write ``{split}_predictions.csv`` and ``metrics.json``.

    ``settings`` (conf/evaluation): test-time flips for every split; a threshold chosen on the
    val predictions alone, before any other split is predicted, replaces
    ``model.hparams.threshold``; bootstrap intervals; an optional ``test_dedup`` split without
    the listed test images. ``checkpoint``: the file ``model`` came from; a chosen threshold
    (or test-time flips) is written into it before the plots are drawn, so a failing plot
    cannot leave it without them.
    """
    settings = settings or {}
    cv = getattr(datamodule, "cv", None)
    check_exclude_test(settings.get("exclude_test"), getattr(cv, "pool", None) if cv else None)
    positive = model.hparams.positive_class
    check_input_shape(model, datamodule.input_shape)
    model.predict_tta = settings.get("tta")
    predictions, choice = predict_val_first(
        splits, settings.get("threshold") or {}, positive,
        lambda split: predict(trainer, model, datamodule.eval_dataloader(split)))
    if choice is not None:
        model.hparams.threshold = choice.threshold
    result = score_predictions(predictions, positive, datamodule.class_names,
                               model.hparams.get("threshold", 0.5), settings, choice, info)
    if output_dir is not None:
        write_result(result, output_dir)
        if getattr(datamodule, "split_table", None) is not None:
            datamodule.split_table.to_csv(output_dir / "splits.csv", index=False)
    if checkpoint is not None and (choice is not None or tta_views(settings.get("tta"))):
        store_threshold(checkpoint, result.info["threshold"], settings.get("tta"))
    if output_dir is not None and settings.get("plots"):
        result.info["plots"] = [str(p) for p in save_plots(
            output_dir, model, datamodule, result, settings.get("gradcam", 0))]
    return result


def predict_val_first(splits: Sequence[str], rule: Mapping[str, Any], positive: int,
                      predict_split: Callable[[str], Predictions]
                      ) -> tuple[dict[str, Predictions], ThresholdChoice | None]:
    """Predictions of ``splits``; with a threshold ``rule``, val is predicted first and the
    threshold chosen from it before any other split (and its labels) is read."""
    order = ["val", *splits] if rule.get("method") else list(splits)
    predictions: dict[str, Predictions] = {}
    choice = None
    for split in dict.fromkeys(order):
        predictions[split] = predict_split(split)
        if split == "val" and rule.get("method"):
            choice = choose_threshold(predictions["val"], positive, rule)
    return predictions, choice


def choose_threshold(val: Predictions, positive: int, rule: Mapping[str, Any]) -> ThresholdChoice:
    """The operating threshold from validation predictions (conf/evaluation ``threshold``)."""
    return select_threshold(*metric_inputs(val.probs, val.labels, positive),
                            method=rule["method"], beta=rule.get("beta", 2.0),
                            target_sensitivity=rule.get("target_sensitivity", 0.9))


def score_predictions(predictions: dict[str, Predictions], positive: int,
                      class_names: Sequence[str], threshold: float,
                      settings: Mapping[str, Any], choice: ThresholdChoice | None = None,
                      info: Mapping[str, Any] | None = None) -> EvaluationResult:
    """Metrics at ``threshold`` (and at 0.5), bootstrap intervals and confusion matrices."""
    predictions = dict(predictions)
    if settings.get("exclude_test") and "test" in predictions:
        predictions["test_dedup"] = _without(predictions["test"], settings["exclude_test"])

    metrics = {s: p.metrics(positive, threshold) for s, p in predictions.items()}
    if threshold != 0.5:
        metrics.update({f"{s}@0.5": p.metrics(positive, 0.5) for s, p in predictions.items()})
    boot = settings.get("bootstrap") or {}
    intervals = {}
    if boot.get("n_resamples"):
        intervals = {s: bootstrap_ci(p.probs, p.labels, positive, threshold,
                                     n_resamples=boot["n_resamples"],
                                     confidence=boot.get("confidence", 0.95),
                                     seed=boot.get("seed", 0))
                     for s, p in predictions.items()}
    return EvaluationResult(
        metrics=metrics,
        confusion={s: confusion_matrix(p.probs, p.labels, positive, threshold)
                   for s, p in predictions.items()},
        predictions=predictions,
        intervals=intervals,
        info={"positive_class": class_names[positive], "threshold": threshold,
              "threshold_selection": choice.to_dict() if choice else None,
              "bootstrap": dict(boot) if intervals else None,
              "class_names": list(class_names), **(info or {})},
    )


def write_result(result: EvaluationResult, output_dir: Path) -> None:
    """``{split}_predictions.csv`` per split and ``metrics.json`` into ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    names, threshold = result.info["class_names"], result.info["threshold"]
    positive = names.index(result.info["positive_class"])
    for split, p in result.predictions.items():
        p.to_csv(output_dir / f"{split}_predictions.csv", names, positive, threshold)
    result.to_json(output_dir / "metrics.json")


def _without(test: Predictions, csv_path: str | Path) -> Predictions:
    path = check_exclude_test(csv_path)  # ensemble reaches here without evaluate_splits' check
    excluded = torch.tensor(pd.read_csv(path)["index"].to_numpy(), dtype=torch.long)
    return test.subset(~torch.isin(test.index, excluded))


def save_plots(output_dir: Path, model: L.LightningModule, datamodule: L.LightningDataModule,
               result: EvaluationResult, gradcam: int = 0) -> list[Path]:
    """The run's figures into ``output_dir/plots`` (for the test split when scored)."""
    from breastcls.analysis.gradcam import default_target_layer, save_gradcam
    from breastcls.analysis.plots import confident_mistakes, save_all

    split = "test" if "test" in result.predictions else next(iter(result.predictions))
    positive, threshold = model.hparams.positive_class, result.info["threshold"]
    dataset = datamodule.dataset(split)
    order = dataset.indices.argsort()  # prediction rows are sorted by index (CV: pool index)
    dataset = ArrayDataset(dataset.images[order], dataset.labels[order], dataset.transform,
                           dataset.indices[order])
    paths = save_all(output_dir, {split: result.predictions[split]}, datamodule.class_names,
                     positive, threshold, images={split: dataset.images},
                     metrics_csv=output_dir / "csv" / "metrics.csv", split=split)
    rows = confident_mistakes(result.predictions[split], positive, threshold, limit=gradcam)
    if gradcam and rows:
        layer = default_target_layer(model, dataset[rows[0]][0].unsqueeze(0))
        if layer is None:
            log.warning("Grad-CAM skipped: %s has no convolutional stage with a 4-D feature map "
                        "(set evaluation.gradcam=0 to silence this)",
                        type(getattr(model, "backbone", model)).__name__)
        else:
            paths.append(save_gradcam(output_dir / "plots" / f"{split}_gradcam.png", model,
                                      dataset, rows, datamodule.class_names, positive, threshold,
                                      target_layer=layer))
    return paths


EVAL_SPLITS = ("train", "val", "test")


def check_exclude_test(csv_path: str | Path | None, cv_pool: str | None = None) -> Path | None:
    """The ``evaluation.exclude_test`` file, or a clear error when it cannot be used."""
    if not csv_path:
        return None
    if cv_pool == "all":
        raise ValueError(
            "evaluation.exclude_test cannot be combined with cv.pool=all: its `index` column "
            "names official test images, while the fold's test split is drawn from every "
            "split (pool indices), so the wrong images would be dropped. Use cv.groups="
            "duplicates to keep near-duplicates inside one fold, or cv.pool=trainval.")
    path = Path(csv_path)
    if not path.is_file():
        raise FileNotFoundError(f"evaluation.exclude_test: no such file {path.resolve()} (write "
                                "it with `python -m breastcls.audit`)")
    try:
        columns = pd.read_csv(path, nrows=0).columns
    except Exception as err:
        raise ValueError(f"evaluation.exclude_test: cannot read {path.resolve()} as CSV: "
                         f"{err}") from err
    if "index" not in columns:
        raise ValueError(f"evaluation.exclude_test: {path.resolve()} has no `index` column "
                         f"(columns: {list(columns)}); use the audit's "
                         "test_with_train_duplicate.csv")
    return path


def validate_settings(cfg: Mapping[str, Any], optimized_metric: bool = True) -> None:
    """Check the evaluation settings of a train or eval config before any training or
    prediction: ``evaluation.tta``, ``evaluation.threshold``, ``evaluation.bootstrap``,
    ``evaluation.exclude_test``, ``eval_splits`` and (``optimized_metric=True``) that
    ``cfg.optimized_metric`` will be among the scores. Raises ``ValueError``
    (``FileNotFoundError`` for a missing file) that says what is wrong and what is allowed."""
    settings = cfg.get("evaluation") or {}
    try:
        tta_views(settings.get("tta"))
    except ValueError as err:
        raise ValueError(f"evaluation.tta={settings.get('tta')!r}: {err}") from None

    rule = settings.get("threshold") or {}
    method = rule.get("method")
    if method is not None and method not in METHODS:
        raise ValueError(f"evaluation.threshold.method={method!r}; choose null (keep "
                         f"model.threshold) or one of {list(METHODS)}")
    if method == "fbeta" and not float(rule.get("beta", 2.0)) > 0:
        raise ValueError(f"evaluation.threshold.beta={rule.get('beta')!r} must be > 0")
    if method == "sensitivity" and not 0 < float(rule.get("target_sensitivity", 0.9)) <= 1:
        raise ValueError("evaluation.threshold.target_sensitivity="
                         f"{rule.get('target_sensitivity')!r} must lie in (0, 1]")
    boot = settings.get("bootstrap") or {}
    if boot.get("n_resamples") and not 0 < float(boot.get("confidence", 0.95)) < 1:
        raise ValueError(f"evaluation.bootstrap.confidence={boot.get('confidence')!r} must lie "
                         "in (0, 1)")

    splits = list(cfg.get("eval_splits") or [])
    unknown = [s for s in splits if s not in EVAL_SPLITS]
    if unknown:
        raise ValueError(f"eval_splits={splits}: unknown split(s) {unknown}; choose from "
                         f"{list(EVAL_SPLITS)}")

    cv = cfg.get("cv") or {}
    check_exclude_test(settings.get("exclude_test"), cv.get("pool") if cv.get("folds") else None)
    if settings.get("exclude_test") and "test" not in splits:
        log.warning("evaluation.exclude_test is set but eval_splits=%s has no test split: no "
                    "test_dedup split will be scored", splits)

    name = cfg.get("optimized_metric") if optimized_metric else None
    if name:
        scored = [*splits, *(["val"] if method else [])]
        if settings.get("exclude_test") and "test" in splits:
            scored.append("test_dedup")
        model = cfg.get("model") or {}
        if method or model.get("threshold", 0.5) != 0.5:
            scored += [f"{s}@0.5" for s in scored]
        metrics = [*TABLE_METRICS, "auc_acc_mean"]
        split, _, metric = str(name).partition("/")
        if split not in scored or metric not in metrics:
            raise ValueError(
                f"optimized_metric={name!r} will not be computed: the best checkpoint is scored "
                f"on eval_splits={splits}, so choose <split>/<metric> with split in "
                f"{list(dict.fromkeys(scored))} and metric in {metrics}, add the split to "
                "eval_splits, or set optimized_metric=null (no sweep)")
