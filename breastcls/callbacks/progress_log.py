"""Progress as plain log lines, for output that is not a terminal (SLURM and CI logs), where a
progress bar shows nothing until the run ends."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class ProgressLog(Callback):
    """Every ``every_s`` seconds of training a line with epoch, step and loss, and after every
    validation one with the monitored metric and the val loss. ``when``: ``not_a_terminal``
    (beside the progress bar on a terminal, nothing is added), ``always`` or ``never``."""

    def __init__(self, every_s: float = 30.0, monitor: str | None = None,
                 when: str = "not_a_terminal") -> None:
        if when not in ("not_a_terminal", "always", "never"):
            raise ValueError(f"callbacks.progress_log.when={when!r}; choose not_a_terminal, "
                             "always or never")
        self.every_s = every_s
        self.monitor = monitor
        self.enabled = when == "always" or (when == "not_a_terminal" and not sys.stdout.isatty())
        self._last = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.enabled or time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        total = trainer.num_training_batches
        line = (f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} batch {batch_idx + 1}/"
                f"{total} step {trainer.global_step}")
        if loss is not None:
            line += f" loss {float(loss):.4f}"
        self._emit(trainer, line)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        line = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} step {trainer.global_step}"
        metrics = trainer.callback_metrics
        for name in dict.fromkeys([self.monitor, "val/loss"]):
            if name and name in metrics:
                line += f" {name} {float(metrics[name]):.4f}"
        self._emit(trainer, line)

    @staticmethod
    def _emit(trainer: L.Trainer, line: str) -> None:
        if trainer.is_global_zero:
            log.info(line)
            sys.stdout.flush()
