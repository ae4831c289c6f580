"""The pruning benchmark's bookkeeping: saved learning curves, replays and shared configurations.

The benchmark itself trains for hours; these check, on synthetic curves, what its numbers rest on.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import optuna
import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("sweep_pruning",
                                              ROOT / "benchmarks" / "sweep_pruning.py")
bench = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = bench  # dataclasses look their module up
spec.loader.exec_module(bench)

# Three unpruned trials: a good one (10 s per epoch), a late bloomer and a bad one.
CURVES = [
    bench.Curve(0, {"lr": 0.001}, {0: 0.70, 1: 0.80, 2: 0.90, 3: 0.91}, 40.0, 0.91),
    bench.Curve(1, {"lr": 0.03}, {0: 0.60, 1: 0.65, 2: 0.95, 3: 0.94}, 80.0, 0.95),
    bench.Curve(2, {"lr": 0.0001}, {0: 0.50, 1: 0.55, 2: 0.60, 3: 0.62}, 40.0, 0.62),
]


def test_curves_survive_a_csv_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "curves.csv"
    bench.write_curves(CURVES, path)
    assert bench.read_curves(path) == CURVES


def test_replay_without_pruner_is_the_unpruned_search() -> None:
    result = bench.replay(CURVES, optuna.pruners.NopPruner())
    assert result.seconds == pytest.approx(160.0)
    assert result.best == pytest.approx(0.95)
    assert result.pruned == {}


@pytest.mark.parametrize(("warmup", "pruned", "seconds", "best"), [
    # Judged from the first epoch, the late bloomer (below trial 0 there) is stopped too.
    (0, {1: 1, 2: 1}, 40.0 + 20.0 + 10.0, 0.91),
    # From epoch 2 on it is ahead and runs to the end; the bad trial stops after 3 epochs.
    (2, {2: 3}, 40.0 + 80.0 + 30.0, 0.95),
])
def test_replay_charges_pruned_trials_their_epochs(warmup: int, pruned: dict, seconds: float,
                                                   best: float) -> None:
    result = bench.replay(CURVES, optuna.pruners.MedianPruner(n_startup_trials=1,
                                                              n_warmup_steps=warmup))
    assert result.pruned == pruned
    assert result.seconds == pytest.approx(seconds)
    assert result.best == pytest.approx(best)


def test_pruned_arm_gets_the_unpruned_configurations_once(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    source = optuna.create_study(direction="maximize")
    space = {"lr": optuna.distributions.FloatDistribution(1e-5, 1.0, log=True)}
    for curve in [*CURVES, CURVES[0]]:  # a repeated configuration is queued once
        source.enqueue_trial(curve.params)
        trial = source.ask(space)
        source.tell(trial, curve.value)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert bench.enqueue_configurations(source, url, "median") == 3
    assert bench.enqueue_configurations(source, url, "median") == 0  # a resume queues nothing
    target = optuna.load_study(study_name="median", storage=url)
    assert [target.ask(space).params for _ in range(3)] == [c.params for c in CURVES]


def test_retimed_durations_replace_the_recorded_ones() -> None:
    study = optuna.create_study(direction="maximize")
    for value in (0.8, 0.9):
        study.tell(study.ask(), value)
    recorded = [t.duration.total_seconds() for t in study.trials]
    assert bench.trial_seconds(study) == pytest.approx(sum(recorded))
    study.set_user_attr(bench.RETIMED_ATTR, {"1": 100.0})  # trial 1 re-run alone
    assert bench.seconds_of(study, study.trials[1]) == 100.0
    assert bench.trial_seconds(study) == pytest.approx(recorded[0] + 100.0)
