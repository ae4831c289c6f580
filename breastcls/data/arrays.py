"""In-memory image arrays shared by the dataset modules."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate
from torchvision import tv_tensors
from torchvision.transforms import v2

Transform = Callable[[torch.Tensor], torch.Tensor]


class ArrayDataset(Dataset):
    """Uint8 images (N, C, H, W) and integer labels; yields dict samples ``{"image", "label",
    "index"}``, plus ``"baseline"`` (a second image per sample), ``"boxes"`` (a (K, 4) float
    tensor of XYXY pixel boxes per sample) and ``"sample_id"``/``"group"`` (record keys) when
    given. Image, baseline and boxes go through the transform as one dict, so one random draw
    (flip, rotation, crop) moves all of them alike.

    The index travels with every sample so predictions can be written back per image and
    de-duplicated when a distributed sampler pads the last batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Transform | None = None,
        indices: Sequence[int] | torch.Tensor | None = None,
        baselines: torch.Tensor | None = None,
        sample_ids: Sequence[str] | None = None,
        groups: Sequence[str] | None = None,
        boxes: Sequence[torch.Tensor] | None = None,
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError("expected uint8 images of shape (N, C, H, W), got "
                             f"{tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if baselines is not None and baselines.shape != images.shape:
            raise ValueError(f"baseline images {tuple(baselines.shape)} do not match the images "
                             f"{tuple(images.shape)}")
        if boxes is not None and len(boxes) != len(images):
            raise ValueError(f"{len(images)} images but boxes for {len(boxes)}")
        self.images = images
        self.labels = labels.long()
        self.transform = transform
        self.indices = (torch.arange(len(images)) if indices is None
                        else torch.as_tensor(indices, dtype=torch.long))
        self.baselines = baselines
        self.sample_ids = None if sample_ids is None else [str(v) for v in sample_ids]
        self.groups = None if groups is None else [str(v) for v in groups]
        self.boxes = None if boxes is None else [as_boxes(b) for b in boxes]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        views: dict[str, torch.Tensor] = {"image": tv_tensors.Image(self.images[i])}
        if self.baselines is not None:
            views["baseline"] = tv_tensors.Image(self.baselines[i])
        if self.boxes is not None:
            views["boxes"] = tv_tensors.BoundingBoxes(
                self.boxes[i], format="XYXY", canvas_size=tuple(self.images.shape[-2:]))
        if self.transform is not None:
            views = self.transform(views)  # one draw of every random transform for all views
        sample: dict[str, Any] = {k: v.as_subclass(torch.Tensor) for k, v in views.items()}
        sample["label"], sample["index"] = self.labels[i], self.indices[i]
        if self.sample_ids is not None:
            sample["sample_id"] = self.sample_ids[i]
        if self.groups is not None:
            sample["group"] = self.groups[i]
        return sample

    whole_batches = False  # set by as_whole_batches(): __getitems__ returns one batch dict

    def __getitems__(self, rows: Sequence[int]) -> list[dict[str, Any]] | dict[str, Any]:
        """The samples of a batch (the DataLoader asks for them together). Without augmentation
        and boxes they are gathered and normalised as one tensor, not image by image: the same
        values as ``[self[i] for i in rows]``; under :meth:`as_whole_batches` already collated."""
        if self.boxes is not None or not deterministic(self.transform):
            return [self[i] for i in rows]
        idx = torch.as_tensor(rows, dtype=torch.long)
        batch: dict[str, Any] = {"image": self.images[idx]}
        if self.baselines is not None:
            batch["baseline"] = self.baselines[idx]
        if self.transform is not None:
            batch = {k: self.transform(v) for k, v in batch.items()}
        batch["label"], batch["index"] = self.labels[idx], self.indices[idx]
        for key, values in (("sample_id", self.sample_ids), ("group", self.groups)):
            if values is not None:
                batch[key] = [values[i] for i in rows]
        if self.whole_batches:
            return batch
        return [{k: v[j] for k, v in batch.items()} for j in range(len(rows))]

    def as_whole_batches(self) -> ArrayDataset:
        """The same samples (arrays shared), for a DataLoader with ``collate_fn=collate``: batches
        without augmentation come out of :meth:`__getitems__` whole, with no per-sample collate."""
        view = copy.copy(self)
        view.whole_batches = True
        return view

    def with_transform(self, transform: Transform | None) -> ArrayDataset:
        return self._reordered(torch.arange(len(self)), transform)

    def without_boxes(self) -> ArrayDataset:
        """The same samples (arrays shared, not copied) without ``"boxes"``, for loaders whose
        default collate cannot stack a varying number of boxes."""
        if self.boxes is None:
            return self
        view = copy.copy(self)
        view.boxes = None
        return view

    def sorted_by_index(self) -> ArrayDataset:
        """The same samples, rows in the order of their index (as predictions are)."""
        return self._reordered(self.indices.argsort(), self.transform)

    def _reordered(self, order: torch.Tensor, transform: Transform | None) -> ArrayDataset:
        rows = order.tolist()
        return ArrayDataset(self.images[order], self.labels[order], transform,
                            self.indices[order],
                            None if self.baselines is None else self.baselines[order],
                            *([v[k] for k in rows] if v is not None else None
                              for v in (self.sample_ids, self.groups, self.boxes)))


def as_boxes(boxes: Any) -> torch.Tensor:
    """Boxes ``[[x_min, y_min, x_max, y_max], ...]`` (or none) as a (K, 4) float32 tensor."""
    out = torch.as_tensor(boxes if boxes is not None else [], dtype=torch.float32)
    if out.numel() == 0:
        out = out.reshape(0, 4)
    if out.ndim != 2 or out.shape[-1] != 4:
        raise ValueError(f"boxes must be [x_min, y_min, x_max, y_max] rows, got shape "
                         f"{tuple(out.shape)}")
    return out


def deterministic(transform: Transform | None) -> bool:
    """Whether ``transform`` only converts and normalises (the same for every image, batchable)."""
    if transform is None:
        return True
    steps = transform.transforms if isinstance(transform, v2.Compose) else [transform]
    return all(isinstance(t, (v2.ToDtype, v2.Normalize, ScaleNormalize)) for t in steps)


class ScaleNormalize(v2.Transform):
    """Integer images to float32 in [0, 1], normalised by ``mean`` and ``std``: the values of
    ``ToDtype(float32, scale=True)`` then ``Normalize(mean, std)`` up to rounding, in one
    conversion and two in-place passes (torchvision's steps allocate a tensor each); that is
    most of the time of an epoch read from the cache. Boxes and other annotations pass
    unchanged."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        std_ = torch.tensor(list(std)).view(-1, 1, 1)
        self._per_unit = 1.0 / std_                     # times the [0, 1] value
        self._shift = -torch.tensor(list(mean)).view(-1, 1, 1) / std_

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(
                inpt, (tv_tensors.Image, tv_tensors.Video)):
            return inpt
        pixels = inpt.as_subclass(torch.Tensor)
        full_scale = 1 if pixels.is_floating_point() else torch.iinfo(pixels.dtype).max
        out = pixels.to(torch.float32, copy=True)
        out.mul_(self._per_unit / full_scale).add_(self._shift)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def collate(samples: Sequence[Mapping[str, Any]] | dict[str, Any]) -> dict[str, Any]:
    """The default collate, except that ``"boxes"`` (K varies per sample) stays a list of
    (K, 4) tensors, and a batch built whole (:meth:`ArrayDataset.as_whole_batches`) passes."""
    if isinstance(samples, dict):
        return samples
    if not samples or "boxes" not in samples[0]:
        return default_collate(list(samples))
    rest = [{k: v for k, v in s.items() if k != "boxes"} for s in samples]
    return {**default_collate(rest), "boxes": [s["boxes"] for s in samples]}


def upsample(images: torch.Tensor, size: int | None) -> torch.Tensor:
    """Uint8 images (N, C, H, W) resized once, bilinearly, to ``size`` x ``size`` (None: as is).

    Done once up front rather than per sample so that an upsampled run costs no extra data time.
    """
    if size is None or images.shape[-2:] == (size, size):
        return images
    return v2.functional.resize(images, [size, size], antialias=True)


def build_transform(
    augmentation: Mapping[str, Transform] | None,
    mean: Sequence[float],
    std: Sequence[float],
    num_channels: int,
) -> v2.Compose:
    """Augmentations (on uint8 tensors) followed by scaling to [0, 1] and normalisation."""
    if len(mean) not in (1, num_channels) or len(std) not in (1, num_channels):
        raise ValueError(f"normalize mean/std need 1 or {num_channels} values, got {list(mean)} / "
                         f"{list(std)}")
    mean = list(mean) * (num_channels // len(mean))
    std = list(std) * (num_channels // len(std))
    steps = [t for t in (augmentation or {}).values() if t is not None]
    return v2.Compose([*steps, ScaleNormalize(mean, std)])
