"""ResNet backbones (torchvision or timm) with an optional small-input stem and a dropout head."""

from __future__ import annotations

import logging

import timm
import torchvision
from torch import nn

from breastcls.models.weights import load_local_weights, with_download_hint

log = logging.getLogger(__name__)

ARCHS = ("resnet18", "resnet34", "resnet50")


def build_resnet(
    arch: str = "resnet18",
    source: str = "torchvision",
    in_channels: int = 1,
    num_classes: int = 2,
    small_input: bool = True,
    keep_maxpool: bool = False,
    dropout: float = 0.0,
    pretrained: bool | str | None = None,
) -> nn.Module:
    """A ResNet whose ``fc`` is ``Dropout(dropout) + Linear(num_classes)``.

    ``small_input`` swaps the 7x7/2 stem for a 3x3/1 convolution (padding 1, with bias) and,
    unless ``keep_maxpool``, drops the max-pool: 28-pixel images then keep their resolution into
    layer1, as in MedMNIST's ResNets. ``pretrained``: ``True`` downloads ImageNet weights from the
    source's hub; a path loads a local state dict; the replaced stem and head start fresh.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown ResNet {arch!r}; choose one of {ARCHS}")
    local_weights = pretrained if isinstance(pretrained, str) and pretrained else None
    download = pretrained is True
    # ImageNet weights are RGB: a local file loads into a 3-channel stem, adapted afterwards.
    build_channels = 3 if local_weights or source == "torchvision" else in_channels
    if source == "torchvision":
        weights = "DEFAULT" if download else None
        model = with_download_hint(lambda: getattr(torchvision.models, arch)(weights=weights),
                                    arch, download)
    elif source == "timm":
        model = with_download_hint(
            lambda: timm.create_model(arch, pretrained=download, in_chans=build_channels), arch,
            download)
    else:
        raise ValueError(f"unknown source {source!r}; choose 'torchvision' or 'timm'")

    if local_weights:
        # Load before replacing stem/head so a full ImageNet state dict matches the model.
        load_local_weights(model, local_weights)
    if small_input:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=True)
        if not keep_maxpool:
            model.maxpool = nn.Identity()
    elif build_channels != in_channels:
        model.conv1 = _adapt_conv(model.conv1, in_channels)
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.fc.in_features, num_classes))
    return model


def _adapt_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels``; its (pretrained) RGB filters are averaged."""
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    bias=conv.bias is not None)
    new.weight.data = conv.weight.data.mean(dim=1, keepdim=True).repeat(1, in_channels, 1, 1)
    return new
