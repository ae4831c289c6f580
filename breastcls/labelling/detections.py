"""The detector as the loop sees it: a checkpoint in, :class:`ImageBoxes` per image out.

The module class and its ``detect`` function are named in conf/label.yaml (``detector``), so
any detection family with the same interface (``detect(model, paths, batch_size=...,
score_threshold=...)`` giving per image ``boxes`` XYXY in original pixels, ``scores`` and
``labels`` indexing ``model.hparams.class_names``) runs the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
from hydra.utils import get_method

from breastcls.checkpoints import load_checkpoint
from breastcls.data.readers import DataError, image_size
from breastcls.labelling.boxes import ImageBoxes


@dataclass(frozen=True)
class DetectorSettings:
    """conf/label.yaml ``detector``."""

    module_class: str = "breastcls.models.detector.DetectorModule"
    detect: str = "breastcls.models.detector.detect"
    batch_size: int = 4
    score_threshold: float = 0.0  # boxes returned for ranking; propose.min_score filters shown


def load_detector(checkpoint: Path, settings: DetectorSettings) -> L.LightningModule:
    """The detection module saved in ``checkpoint``, in eval mode."""
    try:
        model, _ = load_checkpoint(checkpoint, settings.module_class)
    except FileNotFoundError as err:
        raise DataError(f"{err}; give checkpoint=<a detection checkpoint>") from None
    return model.eval()


def class_names(model: L.LightningModule) -> list[str]:
    return list(model.hparams.class_names)


def run_detector(model: L.LightningModule, paths: Sequence[Path], settings: DetectorSettings
                 ) -> list[ImageBoxes]:
    """Every box the model finds on ``paths`` (original pixels) with its score."""
    detect = get_method(settings.detect)
    found = detect(model, list(paths), batch_size=settings.batch_size,
                   score_threshold=settings.score_threshold)
    names = class_names(model)
    images = []
    for path, result in zip(paths, found, strict=True):
        height, width = image_size(path)
        labels = [names[int(label)] for label in np.asarray(result["labels"]).reshape(-1)]
        images.append(ImageBoxes(str(path), width, height, np.asarray(result["boxes"]),
                                 labels, np.asarray(result["scores"], dtype=float).reshape(-1)))
    return images
