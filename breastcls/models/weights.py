"""Loading backbone weights from a local file (for machines without internet)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


def load_local_weights(model: nn.Module, path: str | Path) -> list[str]:
    """Load a state dict (``.pth``/``.pt``/``.safetensors``, or a Lightning checkpoint) into
    ``model``, skipping tensors whose shapes do not fit (e.g. a replaced stem or head).

    Returns the names of the model's parameters left at their initial values.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path.resolve()}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"could not read weights from {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
        state = {k.removeprefix("backbone."): v for k, v in state["state_dict"].items()}
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")

    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(fitting))
    if not fitting:
        raise ValueError(f"none of the {len(state)} tensors in {path} fit the model; is it the "
                         "right architecture?")
    model.load_state_dict(fitting, strict=False)
    left = sorted(set(own) - set(fitting))
    log.info("Loaded %d tensors from %s; skipped %d that do not fit (%s); %d left at init (%s)",
             len(fitting), path, len(skipped), ", ".join(skipped[:4]), len(left),
             ", ".join(left[:4]))
    return left


def with_download_hint(build: Callable[[], nn.Module], arch: str, download: bool) -> nn.Module:
    """``build()``, turning a failed weights download into the offline fix."""
    try:
        return build()
    except Exception as err:
        if not download:
            raise
        raise RuntimeError(
            f"could not fetch pretrained weights for {arch} ({type(err).__name__}: {err}). "
            "Without internet, download the weights elsewhere and pass the file: "
            "model.backbone.pretrained=/path/to/weights.pth") from err
