"""Score the average of several runs' predictions: an ensemble over seeds or CV folds.

    python -m breastcls.ensemble runs=multirun_sweeps/paper_seeds
    python -m breastcls.ensemble 'runs=[logs/train/runs/A,logs/train/runs/B]'

Each run's ``{split}_predictions.csv`` is read; class probabilities are averaged per image
(``index``), over the runs that scored it: the same test split from every seed or fold, and
under ``cv.pool=trainval`` each val image from the one fold that held it out. The operating
threshold is chosen on the averaged val predictions (conf/evaluation) before test is read.
A meta-learner on the members' outputs instead of their mean: ``breastcls.stacking``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from breastcls.analysis.plots import save_all
from breastcls.console import print_result
from breastcls.scoring.pipeline import predict_val_first
from breastcls.scoring.predictions import Predictions, read_predictions_csv
from breastcls.scoring.result import EvaluationResult, score_predictions, write_result

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


def member_positive_class(runs: Sequence[Path], requested: int | str | None = None) -> int:
    """The label the members scored as positive (``positive_class`` and ``class_names`` in
    their metrics.json). Members that disagree, or a ``requested`` class (index or name) that
    differs from theirs, fail: their thresholds and metrics are about another class. Members
    that record none follow ``requested`` (default 0, with a warning)."""
    found: dict[Path, tuple[int, str]] = {}
    unrecorded = []
    for run in runs:
        info = json.loads((run / "metrics.json").read_text())
        names, positive = info.get("class_names"), info.get("positive_class")
        if not names or positive is None:
            unrecorded.append(str(run))
            continue
        if isinstance(positive, str) and positive not in names:
            raise ValueError(f"{run / 'metrics.json'}: positive_class {positive!r} is not one of "
                             f"its class_names {names}")
        index = names.index(positive) if isinstance(positive, str) else int(positive)
        found[run] = (index, names[index])
    if len(set(found.values())) > 1:
        listed = ", ".join(f"{r}: {name!r} (label {i})" for r, (i, name) in found.items())
        raise ValueError(f"the runs scored different positive classes ({listed}); ensemble runs "
                         "that share one")
    if not found:
        if isinstance(requested, str):
            raise ValueError(f"positive_class={requested!r}: the members' metrics.json record no "
                             "class names; give the label index")
        index = 0 if requested is None else int(requested)
        log.warning("The members' metrics.json record no positive_class (%s): scoring label %d as "
                    "positive%s", ", ".join(unrecorded), index,
                    "" if requested is not None else " (set positive_class=<label index>)")
        return index
    index, name = next(iter(found.values()))
    if requested is not None and requested not in (index, name):
        raise ValueError(f"positive_class={requested!r}, but the members scored {name!r} "
                         f"(label {index}) as positive; leave positive_class=null to use theirs")
    if unrecorded:
        log.warning("%s record no positive_class in metrics.json: assuming %r like the others",
                    ", ".join(unrecorded), name)
    log.info("Positive class: %r (label %d), as the members scored it", name, index)
    return index


def average_predictions(runs: Sequence[Path], split: str) -> tuple[Predictions, list[str]]:
    """Per-image mean of the runs' class probabilities for ``split``, and the class names."""
    missing = [str(r) for r in runs if not (r / f"{split}_predictions.csv").is_file()]
    if missing:
        raise FileNotFoundError(f"no {split}_predictions.csv in {missing}; score that split "
                                f"(eval_splits) in every member run")
    members = [read_predictions_csv(r / f"{split}_predictions.csv") for r in runs]
    index, labels, probs = (torch.cat([getattr(p, k) for p, _ in members])
                            for k in ("index", "labels", "probs"))
    images, row = torch.unique(index, return_inverse=True)  # sorted, as Predictions are
    label = torch.zeros_like(images).scatter_(0, row, labels)
    if not torch.equal(label[row], labels):
        raise ValueError(f"the runs give different labels to the same {split} index: they were "
                         "trained on different data or fold assignments (cv.seed, cv.pool)")
    total = torch.zeros(len(images), probs.shape[1]).index_add_(0, row, probs)
    mean = total / torch.bincount(row).unsqueeze(1)
    sample_ids, groups = (_keys_by_row([getattr(p, k) for p, _ in members], row, len(images),
                                       split) for k in ("sample_ids", "groups"))
    return Predictions(mean, label, images, sample_ids, groups), members[0][1]


def _keys_by_row(keys: list[list[str] | None], row: torch.Tensor, n: int, split: str
                 ) -> list[str] | None:
    """The members' sample ids (or groups) per averaged row; None unless every member has them.
    An index that names different samples in two members means they split different data."""
    if any(k is None for k in keys):
        return None
    out: list[str | None] = [None] * n
    for r, key in zip(row.tolist(), (v for k in keys for v in k), strict=True):
        if out[r] is not None and out[r] != key:
            raise ValueError(f"the runs give {split} index rows to different samples ({out[r]!r} "
                             f"and {key!r}): they were trained on different data or splits")
        out[r] = key
    return out


def ensemble(cfg: DictConfig) -> EvaluationResult:
    runs = member_runs(OmegaConf.to_container(cfg.runs) if OmegaConf.is_list(cfg.runs)
                       else cfg.runs)
    settings = OmegaConf.to_container(cfg.evaluation, resolve=True)
    positive = member_positive_class(runs, cfg.get("positive_class"))
    class_names: list[str] = []

    def predict_split(split: str) -> Predictions:
        nonlocal class_names
        averaged, class_names = average_predictions(runs, split)
        return averaged

    predictions, choice = predict_val_first(cfg.splits, settings.get("threshold") or {},
                                            positive, predict_split)
    threshold = choice.threshold if choice else cfg.threshold
    result = score_predictions(predictions, positive, class_names, threshold, settings, choice,
                               {"members": [str(r) for r in runs]})
    output_dir = Path(cfg.paths.output_dir)
    write_result(result, output_dir)
    if settings.get("plots"):
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
