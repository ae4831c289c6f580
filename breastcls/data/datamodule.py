"""The generic LightningDataModule over a data set's records.

A data set module supplies a :class:`~breastcls.data.records.RecordTable`; this module reads and
caches its images, splits the records (official, holdout or k-fold, group-aware), writes the split
table and serves dict batches (``image``, ``label``, ``index``, ``sample_id``, ``group``).

Records with a ``baseline_path`` column get a second cached image per sample (``baseline`` in
the batches); records with a ``boxes`` column (per sample ``[[x_min, y_min, x_max, y_max], ...]``
in the original image's pixels) get them scaled to the cached image, in ``dataset(split)[i]``
only: the classification loaders leave them out, :func:`~breastcls.data.arrays.collate` batches
them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from breastcls.data.arrays import ArrayDataset, as_boxes, build_transform
from breastcls.data.base import SPLITS, SplitsDataModule
from breastcls.data.build import data_error
from breastcls.data.cache import Preprocessing, load_or_build
from breastcls.data.folds import duplicate_groups
from breastcls.data.readers import DataError, image_size
from breastcls.data.records import RecordTable
from breastcls.data.splits import SplitSettings, assign_splits, split_summary

log = logging.getLogger(__name__)

GROUPINGS = (None, "records", "duplicates")
AUDIT_SIZE = 28  # near-duplicate search on thumbnails, as the BreastMNIST audit


class RecordsDataModule(SplitsDataModule):
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
        cache_workers: int | None = None,
    ) -> None:
        super().__init__()
        records, split, normalize, augmentation = (_plain(c) for c in
                                                    (records, split, normalize, augmentation))
        self.save_hyperparameters()
        # Kept apart from hparams, which build_datamodule replaces by the data config.
        self.records_config, self.root, self.task = records, root, task
        self.on_bad_file, self.cache_dir, self.cache_workers = (on_bad_file, cache_dir,
                                                                cache_workers)
        split = dict(split or {})
        self.grouping = split.pop("groups", "duplicates")
        if self.grouping not in GROUPINGS:
            raise ValueError(f"data.split.groups={self.grouping!r}; choose one of {GROUPINGS}")
        try:
            self.split_settings = SplitSettings(**split, grouped=self.grouping is not None)
        except TypeError as err:  # an unknown data.split key
            raise DataError(f"data.split: {err}") from None
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
        try:
            table: RecordTable = instantiate(self.records_config, root=self.root,
                                             task=self.task, on_bad_file=self.on_bad_file)
        except InstantiationException as err:  # the records' DataError, wrapped by Hydra
            raise data_error(err) or err from None
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
        records = self._with_baselines(self.table.records.reset_index(drop=True))
        name = str(self.records_config.get("_target_", "images")).rsplit(".", 1)[-1]
        columns = {"path": name, "baseline_path": f"{name}_baseline"}
        cached = {column: load_or_build(records[column].tolist(), self.preprocessing,
                                        self.cache_dir, suffix, self.on_bad_file,
                                        self.cache_workers)
                  for column, suffix in columns.items() if column in records}
        failed = {row for c in cached.values() for row in c.failed}  # image or baseline
        keep = np.array([i not in failed for i in range(len(records))])
        for message in (m for c in cached.values() for m in c.failed.values()):
            log.warning("skipped unreadable file: %s", message)
        images, baselines = (torch.from_numpy(np.ascontiguousarray(cached[c].images[keep]))
                             if c in cached else None for c in columns)
        records = records[keep].reset_index(drop=True)
        boxes = self._boxes(records) if "boxes" in records else None
        if self.grouping == "duplicates":
            gray = images.float().mean(1, keepdim=True)
            thumbs = v2.functional.resize(gray, [AUDIT_SIZE, AUDIT_SIZE], antialias=True)
            clusters = duplicate_groups(thumbs.squeeze(1).round().byte().numpy(),
                                        records["label"].to_numpy())
            records["group"] = [f"dup{c}" for c in clusters]
        self.split_table = assign_splits(records, self.split_settings)
        self.split_table.insert(0, "index", range(len(records)))  # the prediction files' key
        log.info("splits (rows: split, columns: label):\n%s", split_summary(self.split_table))
        labels = torch.as_tensor(records["label"].to_numpy(copy=True), dtype=torch.long)
        self.records = records
        self.split_rows: dict[str, np.ndarray] = {}  # split -> its rows of self.records
        for split in SPLITS:
            rows = np.flatnonzero(self.split_table["split"].to_numpy() == split)
            if len(rows):
                transform = self.train_transform if split == "train" else self.eval_transform
                self.split_rows[split] = rows
                indices = self.sample_indices(split, rows)
                self.split_table.loc[rows, "index"] = indices
                self.datasets[split] = ArrayDataset(
                    images[rows], labels[rows], transform, indices,
                    baselines=None if baselines is None else baselines[rows],
                    sample_ids=records["sample_id"].iloc[rows].tolist(),
                    groups=records["group"].iloc[rows].tolist(),
                    boxes=None if boxes is None else [boxes[r] for r in rows])

    def sample_indices(self, split: str, rows: np.ndarray) -> np.ndarray:
        """The ``index`` of a split's samples in batches and prediction files: their rows of
        the records (data sets with an established numbering override it)."""
        return rows

    def _loader(self, dataset: ArrayDataset, shuffle: bool, batch_size: int) -> DataLoader:
        # Classification batches: boxes (a varying number per sample) stay in dataset[i].
        return super()._loader(dataset.without_boxes(), shuffle, batch_size)

    def _with_baselines(self, records: pd.DataFrame) -> pd.DataFrame:
        """The records, refusing (or, with on_bad_file=skip, dropping) those that lack the
        baseline image the others have."""
        if "baseline_path" not in records:
            return records
        missing = records["baseline_path"].isna() | (records["baseline_path"] == "")
        if not missing.any():
            return records
        ids = records.loc[missing, "sample_id"].astype(str).tolist()
        message = f"{len(ids)} sample(s) have no baseline_path: {', '.join(ids[:5])}"
        if self.on_bad_file != "skip":
            raise DataError(f"{message}\n(data.on_bad_file=skip reports them and loads the rest)")
        log.warning("skipped: %s", message)
        return records[~missing].reset_index(drop=True)

    def _boxes(self, records: pd.DataFrame) -> list[torch.Tensor]:
        """Every record's boxes in its cached image's pixels (sizes from the ``height``/``width``
        columns where given, else read from the file header)."""
        out = []
        for row in records.itertuples(index=False):
            size = tuple(int(getattr(row, c)) for c in ("height", "width")
                         if pd.notna(getattr(row, c, None)))
            out.append(scale_boxes(row.boxes, size if len(size) == 2 else image_size(row.path),
                                   self.preprocessing))
        return out


def scale_boxes(boxes: Any, size: tuple[int, int], settings: Preprocessing) -> torch.Tensor:
    """Boxes in the pixels of an original (height, width) image, moved as
    :func:`~breastcls.data.cache.preprocess` resizes (fit=resize) or resizes and pads (fit=pad)
    that image; ``None``/NaN means no boxes."""
    if boxes is None or (np.isscalar(boxes) and pd.isna(boxes)):
        boxes = []
    h, w = size
    side = settings.size
    nh, nw, top, left = side, side, 0, 0
    if settings.fit == "pad":  # the same arithmetic as preprocess: keep the two in step
        scale = side / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        top, left = (side - nh) // 2, (side - nw) // 2
    factor = torch.tensor([nw / w, nh / h, nw / w, nh / h])
    return as_boxes(boxes) * factor + torch.tensor([left, top, left, top], dtype=torch.float32)


def _plain(value: Any) -> Any:
    """OmegaConf containers as plain dicts and lists, for the checkpoint's hyperparameters."""
    if isinstance(value, DictConfig | OmegaConf) or OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value
