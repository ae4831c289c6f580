"""The plugin class Hydra discovers; the work (and the Optuna import) lives in ``_impl``."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import OptunaSweeperConf  # noqa: F401  (registers the configs)


class OptunaSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        # Imported here: Hydra imports every plugin module at start-up, sweeps or not.
        from ._impl import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function,
                           config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
