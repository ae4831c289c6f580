"""Score the average of several runs' predictions: an ensemble over seeds or CV folds.

    python -m breastcls.ensemble runs=multirun_sweeps/paper_seeds
    python -m breastcls.ensemble 'runs=[logs/train/runs/A,logs/train/runs/B]'

Each run's ``{split}_predictions.csv`` is read; class probabilities are averaged per image
(``index``), over the runs that scored it: the same test split from every seed or fold, and
under ``cv.pool=trainval`` each val image from the one fold that held it out. The operating
threshold is chosen on the averaged val predictions (conf/evaluation) before test is read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from breastcls.evaluation import (
    EvaluationResult,
    Predictions,
    choose_threshold,
    score_predictions,
    write_result,
)
from breastcls.reporting import print_result

log = logging.getLogger(__name__)


def member_runs(paths: str | Sequence[str]) -> list[Path]:
    """Run folders: those given, or the numbered runs inside a multirun folder."""
    runs: list[Path] = []
    for path in [paths] if isinstance(paths, str) else list(paths):
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"runs: no such folder {path.resolve()}")
        if (path / "metrics.json").is_file():
            runs.append(path)
        else:
            found = sorted((p.parent for p in path.glob("*/metrics.json")),
                           key=lambda p: (len(p.name), p.name))
            if not found:
                raise FileNotFoundError(f"runs: {path} holds no finished run (no metrics.json "
                                        "in it or in its subfolders)")
            runs.extend(found)
    if len(runs) < 2:
        raise ValueError(f"an ensemble needs at least 2 runs, got {[str(r) for r in runs]}")
    return runs


def average_predictions(runs: Sequence[Path], split: str) -> tuple[Predictions, list[str]]:
    """Per-image mean of the runs' class probabilities for ``split``, and the class names."""
    missing = [str(r) for r in runs if not (r / f"{split}_predictions.csv").is_file()]
    if missing:
        raise FileNotFoundError(f"no {split}_predictions.csv in {missing}; score that split "
                                f"(eval_splits) in every member run")
    frames = [pd.read_csv(r / f"{split}_predictions.csv") for r in runs]
    prob_columns = [c for c in frames[0].columns if c.startswith("prob_")]
    stacked = pd.concat(frames)
    if (stacked.groupby("index")["label"].nunique() > 1).any():
        raise ValueError(f"the runs give different labels to the same {split} index: they were "
                         "trained on different data or fold assignments (cv.seed, cv.pool)")
    mean = stacked.groupby("index").agg({"label": "first", **dict.fromkeys(prob_columns, "mean")})
    predictions = Predictions(torch.tensor(mean[prob_columns].to_numpy(), dtype=torch.float32),
                              torch.tensor(mean["label"].to_numpy()),
                              torch.tensor(mean.index.to_numpy()))
    return predictions, [c.removeprefix("prob_") for c in prob_columns]


def ensemble(cfg: DictConfig) -> EvaluationResult:
    runs = member_runs(OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs)
                       else cfg.runs)
    settings = OmegaConf.to_container(cfg.evaluation, resolve=True)
    positive = cfg.positive_class
    rule = settings.get("threshold") or {}
    order = ["val", *cfg.splits] if rule.get("method") else list(cfg.splits)
    predictions: dict[str, Predictions] = {}
    choice, class_names = None, []
    for split in dict.fromkeys(order):  # val first: the threshold is fixed before test is read
        predictions[split], class_names = average_predictions(runs, split)
        if split == "val" and rule.get("method"):
            choice = choose_threshold(predictions["val"], positive, rule)
    threshold = choice.threshold if choice else cfg.threshold
    result = score_predictions(predictions, positive, class_names, threshold, settings, choice,
                               {"members": [str(r) for r in runs]})
    output_dir = Path(cfg.paths.output_dir)
    write_result(result, output_dir)
    if settings.get("plots"):
        from breastcls.analysis.plots import save_all

        split = "test" if "test" in predictions else next(iter(predictions))
        save_all(output_dir, predictions, class_names, positive, threshold, split=split)
    print_result(result, f"ensemble of {len(runs)} runs")
    log.info("Ensemble of %d runs written to %s", len(runs), output_dir)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    ensemble(cfg)


if __name__ == "__main__":
    main()
