"""In-memory image arrays shared by the dataset modules."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

Transform = Callable[[torch.Tensor], torch.Tensor]


class ArrayDataset(Dataset):
    """Uint8 images (N, C, H, W) and integer labels; yields ``(image, label, index)``.

    The index travels with every sample so predictions can be written back per image and
    de-duplicated when a distributed sampler pads the last batch.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Transform | None = None,
        indices: Sequence[int] | torch.Tensor | None = None,
    ) -> None:
        if images.ndim != 4 or images.dtype != torch.uint8:
            raise ValueError("expected uint8 images of shape (N, C, H, W), got "
                             f"{tuple(images.shape)} {images.dtype}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.long()
        self.transform = transform
        self.indices = (torch.arange(len(images)) if indices is None
                        else torch.as_tensor(indices, dtype=torch.long))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[i], self.indices[i]


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
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=mean, std=std)]
    return v2.Compose(steps)
