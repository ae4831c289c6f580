"""Models that see the lesion patch and the baseline patch of healthy tissue beside it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import nn

from breastcls.models.classifier import split_head
from breastcls.models.transfer import dense_head


class SiameseNet(nn.Module):
    """One encoder applied to both patches (shared weights); features fused by ``|f(a) - f(b)|``
    (``fuse=absdiff``) or concatenation (``concat``), then ``fc``."""

    takes_pairs = True

    def __init__(self, encoder: Mapping[str, Any], num_classes: int = 2, fuse: str = "absdiff",
                 hidden: Sequence[int] = (256,), dropout: float = 0.5) -> None:
        super().__init__()
        if fuse not in ("absdiff", "concat"):
            raise ValueError(f"model.backbone.fuse={fuse!r}; choose absdiff or concat")
        self.encoder, width = _encoder(encoder, num_classes)
        self.fuse = fuse
        self.fc = dense_head(width * (2 if fuse == "concat" else 1), hidden, dropout, num_classes)

    @property
    def blocks(self) -> dict[str, list[nn.Module]]:
        return getattr(self.encoder, "blocks", {})

    def forward(self, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        a, b = self.encoder(x), self.encoder(baseline)
        return self.fc((a - b).abs() if self.fuse == "absdiff" else torch.cat([a, b], dim=1))


class TwoChannelNet(nn.Module):
    """The pair stacked as channels into one encoder (built with twice the channels)."""

    takes_pairs = True

    def __init__(self, encoder: Mapping[str, Any], in_channels: int = 1, num_classes: int = 2,
                 hidden: Sequence[int] = (), dropout: float = 0.0) -> None:
        super().__init__()
        self.encoder, width = _encoder(encoder, num_classes, in_channels=2 * in_channels)
        self.fc = dense_head(width, hidden, dropout, num_classes)

    def forward(self, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(torch.cat([x, baseline], dim=1)))


class Conv3dNet(nn.Module):
    """3D convolutions over the depth-2 stack (lesion, baseline). ``first_depth_kernel=2``: the
    first kernel spans both images (depth 2 -> 1, later layers 2D-like); ``3``: depth kept at 2
    (padded) through every layer."""

    takes_pairs = True

    def __init__(self, in_channels: int = 1, num_classes: int = 2,
                 channels: Sequence[int] = (16, 32, 64), first_depth_kernel: int = 3,
                 hidden: Sequence[int] = (64,), dropout: float = 0.5) -> None:
        super().__init__()
        if first_depth_kernel not in (1, 2, 3):
            raise ValueError(f"model.backbone.first_depth_kernel={first_depth_kernel}; use 1, 2 "
                             "or 3")
        layers: list[nn.Module] = []
        depth, width = 2, in_channels
        for i, out in enumerate(channels):
            kd = first_depth_kernel if i == 0 else min(3, 2 * depth - 1)
            pad = 0 if kd == 2 else kd // 2
            layers += [nn.Conv3d(width, out, (kd, 3, 3), padding=(pad, 1, 1), bias=False),
                       nn.BatchNorm3d(out), nn.ReLU(inplace=True), nn.MaxPool3d((1, 2, 2))]
            depth, width = depth - kd + 1 + 2 * pad, out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.fc = dense_head(width, hidden, dropout, num_classes)

    def forward(self, x: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(torch.stack([x, baseline], dim=2)))


def _encoder(cfg: Mapping[str, Any], num_classes: int, **overrides: Any) -> tuple[nn.Module, int]:
    """Any backbone config of the project, built and split from its head: (features, width)."""
    model = instantiate(dict(cfg), num_classes=num_classes, **overrides)
    encoder, head = split_head(model)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    return encoder, linears[0].in_features
