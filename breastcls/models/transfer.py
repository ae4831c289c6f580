"""ImageNet backbones (VGG, ResNet, Inception, SqueezeNet from torchvision; any timm model) with
a new dense head, their own input scaling, and named blocks for staged fine-tuning."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import timm
import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from breastcls.models.weights import load_local_weights, with_download_hint

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# torchvision archs whose pooled features and blocks are known here; other names go to timm.
TORCHVISION_FAMILIES = ("vgg", "resnet", "inception_v3", "squeezenet")


class InputScaling(nn.Module):
    """Undoes the data's normalisation, repeats gray to RGB, optionally resizes, and applies the
    backbone's own mean/std (ImageNet's; Inception's [-1, 1] is mean = std = 0.5)."""

    def __init__(self, in_channels: int, data_mean: Sequence[float], data_std: Sequence[float],
                 mean: Sequence[float], std: Sequence[float], size: int | None = None) -> None:
        super().__init__()
        if in_channels not in (1, 3):
            raise ValueError(f"pretrained backbones take 1 (gray) or 3 channels, not {in_channels}")
        self.repeat = 3 if in_channels == 1 else 1
        self.size = size
        # Not persistent: checkpoints hold weights only, scaling comes from the config.
        for name, values in (("data_mean", data_mean), ("data_std", data_std), ("mean", mean),
                             ("std", std)):
            self.register_buffer(name, torch.tensor(list(values)).view(1, -1, 1, 1),
                                 persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * self.data_std + self.data_mean).repeat(1, self.repeat, 1, 1)
        if self.size and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class TransferNet(nn.Module):
    """``fc(body(scale(x)))``; ``fc`` is the new head (split off by the classifier), ``blocks``
    the body's blocks in forward order, by name, for the fine-tuning callback."""

    def __init__(self, scale: InputScaling, body: nn.Module, blocks: dict[str, list[str]],
                 fc: nn.Module) -> None:
        super().__init__()
        self.scale, self.body, self.fc = scale, body, fc
        self.block_paths = blocks  # block name -> its modules' paths inside body

    @property
    def blocks(self) -> dict[str, list[nn.Module]]:
        return {name: [self.body.get_submodule(p) for p in paths]
                for name, paths in self.block_paths.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(self.scale(x)))


def build_pretrained(
    arch: str = "resnet50",
    num_classes: int = 2,
    in_channels: int = 1,
    pretrained: bool | str | None = None,
    hidden: Sequence[int] = (256,),
    dropout: float = 0.5,
    input_size: int | None = None,
    data_mean: Sequence[float] = (0.5,),
    data_std: Sequence[float] = (0.5,),
) -> TransferNet:
    """``arch`` with ImageNet weights (``pretrained=True``: the hub; a path: a local torchvision
    or timm state dict of that arch) and a head of ``hidden`` dense layers, dropout before
    every Linear."""
    local = pretrained if isinstance(pretrained, str) and pretrained else None
    download = pretrained is True
    if arch.startswith(TORCHVISION_FAMILIES) and arch in torchvision.models.list_models():
        body, blocks, width, mean, std = _torchvision_body(arch, download, local)
    else:
        body, blocks, width, mean, std = _timm_body(arch, download, local)
    data_mean, data_std = _channels(data_mean, in_channels), _channels(data_std, in_channels)
    scale = InputScaling(in_channels, data_mean, data_std, mean, std, input_size)
    return TransferNet(scale, body, blocks, dense_head(width, hidden, dropout, num_classes))


def dense_head(width: int, hidden: Sequence[int], dropout: float, num_classes: int
               ) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Dropout(dropout), nn.Linear(width, size), nn.ReLU(inplace=True)]
        width = size
    return nn.Sequential(*layers, nn.Dropout(dropout), nn.Linear(width, num_classes))


def _channels(values: Sequence[float], in_channels: int) -> list[float]:
    values = [float(v) for v in values]
    return values * in_channels if len(values) == 1 else values


def _torchvision_body(arch: str, download: bool, local: str | None):
    # torchvision's Inception demands aux logits with weights; they are dropped below.
    kwargs = ({"aux_logits": True} if download else {"aux_logits": False, "init_weights": True}
              ) if arch == "inception_v3" else {}
    model = with_download_hint(lambda: torchvision.models.get_model(
        arch, weights="DEFAULT" if download else None, **kwargs), arch, download)
    if local:
        load_local_weights(model, local)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if arch.startswith("vgg"):
        # Blocks end at each max-pool; the study's new head sits on the pooled conv features.
        pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
        starts = [0, *(p + 1 for p in pools[:-1])]
        convs = [[f"features.{i}" for i in range(s, p) if isinstance(model.features[i], nn.Conv2d)]
                 for s, p in zip(starts, pools, strict=True)]
        body = nn.Sequential()
        body.add_module("features", model.features)
        body.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
        return body, {f"block{i + 1}": c for i, c in enumerate(convs)}, 512, mean, std
    if arch.startswith("resnet"):
        width, model.fc = model.fc.in_features, nn.Identity()
        return model, _single(["layer1", "layer2", "layer3", "layer4"]), width, mean, std
    if arch == "inception_v3":
        model.aux_logits, model.AuxLogits = False, None
        model.transform_input = False  # the [-1, 1] scaling is InputScaling's
        width, model.fc, model.dropout = model.fc.in_features, nn.Identity(), nn.Identity()
        names = [n for n, _ in model.named_children() if n.startswith("Mixed_")]
        return model, _single(names), width, (0.5,) * 3, (0.5,) * 3
    # squeezenet: the Fire modules are the blocks
    model.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1))
    names = [f"features.{i}" for i, m in enumerate(model.features)
             if type(m).__name__ == "Fire"]
    return model, _single(names), 512, mean, std


def _timm_body(arch: str, download: bool, local: str | None):
    if arch not in timm.list_models():
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        raise ValueError(f"unknown backbone {arch!r}; close timm names: {close}")
    model = with_download_hint(lambda: timm.create_model(arch, pretrained=download), arch, download)
    if local:
        load_local_weights(model, local)
    model.reset_classifier(0)  # forward now ends at the pooled features
    owned = {n for n, m in model.named_modules() if any(True for _ in m.parameters())}
    names = [info["module"] for info in model.feature_info if info["module"] in owned]
    cfg = model.pretrained_cfg
    return (model, _single(names), model.num_features, cfg.get("mean", IMAGENET_MEAN),
            cfg.get("std", IMAGENET_STD))


def _single(names: Sequence[str]) -> dict[str, list[str]]:
    return {name: [name] for name in names}
