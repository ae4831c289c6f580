"""Hyperparameter searches (Optuna sweeper) and multirun summaries, end to end on BreastMNIST.

Each scenario is one ``python -m breastcls.train -m ...`` process with a few batches per epoch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.trial import TrialState

from breastcls.analysis.sweep_summary import best_experiment_yaml
from tests.conftest import CONF_DIR, ROOT

pytestmark = pytest.mark.slow

TINY = ["extras.print_config=false", "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1", "trainer.max_epochs=1", "data.eval_batch_size=64",
        "eval_splits=[val]", "~callbacks.rich_progress_bar", "~callbacks.model_summary",
        "data.batch_size=16", "++trainer.num_sanity_val_steps=0",
        # ResNet-18's ImageNet stem (stride 2 + max-pool): 16x fewer FLOPs on 28-px images.
        "model.backbone.small_input=false"]
# Checkpoints cost two 45 MB writes per epoch; scenarios that do not need them drop them.
NO_CKPT = ("~callbacks.model_checkpoint", "++trainer.enable_checkpointing=false")
# SGD rejects a negative momentum: the enqueued first trial fails, the sampled ones run.
RANDOM_FAIL_FIRST = ("hparams_search=breastmnist_random",
                     "hydra.sweeper.enqueue_trials=[{model.optimizer.momentum:-1.0}]")


def multirun(sweep_dir: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "breastcls.train", "-m", f"hydra.sweep.dir={sweep_dir}",
           f"paths.data_dir={data_dir}", *TINY, *overrides]
    # One thread per process: on a busy machine, torch's spinning threads cost 3-4x wall time.
    env = {**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def load(sweep_dir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.trials]


@pytest.fixture(scope="module")
def random_sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """4 random trials; trial 0 is enqueued with an invalid SGD momentum, so it fails."""
    sweep_dir = tmp_path_factory.mktemp("sweeps") / "random"
    multirun(sweep_dir, data_dir, *RANDOM_FAIL_FIRST, "hydra.sweeper.n_trials=4")
    return sweep_dir


def test_random_search_records_failure_and_summary(random_sweep: Path) -> None:
    study = load(random_sweep, "breastmnist_random")
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert "Invalid momentum value" in study.trials[0].user_attrs["error"]
    assert len(study.trials[1].intermediate_values) == 1  # one epoch reported

    trials = pd.read_csv(random_sweep / "trials.csv")
    assert list(trials["number"]) == [0, 1, 2, 3]
    assert {"state", "duration_s", "val/auc", "val/acc", "model.optimizer.lr",
            "value (val/auc_acc_mean)"} <= set(trials.columns)
    assert not any(c.startswith("test/") for c in trials.columns)
    done = trials[trials["state"] == "COMPLETE"]
    assert (done["value (val/auc_acc_mean)"] == done["val/auc_acc_mean"]).all()
    for name in ("optimization_history", "param_importances", "parallel_coordinate"):
        assert (random_sweep / f"{name}.png").stat().st_size > 0
    assert (random_sweep / "3" / "metrics.json").is_file()  # job folders follow trial numbers
    assert not (random_sweep / "runs.csv").exists()  # the multirun summary leaves searches alone


def test_best_yaml_is_a_usable_experiment(random_sweep: Path, tmp_path: Path) -> None:
    study = load(random_sweep, "breastmnist_random")
    assert (random_sweep / "best.yaml").read_text() == best_experiment_yaml(study)
    (tmp_path / "experiment").mkdir()
    shutil.copy(random_sweep / "best.yaml", tmp_path / "experiment" / "best_trial.yaml")
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=["experiment=best_trial",
                                          f"hydra.searchpath=[file://{tmp_path}]"])
    best = study.best_trial.params
    assert cfg.model.optimizer.lr == pytest.approx(best["model.optimizer.lr"])
    assert cfg.model.scheduler.step_size == best["model.scheduler.step_size"]
    assert cfg.model.backbone.dropout == pytest.approx(best["model.backbone.dropout"])
    assert cfg.trainer.max_epochs == 1  # the overrides every trial shared are kept
    assert cfg.model.backbone.small_input is False
    assert cfg.model.optimizer._target_ == "torch.optim.SGD"  # the rest: the experiment's


def test_best_yaml_keeps_the_overrides_all_trials_shared(tmp_path: Path) -> None:
    from breastcls.analysis.sweep_summary import FIXED_ATTR, GROUPS_ATTR

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("experiment", "breastmnist_resnet18_paper")
    study.set_user_attr(FIXED_ATTR, [
        "hparams_search=breastmnist_random", "model=resnet50", "monitor=val/auc",
        "trainer.max_epochs=12", "~callbacks.rich_progress_bar=null", "paths.data_dir=/elsewhere"])
    study.set_user_attr(GROUPS_ATTR, ["callbacks", "experiment", "hparams_search", "model",
                                      "model/scheduler", "paths"])
    space = {"model.optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 0.1, log=True),
             "model/scheduler": optuna.distributions.CategoricalDistribution(["step", "cosine"])}
    study.enqueue_trial({"model.optimizer.lr": 0.01, "model/scheduler": "cosine"})
    trial = study.ask(space)
    study.tell(trial, 0.9)
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "best_trial.yaml").write_text(best_experiment_yaml(study))
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("train", overrides=["experiment=best_trial",
                                          f"hydra.searchpath=[file://{tmp_path}]"])
    assert cfg.model.backbone.arch == "resnet50"
    assert (cfg.monitor, cfg.trainer.max_epochs) == ("val/auc", 12)
    assert cfg.callbacks.rich_progress_bar is None
    assert cfg.model.optimizer.lr == pytest.approx(0.01)
    assert cfg.model.scheduler._target_.endswith("CosineAnnealingLR")
    assert "/elsewhere" not in OmegaConf.to_yaml(cfg)  # machine paths stay out of the experiment


def test_trials_table_with_a_queued_trial(tmp_path: Path) -> None:
    """A configuration queued but never run (more enqueued than n_trials) has no folder."""
    from breastcls.analysis.sweep_summary import trials_table

    (tmp_path / "metrics.json").write_text('{"val": {"auc": 0.9}}')
    study = optuna.create_study(direction="maximize")
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    trial = study.ask(space)
    trial.set_user_attr("output_dir", str(tmp_path))
    study.tell(trial, 0.9)
    study.enqueue_trial({"lr": 0.01})
    table = trials_table(study).set_index("number")
    assert table.loc[0, "val/auc"] == 0.9
    assert table.loc[1, "state"] == "WAITING" and pd.isna(table.loc[1, "val/auc"])


def test_direction_must_match_the_monitor_where_the_study_judges_it() -> None:
    from hydra_plugins.breastcls_optuna_sweeper._impl import check_direction

    with pytest.raises(ValueError, match=r"hydra\.sweeper\.direction=minimize"):
        check_direction("maximize", "min", "val/loss", "val/auc", prunes=True)
    with pytest.raises(ValueError, match="judge val/loss the wrong way round"):
        check_direction("maximize", "min", "val/loss", "val/loss", prunes=False)
    check_direction("maximize", "min", "val/loss", "val/auc", prunes=False)  # plots only
    check_direction("minimize", "min", "val/loss", "val/loss", prunes=True)


def test_rerun_resumes_to_n_trials(random_sweep: Path, data_dir: Path) -> None:
    study = load(random_sweep, "breastmnist_random")
    before = {t.number: t.datetime_complete for t in study.trials}
    multirun(random_sweep, data_dir, *RANDOM_FAIL_FIRST, "hydra.sweeper.n_trials=5")
    study = load(random_sweep, "breastmnist_random")
    assert len(study.trials) == 5
    assert {t.number: t.datetime_complete for t in study.trials[:4]} == before  # kept, not rerun
    assert study.trials[4].state == TrialState.COMPLETE
    assert len(pd.read_csv(random_sweep / "trials.csv")) == 5
    # The seeded sampler does not start over: the resumed trial is a new configuration.
    assert len({t.params["model.optimizer.lr"] for t in study.trials}) == 5


def test_tpe_search_prunes_a_bad_trial(tmp_path: Path, data_dir: Path) -> None:
    """Trials 0 and 1 finish 3 epochs; trial 2 calls every image malignant (threshold 0), so its
    val ACC, and with it val/auc_acc_mean, falls below their median after epoch 0."""
    base = ("model.optimizer.lr:0.01,model.optimizer.momentum:0.9,model.optimizer.weight_decay:"
            "0.0001,model.scheduler.step_size:20,model.scheduler.gamma:0.7")
    sweep_dir = tmp_path / "tpe"
    multirun(sweep_dir, data_dir, "hparams_search=breastmnist_tpe", "hydra.sweeper.n_trials=4",
             "trainer.max_epochs=3", "~callbacks.early_stopping", *NO_CKPT,
             "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=0",
             "model.threshold=choice(0.5,0.0)",
             "hydra.sweeper.enqueue_trials=["
             f"{{{base},model.backbone.dropout:0.1,model.threshold:0.5}},"
             f"{{{base},model.backbone.dropout:0.2,model.threshold:0.5}},"
             f"{{{base},model.backbone.dropout:0.1,model.threshold:0.0}}]")
    study = load(sweep_dir, "breastmnist_tpe")
    sweeper = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.sweeper
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert len(study.trials) == 4
    assert states(study)[:3] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert len(study.trials[0].intermediate_values) == 3
    pruned = study.trials[2]
    assert list(pruned.intermediate_values) == [0]
    assert pruned.value == pruned.intermediate_values[0]  # recorded with its last value
    assert study.user_attrs["pruner"]["_target_"] == "optuna.pruners.MedianPruner"
    assert (sweep_dir / "best.yaml").is_file() and (sweep_dir / "trials.csv").is_file()
    assert (sweep_dir / "intermediate_values.png").is_file()


def test_parallel_jobs_share_one_storage(tmp_path: Path, data_dir: Path) -> None:
    sweep_dir = tmp_path / "joblib"
    proc = multirun(sweep_dir, data_dir, "hparams_search=breastmnist_random",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.enqueue_trials=[]", *NO_CKPT)
    assert "Joblib.Parallel(n_jobs=2," in proc.stdout + proc.stderr
    study = load(sweep_dir, "breastmnist_random")
    assert states(study) == ["COMPLETE", "COMPLETE"]
    assert all(len(t.intermediate_values) == 1 for t in study.trials)


def test_seed_multirun_summary(tmp_path: Path, data_dir: Path) -> None:
    sweep_dir = tmp_path / "seeds"
    multirun(sweep_dir, data_dir, "seed=0,1", *NO_CKPT)
    runs = pd.read_csv(sweep_dir / "runs.csv")
    assert list(runs["job"]) == [0, 1]
    summary = pd.read_csv(sweep_dir / "summary.csv").set_index(["split", "metric"])
    auc = runs["val/auc"]
    assert summary.loc[("val", "auc"), "mean"] == pytest.approx(auc.mean())
    assert summary.loc[("val", "auc"), "std"] == pytest.approx(auc.std())
    assert summary.loc[("val", "auc"), "count"] == 2
    assert "| val | auc |" in (sweep_dir / "summary.md").read_text()


def test_trial_overrides_group_wandb_runs() -> None:
    """Trials get a W&B group only when the wandb logger is configured."""
    from hydra_plugins.breastcls_optuna_sweeper._impl import OptunaSweeperImpl, override_value

    sweeper = OptunaSweeperImpl(
        sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler"}),
        pruner=OmegaConf.create({"_target_": "optuna.pruners.NopPruner"}), study_name="s1",
        storage=None, direction="maximize", n_trials=1, n_jobs=None, params=None,
        enqueue_trials=[], monitor="val/auc", retry_interrupted=True, summary=False)
    sweeper.fixed, sweeper.space, sweeper.url = {}, {}, "sqlite:////tmp/a b/optuna.db"
    trial = optuna.create_study().ask()
    for logger, grouped in [({"csv": {}}, False), ({"wandb": {"group": ""}}, True)]:
        sweeper.config = OmegaConf.create({"logger": logger})
        overrides = sweeper._overrides(trial)
        assert ("logger.wandb.group=s1" in overrides) is grouped
        assert "+callbacks.optuna_pruning.trial_number=0" in overrides
    parser = OverridesParser.create()
    for value in ["sqlite:////tmp/a b/it's.db", "1e-3", "true", "x,y", "C:\\dir\\", 1e-05, 32,
                  True, 0.7]:
        assert parser.parse_override(f"k={override_value(value)}").value() == value


def test_interrupted_trial_is_retried_as_a_fresh_trial(tmp_path: Path) -> None:
    """A trial left RUNNING by a killed sweep is failed and its params run again as a new trial,
    without the killed attempt's intermediate values (the pruner would judge the retry on them)."""
    from breastcls.analysis.sweep_summary import (
        INTERRUPTED_ATTR,
        RETRY_OF_ATTR,
        attempt_seconds,
        trials_table,
    )
    from hydra_plugins.breastcls_optuna_sweeper._impl import OptunaSweeperImpl, held_trials

    sweeper = OptunaSweeperImpl(
        sampler=OmegaConf.create({"_target_": "optuna.samplers.RandomSampler"}),
        pruner=OmegaConf.create({"_target_": "optuna.pruners.NopPruner"}), study_name="s1",
        storage=None, direction="maximize", n_trials=2, n_jobs=None, params=None,
        enqueue_trials=[], monitor="val/auc", retry_interrupted=True, summary=False)
    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name="s1", storage=storage, direction="maximize")
    study.tell(study.ask(space), 0.3)
    killed = study.ask(space)  # the killed sweep's trial, still RUNNING after 3 epochs
    for epoch in range(3):
        killed.report(0.9, epoch)
    assert held_trials(study) == 2

    assert sweeper._retry_interrupted(study, storage) == 1
    assert held_trials(study) == 1  # the interrupted trial no longer counts: one to run
    retry = study.ask(space)
    assert retry.number == 2 and retry.params == killed.params
    retry.report(0.5, 0)
    study.tell(retry, 0.5)
    failed, retried = study.trials[1], study.trials[2]
    assert failed.state == TrialState.FAIL and INTERRUPTED_ATTR in failed.user_attrs
    assert "interrupted" in failed.user_attrs["error"]
    assert attempt_seconds(failed) is None  # its end was never seen
    assert retried.user_attrs[RETRY_OF_ATTR] == 1
    assert retried.intermediate_values == {0: 0.5}
    assert attempt_seconds(retried) == retried.duration.total_seconds()
    assert held_trials(study) == 2
    table = trials_table(study).set_index("number")
    assert table.loc[2, "retry_of"] == 1 and table.loc[1, "state"] == "FAIL"
