"""Checks of the evaluation settings (conf/evaluation, eval_splits, optimized_metric) that run
before any training or prediction, so a typo fails in seconds, not after a run."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from breastcls.analysis.thresholds import METHODS
from breastcls.data.errors import SettingError
from breastcls.metrics import TABLE_METRICS
from breastcls.models.classifier import tta_views
from breastcls.scoring.detection import FROC_RATES

log = logging.getLogger(__name__)

EVAL_SPLITS = ("train", "val", "test")


def check_exclude_test(csv_path: str | Path | None, cv_pool: str | None = None) -> Path | None:
    """The ``evaluation.exclude_test`` file, or a clear error when it cannot be used."""
    if not csv_path:
        return None
    if cv_pool == "all":
        raise SettingError(
            "evaluation.exclude_test cannot be combined with cv.pool=all: its `index` column "
            "names official test images, while the fold's test split is drawn from every "
            "split (pool indices), so the wrong images would be dropped. Use cv.groups="
            "duplicates to keep near-duplicates inside one fold, or cv.pool=trainval.")
    path = Path(csv_path)
    if not path.is_file():
        raise SettingError(f"evaluation.exclude_test: no such file {path.resolve()} (write "
                                "it with `python -m breastcls.audit`)")
    try:
        columns = pd.read_csv(path, nrows=0).columns
    except Exception as err:
        raise SettingError(f"evaluation.exclude_test: cannot read {path.resolve()} as CSV: "
                         f"{err}") from err
    if "index" not in columns:
        raise SettingError(f"evaluation.exclude_test: {path.resolve()} has no `index` column "
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
        raise SettingError(f"evaluation.tta={settings.get('tta')!r}: {err}") from None

    rule = settings.get("threshold") or {}
    method = rule.get("method")
    if method is not None and method not in METHODS:
        raise SettingError(f"evaluation.threshold.method={method!r}; choose null (keep "
                         f"model.threshold) or one of {list(METHODS)}")
    if method == "fbeta" and not float(rule.get("beta", 2.0)) > 0:
        raise SettingError(f"evaluation.threshold.beta={rule.get('beta')!r} must be > 0")
    if method == "sensitivity" and not 0 < float(rule.get("target_sensitivity", 0.9)) <= 1:
        raise SettingError("evaluation.threshold.target_sensitivity="
                         f"{rule.get('target_sensitivity')!r} must lie in (0, 1]")
    boot = settings.get("bootstrap") or {}
    if boot.get("n_resamples") and not 0 < float(boot.get("confidence", 0.95)) < 1:
        raise SettingError(f"evaluation.bootstrap.confidence={boot.get('confidence')!r} must lie "
                         "in (0, 1)")

    splits = list(cfg.get("eval_splits") or [])
    unknown = [s for s in splits if s not in EVAL_SPLITS]
    if unknown:
        raise SettingError(f"eval_splits={splits}: unknown split(s) {unknown}; choose from "
                         f"{list(EVAL_SPLITS)}")

    cv = cfg.get("cv") or {}
    check_exclude_test(settings.get("exclude_test"), cv.get("pool") if cv.get("folds") else None)
    if settings.get("exclude_test") and "test" not in splits:
        log.warning("evaluation.exclude_test is set but eval_splits=%s has no test split: no "
                    "test_dedup split will be scored", splits)

    name = cfg.get("optimized_metric") if optimized_metric else None
    if name:
        data = cfg.get("data") or {}
        if data.get("task") == "detection":  # scored as found: no threshold, no @0.5 rows
            scored = list(splits)
            metrics = detection_metric_names((data.get("records") or {}).get("classes"))
        else:
            scored = [*splits, *(["val"] if method else [])]
            if settings.get("exclude_test") and "test" in splits:
                scored.append("test_dedup")
            model = cfg.get("model") or {}
            if method or model.get("threshold", 0.5) != 0.5:
                scored += [f"{s}@0.5" for s in scored]
            metrics = [*TABLE_METRICS, "auc_acc_mean"]
        split, _, metric = str(name).partition("/")
        if split not in scored or metric not in metrics:
            raise SettingError(
                f"optimized_metric={name!r} will not be computed: the best checkpoint is scored "
                f"on eval_splits={splits}, so choose <split>/<metric> with split in "
                f"{list(dict.fromkeys(scored))} and metric in {metrics}, add the split to "
                "eval_splits, or set optimized_metric=null (no sweep)")


def detection_metric_names(classes: list[str] | None) -> list[str]:
    """The scalar scores of a detection split; per-class AP names need the class list
    (``data.records.classes``; a COCO file's own categories are known only once read)."""
    per_class = [f"ap_{name}" for name in classes or []]
    return ["map", "map_50", "map_75", *per_class, *(f"froc_sens@{r:g}fp" for r in FROC_RATES)]
