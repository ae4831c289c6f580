"""Ask-and-tell loop: Optuna proposes trials, Hydra's launcher runs them, results go back."""

from __future__ import annotations

import logging
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from breastcls.analysis.sweep_summary import (
    FIXED_ATTR,
    GROUPS_ATTR,
    INTERRUPTED_ATTR,
    RETRY_OF_ATTR,
)
from breastcls.callbacks.optuna_pruning import PRUNER_ATTR, open_storage

log = logging.getLogger(__name__)

_PARSER = OverridesParser.create()
CALLBACK = "breastcls.callbacks.optuna_pruning.OptunaPruning"


def distribution(override: Override) -> BaseDistribution:
    """Optuna distribution of a sweep override: ``interval(a, b)`` (tags ``log``, ``int``),
    ``choice(...)`` or ``range(start, stop[, step])``."""
    value = override.value()
    key = override.get_key_element()
    tags = getattr(value, "tags", set())
    if isinstance(value, IntervalSweep):
        if "int" in tags:
            return IntDistribution(int(value.start), int(value.end), log="log" in tags)
        return FloatDistribution(value.start, value.end, log="log" in tags)
    if isinstance(value, RangeSweep):
        if value.shuffle or "log" in tags:
            raise ValueError(f"{key}: range() takes neither shuffle nor log here")
        values = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(values[0], values[-1], step=float(value.step))
    if isinstance(value, ChoiceSweep):
        choices = list(override.sweep_iterator())
        if not all(isinstance(c, str | int | float | bool) for c in choices):
            raise ValueError(f"{key}: choice() values must be scalars, got {choices}")
        return CategoricalDistribution(choices)
    raise ValueError(f"{key}: unsupported sweep {override.input_line!r}")


def override_value(value: Any) -> str:
    """``value`` written so that Hydra's override parser reads it back unchanged."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    try:
        if _PARSER.parse_override(f"k={text}").value() == text:
            return text
    except Exception:  # not valid unquoted: quote it
        pass
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class OptunaSweeperImpl(Sweeper):
    def __init__(self, sampler: DictConfig, pruner: DictConfig, study_name: str,
                 storage: str | None, direction: str, n_trials: int, n_jobs: int | None,
                 params: DictConfig | None, enqueue_trials: Sequence[Any], monitor: str,
                 retry_interrupted: bool, summary: bool) -> None:
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.study_name, self.storage_url, self.direction = study_name, storage, direction
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.enqueue_trials: list[dict[str, Any]] = OmegaConf.to_container(
            OmegaConf.create(list(enqueue_trials or [])), resolve=True)
        self.monitor, self.retry_interrupted, self.summary = monitor, retry_interrupted, summary

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweep_dir = Path(config.hydra.sweep.dir).resolve()

    # --- the loop -----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> list[optuna.trial.FrozenTrial]:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        self.fixed, self.space = self._parse([f"{k}={v}" for k, v in self.params.items()]
                                             + list(arguments))
        check_direction(self.direction, self.config.get("monitor_mode"), self.monitor,
                        self.config.get("optimized_metric"),
                        prunes=self.pruner_cfg.get("_target_") != "optuna.pruners.NopPruner")
        url = self.storage_url or f"sqlite:///{self.sweep_dir / 'optuna.db'}"
        storage = open_storage(url)
        study = optuna.create_study(
            study_name=self.study_name, storage=storage, direction=self.direction,
            sampler=instantiate(self.sampler_cfg), pruner=instantiate(self.pruner_cfg),
            load_if_exists=True)
        self.url, self.study = url, study
        held, seed = len(study.trials), self.sampler_cfg.get("seed")
        if held and seed is not None:
            # A seeded sampler restarts its random stream on every run: shift the seed, or a
            # resumed search proposes again the configurations it started with.
            study.sampler = instantiate(self.sampler_cfg, seed=seed + held)
        self._record_setup(study)

        retried = self._retry_interrupted(study, storage) if self.retry_interrupted else 0
        done = held_trials(study)
        to_ask = max(self.n_trials - done, 0)
        log.info("Optuna study %r in %s: %d trials held, %d to run%s", self.study_name, url,
                 done, to_ask, f" ({retried} retried after an interruption)" if retried else "")
        batch_size = self._batch_size()
        while to_ask:  # asking pops enqueued trials (retries, enqueue_trials) first
            batch = [study.ask(self.space) for _ in range(min(batch_size, to_ask))]
            to_ask -= len(batch)
            self._run(batch)

        trials = study.get_trials()
        if self.summary:
            from breastcls.analysis.sweep_summary import write_sweep_summary

            write_sweep_summary(study, self.sweep_dir)
        self._log_best(study)
        return trials

    def _run(self, batch: list[optuna.Trial]) -> None:
        runnable: list[tuple[optuna.Trial, list[str]]] = []
        for trial in batch:
            overrides = self._overrides(trial)
            try:  # a config that cannot compose fails its trial, not the sweep
                self.validate_batch_is_legal([overrides])
            except Exception as err:
                self._fail(trial, err)
                continue
            runnable.append((trial, overrides))
        for group in _consecutive(runnable):
            # Job numbers (and so the trial folders) follow the trial numbers.
            returns = self.launcher.launch([ov for _, ov in group],
                                           initial_job_idx=group[0][0].number)
            for (trial, _), ret in zip(group, returns, strict=True):
                self._tell(trial, ret)

    def _tell(self, trial: optuna.Trial, ret: JobReturn) -> None:
        if ret.hydra_cfg is not None:
            trial.set_user_attr("output_dir", ret.hydra_cfg.hydra.runtime.output_dir)
        if ret.status == JobStatus.COMPLETED:
            value = ret.return_value
            if isinstance(value, numbers.Real) and math.isfinite(value):  # numpy scalars too
                self.study.tell(trial, float(value), skip_if_finished=True)
            else:
                self._fail(trial, ValueError(f"the job returned {value!r}, not a finite number"))
            return
        error = ret._return_value  # the job's exception, without return_value's re-raise
        if isinstance(error, optuna.TrialPruned):
            self.study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            log.info("Trial %d pruned", trial.number)
        else:
            self._fail(trial, error)

    def _fail(self, trial: optuna.Trial, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}"
        log.warning("Trial %d failed: %s", trial.number, message)
        trial.set_user_attr("error", message[:2000])
        self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    # --- helpers ------------------------------------------------------------------------------
    def _parse(self, lines: list[str]) -> tuple[dict[str, str], dict[str, BaseDistribution]]:
        """Split overrides into fixed ones (passed to every trial) and the search space."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        fixed: dict[str, str] = {}
        space: dict[str, BaseDistribution] = {}
        self.space_text: dict[str, str] = {}
        for override in parser.parse_overrides(lines):
            key = override.get_key_element()
            fixed.pop(key, None)
            space.pop(key, None)  # the command line wins over the config's params
            self.space_text.pop(key, None)
            if override.is_sweep_override():
                space[key] = distribution(override)
                self.space_text[key] = (override.input_line or "").split("=", 1)[-1]
            else:
                fixed[key] = override.get_value_element_as_str()
        return fixed, space

    def _overrides(self, trial: optuna.Trial) -> list[str]:
        params = {k: v for k, v in trial.params.items() if k in self.space}
        overrides = [f"{k}={v}" for k, v in self.fixed.items()]
        overrides += [f"{k}={override_value(v)}" for k, v in params.items()]
        cb = "+callbacks.optuna_pruning"
        overrides += [f"{cb}._target_={CALLBACK}", f"{cb}.storage={override_value(self.url)}",
                      f"{cb}.study_name={override_value(self.study_name)}",
                      f"{cb}.trial_number={trial.number}",
                      f"{cb}.monitor={override_value(self.monitor)}"]
        if OmegaConf.select(self.config, "logger.wandb") is not None:
            # Every trial is a W&B run, grouped under the study.
            overrides += [f"logger.wandb.group={override_value(self.study_name)}",
                          f"logger.wandb.name={override_value(f'{self.study_name}-{trial.number}')}"]
        return overrides

    def _record_setup(self, study: optuna.Study) -> None:
        """What jobs and the summary need to know, stored with the study."""
        study.set_user_attr(PRUNER_ATTR, OmegaConf.to_container(self.pruner_cfg, resolve=True))
        study.set_user_attr("search_space", self.space_text)
        study.set_user_attr("optimized_metric", self.config.get("optimized_metric"))
        study.set_user_attr("monitor", self.monitor)
        choices = OmegaConf.select(self.config, "hydra.runtime.choices") or {}
        study.set_user_attr("experiment", choices.get("experiment"))
        study.set_user_attr("task_name", self.config.get("task_name"))  # whose entry point
        # best.yaml rebuilds each trial's config: the overrides every trial shared, and which
        # keys name config groups (they go into its defaults list).
        study.set_user_attr(FIXED_ATTR, [f"{k}={v}" for k, v in self.fixed.items()])
        study.set_user_attr(GROUPS_ATTR, sorted(choices))
        for params in self.enqueue_trials:
            # Keys fixed on the command line (or misspelt) are no params: leave them out.
            unknown = sorted(set(params) - set(self.space))
            if unknown:
                log.warning("enqueue_trials: %s not in the search space, left out", unknown)
            params = {k: v for k, v in params.items() if k in self.space}
            if params:
                study.enqueue_trial(params, skip_if_exists=True)

    def _retry_interrupted(self, study: optuna.Study, storage: Any) -> int:
        """Fail the trials a killed sweep left RUNNING and enqueue each one's params again.

        A fresh trial, not the same one re-run: Optuna ignores a re-reported step, so a re-run
        would keep the killed attempt's intermediate values and the pruner would judge it on them.
        """
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        study_id = storage.get_study_id_from_name(self.study_name)
        for frozen in running:
            study.enqueue_trial(frozen.params, user_attrs={RETRY_OF_ATTR: frozen.number})
            trial = optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(
                study_id, frozen.number))
            trial.set_user_attr(INTERRUPTED_ATTR, datetime.now().isoformat())
            trial.set_user_attr("error", "interrupted: the sweep stopped while it ran; retried")
            study.tell(trial, state=TrialState.FAIL)
        return len(running)

    def _batch_size(self) -> int:
        n = self.n_jobs
        if n is None:  # joblib's n_jobs, submitit's array_parallelism, else one at a time
            launcher = self.config.hydra.launcher
            n = launcher.get("n_jobs", launcher.get("array_parallelism", 1))
        if n is None or n < 1:  # joblib's -1: every CPU
            n = os.cpu_count() or 1
        return int(n)

    def _log_best(self, study: optuna.Study) -> None:
        counts = {s.name: len(study.get_trials(deepcopy=False, states=(s,)))
                  for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        try:
            best = study.best_trial
        except ValueError:
            log.warning("Optuna: no trial completed (%s)", counts)
            return
        log.info("Optuna: %s; best trial %d, value %.4f, params %s", counts, best.number,
                 best.value, best.params)


def check_direction(direction: str, monitor_mode: str | None, monitor: str,
                    optimized_metric: str | None, prunes: bool) -> None:
    """Refuse a study direction that disagrees with ``monitor_mode`` where the study judges the
    monitored values: when a pruner compares them, or when they are what the study optimises."""
    expected = {"max": "maximize", "min": "minimize"}.get(str(monitor_mode))
    if expected is None or expected == direction or not (prunes or monitor == optimized_metric):
        return
    raise ValueError(
        f"hydra.sweeper.direction={direction} but monitor_mode={monitor_mode}: the study would "
        f"judge {monitor} the wrong way round. Set hydra.sweeper.direction={expected} (or "
        f"monitor_mode to match the direction).")


def held_trials(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials``: finished or running, less those retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs[RETRY_OF_ATTR] for t in trials if RETRY_OF_ATTR in t.user_attrs}
    return sum(t.state != TrialState.WAITING and t.number not in retried for t in trials)


def _consecutive(items: list[tuple[optuna.Trial, list[str]]]
                 ) -> Iterator[list[tuple[optuna.Trial, list[str]]]]:
    group: list[tuple[optuna.Trial, list[str]]] = []
    for item in items:
        if group and item[0].number != group[-1][0].number + 1:
            yield group
            group = []
        group.append(item)
    if group:
        yield group
