"""CNNs trained from scratch, described in config: conv blocks, pooling, dense layers, Linear."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from breastcls.data.readers import DataError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "selu": nn.SELU,
    "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}
POOLS = ("avg", "max", "flatten")
PADDINGS = ("same", "valid")
# Every key a block may set, with its default.
BLOCK_DEFAULTS: dict[str, Any] = {
    "filters": None,        # output channels of every conv in the block (required)
    "kernel": 3,
    "stride": 1,            # of the block's first conv; repeats use stride 1
    "padding": "same",      # same (kernel // 2) or valid (none)
    "separable": False,     # depthwise conv + 1x1 pointwise conv instead of a full conv
    "repeat": 1,            # convs in the block, each conv -> batch norm -> activation
    "batch_norm": False,
    "activation": "relu",
    "pool": None,           # max-pool kernel (= stride) after the convs; null: none
    "dropout": 0.0,         # after the pool
}


class ScratchCNN(nn.Module):
    """``features`` (conv blocks) -> ``pool`` -> ``dense`` -> ``fc`` (the final Linear, which
    :func:`breastcls.models.classifier.split_head` takes as the head)."""

    def __init__(self, features: nn.Sequential, pool: nn.Module, dense: nn.Sequential,
                 fc: nn.Linear) -> None:
        super().__init__()
        self.features, self.pool, self.dense, self.fc = features, pool, dense, fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dense(self.pool(self.features(x))))


def build_scratch_cnn(
    blocks: Sequence[Mapping[str, Any]],
    in_channels: int = 1,
    num_classes: int = 2,
    global_pool: str = "avg",
    input_size: int | None = None,
    dense: Sequence[int] = (),
    dense_dropout: float = 0.0,
    dense_activation: str = "relu",
    dense_batch_norm: bool = False,
    dropout: float = 0.0,
) -> ScratchCNN:
    """The network the config describes; bad settings raise one message naming the key.

    ``global_pool``: ``avg`` or ``max`` pool each channel to one value (any image size);
    ``flatten`` keeps every position, so the first dense layer's size depends on
    ``input_size`` (the image side), which must then be given. L2 regularisation is the
    optimiser's ``weight_decay``. ``dropout``: before the final Linear (after the last dense
    layer's own ``dense_dropout``, if any).
    """
    if not blocks:
        raise DataError("model.backbone.blocks is empty: give at least one conv block, e.g. "
                        "[{filters: 32, kernel: 3, pool: 2}]")
    layers, channels = [], in_channels
    for i, raw in enumerate(blocks):
        block = _block_settings(raw, i)
        layers.append(_conv_block(channels, block))
        channels = block["filters"]
    features = nn.Sequential(*layers)
    pool, features_out = _pooling(global_pool, features, in_channels, channels, input_size)
    make_act = _activation(dense_activation, "model.backbone.dense_activation")
    dense_layers: list[nn.Module] = []
    width = features_out
    for j, units in enumerate(dense):
        _check_int(units, f"model.backbone.dense[{j}]", minimum=1)
        dense_layers.append(nn.Linear(width, units))
        if dense_batch_norm:
            dense_layers.append(nn.BatchNorm1d(units))
        dense_layers.append(make_act())
        if dense_dropout:
            dense_layers.append(nn.Dropout(_fraction(dense_dropout,
                                                     "model.backbone.dense_dropout")))
        width = units
    if dropout:
        dense_layers.append(nn.Dropout(_fraction(dropout, "model.backbone.dropout")))
    return ScratchCNN(features, pool, nn.Sequential(*dense_layers), nn.Linear(width, num_classes))


def _block_settings(raw: Mapping[str, Any], i: int) -> dict[str, Any]:
    where = f"model.backbone.blocks[{i}]"
    if not isinstance(raw, Mapping):
        raise DataError(f"{where} = {raw!r}: each block is a mapping such as "
                        "{filters: 32, kernel: 3}")
    unknown = sorted(set(raw) - set(BLOCK_DEFAULTS))
    if unknown:
        raise DataError(f"{where} has unknown key(s) {unknown}; a block's keys are "
                        f"{list(BLOCK_DEFAULTS)}")
    block = {**BLOCK_DEFAULTS, **raw}
    if block["filters"] is None:
        raise DataError(f"{where}.filters is missing: the block's output channels")
    for key in ("filters", "kernel", "stride", "repeat"):
        _check_int(block[key], f"{where}.{key}", minimum=1)
    if block["pool"] is not None:
        _check_int(block["pool"], f"{where}.pool", minimum=1)
    if block["padding"] not in PADDINGS:
        raise DataError(f"{where}.padding={block['padding']!r}: choose from {list(PADDINGS)}")
    block["dropout"] = _fraction(block["dropout"], f"{where}.dropout")
    block["make_act"] = _activation(block["activation"], f"{where}.activation")
    return block


def _conv_block(in_channels: int, block: Mapping[str, Any]) -> nn.Sequential:
    layers: list[nn.Module] = []
    k, out = block["kernel"], block["filters"]
    padding = k // 2 if block["padding"] == "same" else 0
    for r in range(block["repeat"]):
        stride = block["stride"] if r == 0 else 1
        bias = not block["batch_norm"]  # batch norm's shift replaces the conv's bias
        if block["separable"]:
            layers += [nn.Conv2d(in_channels, in_channels, k, stride, padding,
                                 groups=in_channels, bias=False),
                       nn.Conv2d(in_channels, out, 1, bias=bias)]
        else:
            layers.append(nn.Conv2d(in_channels, out, k, stride, padding, bias=bias))
        if block["batch_norm"]:
            layers.append(nn.BatchNorm2d(out))
        layers.append(block["make_act"]())
        in_channels = out
    if block["pool"]:
        layers.append(nn.MaxPool2d(block["pool"]))
    if block["dropout"]:
        layers.append(nn.Dropout(block["dropout"]))
    return nn.Sequential(*layers)


def _pooling(kind: str, features: nn.Module, in_channels: int, channels: int,
             input_size: int | None) -> tuple[nn.Module, int]:
    if kind == "avg":
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()), channels
    if kind == "max":
        return nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten()), channels
    if kind != "flatten":
        raise DataError(f"model.backbone.global_pool={kind!r}: choose from {list(POOLS)}")
    if input_size is None:
        raise DataError("model.backbone.global_pool=flatten needs model.backbone.input_size "
                        "(the image side, e.g. ${data.image_size})")
    _check_int(input_size, "model.backbone.input_size", minimum=1)
    with torch.no_grad():  # the size of the flattened feature map, from one dummy image
        try:
            shape = features.eval()(torch.zeros(1, in_channels, input_size, input_size)).shape
        except RuntimeError as err:
            raise DataError(f"model.backbone.blocks shrink a {input_size}-px image to nothing "
                            f"({err}); use fewer pools or strides, or padding: same") from None
    features.train()
    return nn.Flatten(), int(shape[1] * shape[2] * shape[3])


def _activation(name: Any, where: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise DataError(f"{where}={name!r}: unknown activation; choose from {list(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _check_int(value: Any, where: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{where}={value!r}: give a whole number >= {minimum}")


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise DataError(f"{where}={value!r}: give a dropout rate in [0, 1)")
    return float(value)
