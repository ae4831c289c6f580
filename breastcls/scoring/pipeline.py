"""Evaluate a trained classifier on data splits: predict (val first when a threshold is
chosen), score, write the files and figures, and store the operating point in the checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from breastcls.analysis.thresholds import ThresholdChoice
from breastcls.checkpoints import store_threshold
from breastcls.models.classifier import check_input_shape, tta_views
from breastcls.scoring.predictions import Predictions
from breastcls.scoring.result import (
    EvaluationResult,
    choose_threshold,
    operating_point,
    score_predictions,
    write_result,
)
from breastcls.scoring.settings import check_exclude_test

log = logging.getLogger(__name__)


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
        store_threshold(checkpoint, operating_point(result)[1], settings.get("tta"))
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


def save_plots(output_dir: Path, model: L.LightningModule, datamodule: L.LightningDataModule,
               result: EvaluationResult, gradcam: int = 0) -> list[Path]:
    """The run's figures into ``output_dir/plots`` (for the test split when scored)."""
    from breastcls.analysis.gradcam import default_target_layer, save_gradcam
    from breastcls.analysis.plots import confident_mistakes, save_all

    split = "test" if "test" in result.predictions else next(iter(result.predictions))
    positive, threshold = operating_point(result)
    dataset = datamodule.dataset(split).sorted_by_index()  # as prediction rows are (CV: pool index)
    paths = save_all(output_dir, {split: result.predictions[split]}, datamodule.class_names,
                     positive, threshold, images={split: dataset.images},
                     metrics_csv=output_dir / "csv" / "metrics.csv", split=split)
    rows = confident_mistakes(result.predictions[split], positive, threshold, limit=gradcam)
    if gradcam and rows:
        layer = default_target_layer(model, dataset[rows[0]]["image"].unsqueeze(0))
        if layer is None:
            log.warning("Grad-CAM skipped: %s has no convolutional stage with a 4-D feature map "
                        "(set evaluation.gradcam=0 to silence this)",
                        type(getattr(model, "backbone", model)).__name__)
        else:
            paths.append(save_gradcam(output_dir / "plots" / f"{split}_gradcam.png", model,
                                      dataset, rows, datamodule.class_names, positive, threshold,
                                      target_layer=layer))
    return paths
