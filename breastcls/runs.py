"""What a training run leaves with its checkpoint, read back by eval, predict and export: the data
config (stored in the checkpoint; older ones: the run's ``<run>/.hydra/config.yaml``) and the
test-time flips stored with the threshold."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from breastcls.data.build import stored_data_config
from breastcls.models.classifier import tta_views

log = logging.getLogger(__name__)


def run_config_path(ckpt_path: str | Path) -> Path:
    """Where the training run's config lies: ``<run>/.hydra/config.yaml``, ``<run>`` being the
    folder above ``checkpoints/``."""
    return Path(ckpt_path).resolve().parent.parent / ".hydra" / "config.yaml"


def run_config(ckpt_path: str | Path) -> DictConfig | None:
    """The training run's config (``<run>/.hydra/config.yaml`` above ``checkpoints/``), if any."""
    path = run_config_path(ckpt_path)
    return OmegaConf.load(path) if path.is_file() else None


def run_data_config(ckpt_path: str | Path, task: str,
                    fallbacks: Sequence[tuple[Any, str]] = ()) -> Any:
    """The training run's ``data`` config; ``{}`` with a warning naming the missing file and
    what ``task`` assumes instead when the run's config is not there: each ``(setting,
    description)`` of ``fallbacks`` whose setting the user left unset. The data config stored in
    the checkpoint comes first; the run folder serves checkpoints written before it was stored."""
    stored = stored_data_config(ckpt_path)
    if stored is not None:
        log.info("%s: data settings from the checkpoint (%s)", task, stored["_target_"])
        return stored
    config = run_config(ckpt_path)
    if config is None:
        assumed = ", ".join(text for given, text in fallbacks if not given) or "nothing"
        log.warning("%s: the training run's config %s is missing, so the images' size and "
                    "normalisation cannot be read from it: assuming %s. If the model was trained "
                    "otherwise, the results are wrong: pass the training values.",
                    task, run_config_path(ckpt_path), assumed)
        return {}
    log.info("%s: data settings from the training run's config %s", task,
             run_config_path(ckpt_path))
    return config.get("data") or {}


def stored_tta(model: nn.Module) -> list[str] | None:
    """The test-time flips the checkpoint's threshold was chosen with (hparam ``tta``, written
    after training); None for checkpoints that do not record them."""
    hparams = getattr(model, "hparams", {})
    tta = hparams.get("tta") if hasattr(hparams, "get") else None
    return None if tta is None else tta_views(tta)


def default_tta(requested: Any, model: nn.Module, task: str, threshold_is_stored: bool = True,
                key: str = "tta") -> bool | list[str] | None:
    """``requested`` (the user's ``tta``), or the checkpoint's views when it is null.

    An explicit setting wins; if it differs from the views the stored threshold was chosen
    under and that threshold is applied (``threshold_is_stored``), a warning says so.
    ``[]`` or ``false`` turns test-time augmentation off explicitly. ``key``: the setting's name
    in the caller's config, for the messages.
    """
    if OmegaConf.is_config(requested):
        requested = OmegaConf.to_container(requested, resolve=True)
    stored = stored_tta(model)
    if requested is None:
        if stored:
            log.info("%s: test-time augmentation %s, as recorded in the checkpoint (its threshold "
                     "was chosen on those flip-averaged probabilities); %s=[] turns it off",
                     task, stored, key)
        return stored
    if (stored is not None and threshold_is_stored
            and sorted(tta_views(requested)) != sorted(stored)):
        log.warning("%s: %s=%s is applied, but the checkpoint's threshold was chosen on "
                    "probabilities averaged over %s: its operating point may not hold (leave "
                    "%s unset to use the checkpoint's)", task, key, tta_views(requested),
                    stored or "no flips", key)
    return requested
