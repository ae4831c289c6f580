"""What every DataModule of breastcls serves once its ``setup`` has filled ``self.datasets``:
datasets per split, class counts and the loaders training, evaluation and prediction use."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from breastcls.data.arrays import ArrayDataset, Transform, collate

SPLITS = ("train", "val", "test")


class SplitsDataModule(L.LightningDataModule):
    """Subclasses set ``datasets``, ``eval_transform``, ``batch_size``, ``eval_batch_size``,
    ``num_workers``, ``pin_memory`` and ``num_classes``."""

    datasets: dict[str, ArrayDataset]
    eval_transform: Transform
    batch_size: int
    eval_batch_size: int
    num_workers: int
    pin_memory: bool

    def dataset(self, split: str, augment: bool = False) -> ArrayDataset:
        """The dataset of ``split``; ``augment`` only changes the train split."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        self.setup()
        if split not in self.datasets:
            raise ValueError(f"split {split!r} is empty; the splits are {list(self.datasets)}")
        ds = self.datasets[split]
        if split == "train" and not augment:
            return ds.with_transform(self.eval_transform)
        return ds

    def class_counts(self, split: str = "train") -> torch.Tensor:
        return torch.bincount(self.dataset(split).labels, minlength=self.num_classes)

    def _loader(self, dataset: ArrayDataset, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(dataset.as_whole_batches(), batch_size=batch_size, shuffle=shuffle,
                          collate_fn=collate,
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
