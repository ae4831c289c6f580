"""BreastMNIST (MedMNIST v2) breast ultrasound, benign/normal vs malignant.

Labels follow medmnist: 0 = malignant, 1 = normal or benign. Metrics treat malignant (label 0) as
the positive class; see ``breastcls.metrics``.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from breastcls.data.arrays import ArrayDataset, Transform, build_transform, upsample
from breastcls.data.base import SPLITS, SplitsDataModule
from breastcls.data.folds import CrossValidation, assign_folds

log = logging.getLogger(__name__)

SIZES = (28, 64, 128, 224)
CLASS_NAMES = ("malignant", "normal_benign")
POSITIVE_CLASS = 0


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
            raise FileNotFoundError(
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
        raise ValueError(f"{path} is not a readable npz file ({err}). Delete it and download it "
                         "again (data.download=true) or copy a good copy there.") from err
    except KeyError as err:
        raise ValueError(f"{path} lacks the array {err}; expected keys "
                         f"{[f'{s}_{k}' for s in SPLITS for k in ('images', 'labels')]}") from err
    out = {}
    for split, (images, labels) in arrays.items():
        if images.ndim != 3 or images.shape[1:] != (size, size) or len(images) != len(labels):
            raise ValueError(f"{path}: {split}_images has shape {images.shape} and {split}_labels "
                             f"{labels.shape}; expected (N, {size}, {size}) and (N, 1).")
        out[split] = (images.astype(np.uint8), labels.reshape(-1).astype(np.int64))
    return out


class BreastMNISTDataModule(SplitsDataModule):
    """Official train/val/test splits of BreastMNIST as in-memory uint8 tensors."""

    num_classes = 2
    class_names = CLASS_NAMES
    positive_class = POSITIVE_CLASS

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
        augmentation: Mapping[str, Transform] | None = None,
        cv: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__()
        check_size(size)
        self.data_dir = data_dir
        self.size = size
        self.resize = resize
        self.as_rgb = as_rgb
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.download = download
        normalize = normalize or {"mean": [0.5], "std": [0.5]}
        self.train_transform = build_transform(augmentation, normalize["mean"], normalize["std"],
                                               self.num_channels)
        self.eval_transform = build_transform(None, normalize["mean"], normalize["std"],
                                              self.num_channels)
        self.cv = CrossValidation(**cv) if cv and cv.get("folds") else None
        self.datasets: dict[str, ArrayDataset] = {}
        self.split_table: pd.DataFrame | None = None  # fold assignment under cross-validation

    @property
    def num_channels(self) -> int:
        return 3 if self.as_rgb else 1

    @property
    def input_shape(self) -> tuple[int, int, int]:
        side = self.resize or self.size
        return self.num_channels, side, side

    def prepare_data(self) -> None:
        if self.download:
            load_breastmnist(self.data_dir, self.size, download=True)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        arrays = load_breastmnist(self.data_dir, self.size)
        if self.cv is None:
            splits = {s: (images, labels, None) for s, (images, labels) in arrays.items()}
        else:
            splits, self.split_table = assign_folds(arrays, self.cv)
        for split, (images, labels, indices) in splits.items():
            tensor = upsample(torch.from_numpy(images).unsqueeze(1), self.resize)
            if self.as_rgb:
                tensor = tensor.expand(-1, 3, -1, -1).contiguous()
            transform = self.train_transform if split == "train" else self.eval_transform
            sample_ids, groups = self._keys(split, len(labels), indices)
            self.datasets[split] = ArrayDataset(tensor, torch.from_numpy(labels), transform,
                                                indices, sample_ids=sample_ids, groups=groups)

    def _keys(self, split: str, n: int, indices: np.ndarray | None) -> tuple[list[str], list[str]]:
        """Sample ids ``<official split>_<row>`` and groups (each image its own, or its
        near-duplicate cluster under ``cv.groups``) of a split's rows."""
        table = self.split_table
        if table is None or indices is None or (split == "test" and self.cv.pool == "trainval"):
            ids = [f"{split}_{i}" for i in range(n)]
            return ids, ids
        rows = table.iloc[indices]
        ids = (rows["source_split"] + "_" + rows["source_index"].astype(str)).tolist()
        groups = ids if not self.cv.groups else [f"dup{g}" for g in rows["group"]]
        return ids, groups
