"""Structured configs of the Optuna sweeper, its samplers and its pruners.

Samplers and pruners are Optuna's own classes, built with ``hydra.utils.instantiate``; the
options below only give them names in the ``hydra/sweeper/sampler`` and ``hydra/sweeper/pruner``
groups (select one with ``hydra/sweeper/pruner=median``, tune it with
``hydra.sweeper.pruner.n_startup_trials=5``).
"""

# No `from __future__ import annotations`: Hydra executes plugin modules before registering
# them in sys.modules, and dataclasses then cannot resolve string annotations.
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Any = None  # int for a reproducible sequence of trials


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Any = None
    n_startup_trials: int = 10  # random trials before TPE takes over
    n_ei_candidates: int = 24
    multivariate: bool = False  # model the parameters jointly (Optuna marks it experimental)
    constant_liar: bool = False  # avoid proposing the same point to trials that run in parallel


@dataclass
class NopPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class MedianPrunerConf:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # finished trials before any pruning
    n_warmup_steps: int = 5  # epochs a trial always runs
    interval_steps: int = 1
    n_min_trials: int = 1  # trials that must have reported the same epoch


@dataclass
class SuccessiveHalvingPrunerConf:
    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"  # epochs before the first rung
    reduction_factor: int = 3
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class HyperbandPrunerConf:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1  # epochs
    max_resource: Any = "${trainer.max_epochs}"
    reduction_factor: int = 3


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.breastcls_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    # Sampler and pruner reach the sweeper as configs: jobs rebuild the pruner from them.
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [
        "_self_", {"sampler": "tpe"}, {"pruner": "nop"}])
    sampler: Any = None
    pruner: Any = None
    study_name: str = "sweep"
    # null: sqlite:///<hydra.sweep.dir>/optuna.db. Any Optuna RDB URL works (postgresql://...).
    storage: Any = None
    direction: str = "maximize"  # or minimize, for the value the task returns
    n_trials: int = 20  # trials the study holds when the sweep ends, resumed ones included
    # Trials launched together; null: the launcher's n_jobs (joblib) or array_parallelism
    # (submitit), else 1.
    n_jobs: Any = None
    # Search space, key: override in Hydra's sweep syntax (interval, tag(log, ...), choice, range).
    params: dict[str, str] = field(default_factory=dict)
    # Trials to run first, each a dict of some or all params (Optuna's enqueue_trial).
    enqueue_trials: list[Any] = field(default_factory=list)
    # Validation metric reported to Optuna after each epoch (for pruning and the plots).
    monitor: Any = "${monitor}"
    # Fail the trials an interrupted sweep left RUNNING and run their params again as new trials
    # (assumes one sweeper per study: with several, a RUNNING trial may be another's).
    retry_interrupted: bool = True
    summary: bool = True  # write trials.csv, best.yaml and plots into the sweep folder


ConfigStore.instance().store(group="hydra/sweeper", name="breastcls_optuna",
                             node=OptunaSweeperConf, provider="breastcls_optuna_sweeper")
for _group, _name, _node in [
    ("sampler", "random", RandomSamplerConf),
    ("sampler", "tpe", TPESamplerConf),
    ("pruner", "nop", NopPrunerConf),
    ("pruner", "median", MedianPrunerConf),
    ("pruner", "successive_halving", SuccessiveHalvingPrunerConf),
    ("pruner", "hyperband", HyperbandPrunerConf),
]:
    ConfigStore.instance().store(group=f"hydra/sweeper/{_group}", name=_name, node=_node,
                                 provider="breastcls_optuna_sweeper")
