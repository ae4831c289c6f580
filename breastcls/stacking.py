"""Stack trained runs: a meta-learner on their validation outputs, scored beside their average.

    python -m breastcls.stacking 'runs=[logs/train/runs/A,logs/train/runs/B]' stacking=svm
    python -m breastcls.stacking runs=multirun_sweeps/<families> inputs=features

Members are runs of any family (or, ``members_are=folders``, folders of CV-fold runs whose
out-of-fold val predictions are pooled). The meta-learner (conf/stacking/) reads the members'
positive-class probabilities (all class probabilities for multi-class tasks) or their
penultimate-layer features, is fitted on val alone, and the operating threshold (F2 by default)
is chosen on the data it was fitted on, on a held-out part of val, or on cross-validated val
predictions, all before any other split is read. The members' average is scored the same way,
and both are written side by side: ``average/`` and ``stacking/`` (metrics.json, predictions,
plots) and ``comparison.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from sklearn.base import BaseEstimator, clone
from sklearn.model_selection import (
    StratifiedGroupKFold,
    StratifiedKFold,
    cross_val_predict,
    train_test_split,
)

from breastcls.analysis.plots import save_all
from breastcls.analysis.thresholds import ThresholdChoice
from breastcls.config import exit_on_user_error, set_threads
from breastcls.console import metrics_table, print_result
from breastcls.data.readers import DataError
from breastcls.ensemble import member_positive_class
from breastcls.ensembles.members import (
    Member,
    MemberTable,
    feature_table,
    probability_table,
    stacking_members,
)
from breastcls.ensembles.meta_learners import build_meta_learner, class_probabilities
from breastcls.scoring.predictions import Predictions
from breastcls.scoring.result import (
    EvaluationResult,
    choose_threshold,
    operating_point,
    score_predictions,
    write_result,
)
from breastcls.scoring.settings import validate_settings

log = logging.getLogger(__name__)

INPUTS = ("probabilities", "features")
THRESHOLD_ON = ("fit", "held_out", "cross_val")


def stack(cfg: DictConfig) -> dict[str, EvaluationResult]:
    """Fit the meta-learner on val, score it and the members' average on ``cfg.splits``;
    returns ``{"average": ..., "stacking": ...}``."""
    check_stacking_settings(cfg)
    set_threads(cfg.get("threads"))
    settings = OmegaConf.to_container(cfg.evaluation, resolve=True)
    rule = settings.get("threshold") or {}
    runs = OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs) else cfg.runs
    members = stacking_members(runs, cfg.members_are)
    try:
        positive = member_positive_class([r for m in members for r in m.runs],
                                         cfg.get("positive_class"))
    except ValueError as err:
        raise DataError(str(err)) from None

    val, class_names = probability_table(members, "val")
    if len(class_names) > 2 and rule.get("method"):
        raise DataError(f"evaluation.threshold.method={rule['method']!r} moves a binary "
                        f"threshold, but the members scored {len(class_names)} classes "
                        f"{class_names}; set evaluation.threshold.method=null")
    read_inputs = _input_reader(cfg, members, positive, len(class_names))
    val_inputs = read_inputs("val", val)
    meta_learner, choice, fitted = fit_meta_learner(cfg, val_inputs, positive,
                                                    len(class_names), rule)
    averaged = {"val": val.predictions(np.mean(val.values, axis=0))}
    average_choice = choose_threshold(averaged["val"], positive, rule) if rule.get(
        "method") else None
    stacked = {"val": val_inputs.predictions(
        class_probabilities(meta_learner, _stacked(val_inputs), len(class_names)))}

    for split in dict.fromkeys(cfg.splits):  # only now is any other split read
        if split == "val":
            continue
        table, _ = probability_table(members, split)
        averaged[split] = table.predictions(np.mean(table.values, axis=0))
        inputs = read_inputs(split, table)
        stacked[split] = inputs.predictions(
            class_probabilities(meta_learner, _stacked(inputs), len(class_names)))

    names = [m.name for m in members]
    info = {"members": names, "members_are": cfg.members_are}
    results = {
        "average": _score(averaged, positive, class_names, average_choice, cfg, settings,
                          {**info, "method": "average"}),
        "stacking": _score(stacked, positive, class_names, choice, cfg, settings,
                           {**info, "method": "stacking", "inputs": cfg.inputs,
                            "meta_learner": OmegaConf.to_container(cfg.stacking, resolve=True),
                            "threshold_on": cfg.threshold_on, **fitted}),
    }
    write_side_by_side(results, Path(cfg.paths.output_dir), bool(settings.get("plots")),
                       f"average vs stacking ({cfg.stacking.name} on {cfg.inputs})")
    return results


def write_side_by_side(results: Mapping[str, EvaluationResult], output_dir: Path, plots: bool,
                       title: str) -> None:
    """Each method's metrics.json, predictions and plots in ``output_dir/<method>``, and one
    table of both: ``comparison.csv`` and the printed table."""
    for method, result in results.items():
        write_result(result, output_dir / method)
        positive, threshold = operating_point(result)
        if plots:
            split = "test" if "test" in result.predictions else "val"
            save_all(output_dir / method, result.predictions, result.info["class_names"],
                     positive, threshold, split=split)
        print_result(result, f"{method} of {len(result.info['members'])} members")
    comparison = comparison_table(results)
    comparison.to_csv(output_dir / "comparison.csv", index=False)
    Console(width=120).print(metrics_table(
        {f"{r.method} {r.split}": r._asdict() for r in comparison.itertuples(index=False)},
        title))
    log.info("Average and stacking written to %s", output_dir)


def check_stacking_settings(cfg: DictConfig) -> None:
    """Fail on a misspelt choice before any member is read."""
    try:
        validate_settings(cfg, optimized_metric=False)
    except (FileNotFoundError, ValueError) as err:
        raise DataError(str(err)) from None
    if cfg.inputs not in INPUTS:
        raise DataError(f"inputs={cfg.inputs!r}; choose one of {list(INPUTS)}")
    if cfg.threshold_on not in THRESHOLD_ON:
        raise DataError(f"threshold_on={cfg.threshold_on!r}; choose one of {list(THRESHOLD_ON)}")
    if cfg.threshold_on == "held_out" and not 0 < cfg.held_out_fraction < 1:
        raise DataError(f"held_out_fraction={cfg.held_out_fraction!r} must lie in (0, 1)")
    if cfg.threshold_on == "cross_val" and cfg.cv_folds < 2:
        raise DataError(f"cv_folds={cfg.cv_folds!r}: cross-validation needs at least 2 folds")


def _input_reader(cfg: DictConfig, members: list[Member], positive: int, n_classes: int
                  ) -> Callable[[str, MemberTable], MemberTable]:
    """What the meta-learner reads of a split: the members' positive-class probabilities
    (every class's when multi-class; the others are redundant for two) or their features."""
    if cfg.inputs == "features":
        overrides = OmegaConf.to_container(cfg.features.data_overrides, resolve=True) or None
        tta = cfg.features.tta
        tta = None if tta is None else list(tta)
        return lambda split, _: feature_table(members, split, overrides, tta)
    columns = [positive] if n_classes == 2 else list(range(n_classes))
    return lambda _, table: MemberTable(table.keys, [v[:, columns] for v in table.values])


def _stacked(table: MemberTable) -> np.ndarray:
    return np.hstack(table.values)


def fit_meta_learner(cfg: DictConfig, table: MemberTable, positive: int, n_classes: int,
                     rule: Mapping[str, Any]
                     ) -> tuple[BaseEstimator, ThresholdChoice | None, dict[str, Any]]:
    """The meta-learner fitted on val (or, ``threshold_on=held_out``, on the rest of val), the
    threshold chosen by ``rule`` on ``threshold_on`` data, and what it was fitted on."""
    inputs, labels = _stacked(table), table.keys["label"].to_numpy()
    groups = table.keys["group"].to_numpy() if "group" in table.keys else None
    meta_learner = build_meta_learner(cfg.stacking)
    rows = np.arange(len(labels))
    if cfg.threshold_on == "held_out":
        rows, held = held_out_rows(labels, groups, cfg.held_out_fraction, cfg.seed)
        meta_learner.fit(inputs[rows], labels[rows])
        scored, scored_probs = held, class_probabilities(meta_learner, inputs[held], n_classes)
    elif cfg.threshold_on == "cross_val":
        folds = (StratifiedGroupKFold if groups is not None else StratifiedKFold)(
            cfg.cv_folds, shuffle=True, random_state=cfg.seed)
        scored, scored_probs = rows, np.zeros((len(rows), n_classes))
        scored_probs[:, np.unique(labels)] = cross_val_predict(
            clone(meta_learner), inputs, labels, groups=groups, cv=folds, method="predict_proba")
        meta_learner.fit(inputs, labels)
    else:
        meta_learner.fit(inputs, labels)
        scored, scored_probs = rows, class_probabilities(meta_learner, inputs, n_classes)
    if rule.get("method") and cfg.threshold_on == "fit" and inputs.shape[1] >= len(rows):
        log.warning("The meta-learner has %d inputs for %d val samples: its predictions on them "
                    "fit too well for a threshold; consider threshold_on=cross_val or held_out",
                    inputs.shape[1], len(rows))
    choice = None
    if rule.get("method"):
        choice = choose_threshold(Predictions(torch.as_tensor(scored_probs, dtype=torch.float32),
                                              torch.as_tensor(labels[scored]),
                                              torch.as_tensor(scored)), positive, rule)
    log.info("Meta-learner %s fitted on %d val samples (%d inputs); threshold chosen on %d",
             cfg.stacking.name, len(rows), inputs.shape[1], len(scored))
    return meta_learner, choice, {"fit_samples": len(rows), "threshold_samples": len(scored),
                                  "meta_inputs": int(inputs.shape[1])}


def held_out_rows(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Val rows to fit on and rows held out for the threshold: stratified by label, and with
    groups (patients) never on both sides."""
    rows = np.arange(len(labels))
    if groups is None:
        fit, held = train_test_split(rows, test_size=fraction, stratify=labels,
                                     random_state=seed)
        return np.sort(fit), np.sort(held)
    folds = StratifiedGroupKFold(max(2, round(1 / fraction)), shuffle=True, random_state=seed)
    return next(folds.split(rows, labels, groups))


def _score(predictions: dict[str, Predictions], positive: int, class_names: list[str],
           choice: ThresholdChoice | None, cfg: DictConfig, settings: Mapping[str, Any],
           info: Mapping[str, Any]) -> EvaluationResult:
    threshold = choice.threshold if choice else cfg.threshold
    return score_predictions(predictions, positive, class_names, threshold, settings, choice,
                             info)


def comparison_table(results: Mapping[str, EvaluationResult]) -> pd.DataFrame:
    """One row per method and split (``test@0.5`` included), the metrics as columns."""
    return pd.DataFrame([{"method": method, "split": split, **metrics}
                         for method, result in results.items()
                         for split, metrics in result.metrics.items()])


@hydra.main(version_base="1.3", config_path="../conf", config_name="stacking")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    stack(cfg)


if __name__ == "__main__":
    main()
