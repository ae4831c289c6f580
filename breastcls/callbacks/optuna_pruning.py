"""Report a validation metric to an Optuna trial after every epoch and stop pruned trials.

The Optuna sweeper (``hydra/sweeper=breastcls_optuna``) adds this callback to each trial as
``+callbacks.optuna_pruning=...`` with the storage URL, study name and trial number.
"""

from __future__ import annotations

import logging

import lightning as L
import optuna
from hydra.utils import instantiate
from lightning.pytorch import Callback

log = logging.getLogger(__name__)

PRUNER_ATTR = "pruner"  # study user attribute holding the pruner's config


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Optuna storage for ``url``; SQLite waits for locks, as parallel trials write at once."""
    if url.startswith("sqlite"):
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.storages.get_storage(url)


def load_trial(storage: str | optuna.storages.BaseStorage, study_name: str, number: int
               ) -> optuna.Trial:
    """The live trial ``number`` of a study, with the pruner its sweeper stored in the study."""
    storage = open_storage(storage) if isinstance(storage, str) else storage
    study = optuna.load_study(study_name=study_name, storage=storage)
    pruner_cfg = study.user_attrs.get(PRUNER_ATTR)
    if pruner_cfg:
        study.pruner = instantiate(pruner_cfg)
    study_id = storage.get_study_id_from_name(study_name)
    return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


class OptunaPruning(Callback):
    """Calls ``trial.report(callback_metrics[monitor], epoch)`` at each validation end and
    raises ``optuna.TrialPruned`` when the study's pruner says so."""

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str) -> None:
        self.storage = storage
        self.study_name = study_name
        self.trial_number = trial_number
        self.monitor = monitor
        self._trial: optuna.Trial | None = None

    @property
    def trial(self) -> optuna.Trial:
        if self._trial is None:
            self._trial = load_trial(self.storage, self.study_name, self.trial_number)
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Epoch-end metrics land in callback_metrics only after on_validation_epoch_end.
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        prune = False
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                log.warning("Optuna: %r was not logged; nothing reported for epoch %d",
                            self.monitor, epoch)
            else:
                self.trial.report(float(value), step=epoch)
                prune = self.trial.should_prune()
        prune = trainer.strategy.broadcast(prune, src=0)  # every DDP rank stops together
        if prune:
            raise optuna.TrialPruned(f"trial {self.trial_number} pruned after epoch {epoch}")
