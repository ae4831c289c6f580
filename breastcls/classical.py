"""Classical models on deep features: one row of the study's Table 2 per command.

    python -m breastcls.classical features=<run>/features_<name>.csv
        classical=lasso_smote_svm_linear
    python -m breastcls.classical features=... mode=holdout fit_split=train score_split=test

``mode=cv`` scores the pipeline by stratified group k-fold over ``cv_splits``; ``mode=holdout``
does the same inside ``fit_split``, then fits on all of it and scores ``score_split``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from breastcls.classical_data import FeatureSet, positive_class_of, read_table, select_splits
from breastcls.classical_pipeline import build_pipeline, cross_validate, fit, predict_probs
from breastcls.classical_report import (
    collect_tables,
    fold_table,
    print_table,
    scores_with_ci,
    table_row,
    write_table,
)
from breastcls.config import exit_on_user_error, metric_value
from breastcls.data.readers import DataError

log = logging.getLogger(__name__)

MODES = ("cv", "holdout")


def run_classical(cfg: DictConfig) -> dict[str, float]:
    """Evaluate ``cfg.classical`` on ``cfg.features``; returns ``{"cv/balanced_acc_mean": ...}``
    (and the scored split's metrics in holdout mode), and writes them into the run folder."""
    if cfg.mode not in MODES:
        raise DataError(f"mode={cfg.mode!r}; choose one of {MODES}")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = read_table(cfg.features, cfg.get("labels"))
    n_classes = int(frame["label"].max()) + 1
    # Only a binary task has a positive class; multi-class scores are macro averages.
    positive = positive_class_of(cfg.features, cfg.positive_class) if n_classes == 2 else None
    settings = OmegaConf.to_container(cfg.classical, resolve=True)
    bootstrap = OmegaConf.to_container(cfg.bootstrap, resolve=True)
    pipeline = build_pipeline(settings, cfg.seed)
    cv_splits = list(cfg.cv_splits) if cfg.mode == "cv" else [cfg.fit_split]
    data = select_splits(frame, cv_splits, cfg.features)
    cv = cross_validate(pipeline, data, cfg.cv.folds, cfg.cv.seed)
    cv_scores = scores_with_ci(cv.probs, data.labels, data.groups, positive, bootstrap)
    folds = cv.summary()
    name, features = settings.get("name", "pipeline"), Path(cfg.features).stem
    rows = [table_row(name, features, f"{cfg.cv.folds}-fold CV on {'+'.join(cv_splits)}",
                      len(data), cv_scores, folds, folds["features_kept_mean"])]
    metrics: dict[str, Any] = {"task": "classical", "pipeline": settings,
                               "positive_class": positive,
                               "features": str(Path(cfg.features).resolve()),
                               "cv": {**cv_scores["values"], **folds},
                               "cv_ci": cv_scores["ci"]}
    fold_table(cv.folds, data.labels).to_csv(out_dir / "folds.csv", index=False)
    fold_of = np.empty(len(data), dtype=int)
    for result in cv.folds:
        fold_of[result.rows] = result.fold
    write_predictions(data, cv.probs, out_dir / "cv_predictions.csv", fold=fold_of)
    if cfg.mode == "holdout":
        model = fit(pipeline, data, f"split {cfg.fit_split}")
        scored = select_splits(frame, [cfg.score_split], cfg.features)
        probs = predict_probs(model, scored.features, n_classes)
        scores = scores_with_ci(probs, scored.labels, scored.groups, positive, bootstrap)
        kept = float(model.named_steps["select"].get_support().sum()
                     if "select" in model.named_steps else data.features.shape[1])
        rows.append(table_row(name, features, f"{cfg.score_split} (fitted on {cfg.fit_split})",
                              len(scored), scores, kept=kept))
        metrics[cfg.score_split] = {**scores["values"], "features_kept": kept}
        metrics[f"{cfg.score_split}_ci"] = scores["ci"]
        write_predictions(scored, probs, out_dir / f"{cfg.score_split}_predictions.csv")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    print_table(write_table(rows, out_dir), f"classical: {name} on {features}")
    sweep_dir = _sweep_dir()
    if sweep_dir is not None:  # a multirun over Table 2's rows: its table so far
        collect_tables(sweep_dir)
    return {f"{split}/{k}": float(v) for split in ("cv", cfg.score_split) if split in metrics
            for k, v in metrics[split].items()}


def write_predictions(data: FeatureSet, probs: np.ndarray, path: Path,
                      fold: np.ndarray | None = None) -> None:
    """Per sample: id, group, label, class probabilities (and the fold that held it out)."""
    frame = pd.DataFrame({"sample_id": data.sample_ids, "group": data.groups,
                          "label": data.labels})
    if fold is not None:
        frame["fold"] = fold
    for c in range(probs.shape[1]):
        frame[f"prob_{c}"] = probs[:, c]
    frame.to_csv(path, index=False, float_format="%.6f")


def _sweep_dir() -> Path | None:
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir)
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="classical")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return metric_value(run_classical(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
