"""The loop's steps as ``python -m breastcls.label`` runs them, from conf/label.yaml."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import shutil
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from breastcls.data.readers import PIL_SUFFIXES, DataError
from breastcls.labelling.detections import (
    DetectorSettings,
    class_names,
    load_detector,
    run_detector,
)
from breastcls.labelling.label_studio import LabelStudioNames
from breastcls.labelling.proposals import ProposalSettings, write_round
from breastcls.labelling.review import accept_round
from breastcls.labelling.rounds import (
    POOL,
    ROUND_MODEL,
    latest_model,
    read_meta,
    read_pool,
    round_dir,
    seed_pool,
)
from breastcls.labelling.training import fine_tune

log = logging.getLogger(__name__)


def propose(cfg: DictConfig) -> Path:
    """Detect on the unlabelled pool and write the next round's pre-annotations."""
    workdir = Path(cfg.workdir)
    checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else latest_model(workdir)
    if checkpoint is None:
        raise DataError(f"propose needs a model: give checkpoint=<ckpt> (none retrained in "
                        f"{workdir} yet)")
    labelled = {image.path for image in read_pool(workdir)[0]}
    paths = [p for p in pool_images(cfg.pool, list(cfg.pool_exclude)) if str(p) not in labelled]
    detector = DetectorSettings(**cfg.detector)
    model = load_detector(checkpoint, detector)
    detections = run_detector(model, paths, detector)
    settings = ProposalSettings(**OmegaConf.to_container(cfg.propose), seed=cfg.seed)
    folder = write_round(workdir, detections, class_names(model),
                         cfg.model_version or model_version(checkpoint), str(checkpoint),
                         settings, LabelStudioNames(**cfg.label_studio))
    log.info("%s: %d of %d unlabelled images proposed for review (%s order); import %s",
             folder, min(len(paths), settings.images_per_round or len(paths)), len(paths),
             settings.selection, folder / "proposals_label_studio.json")
    return folder


def accept(cfg: DictConfig) -> None:
    """Add a round's reviewed images to the labelled pool, with their provenance."""
    if not cfg.reviewed:
        raise DataError("accept needs reviewed=<Label Studio JSON export or COCO file>")
    workdir = Path(cfg.workdir)
    if cfg.initial:
        seed_pool(workdir, Path(cfg.initial))
    rows = accept_round(workdir, Path(cfg.reviewed), cfg.round,
                        names=LabelStudioNames(**cfg.label_studio), **cfg.review)
    table = Table(title=f"round {int(rows['round'].iloc[0])}: reviewed images")
    for column in ("outcome", "kept", "moved", "relabelled", "deleted", "added"):
        table.add_column(column, justify="right")
    for outcome, group in rows.groupby("outcome"):
        table.add_row(f"{outcome} ({len(group)})", *(str(int(group[c].sum()))
                                                       for c in ("kept", "moved", "relabelled",
                                                                 "deleted", "added")))
    Console().print(table)


def retrain(cfg: DictConfig) -> Path:
    """Fine-tune the model that proposed the latest accepted round on the grown pool; round 0
    (an ``initial`` pool, nothing proposed yet) trains from ``checkpoint`` or train's own."""
    workdir = Path(cfg.workdir)
    if cfg.initial:
        seed_pool(workdir, Path(cfg.initial))
    images, provenance = read_pool(workdir)
    if not images:
        raise DataError(f"{workdir}: the labelled pool is empty; accept a round or give "
                        "initial=<COCO file>")
    number = cfg.round if cfg.round is not None else int(provenance["round"].max())
    start = cfg.checkpoint if number == 0 else read_meta(round_dir(workdir, number))["checkpoint"]
    best = fine_tune(workdir / POOL, start, round_dir(workdir, number) / "train",
                     list(cfg.train.overrides), cfg.paths.root_dir, cfg.seed)
    target = round_dir(workdir, number) / ROUND_MODEL
    shutil.copy2(best, target)
    log.info("round %d: fine-tuned from %s on %d labelled images -> %s", number,
             start or "train's initial weights", len(images), target)
    return target


def pool_images(pool: str | list[str] | ListConfig | None, exclude: list[str]) -> list[Path]:
    """The images of ``pool``: a folder (recursively), a text file with one path per line, or a
    list of paths; names matching ``exclude`` are left out."""
    if not pool:
        raise DataError("propose needs pool=<folder of images | paths.txt | [img1,img2]>")
    if isinstance(pool, (list, ListConfig)):
        paths = [Path(p) for p in pool]
    elif Path(pool).is_dir():
        paths = sorted(p for p in Path(pool).rglob("*") if p.suffix.lower() in PIL_SUFFIXES)
    elif Path(pool).is_file():
        paths = [Path(line.strip()) for line in Path(pool).read_text().splitlines()
                 if line.strip()]
    else:
        raise DataError(f"pool={pool}: no such folder or file of image paths")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"pool={pool}: {len(missing)} image(s) not found, e.g. {missing[:3]}")
    kept = [p.resolve() for p in paths
            if not any(fnmatch.fnmatch(p.name, pattern) for pattern in exclude)]
    if not kept:
        raise DataError(f"pool={pool}: no images (suffixes {PIL_SUFFIXES}, less "
                        f"pool_exclude={exclude})")
    return kept


def model_version(checkpoint: Path) -> str:
    """``round_002/model@1a2b3c4d``: where the weights came from, and which weights exactly."""
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()[:8]
    return f"{checkpoint.parent.name}/{checkpoint.stem}@{digest}"
