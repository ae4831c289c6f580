"""Training and evaluation levers: augmentation, upsampling, schedules, timm families, TTA,
label smoothing and ensembles. Each test checks the lever changes what it should."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F

from breastcls.ensemble import ensemble
from breastcls.metrics import compute_metrics
from breastcls.models.classifier import ImageClassifier, class_probabilities
from breastcls.models.schedulers import warmup_cosine
from breastcls.models.timm_models import build_timm_model
from breastcls.predict import predict
from breastcls.train import train
from tests.conftest import FAST, compose_train


def data_cfg(data_dir: Path, *overrides: str):
    return compose_train([f"paths.data_dir={data_dir}", *overrides]).data


def test_strong_augmentation_is_random_and_train_only(data_dir):
    datamodule = instantiate(data_cfg(data_dir, "data/augmentation=strong"))
    train_set = datamodule.dataset("train", augment=True)
    torch.manual_seed(0)
    first, second = train_set[3]["image"], train_set[3]["image"]
    assert first.shape == (1, 28, 28) and not torch.equal(first, second)
    plain = datamodule.dataset("train")
    assert torch.equal(plain[3]["image"], plain[3]["image"])
    test_set = datamodule.dataset("test")
    assert torch.equal(test_set[0]["image"], test_set[0]["image"])


def test_resize_upsamples_every_split_once(data_dir):
    datamodule = instantiate(data_cfg(data_dir, "data.resize=64", "data/augmentation=strong"))
    assert datamodule.input_shape == (1, 64, 64)
    for split in ("train", "val", "test"):
        assert datamodule.dataset(split).images.shape[-2:] == (64, 64)
    cropped = datamodule.dataset("train", augment=True)[0]["image"]
    assert cropped.shape == (1, 64, 64)  # the crop keeps the size


def test_upsampled_run_predicts_like_eval(data_dir, tmp_path):
    """A standard-stem ResNet on 64-px upsampled images; predict applies the run's resize."""
    fast = [f"++{o}" if o.startswith("trainer.limit_") else o for o in FAST]
    cfg = compose_train([*fast, f"paths.data_dir={data_dir}", "logger=csv", "eval_splits=[test]",
                         "data.resize=64", "model.backbone.small_input=false",
                         "evaluation.plots=false"], tmp_path / "run")
    train(cfg)
    (tmp_path / "run" / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / "run" / ".hydra" / "config.yaml")  # as the CLI leaves it
    checkpoint = next(p for p in (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt"))
    frame = predict(compose_train([f"ckpt_path={checkpoint}", f"input={data_dir}/breastmnist.npz",
                                   "split=test", "output=null"], tmp_path, "predict"))
    expected = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    np.testing.assert_allclose(frame["prob_malignant"], expected["prob_malignant"], atol=1e-5)


def test_warmup_then_cosine():
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = warmup_cosine(optimizer, warmup_epochs=3, max_epochs=10, eta_min=0.001)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.001)  # 0.01 x lr
    assert lrs[0] < lrs[1] < lrs[2] < lrs[3] == pytest.approx(0.1)
    assert all(a > b for a, b in pairwise(lrs[3:]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # reaches eta_min
    with pytest.raises(ValueError, match="warmup_epochs"):
        warmup_cosine(optimizer, warmup_epochs=-1, max_epochs=10)
    with pytest.raises(ValueError, match="max_epochs"):
        warmup_cosine(optimizer, warmup_epochs=3, max_epochs=0)


def test_warmup_longer_than_training_is_shortened(caplog):
    """debug=fdr/limit cut max_epochs to 1 or 3 under a recipe's 3-5 warmup epochs."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = warmup_cosine(optimizer, warmup_epochs=5, max_epochs=3)
    assert "warming up for 2 epoch(s)" in caplog.text
    lrs = []
    for _ in range(3):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(0.001) and lrs[2] == pytest.approx(0.1)
    one = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    warmup_cosine(one, warmup_epochs=5, max_epochs=1)  # fast_dev_run: plain cosine
    assert one.param_groups[0]["lr"] == pytest.approx(0.1)


def assert_fan_in_head(model: nn.Module) -> None:
    head = model.get_classifier()
    assert head.weight.abs().max() <= head.in_features ** -0.5


@pytest.mark.parametrize(("arch", "size"), [("efficientnet_b0", 28), ("convnext_atto", 64)])
def test_timm_families(arch, size):
    torch.manual_seed(0)
    model = build_timm_model(arch, in_channels=1, num_classes=2, dropout=0.3)
    logits = model.eval()(torch.randn(8, 1, size, size))
    assert logits.shape == (8, 2)
    # a 2-class head drawn for 1000 classes (EfficientNet's ±0.71) starts at a logit std near 5
    assert_fan_in_head(model)
    assert logits.std() < 1


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_b0"])
def test_timm_local_weights_adapt_the_stem_and_renew_the_head(tmp_path, arch):
    import timm

    source = timm.create_model(arch, in_chans=3, num_classes=1000)
    path = tmp_path / f"{arch}_imagenet.pth"
    torch.save(source.state_dict(), path)
    model = build_timm_model(arch, in_channels=1, pretrained=str(path))
    stem, head = model.pretrained_cfg["first_conv"], model.pretrained_cfg["classifier"]
    loaded, saved = model.state_dict(), source.state_dict()
    assert torch.allclose(loaded[f"{stem}.weight"], saved[f"{stem}.weight"].sum(1, keepdim=True))
    body = [name for name in loaded if not name.startswith((f"{stem}.", f"{head}."))]
    assert all(torch.equal(loaded[name], saved[name]) for name in body)
    assert model.get_classifier().out_features == 2
    assert_fan_in_head(model)


def test_timm_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_timm_model("resnet18", pretrained=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="convnext_atto"):
        build_timm_model("convnxt_atto")


def test_flip_tta_averages_the_named_views():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    x = torch.randn(3, 1, 4, 4)
    with torch.no_grad():
        plain = class_probabilities(model, x)
        hflip = class_probabilities(model, x, ["hflip"])
        both = class_probabilities(model, x, True)
        expected = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2
    assert torch.allclose(hflip, expected) and not torch.allclose(hflip, plain)
    assert not torch.allclose(both, hflip)
    with pytest.raises(ValueError, match="rotate"):
        class_probabilities(model, x, ["rotate"])


def test_label_smoothing_changes_the_loss():
    spec = {"_target_": "breastcls.models.resnet.build_resnet", "in_channels": 1}
    optimizer = {"_target_": "torch.optim.SGD", "lr": 0.01}
    torch.manual_seed(0)
    smooth = ImageClassifier(backbone=spec, optimizer=optimizer, label_smoothing=0.2).eval()
    batch = {"image": torch.randn(4, 1, 28, 28), "label": torch.tensor([0, 1, 0, 1]),
             "index": torch.arange(4)}
    smooth.log = lambda *args, **kwargs: None
    with torch.no_grad():
        logits = smooth(batch["image"])
        loss = smooth.training_step(batch, 0)
    smoothed = F.cross_entropy(logits, batch["label"], label_smoothing=0.2)
    assert loss == pytest.approx(smoothed.item())
    assert loss != pytest.approx(F.cross_entropy(logits, batch["label"]).item())


def write_run(folder: Path, split_probs: dict[str, tuple[list[float], list[int]]],
              first_index: dict[str, int] | None = None) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text("{}")
    for split, (probs, labels) in split_probs.items():
        start = (first_index or {}).get(split, 0)
        pd.DataFrame({"index": range(start, start + len(probs)), "label": labels,
                      "prob_malignant": probs,
                      "prob_normal_benign": 1 - np.asarray(probs)}).to_csv(
            folder / f"{split}_predictions.csv", index=False)


def test_ensemble_averages_runs_and_thresholds_on_val(tmp_path):
    rng = np.random.default_rng(0)
    labels = {"val": [0, 1] * 10, "test": [0, 1, 1] * 10}
    members = {s: rng.uniform(size=(3, len(y))) for s, y in labels.items()}
    for r in range(3):
        write_run(tmp_path / "multirun" / str(r),
                  {s: (members[s][r].tolist(), labels[s]) for s in labels})
    cfg = compose_train([f"runs={tmp_path / 'multirun'}", "evaluation.threshold.method=youden",
                         "evaluation.plots=false", "evaluation.bootstrap.n_resamples=200"],
                        tmp_path / "out", "ensemble")
    result = ensemble(cfg)
    mean = members["test"].mean(0)
    probs = torch.tensor(np.stack([mean, 1 - mean], 1), dtype=torch.float32)
    threshold = result.info["threshold"]
    assert result.info["threshold_selection"]["method"] == "youden"
    expected = compute_metrics(probs, torch.tensor(labels["test"]), 0, threshold)
    assert result.metrics["test"]["auc"] == pytest.approx(expected["auc"])
    assert result.metrics["test"]["acc"] == pytest.approx(expected["acc"])
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(saved["members"]) == 3 and "test_ci" in saved


def test_ensemble_over_cv_folds_pools_the_held_out_val(tmp_path):
    """cv.pool=trainval: each fold scores its own val images, so the ensemble's val is the
    out-of-fold predictions, each image's probability from the one fold that held it out, while
    test is averaged over all folds."""
    rng = np.random.default_rng(1)
    val = rng.uniform(size=(3, 8))
    test = rng.uniform(size=(3, 6))
    for fold in range(3):
        write_run(tmp_path / "cv" / str(fold),
                  {"val": (val[fold].tolist(), [0, 1] * 4),
                   "test": (test[fold].tolist(), [0, 1] * 3)},
                  first_index={"val": 8 * fold})
    ensemble(compose_train([f"runs={tmp_path / 'cv'}", "evaluation.plots=false",
                            "evaluation.bootstrap.n_resamples=0"], tmp_path / "out", "ensemble"))
    pooled = pd.read_csv(tmp_path / "out" / "val_predictions.csv").sort_values("index")
    assert pooled["index"].tolist() == list(range(24))
    assert np.allclose(pooled["prob_malignant"], val.reshape(-1), atol=1e-6)
    averaged = pd.read_csv(tmp_path / "out" / "test_predictions.csv").sort_values("index")
    assert np.allclose(averaged["prob_malignant"], test.mean(0), atol=1e-6)


def test_ensemble_refuses_mismatched_runs(tmp_path):
    write_run(tmp_path / "a", {"val": ([0.2, 0.7], [0, 1]), "test": ([0.1, 0.9], [0, 1])})
    write_run(tmp_path / "b", {"val": ([0.3, 0.6], [1, 1]), "test": ([0.2, 0.8], [0, 1])})
    runs = f"runs=[{tmp_path / 'a'},{tmp_path / 'b'}]"
    with pytest.raises(ValueError, match="different labels"):
        ensemble(compose_train([runs, "evaluation.plots=false"], tmp_path / "out", "ensemble"))
    with pytest.raises(ValueError, match="at least 2 runs"):
        ensemble(compose_train([f"runs={tmp_path / 'a'}"], tmp_path / "out", "ensemble"))
