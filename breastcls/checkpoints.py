"""Load checkpoints safely and write the chosen operating point back into them."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from hydra.utils import get_class

from breastcls.models.classifier import tta_views


def load_checkpoint(path: str | Path, module_class: str) -> tuple[L.LightningModule, dict]:
    """Rebuild a module from its checkpoint with ``weights_only=True`` (no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path.resolve()}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"could not load checkpoint {path}: {err}") from err
    cls = get_class(module_class)
    hparams = dict(checkpoint["hyper_parameters"])
    if "load_weights" in inspect.signature(cls).parameters:  # its state dict follows
        hparams["load_weights"] = False
    module = cls(**hparams)
    module.load_state_dict(checkpoint["state_dict"])
    return module, {"checkpoint": str(path), "epoch": checkpoint.get("epoch"),
                    "global_step": checkpoint.get("global_step")}


def store_threshold(path: str | Path, threshold: float,
                    tta: bool | Sequence[str] | None = None) -> None:
    """Write the operating threshold, and the test-time flips it was chosen with (``tta``: a
    plain list of strings, ``[]`` for none), into a checkpoint's hyperparameters, so eval and
    predict apply both unchanged. Plain values only: checkpoints load with weights_only=True."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["threshold"] = float(threshold)
    checkpoint["hyper_parameters"]["tta"] = tta_views(tta)
    torch.save(checkpoint, path)
