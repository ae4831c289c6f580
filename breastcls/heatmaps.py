"""Slide heatmaps of a patch classifier's run: each patient's patch predictions at their slide
coordinates, beside the ground truth, as PNG (and to W&B with ``wandb=true``).

    python -m breastcls.heatmaps run=logs/train/runs/<run> [split=test] [patients=[8975]]

Reads ``<run>/<split>_predictions.csv`` and ``<run>/metrics.json``; patch coordinates come from
the sample ids (IDC names: ``<patient>_idx5_x<X>_y<Y>_class<c>``), the patient from the group.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig
from rich.progress import track

from breastcls.analysis.heatmaps import save_slide_maps, slide_maps
from breastcls.config import exit_on_user_error
from breastcls.data.readers import DataError

log = logging.getLogger(__name__)


def patch_predictions(run: Path, split: str, pattern: str) -> tuple[pd.DataFrame, str]:
    """The run's predictions of ``split`` with ``x``, ``y``, ``probability`` (of the positive
    class) and ``positive`` columns, and the positive class's name."""
    path, metrics = run / f"{split}_predictions.csv", run / "metrics.json"
    for needed in (path, metrics):
        if not needed.is_file():
            raise DataError(f"{needed} not found: run= must be a training or eval run folder "
                            f"that scored split {split!r}")
    info = json.loads(metrics.read_text())
    names, positive = info["class_names"], info["positive_class"]  # a name, or its index
    positive = names[positive] if isinstance(positive, int) else positive
    frame = pd.read_csv(path, dtype={"sample_id": str, "group": str})
    coords = frame["sample_id"].str.extract(_coordinates_regex(pattern))
    if coords[["x", "y"]].isna().any(axis=None):
        bad = frame.loc[coords["x"].isna() | coords["y"].isna(), "sample_id"].head(3).tolist()
        raise DataError(f"sample ids such as {bad} carry no slide coordinates for the pattern "
                        f"{pattern!r} (coordinates_pattern=, with groups named x and y)")
    frame["x"], frame["y"] = coords["x"].astype(int), coords["y"].astype(int)
    frame["probability"] = frame[f"prob_{positive}"]
    frame["positive"] = (frame["label"] == names.index(positive)).astype(int)
    return frame, positive


def _coordinates_regex(pattern: str) -> re.Pattern:
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise DataError(f"coordinates_pattern={pattern!r} is not a regular expression: {err}"
                        ) from None
    if not {"x", "y"} <= set(regex.groupindex):
        raise DataError(f"coordinates_pattern={pattern!r} needs groups named x and y, "
                        r"e.g. '_x(?P<x>\d+)_y(?P<y>\d+)'")
    return regex


def heatmaps(cfg: DictConfig) -> list[Path]:
    run = Path(cfg.run).expanduser()
    frame, positive = patch_predictions(run, cfg.split, cfg.coordinates_pattern)
    patients = [str(p) for p in cfg.patients] if cfg.patients else sorted(frame["group"].unique())
    unknown = sorted(set(patients) - set(frame["group"]))
    if unknown:
        raise DataError(f"patients {unknown[:5]} are not in {cfg.split}_predictions.csv; it holds "
                        f"{frame['group'].nunique()} patients")
    out = Path(cfg.output_dir or run / "heatmaps" / cfg.split)
    paths = [save_slide_maps(slide_maps(frame[frame["group"] == p], p, cfg.patch_size),
                             out / f"{p}.png", positive)
             for p in track(patients, description="slide heatmaps", disable=len(patients) < 5)]
    log.info("Wrote %d heatmaps to %s", len(paths), out)
    if cfg.wandb:
        _log_to_wandb(paths, cfg)
    return paths


def _log_to_wandb(paths: list[Path], cfg: DictConfig) -> None:
    import wandb  # only when asked: offline mode (WANDB_MODE=offline) needs no account

    run = wandb.init(project=cfg.wandb_project, job_type="heatmaps", dir=str(paths[0].parent),
                     config={"run": str(cfg.run), "split": cfg.split})
    run.log({f"heatmaps/{p.stem}": wandb.Image(str(p)) for p in paths})
    run.finish()


@hydra.main(version_base="1.3", config_path="../conf", config_name="heatmaps")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    heatmaps(cfg)


if __name__ == "__main__":
    main()
