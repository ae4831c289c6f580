"""Evaluation settings checked before training; what the best checkpoint records; Grad-CAM
on non-ResNet backbones; debug modes with warmup schedules."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from breastcls.analysis.gradcam import default_target_layer
from breastcls.checkpoints import load_checkpoint
from breastcls.data.errors import DataError
from breastcls.data.folds import CrossValidation
from breastcls.models.timm_models import build_timm_model
from breastcls.scoring.pipeline import evaluate_splits
from breastcls.scoring.settings import validate_settings
from breastcls.train import train
from tests.conftest import FAST, compose_train

MODULE = "breastcls.models.classifier.ImageClassifier"


# -- validation before training ----------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "error", "message"), [
    (["evaluation.tta=[hflp]"], ValueError, r"evaluation\.tta.*'hflp'.*'hflip', 'vflip'"),
    (["evaluation.tta=hflip"], ValueError, r"evaluation\.tta.*list of flips such as \[hflip\]"),
    (["evaluation.threshold.method=yoden"], ValueError,
     r"threshold\.method='yoden'.*'fbeta', 'youden', 'sensitivity', 'accuracy'"),
    (["evaluation.exclude_test=no/such/flagged.csv"], DataError,
     r"exclude_test: no such file .*no/such/flagged\.csv.*breastcls\.audit"),
    (["optimized_metric=test/auc", "eval_splits=[train,val]"], ValueError,
     r"optimized_metric='test/auc' will not be computed.*\['train', 'val'\]"),
    (["optimized_metric=val/aucc"], ValueError, r"optimized_metric='val/aucc'.*'auc_acc_mean'"),
    (["eval_splits=[train,vall]"], ValueError, r"unknown split\(s\) \['vall'\]"),
    (["experiment=busi_fasterrcnn_mobilenet", "optimized_metric=val/auc"], ValueError,
     r"optimized_metric='val/auc'.*'map_50'.*'ap_malignant'.*'froc_sens@4fp'"),
])
def test_bad_setting_fails_with_the_fix(overrides, error, message, tmp_path):
    with pytest.raises(error, match=message):
        validate_settings(compose_train(overrides, tmp_path))


def test_exclude_test_is_refused_under_cv_pool_all(tmp_path):
    flagged = tmp_path / "flagged.csv"
    pd.DataFrame({"index": [0, 1]}).to_csv(flagged, index=False)
    cfg = compose_train(["cv.folds=5", "cv.pool=all", f"evaluation.exclude_test={flagged}"],
                        tmp_path)
    with pytest.raises(ValueError, match=r"cv\.pool=all"):
        validate_settings(cfg)
    # eval builds its data module from the same cv settings: refused before any prediction
    datamodule = SimpleNamespace(cv=CrossValidation(folds=5, pool="all"))
    with pytest.raises(ValueError, match=r"cv\.pool=all"):
        evaluate_splits(None, None, datamodule, ["test"], settings={"exclude_test": flagged})
    # the official test split (cv.pool=trainval) is what the audit's indices name
    validate_settings(compose_train(["cv.folds=5", f"evaluation.exclude_test={flagged}"],
                                    tmp_path))
    no_index = tmp_path / "no_index.csv"
    pd.DataFrame({"row": [0]}).to_csv(no_index, index=False)
    with pytest.raises(ValueError, match="no `index` column"):
        validate_settings(compose_train([f"evaluation.exclude_test={no_index}"], tmp_path))


@pytest.mark.parametrize("overrides", [
    [], ["experiment=breastmnist_best"], ["hparams_search=breastmnist_tpe"],
    ["evaluation.threshold.method=youden", "optimized_metric=test@0.5/auc"],
    ["experiment=busi_fasterrcnn_r50"], ["experiment=busi_fasterrcnn_mobilenet", "data=coco"],
    ["experiment=busi_fasterrcnn_r101", "optimized_metric=val/ap_benign"],
])
def test_shipped_settings_pass(overrides, tmp_path):
    validate_settings(compose_train(overrides, tmp_path))


def test_train_checks_settings_before_anything_else(tmp_path):
    cfg = compose_train([*FAST, f"paths.data_dir={tmp_path / 'no_data'}",
                         "evaluation.tta=[hflp]"], tmp_path)
    with pytest.raises(ValueError, match="hflp"):  # not the missing data file
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()


# -- Grad-CAM target layers --------------------------------------------------------------------

def wrapped(backbone: nn.Module) -> nn.Module:
    holder = nn.Module()
    holder.backbone = backbone
    holder.forward = backbone.forward
    return holder


def test_target_layer_is_the_last_conv_stage():
    import timm

    resnet = instantiate(compose_train().model.backbone, num_classes=2)
    assert default_target_layer(wrapped(resnet)) is resnet.layer4
    convnext = build_timm_model("convnext_atto", in_channels=1)
    x = torch.randn(1, 1, 64, 64)
    assert default_target_layer(wrapped(convnext), x) is convnext.stages[3]
    effnet = build_timm_model("efficientnet_b0", in_channels=1)
    assert default_target_layer(wrapped(effnet), torch.randn(1, 1, 32, 32)) is effnet.blocks[6]
    # a transformer's last block gives tokens, not a feature map: its only conv stands in
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, in_chans=1, num_classes=2)
    assert default_target_layer(wrapped(vit), torch.randn(1, 1, 32, 32)) is vit.patch_embed.proj
    assert default_target_layer(wrapped(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))),
                                torch.randn(1, 1, 2, 2)) is None


@pytest.fixture(scope="module")
def convnext_run(data_dir, tmp_path_factory):
    """A ConvNeXt run with flip TTA and a threshold chosen on val: scored and plotted."""
    out = tmp_path_factory.mktemp("convnext")
    cfg = compose_train([*FAST, f"paths.data_dir={data_dir}", "logger=csv", "model=timm",
                         "model.backbone.arch=convnext_atto", "data.resize=64",
                         "evaluation.tta=[hflip]", "evaluation.threshold.method=youden",
                         "evaluation.gradcam=2", "evaluation.bootstrap.n_resamples=0",
                         "eval_splits=[val,test]"], out)
    return out, train(cfg)


def test_non_resnet_timm_run_scores_and_plots(convnext_run):
    out, flat = convnext_run
    assert "test/auc" in flat
    names = {p.name for p in (out / "plots").glob("*.png")}
    assert {"test_roc.png", "test_mistakes.png", "test_gradcam.png"} <= names


def test_checkpoint_records_threshold_and_tta(convnext_run):
    out, _ = convnext_run
    metrics = json.loads((out / "metrics.json").read_text())
    checkpoint = torch.load(metrics["checkpoint"], map_location="cpu", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["threshold"] == metrics["threshold_selection"]["threshold"]
    assert hparams["tta"] == ["hflip"] and type(hparams["tta"]) is list
    model, _ = load_checkpoint(metrics["checkpoint"], MODULE)  # rebuilt from those hparams
    assert model.hparams.tta == ["hflip"]


# -- debug modes with warmup schedules ---------------------------------------------------------

@pytest.mark.parametrize("debug", ["fdr", "limit", "overfit"])
@pytest.mark.parametrize("recipe", [["experiment=breastmnist_best"],
                                    ["experiment=breastmnist_resnet18_paper"], ["model=timm"]])
def test_debug_modes_build_every_schedule(recipe, debug, tmp_path):
    cfg = compose_train([*recipe, f"debug={debug}"], tmp_path)
    model = instantiate(cfg.model)
    optimizers = model.configure_optimizers()  # warmup_cosine raised here before the fix
    if "lr_scheduler" in optimizers:
        optimizers["optimizer"].step()
        optimizers["lr_scheduler"]["scheduler"].step()


def test_debug_fdr_runs_the_best_recipe(data_dir, tmp_path):
    cfg = compose_train(["experiment=breastmnist_best", "debug=fdr", f"paths.data_dir={data_dir}",
                         "extras.print_config=false", "model.backbone.small_input=false",
                         "eval_splits=[val]", "evaluation.plots=false",
                         "evaluation.bootstrap.n_resamples=0", "callbacks.rich_progress_bar=null",
                         "callbacks.model_summary=null"], tmp_path)
    assert "val/auc" in train(cfg)


# -- DDP --------------------------------------------------------------------------------------
