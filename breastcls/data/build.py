"""Build a DataModule from its ``data`` config, and read that config back from a checkpoint.

The resolved config becomes the DataModule's hyperparameters, which Lightning writes into every
checkpoint (``datamodule_hyper_parameters``): eval, predict and export rebuild the data from the
checkpoint alone, wherever it has been copied.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from breastcls.data.base import SplitsDataModule
from breastcls.data.readers import DataError

CHECKPOINT_KEY = "datamodule_hyper_parameters"  # where Lightning stores a DataModule's hparams


def build_datamodule(data: DictConfig | Mapping[str, Any]) -> SplitsDataModule:
    """``instantiate(data)``, after checking every key is a setting of its ``_target_``."""
    config = (OmegaConf.to_container(data, resolve=True) if OmegaConf.is_config(data)
              else dict(data))
    check_settings(config)
    datamodule = instantiate_or_data_error(config)  # the config's own _recursive_ applies
    datamodule.save_hyperparameters(config)
    return datamodule


def instantiate_or_data_error(config: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate``, but a DataError raised inside (which Hydra wraps in an
    InstantiationException, once per nesting level) comes out as itself: one clear message."""
    try:
        return instantiate(config, **kwargs)
    except InstantiationException as err:
        cause = data_error(err)
        if cause is None:
            raise
        raise cause from None


def check_settings(config: Mapping[str, Any]) -> None:
    """Refuse ``data.<key>`` values the DataModule class does not take, naming the ones it does."""
    target = config.get("_target_")
    if not target:
        raise DataError("the data config has no _target_; pick a data set with data=<name> "
                        "(a file of conf/data/)")
    try:
        cls = get_class(target)
    except Exception as err:
        raise DataError(f"data._target_={target!r} cannot be imported ({err})") from None
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [name for name in parameters if name != "self"]
    unknown = [key for key in config if not key.startswith("_") and key not in accepted]
    if unknown:
        keys = ", ".join(f"data.{key}" for key in unknown)
        raise DataError(f"{keys} {'is not a setting' if len(unknown) == 1 else 'are not settings'}"
                        f" of {cls.__name__} (data._target_={target}); its settings are: "
                        f"{', '.join(accepted)}. An experiment for another data set may have set "
                        "it: pick the matching experiment= or drop the key.")


def data_error(err: BaseException | None) -> DataError | None:
    """The DataError (a user's mistake) that ``err`` was raised from, if any."""
    while err is not None and not isinstance(err, DataError):
        err = err.__cause__
    return err


def stored_data_config(ckpt_path: str | Path) -> dict[str, Any] | None:
    """The resolved ``data`` config a checkpoint was trained with; None for checkpoints written
    before it was stored."""
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    stored = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(stored, Mapping) or "_target_" not in stored:
        return None
    return dict(stored)
