"""The loop with ground truth as the reviewer: test mAP against labelled images, per strategy.

Every strategy starts from the same initial labelled images and the same held-out test images.
Each round runs the real steps (``retrain``, ``propose``, ``accept``) in the strategy's own
workdir; the "review" of a round is the ground truth of the images it proposed, so provenance
shows how often the model's boxes would have been accepted, corrected or rejected.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from torchmetrics.detection import MeanAveragePrecision

from breastcls.data.busi_boxes import busi_box_records
from breastcls.data.readers import DataError
from breastcls.data.splits import read_split_file
from breastcls.labelling import steps
from breastcls.labelling.boxes import ImageBoxes
from breastcls.labelling.detections import (
    DetectorSettings,
    class_names,
    load_detector,
    run_detector,
)
from breastcls.labelling.rounds import (
    PROPOSALS_COCO,
    read_images,
    write_images,
)

log = logging.getLogger(__name__)
CURVE_COLUMNS = ("strategy", "round", "labelled_images", "map", "map_50")


def simulate(cfg: DictConfig) -> pd.DataFrame:
    """Run ``simulate.rounds`` rounds per strategy; write curve.csv and curve.png in workdir."""
    settings = cfg.simulate
    workdir = Path(cfg.workdir)
    if settings.source:
        truth, names = read_images(Path(settings.source))
    else:
        truth, names = busi_truth(Path(cfg.paths.data_dir) / "busi")
    if settings.get("split"):
        initial, pool, test = split_by_file(truth, Path(settings.split), settings.initial_images,
                                            settings.max_images, cfg.seed)
    else:
        initial, pool, test = split_images(truth, settings.initial_images,
                                           settings.test_fraction, settings.max_images, cfg.seed)
    initial_file = write_images(workdir / "initial.json", initial, names)
    rows = []
    for strategy in settings.strategies:
        rows += run_strategy(cfg, strategy, workdir / strategy, initial_file, pool, test, names)
    curve = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    curve.to_csv(workdir / "curve.csv", index=False)
    plot_curve(curve, workdir / "curve.png")
    log.info("simulated loop: %s, %s", workdir / "curve.csv", workdir / "curve.png")
    return curve


def busi_truth(root: Path) -> tuple[list[ImageBoxes], list[str]]:
    """BUSI's mask boxes as the ground truth (normal images without boxes); images whose
    masks hold no lesion are left out and named in the log."""
    table = busi_box_records(root, on_bad_file="skip")  # a missing folder: its own DataError
    for problem in table.skipped:
        log.warning("simulate: left out %s", problem)
    names = list(table.classes.names[1:])  # after no_lesion: the box classes
    truth = []
    for row in table.records.itertuples(index=False):
        with Image.open(row.path) as image:
            width, height = image.size
        truth.append(ImageBoxes(str(row.path), width, height, row.boxes,
                                [names[label] for label in row.box_labels]))
    return truth, names


def split_images(images: Sequence[ImageBoxes], initial: int, test_fraction: float,
                 max_images: int | None, seed: int
                 ) -> tuple[list[ImageBoxes], list[ImageBoxes], list[ImageBoxes]]:
    """Seeded initial / unlabelled pool / test images (of the first ``max_images`` drawn)."""
    order = np.random.default_rng(seed).permutation(len(images))[:max_images]
    n_test = round(test_fraction * len(order))
    if n_test == 0 or initial < 1 or n_test + initial >= len(order):
        raise DataError(f"simulate: {len(order)} images cannot give {n_test} test images "
                        f"(test_fraction={test_fraction}), initial_images={initial} and an "
                        "unlabelled pool; lower them or raise simulate.max_images")
    chosen = [images[i] for i in order]
    return chosen[n_test:n_test + initial], chosen[n_test + initial:], chosen[:n_test]


def split_by_file(images: Sequence[ImageBoxes], file: Path, initial: int,
                  max_images: int | None, seed: int
                  ) -> tuple[list[ImageBoxes], list[ImageBoxes], list[ImageBoxes]]:
    """A run's split (its ``splits.csv`` or folder; sample_ids are the images' file stems, as
    BUSI's are): its test images score every round, the loop labels only its other images (of
    which the first ``max_images`` drawn)."""
    split = read_split_file(file, "simulate.split")
    stems = [Path(image.path).stem for image in images]
    missing = [stem for stem in stems if stem not in split.index]
    if missing:
        raise DataError(f"simulate.split={file} lacks {len(missing)} of the {len(images)} "
                        f"images, e.g. {missing[0]!r}; use the split of a run on the same data")
    test = [image for image, stem in zip(images, stems, strict=True) if split[stem] == "test"]
    rest = [image for image, stem in zip(images, stems, strict=True) if split[stem] != "test"]
    order = np.random.default_rng(seed).permutation(len(rest))[:max_images]
    if not test or initial < 1 or initial >= len(order):
        raise DataError(f"simulate.split={file}: {len(test)} test and {len(order)} other "
                        f"images cannot give initial_images={initial} and an unlabelled pool")
    chosen = [rest[i] for i in order]
    return chosen[:initial], chosen[initial:], test


def run_strategy(cfg: DictConfig, strategy: str, workdir: Path, initial: Path,
                 pool: Sequence[ImageBoxes], test: Sequence[ImageBoxes],
                 names: Sequence[str]) -> list[tuple]:
    """Initial model, then per round: propose k images, accept their ground truth, retrain."""
    truth = {image.path: image for image in pool}
    selection = "random" if strategy == "random" else strategy
    step = OmegaConf.merge(cfg, {"workdir": str(workdir), "initial": str(initial),
                                 "round": None, "reviewed": None, "model_version": None,
                                 "pool": [image.path for image in pool],
                                 "propose": {"selection": selection, "images_per_round":
                                             cfg.simulate.images_per_round}})
    model_path = steps.retrain(OmegaConf.merge(step, {"round": 0}))
    rows = [(strategy, 0, len(labelled_images(workdir)), *test_map(model_path, test, cfg))]
    # Logged per round, not a rich progress bar: training's own bar would nest inside it.
    for number in range(1, cfg.simulate.rounds + 1):
        folder = steps.propose(step)
        proposed, _ = read_images(folder / PROPOSALS_COCO)
        reviewed = write_images(folder / "ground_truth.json",
                                [truth[p.path] for p in proposed], names)
        steps.accept(OmegaConf.merge(step, {"reviewed": str(reviewed)}))
        model_path = steps.retrain(step)
        rows.append((strategy, number, len(labelled_images(workdir)),
                     *test_map(model_path, test, cfg)))
        log.info("%s round %d/%d: %s", strategy, number, cfg.simulate.rounds, rows[-1])
    return rows


def labelled_images(workdir: Path) -> list[str]:
    """The labelled pool's images (its provenance lines)."""
    return pd.read_csv(workdir / "provenance.csv")["image"].tolist()


def test_map(checkpoint: Path, test: Sequence[ImageBoxes], cfg: DictConfig
             ) -> tuple[float, float]:
    """COCO mAP and mAP@0.5 of ``checkpoint`` on the ``test`` images (torchmetrics)."""
    detector = DetectorSettings(**cfg.detector)
    model = load_detector(checkpoint, detector)
    detections = run_detector(model, [Path(t.path) for t in test], detector)
    index = {name: i for i, name in enumerate(class_names(model))}
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    metric.update([_target(d, index, scores=True) for d in detections],
                  [_target(t, index) for t in test])
    result = metric.compute()
    return float(result["map"]), float(result["map_50"])


def _target(image: ImageBoxes, index: dict[str, int], scores: bool = False
            ) -> dict[str, torch.Tensor]:
    target = {"boxes": torch.as_tensor(image.boxes, dtype=torch.float32).reshape(-1, 4),
              "labels": torch.tensor([index[label] for label in image.labels], dtype=torch.long)}
    if scores:
        target["scores"] = torch.as_tensor(np.asarray(image.scores, float), dtype=torch.float32)
    return target


def plot_curve(curve: pd.DataFrame, path: Path) -> Path:
    """Test mAP@0.5 (solid) and mAP (dashed) against labelled images, one colour a strategy."""
    fig = Figure(figsize=(5.5, 4), layout="constrained")
    ax = fig.subplots()
    for i, (strategy, rows) in enumerate(curve.groupby("strategy", sort=False)):
        colour = f"C{i}"
        ax.plot(rows["labelled_images"], rows["map_50"], "o-", color=colour,
                label=f"{strategy}: mAP@0.5")
        ax.plot(rows["labelled_images"], rows["map"], "s--", color=colour, alpha=0.6,
                label=f"{strategy}: mAP")
    ax.set(xlabel="labelled images", ylabel="test mAP", title="Simulated labelling loop")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
