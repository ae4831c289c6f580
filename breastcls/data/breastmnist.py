"""BreastMNIST (MedMNIST v2) breast ultrasound, benign/normal vs malignant, as records.

Labels follow medmnist: 0 = malignant, 1 = normal or benign; malignant (label 0) is the positive
class. One record per image (``sample_id`` ``<official split>_<row>``, ``path``
``<npz>::<split>_images::<row>``), split officially or, under the top-level ``cv`` settings (the
same as ``data/split=kfold``), by stratified k-fold whose groups are near-duplicate clusters when
``cv.groups=duplicates`` asks. ``index`` keeps the official row numbers (the pool's positions for
cross-validation folds), as ``evaluation.exclude_test`` files give them.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from breastcls.data.base import SPLITS
from breastcls.data.datamodule import RecordsDataModule
from breastcls.data.folds import CrossValidation, duplicate_groups
from breastcls.data.readers import DataError
from breastcls.data.records import ClassInfo, RecordTable

log = logging.getLogger(__name__)

SIZES = (28, 64, 128, 224)
CLASS_NAMES = ("malignant", "normal_benign")
POSITIVE_CLASS = 0
RECORDS = "breastcls.data.breastmnist.breastmnist_records"


class MissingFileError(DataError, FileNotFoundError):
    """The npz is not where the settings point."""


class BadFileError(DataError, ValueError):
    """The npz cannot be read or holds arrays of the wrong shape."""


def check_size(size: int) -> None:
    if size not in SIZES:
        raise ValueError(f"BreastMNIST comes in sizes {SIZES}; data.size={size} is not one of "
                         "them.")


def npz_filename(size: int) -> str:
    return "breastmnist.npz" if size == 28 else f"breastmnist_{size}.npz"


def load_breastmnist(data_dir: str | Path, size: int = 28, download: bool = False
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return ``{split: (images uint8 (N, H, W), labels int (N,))}`` from the medmnist npz."""
    check_size(size)
    data_dir = Path(data_dir).expanduser()
    path = data_dir / npz_filename(size)
    if not path.is_file():
        if not download:
            raise MissingFileError(
                f"BreastMNIST file not found: {path.resolve()}\n"
                "Fix one of:\n"
                "  * point breastcls at the folder that holds it: paths.data_dir=/path/to/data "
                "or export BREASTCLS_DATA_DIR=/path/to/data\n"
                "  * let medmnist download it (needs internet): data.download=true")
        import medmnist

        data_dir.mkdir(parents=True, exist_ok=True)
        log.info("Downloading %s into %s", path.name, data_dir)
        medmnist.BreastMNIST(split="train", root=str(data_dir), size=size, download=True)
    try:
        with np.load(path) as npz:
            arrays = {s: (npz[f"{s}_images"], npz[f"{s}_labels"]) for s in SPLITS}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise BadFileError(f"{path} is not a readable npz file ({err}). Delete it and download it "
                         "again (data.download=true) or copy a good copy there.") from err
    except KeyError as err:
        raise BadFileError(f"{path} lacks the array {err}; expected keys "
                         f"{[f'{s}_{k}' for s in SPLITS for k in ('images', 'labels')]}") from err
    out = {}
    for split, (images, labels) in arrays.items():
        if images.ndim != 3 or images.shape[1:] != (size, size) or len(images) != len(labels):
            raise BadFileError(f"{path}: {split}_images has shape {images.shape} and "
                               f"{split}_labels {labels.shape}; expected (N, {size}, {size}) "
                               "and (N, 1).")
        out[split] = (images.astype(np.uint8), labels.reshape(-1).astype(np.int64))
    return out


def breastmnist_records(root: str | Path, task: str = "binary", on_bad_file: str = "error",
                       size: int = 28, groups: str | None = None, pool: str = "trainval"
                       ) -> RecordTable:
    """The images of the npz as records in official order (train, val, test). ``groups=
    "duplicates"``: near-duplicate clusters of the ``pool`` (``trainval`` or ``all``) as groups,
    found on the stored images; otherwise every image is its own group."""
    if task != "binary":
        raise DataError(f"data.task={task!r}: BreastMNIST has the task 'binary' only")
    arrays = load_breastmnist(root, size)
    npz = Path(root).expanduser() / npz_filename(size)
    frames = [pd.DataFrame({"sample_id": [f"{split}_{i}" for i in range(len(labels))],
                            "label": labels, "split": split, "row": np.arange(len(labels)),
                            "path": [f"{npz}::{split}_images::{i}" for i in range(len(labels))]})
              for split, (_, labels) in arrays.items()]
    records = pd.concat(frames, ignore_index=True)
    records.insert(1, "group", records["sample_id"])
    if groups == "duplicates":
        pooled = ("train", "val") if pool == "trainval" else SPLITS
        clusters = duplicate_groups(np.concatenate([arrays[s][0] for s in pooled]),
                                    np.concatenate([arrays[s][1] for s in pooled]))
        # Zero-padded, so that the splitter orders the clusters as it orders their numbers.
        records.loc[records["split"].isin(pooled), "group"] = [f"dup{c:04d}" for c in clusters]
    return RecordTable(records, ClassInfo(CLASS_NAMES, POSITIVE_CLASS))


def cv_split(cv: Mapping[str, object]) -> dict[str, object]:
    """The ``split`` settings of the top-level ``cv`` settings (checked as before)."""
    settings = CrossValidation(**cv)  # type: ignore[arg-type]
    return {"mode": "kfold", "folds": settings.folds, "fold": settings.fold,
            "pool": settings.pool, "seed": settings.seed, "val_fraction": settings.val_fraction,
            "test_fraction": 0.0, "groups": settings.groups}


class BreastMNISTDataModule(RecordsDataModule):
    """BreastMNIST records from the medmnist npz: official splits, or k-fold under ``cv``."""

    def __init__(
        self,
        data_dir: str,
        size: int = 28,
        resize: int | None = None,
        as_rgb: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        download: bool = False,
        normalize: Mapping[str, Sequence[float]] | None = None,
        augmentation: Mapping[str, Any] | None = None,
        cv: Mapping[str, Any] | None = None,
        split: Mapping[str, Any] | None = None,
        cache_dir: str = ".cache/breastcls",
    ) -> None:
        check_size(size)
        settings = dict(cv_split(cv) if cv and cv.get("folds")
                        else split or {"mode": "official"})
        groups = settings.get("groups")
        settings["groups"] = "records" if groups == "duplicates" else groups
        # Clusters are found on the stored images, over the pool the folds are made of.
        pool = settings.get("pool", "trainval") if settings.get("mode") == "kfold" else "all"
        super().__init__(
            records={"_target_": RECORDS, "size": size, "groups": groups, "pool": pool},
            root=data_dir, task="binary", image_size=resize or size, as_rgb=as_rgb,
            split=settings, batch_size=batch_size, eval_batch_size=eval_batch_size,
            num_workers=num_workers, pin_memory=pin_memory, normalize=normalize,
            augmentation=augmentation, cache_dir=cache_dir)
        self.hparams.clear()  # the checkpoint keeps this class's settings, not the base's
        self.save_hyperparameters()
        self.data_dir, self.size, self.resize, self.download = data_dir, size, resize, download

    def prepare_data(self) -> None:
        if self.download:
            load_breastmnist(self.data_dir, self.size, download=True)

    def sample_indices(self, split: str, rows: np.ndarray) -> np.ndarray:
        settings = self.split_settings
        official = settings.mode == "official" or (
            split == "test" and settings.mode == "kfold" and settings.pool == "trainval")
        return self.records["row"].to_numpy()[rows] if official else rows
