"""Typed helpers that turn config groups into Lightning objects."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from lightning.pytorch import Callback
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


def _instantiate_named(cfg: DictConfig | None, kind: type, group: str) -> list[Any]:
    objects = []
    for name, item in (cfg or {}).items():
        if item is None:  # `callbacks.early_stopping=null` switches one off
            continue
        if not isinstance(item, DictConfig) or "_target_" not in item:
            raise ValueError(f"{group}.{name} must be a config with a _target_, got {item!r}")
        obj = instantiate(item)
        if not isinstance(obj, kind):
            raise TypeError(f"{group}.{name} built a {type(obj).__name__}, not a {kind.__name__}")
        objects.append(obj)
    return objects


def instantiate_callbacks(cfg: DictConfig | None) -> list[Callback]:
    return _instantiate_named(cfg, Callback, "callbacks")


def instantiate_loggers(cfg: DictConfig | None) -> list[Logger]:
    return _instantiate_named(cfg, Logger, "logger")


def log_hyperparameters(loggers: list[Logger], cfg: DictConfig, model: Any) -> None:
    """Send the resolved run config (and the model's size) to every logger."""
    if not loggers:
        return
    hparams = OmegaConf.to_container(cfg, resolve=True)
    hparams.pop("hydra", None)
    hparams["model/params/total"] = sum(p.numel() for p in model.parameters())
    hparams["model/params/trainable"] = sum(p.numel() for p in model.parameters()
                                            if p.requires_grad)
    for lg in loggers:
        lg.log_hyperparams(hparams)


def single_device_trainer(trainer_cfg: DictConfig) -> Any:
    """A Trainer like ``trainer_cfg`` (accelerator, precision) but on one device and silent.

    Final evaluation runs here: a distributed sampler would pad and repeat samples.
    """
    return instantiate(trainer_cfg, devices=1, num_nodes=1, strategy="auto", sync_batchnorm=False,
                       logger=False, callbacks=[], enable_progress_bar=False,
                       enable_model_summary=False)


def log_final_results(loggers: list[Logger], result: Any, step: int) -> None:
    """Test metrics (and W&B images of the plots) once the best checkpoint is scored."""
    from lightning.pytorch.loggers import WandbLogger

    test = {f"test/{k}": v for k, v in result.metrics.get("test", {}).items()}
    for lg in loggers:
        lg.log_metrics(test, step=step)
        plots = result.info.get("plots") or []
        if isinstance(lg, WandbLogger) and plots:
            lg.log_image(key="plots", images=plots, step=step,
                         caption=[Path(p).stem for p in plots])
        lg.finalize("success")
