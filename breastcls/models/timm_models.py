"""Any timm image model (ConvNeXt, EfficientNet, ResNet, ...) as a classifier backbone."""

from __future__ import annotations

import difflib
from pathlib import Path

import timm
from torch import nn

from breastcls.models.weights import with_download_hint


def build_timm_model(
    arch: str,
    in_channels: int = 1,
    num_classes: int = 2,
    dropout: float = 0.0,
    drop_path_rate: float = 0.0,
    pretrained: bool | str | None = None,
) -> nn.Module:
    """``timm.create_model`` with its own stem and head.

    ``pretrained``: ``True`` downloads the default ImageNet weights; a path loads a local file
    through timm's loader, which adapts the stem to ``in_channels`` and drops a head of another
    class count. Downsampling is the model's own: ConvNeXt (stride-4 stem, /32 overall) needs at
    least 32-pixel inputs, so upsample 28-pixel images with ``data.resize=64``.

    The new classification head always gets ``nn.Linear``'s fan-in initialisation. EfficientNet
    and MobileNet draw it from ±1/sqrt(num_classes) instead, sized for 1000 classes: with 2 it is
    ±0.71. That starts the logits with a standard deviation of about 5, and the model never
    learns (train AUC stays near 0.5).
    """
    if arch not in timm.list_models():
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        raise ValueError(f"unknown timm model {arch!r}; close names: {close}")
    kwargs: dict = {"in_chans": in_channels, "num_classes": num_classes, "drop_rate": dropout}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    if isinstance(pretrained, str) and pretrained:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained weights file not found: {path.resolve()}")
        model = timm.create_model(arch, pretrained=True,
                                  pretrained_cfg_overlay={"file": str(path)}, **kwargs)
    else:
        download = pretrained is True
        model = with_download_hint(lambda: timm.create_model(arch, pretrained=download, **kwargs),
                                   arch, download)
    # timm keeps a pretrained head only when the class counts match (ImageNet's 1000)
    if not pretrained or num_classes != model.pretrained_cfg.get("num_classes"):
        for layer in model.get_classifier().modules():
            if isinstance(layer, nn.Linear | nn.Conv2d):
                layer.reset_parameters()
    return model
