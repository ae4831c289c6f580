"""Loading backbone weights from a local file (for machines without internet)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


def weights_file(path: str | Path) -> Path:
    """``path`` itself, or for a breastcls run folder its best checkpoint (``metrics.json``'s
    ``checkpoint``, looked up in the folder's ``checkpoints/`` should the run have moved)."""
    path = Path(path).expanduser()
    if path.is_dir():
        metrics = path / "metrics.json"
        if not metrics.is_file():
            raise FileNotFoundError(f"{path.resolve()} is a folder but no finished run (no "
                                    "metrics.json); pass the run folder or a weights file")
        saved = json.loads(metrics.read_text())
        best = saved.get("checkpoint") or saved.get("info", {}).get("checkpoint")  # detection
        if not best:
            raise FileNotFoundError(f"{metrics} names no best checkpoint; pass a weights file")
        moved = path / "checkpoints" / Path(best).name
        path = moved if moved.is_file() else Path(best)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path.resolve()}")
    return path


def read_state_dict(path: str | Path, strip_prefix: str = "") -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``.pth``/``.pt``/``.safetensors``, a Lightning checkpoint,
    or a run folder's best checkpoint); a checkpoint's keys lose ``strip_prefix``."""
    path = weights_file(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"could not read weights from {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:  # a Lightning checkpoint
        state = {k.removeprefix(strip_prefix): v for k, v in state["state_dict"].items()}
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def load_local_weights(model: nn.Module, path: str | Path,
                       strip_prefix: str = "backbone.") -> list[str]:
    """Load a state dict (as :func:`read_state_dict` reads it) into ``model``, skipping tensors
    whose shapes do not fit (e.g. a replaced stem or head).

    Returns the names of the model's parameters left at their initial values.
    """
    state = read_state_dict(path, strip_prefix)

    own = model.state_dict()
    state = {k: _fit_input_channels(v, own[k]) if k in own else v for k, v in state.items()}
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


def _fit_input_channels(weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A one-channel (gray) convolution spread over ``target``'s input channels, so that the
    model gives the same response on a gray image repeated in each; other tensors unchanged."""
    if (weight.ndim == 4 and target.ndim == 4 and weight.shape[1] == 1 and target.shape[1] > 1
            and weight.shape[0] == target.shape[0] and weight.shape[2:] == target.shape[2:]):
        return weight.repeat(1, target.shape[1], 1, 1) / target.shape[1]
    return weight


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
