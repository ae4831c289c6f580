"""Train a classifier and evaluate its best checkpoint.

    python -m breastcls.train experiment=breastmnist_resnet18_paper seed=1
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, Timer
from omegaconf import DictConfig, OmegaConf

from breastcls.checkpoints import load_checkpoint
from breastcls.config import (
    class_metadata,
    exit_on_user_error,
    metric_value,
    platform_info,
    register_resolvers,
    set_threads,
)
from breastcls.console import print_config_tree, print_result
from breastcls.data.build import build_datamodule, instantiate_or_data_error
from breastcls.instantiate import (
    instantiate_callbacks,
    instantiate_loggers,
    log_final_results,
    log_hyperparameters,
    single_device_trainer,
)
from breastcls.loggers import finish_wandb
from breastcls.scoring.detection import evaluate_detection
from breastcls.scoring.pipeline import evaluate_splits
from breastcls.scoring.settings import validate_settings

log = logging.getLogger(__name__)
register_resolvers()


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, then score the best checkpoint on ``cfg.eval_splits``; returns ``{"test/auc": ...}``."""
    # A typo in the evaluation settings fails now, not after training. optimized_metric is
    # main()'s (what a sweep reads), checked there: train() itself returns every score.
    validate_settings(cfg, optimized_metric=False)
    set_threads(cfg.get("threads"))
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg.data)
    model: L.LightningModule = instantiate_or_data_error(cfg.model,
                                                         **class_metadata(datamodule, cfg))
    timer = Timer()  # seconds per epoch, for the results table
    callbacks = [*instantiate_callbacks(cfg.get("callbacks")), timer]
    loggers = instantiate_loggers(cfg.get("logger"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if cfg.get("ckpt_path"):
        continue_checkpoints(callbacks, cfg.ckpt_path)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    log_hyperparameters(loggers, cfg, model)

    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    if not trainer.is_global_zero:  # other DDP ranks are done; rank 0 evaluates alone
        return {}

    info = {"monitor": None, "best_score": None, "epochs_run": trainer.current_epoch,
            "platform": platform_info(), **_cost(model, timer, trainer.current_epoch)}
    best = _best_checkpoint(trainer)
    if best:
        model, ckpt_info = load_checkpoint(best, cfg.model._target_)
        score = trainer.checkpoint_callback.best_model_score  # None without a monitor
        info.update(ckpt_info, monitor=trainer.checkpoint_callback.monitor,
                    best_score=None if score is None else float(score),
                    best_epoch=ckpt_info["epoch"])
    else:
        log.warning("No best checkpoint was saved (checkpointing off or fast_dev_run): "
                    "evaluating the final weights.")
    if getattr(model, "task", None) == "detection":  # boxes: breastcls.scoring.detection
        return evaluate_detection(model, datamodule, cfg.eval_splits,
                                  Path(cfg.paths.output_dir), info)
    # The chosen threshold and the test-time flips go into the best checkpoint before plots.
    result = evaluate_splits(single_device_trainer(cfg.trainer), model, datamodule,
                             cfg.eval_splits, Path(cfg.paths.output_dir), info,
                             OmegaConf.to_container(cfg.evaluation, resolve=True),
                             checkpoint=best)
    log_final_results(loggers, result, step=trainer.global_step)
    print_result(result, f"{cfg.task_name}: best checkpoint "
                 f"(epoch {info.get('best_epoch', trainer.current_epoch)})")
    return result.flat()


def continue_checkpoints(callbacks: list[L.Callback], ckpt_path: str) -> None:
    """Keep a resumed run's checkpoints in the folder it resumes from: Lightning restores the
    best score and top-k list only when the checkpoint folder is unchanged, and would otherwise
    pick the best among the resumed epochs alone."""
    folder = os.path.realpath(Path(ckpt_path).expanduser().parent)
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath != folder:
            log.info("Resuming: checkpoints continue in %s (not %s), with the best so far",
                     folder, callback.dirpath)
            callback.dirpath = folder


def _cost(model: L.LightningModule, timer: Timer, epochs: int) -> dict[str, float | int]:
    """What a results table lists beside the metrics: parameters and seconds per epoch (train
    and validation, setup excluded)."""
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "epoch_seconds": timer.time_elapsed("train") / max(epochs, 1)}


def _best_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.best_model_path:
        return callback.best_model_path
    return None


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    if cfg.get("extras", {}).get("print_config"):
        print_config_tree(cfg)
    validate_settings(cfg)
    try:
        metrics = train(cfg)
    finally:
        finish_wandb()
    if not metrics:
        return None
    return metric_value(metrics, cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
