"""Every config option composes and instantiates; bad config fails loudly."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from breastcls.config import require_values, set_threads
from breastcls.data.errors import DataError
from breastcls.instantiate import instantiate_callbacks, instantiate_loggers
from tests.conftest import CONF_DIR, compose_train

GPU_TRAINERS = {"gpu", "t4", "ddp"}
DATA_EXPERIMENTS = {"busi": "busi_resnet18"}
DETECTION_EXPERIMENT = "busi_fasterrcnn_mobilenet"
CLASSIFIER_STARTED = {"busi_fasterrcnn_r18"}  # experiments whose backbone_run= is required


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def without_downloads(cfg: DictConfig) -> DictConfig:
    """Every ``pretrained`` weight source off: CI has no internet (loading is tested elsewhere
    with weights saved by the tests)."""
    def walk(node: DictConfig) -> None:
        for key in list(node.keys()):
            if key == "pretrained":
                node[key] = None
            elif isinstance(node[key], DictConfig):
                walk(node[key])
    with open_dict(cfg):
        walk(cfg.model)
    return cfg


def input_channels(backbone: DictConfig | None) -> int | None:
    """The image channels a backbone config expects (a pair model's shared encoder's)."""
    if backbone is None:
        return None
    if "in_channels" in backbone:
        return backbone.in_channels
    return input_channels(backbone.get("encoder"))


def instantiate_model(cfg: DictConfig) -> L.LightningModule:
    """The model without data: a detector gets the box classes ``train`` reads from BUSI."""
    if cfg.model._target_.endswith("DetectorModule"):
        return instantiate(cfg.model, class_names=["benign", "malignant"])
    return instantiate(cfg.model)


def classifier_run(folder: Path) -> Path:
    """A finished classifier run folder (best checkpoint named in metrics.json), for the
    experiments that start from one (``backbone_run=``)."""
    (folder / "checkpoints").mkdir(parents=True)
    checkpoint = folder / "checkpoints" / "epoch_000.ckpt"
    torch.save({"state_dict": torchvision.models.resnet18().state_dict()}, checkpoint)
    (folder / "metrics.json").write_text(json.dumps({"checkpoint": str(checkpoint)}))
    return folder


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_composes_and_instantiates(experiment, tmp_path):
    extra = ([f"backbone_run={classifier_run(tmp_path / 'classifier')}"]
             if experiment in CLASSIFIER_STARTED else [])
    cfg = compose_train([f"experiment={experiment}", f"paths.data_dir={tmp_path}", *extra],
                        tmp_path)
    datamodule = instantiate(cfg.data)
    assert isinstance(instantiate_model(without_downloads(cfg)), L.LightningModule)
    channels = input_channels(cfg.model.get("backbone"))
    assert channels is None or datamodule.num_channels == channels
    assert instantiate_callbacks(cfg.callbacks)
    assert isinstance(instantiate(cfg.trainer), L.Trainer)


@pytest.mark.parametrize(("group", "option"), [
    *(("model", o) for o in options("model")),
    *(("model/optimizer", o) for o in options("model/optimizer")),
    *(("model/scheduler", o) for o in options("model/scheduler")),
    *(("data", o) for o in options("data")),
    *(("data/augmentation", o) for o in options("data/augmentation")),
])
def test_model_and_data_options(group, option, tmp_path):
    # A data set other than BreastMNIST, and a detector, come with their own experiment (the
    # default one sets BreastMNIST's classification keys).
    experiment = (DATA_EXPERIMENTS.get(option) if group == "data" else
                  DETECTION_EXPERIMENT if option.startswith("faster_rcnn") else None)
    overrides = [f"experiment={experiment}"] if experiment else []
    cfg = compose_train([*overrides, f"{group}={option}", f"paths.data_dir={tmp_path}"], tmp_path)
    instantiate(cfg.data)
    model = instantiate_model(without_downloads(cfg))
    optim = model.configure_optimizers()
    optimizer = optim["optimizer"] if isinstance(optim, dict) else optim
    assert isinstance(optimizer, torch.optim.Optimizer)


@pytest.mark.parametrize("option", options("callbacks"))
def test_callbacks_options(option, tmp_path):
    cfg = compose_train([f"callbacks={option}"], tmp_path)
    callbacks = instantiate_callbacks(cfg.get("callbacks"))
    assert all(isinstance(c, L.Callback) for c in callbacks)


@pytest.mark.parametrize("option", [*options("logger"), "[csv,tensorboard]"])
def test_logger_options(option, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_train([f"logger={option}"], tmp_path)
    loggers = instantiate_loggers(cfg.get("logger"))
    expected = {"none": 0, "many_loggers": 3, "[csv,tensorboard]": 2}.get(option, 1)
    assert len(loggers) == expected


@pytest.mark.parametrize("option", options("trainer"))
def test_trainer_options(option, tmp_path):
    cfg = compose_train([f"trainer={option}"], tmp_path)
    kwargs = OmegaConf.to_container(cfg.trainer, resolve=True)
    kwargs.pop("_target_")
    inspect.signature(L.Trainer).bind(**kwargs)  # every key is a Trainer argument
    if option in GPU_TRAINERS:
        assert kwargs["accelerator"] == "gpu"
        assert option != "t4" or kwargs["precision"] == "16-mixed"
        assert option != "ddp" or kwargs["strategy"] == "ddp"
    else:
        assert isinstance(instantiate(cfg.trainer), L.Trainer)


@pytest.mark.parametrize("option", options("debug"))
def test_debug_options(option, tmp_path):
    cfg = compose_train([f"debug={option}"], tmp_path)
    assert cfg.task_name == "debug"
    assert isinstance(instantiate(cfg.trainer), L.Trainer)


def test_eval_config_composes(tmp_path):
    cfg = compose_train(["ckpt_path=x.ckpt"], tmp_path, config_name="eval")
    assert cfg.eval_splits == ["test"]
    instantiate(cfg.data)


def test_default_is_the_study_recipe(tmp_path):
    cfg = compose_train([], tmp_path)
    assert cfg.model.backbone.dropout == 0.8
    assert cfg.model.optimizer.lr == 0.001 and cfg.model.optimizer.momentum == 0.9
    assert cfg.model.optimizer.weight_decay == 1e-4
    assert (cfg.model.scheduler.step_size, cfg.model.scheduler.gamma) == (20, 0.7)
    assert cfg.data.batch_size == 32 and cfg.trainer.max_epochs == 30
    assert cfg.monitor == "val/auc_acc_mean"


@pytest.mark.parametrize("override", ["model.lrr=0.1", "data.sise=64", "foo=1"])
def test_unknown_key_fails_loudly(override, tmp_path):
    with pytest.raises(ConfigCompositionException, match=r"not in struct|Could not override"):
        compose_train([override], tmp_path)


@pytest.mark.parametrize(("overrides", "message"), [
    (["experiment=busi_fasterrcnn_r18"], r"^backbone_run must be given .*add backbone_run=\.\.\.$"),
    (["data/split=file"], r"^data\.split\.file must be given"),
])
def test_unset_mandatory_value_is_named(overrides, message, tmp_path):
    cfg = compose_train(overrides, tmp_path)
    with pytest.raises(DataError, match=message):
        require_values(cfg)  # what every entry point checks first (exit_on_user_error)


def test_unknown_group_option_fails(tmp_path):
    with pytest.raises(ConfigCompositionException, match=r"Could not find 'model/resnet99'"):
        compose_train(["model=resnet99"], tmp_path)


# classical_*: searches of python -m breastcls.classical, scored by cross-validation.
CLASSICAL_SEARCHES = [s for s in options("hparams_search") if s.startswith("classical_")]


@pytest.mark.parametrize("search", [s for s in options("hparams_search")
                                    if s not in CLASSICAL_SEARCHES])
def test_searches_never_score_test(search, tmp_path):
    cfg = compose_train([f"hparams_search={search}"], tmp_path)
    assert "test" not in cfg.eval_splits and "val" in cfg.eval_splits


@pytest.mark.parametrize("search", CLASSICAL_SEARCHES)
def test_classical_searches_tune_existing_keys_by_cross_validation(search, tmp_path):
    cfg = compose_train([f"hparams_search={search}", "features=x.csv"], tmp_path, "classical")
    assert cfg.optimized_metric.startswith("cv/")
    params = OmegaConf.load(CONF_DIR / "hparams_search" / f"{search}.yaml").hydra.sweeper.params
    for key in params:
        assert OmegaConf.select(cfg, key, throw_on_missing=False) is not None, key


@pytest.mark.parametrize("threads", [0, -2, "two", True])
def test_bad_thread_count_fails_loudly(threads):
    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="positive number of CPU threads"):
        set_threads(threads)
    assert torch.get_num_threads() == before
