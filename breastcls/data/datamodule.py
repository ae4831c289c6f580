"""The generic LightningDataModule over a data set's records.

A data set module supplies a :class:`~breastcls.data.records.RecordTable`; this module reads and
caches its images, splits the records (official, holdout or k-fold, group-aware), writes the split
table and serves the same ``(image, label, index)`` batches as the in-memory data sets.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from breastcls.data.arrays import ArrayDataset, build_transform
from breastcls.data.cache import Preprocessing, load_or_build
from breastcls.data.folds import duplicate_groups
from breastcls.data.records import RecordTable
from breastcls.data.splits import SplitSettings, assign_splits, split_summary

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
GROUPINGS = (None, "records", "duplicates")
AUDIT_SIZE = 28  # near-duplicate search on thumbnails, as the BreastMNIST audit


class RecordsDataModule(L.LightningDataModule):
    """Images of a record table, cached once, split by ``split`` settings."""

    def __init__(
        self,
        records: Mapping[str, Any],
        root: str,
        task: str,
        image_size: int = 128,
        fit: str = "resize",
        as_rgb: bool = False,
        voi: str = "auto",
        split: Mapping[str, Any] | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        normalize: Mapping[str, Sequence[float]] | None = None,
        augmentation: Mapping[str, Any] | None = None,
        cache_dir: str = ".cache/breastcls",
        on_bad_file: str = "error",
    ) -> None:
        super().__init__()
        records, split, normalize, augmentation = (_plain(c) for c in
                                                    (records, split, normalize, augmentation))
        self.save_hyperparameters()
        split = dict(split or {})
        self.grouping = split.pop("groups", "duplicates")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"data.split.groups={self.grouping!r}; choose one of {GROUPINGS}")
        self.split_settings = SplitSettings(**split, grouped=self.grouping is not None)
        self.preprocessing = Preprocessing(image_size, fit, 3 if as_rgb else 1, voi)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        normalize = normalize or {"mean": [0.5], "std": [0.5]}
        steps = {k: instantiate(v) if isinstance(v, Mapping) else v
                 for k, v in (augmentation or {}).items()}
        channels = self.preprocessing.channels
        self.train_transform = build_transform(steps, normalize["mean"], normalize["std"], channels)
        self.eval_transform = build_transform(None, normalize["mean"], normalize["std"], channels)
        self.datasets: dict[str, ArrayDataset] = {}
        self.split_table: pd.DataFrame | None = None

    @cached_property
    def table(self) -> RecordTable:
        table: RecordTable = instantiate(self.hparams.records, root=self.hparams.root,
                                         task=self.hparams.task,
                                         on_bad_file=self.hparams.on_bad_file)
        for problem in table.skipped:
            log.warning("skipped: %s", problem)
        return table

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.table.classes.names

    @property
    def num_classes(self) -> int:
        return self.table.classes.num_classes

    @property
    def positive_class(self) -> int | None:
        return self.table.classes.positive

    @property
    def num_channels(self) -> int:
        return self.preprocessing.channels

    @property
    def input_shape(self) -> tuple[int, int, int]:
        side = self.preprocessing.size
        return self.preprocessing.channels, side, side

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        records = self.table.records.reset_index(drop=True)
        name = str(self.hparams.records.get("_target_", "images")).rsplit(".", 1)[-1]
        cached = load_or_build(records["path"].tolist(), self.preprocessing,
                               self.hparams.cache_dir, name, self.hparams.on_bad_file)
        keep = np.array([i not in cached.failed for i in range(len(records))])
        for message in cached.failed.values():
            log.warning("skipped unreadable file: %s", message)
        images = torch.from_numpy(np.ascontiguousarray(cached.images[keep]))
        records = records[keep].reset_index(drop=True)
        if self.grouping == "duplicates":
            gray = images.float().mean(1, keepdim=True)
            thumbs = v2.functional.resize(gray, [AUDIT_SIZE, AUDIT_SIZE], antialias=True)
            clusters = duplicate_groups(thumbs.squeeze(1).round().byte().numpy(),
                                        records["label"].to_numpy())
            records["group"] = [f"dup{c}" for c in clusters]
        self.split_table = assign_splits(records, self.split_settings)
        self.split_table.insert(0, "index", range(len(records)))  # the prediction files' key
        log.info("splits (rows: split, columns: label):\n%s", split_summary(self.split_table))
        labels = torch.as_tensor(records["label"].to_numpy(), dtype=torch.long)
        self.records = records
        for split in SPLITS:
            rows = np.flatnonzero(self.split_table["split"].to_numpy() == split)
            if len(rows):
                transform = self.train_transform if split == "train" else self.eval_transform
                self.datasets[split] = ArrayDataset(images[rows], labels[rows], transform, rows)

    def dataset(self, split: str, augment: bool = False) -> ArrayDataset:
        """The dataset of ``split``; ``augment`` only changes the train split."""
        self.setup()
        if split not in self.datasets:
            raise ValueError(f"split {split!r} is empty or unknown; the splits are "
                             f"{list(self.datasets)}")
        ds = self.datasets[split]
        if split == "train" and not augment:
            return ArrayDataset(ds.images, ds.labels, self.eval_transform, ds.indices)
        return ds

    def class_counts(self, split: str = "train") -> torch.Tensor:
        return torch.bincount(self.dataset(split).labels, minlength=self.num_classes)

    def _loader(self, dataset: ArrayDataset, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("train", augment=True), True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("test"), False, self.eval_batch_size)

    def eval_dataloader(self, split: str) -> DataLoader:
        """Deterministic, unaugmented loader over any split (train included)."""
        return self._loader(self.dataset(split), False, self.eval_batch_size)


def _plain(value: Any) -> Any:
    """OmegaConf containers as plain dicts and lists, for the checkpoint's hyperparameters."""
    if isinstance(value, DictConfig | OmegaConf) or OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value
