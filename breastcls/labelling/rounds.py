"""The labelling loop's folder: one sub-folder per round, the labelled pool and its provenance.

    <workdir>/round_001/round.json                 model version, checkpoint, classes, images
                        proposals_label_studio.json  tasks to import, in review order
                        proposals_coco.json          the same boxes as COCO (with scores)
                        review_order.csv             rank, image, uncertainty, top score
                        label_config.xml             the Label Studio project's labelling config
                        model.ckpt                   the model fine-tuned after this round
    <workdir>/labelled.json                          COCO of every accepted image (all rounds)
    <workdir>/provenance.csv                         image, round, model version, outcome, ...

Images are referenced by absolute path and never copied or changed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from breastcls.data.coco import CocoImage, read_coco, write_coco
from breastcls.data.readers import DataError
from breastcls.labelling.boxes import ImageBoxes, Review

ROUND_NAME = "round_{:03d}"
ROUND_PATTERN = re.compile(r"^round_(\d{3,})$")
META = "round.json"
PROPOSALS_LABEL_STUDIO = "proposals_label_studio.json"
PROPOSALS_COCO = "proposals_coco.json"
REVIEW_ORDER = "review_order.csv"
LABEL_CONFIG = "label_config.xml"
ROUND_MODEL = "model.ckpt"
POOL = "labelled.json"
PROVENANCE = "provenance.csv"
PROVENANCE_COLUMNS = ("image", "round", "model_version", "outcome", "source", "reviewer",
                      "proposed", "kept", "moved", "relabelled", "deleted", "added", "boxes")


def rounds(workdir: Path, with_file: str = META) -> list[int]:
    """The numbers of the rounds in ``workdir`` holding ``with_file`` (proposed rounds by
    default; ``ROUND_MODEL``: rounds with a retrained model, round 0 being the initial one)."""
    if not workdir.is_dir():
        return []
    return sorted(int(m[1]) for p in workdir.iterdir()
                  if (m := ROUND_PATTERN.match(p.name)) and (p / with_file).is_file())


def latest_model(workdir: Path) -> Path | None:
    """The model retrained last in ``workdir``, if any."""
    found = rounds(workdir, ROUND_MODEL)
    return round_dir(workdir, found[-1]) / ROUND_MODEL if found else None


def round_dir(workdir: Path, number: int) -> Path:
    return workdir / ROUND_NAME.format(number)


def latest_round(workdir: Path, step: str) -> int:
    """The last proposed round, or a message saying to propose first."""
    found = rounds(workdir)
    if not found:
        raise DataError(f"{workdir}: no labelling round yet; run `python -m breastcls.label "
                        f"propose ... workdir={workdir}` before `{step}`")
    return found[-1]


def read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META
    if not path.is_file():
        raise DataError(f"{path} is missing: {folder} is not a round written by `propose`")
    return json.loads(path.read_text())


def write_images(path: Path, images: Sequence[ImageBoxes], class_names: Sequence[str]) -> Path:
    """``images`` as a COCO file (breastcls.data.coco; scores kept when they have them)."""
    index = {name: i for i, name in enumerate(class_names)}
    return write_coco(path, [CocoImage(image.path, image.width, image.height, image.boxes,
                                       [index[label] for label in image.labels],
                                       None if image.scores is None else list(image.scores))
                             for image in images], class_names)


def read_images(path: Path) -> tuple[list[ImageBoxes], list[str]]:
    """The images of a COCO file (checked by breastcls.data.coco: files exist, boxes inside
    their image, known categories) and its class names; paths are resolved (links too) as
    ``propose`` resolves the pool's, so an image has one name everywhere."""
    images, names, _ = read_coco(path)
    return [ImageBoxes(str(Path(image.path).resolve()), image.width, image.height, image.boxes,
                       [names[label] for label in image.labels]) for image in images], names


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1))
    return path


def read_pool(workdir: Path) -> tuple[list[ImageBoxes], pd.DataFrame]:
    """The labelled pool's images and provenance (empty before the first accept)."""
    pool, provenance = workdir / POOL, workdir / PROVENANCE
    if not pool.is_file():
        return [], pd.DataFrame(columns=PROVENANCE_COLUMNS)
    return read_images(pool)[0], pd.read_csv(provenance)


def grow_pool(workdir: Path, new: Sequence[ImageBoxes], rows: Sequence[dict[str, Any]],
              class_names: Sequence[str]) -> tuple[Path, Path]:
    """Add ``new`` images (and their provenance ``rows``) to the labelled pool."""
    images, provenance = read_pool(workdir)
    already = {image.path for image in images}.intersection(image.path for image in new)
    if already:
        raise DataError(f"{workdir / POOL} already holds {sorted(already)[:3]}: an image joins "
                        "the labelled pool once")
    pool = write_images(workdir / POOL, [*images, *new], class_names)
    table = pd.concat([provenance, pd.DataFrame(rows, columns=PROVENANCE_COLUMNS)],
                      ignore_index=True)
    table.to_csv(workdir / PROVENANCE, index=False)
    return pool, workdir / PROVENANCE


def seed_pool(workdir: Path, initial: Path) -> None:
    """Start an empty labelled pool from ``initial`` (a COCO file), as round 0."""
    if (workdir / POOL).is_file():
        return
    images, names = read_images(initial)
    grow_pool(workdir, images, [provenance_row(i, 0, None, str(initial), None) for i in images],
              names)


def provenance_row(image: ImageBoxes, number: int, model_version: str | None, source: str,
                   review: Review | None, reviewer: str | None = None) -> dict[str, Any]:
    """One provenance line; ``review`` is None for images labelled before the loop."""
    counts = asdict(review) if review else {"outcome": "initial"}
    return {"image": image.path, "round": number, "model_version": model_version,
            "source": source, "reviewer": reviewer, "boxes": len(image), **counts}
