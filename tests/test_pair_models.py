"""Baseline-patch models: shared siamese weights, pair inputs through the classifier, one epoch
per family with balanced class weights."""

from __future__ import annotations

import pytest
import torch

from breastcls.data.errors import DataError
from breastcls.models.classifier import ImageClassifier, class_probabilities
from breastcls.models.pairs import Conv3dNet, SiameseNet
from tests.test_transfer import run, tree  # noqa: F401  (module fixture)

ENCODER = {"_target_": "breastcls.models.transfer.build_pretrained", "arch": "resnet18",
           "hidden": [], "dropout": 0.0}


def test_siamese_branches_share_one_encoder():
    model = SiameseNet(ENCODER)
    a, b = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    head_params = sum(p.numel() for p in model.fc.parameters())
    assert sum(p.numel() for p in model.parameters()) == encoder_params + head_params
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(a, b), model(b, a), atol=1e-6)  # |f(a) - f(b)| is symmetric
    model(a, b).sum().backward()  # both branches' gradients land in the one set of weights
    assert model.encoder.body.conv1.weight.grad is not None


@pytest.mark.parametrize("kernel", [1, 2, 3])
def test_conv3d_depth_kernels(kernel):
    out = Conv3dNet(first_depth_kernel=kernel)(torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 2)


def test_classifier_passes_the_baseline():
    backbone = {"_target_": "breastcls.models.pairs.SiameseNet", "_recursive_": False,
                "encoder": ENCODER}
    model = ImageClassifier(backbone, {"_target_": "torch.optim.Adam", "lr": 1e-3}).eval()
    x, b = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    probs = class_probabilities(model, x, ["hflip"], baseline=b)
    assert probs.shape == (2, 2)
    with pytest.raises(DataError, match=r"data\.pairs=true"):
        model._step({"image": x, "label": torch.tensor([0, 1])}, "val")


@pytest.mark.parametrize(("experiment", "extra"), [
    ("cbis_ddsm_siamese", ["model.backbone.encoder.arch=resnet18"]),
    ("cbis_ddsm_two_channel", ["data.task=mass_calc", "model.backbone.encoder.small_input=true"]),
    ("cbis_ddsm_conv3d", ["model.backbone.first_depth_kernel=2",
                          "model.backbone.channels=[8,16]"])])
def test_pair_experiments_train_with_class_weights(tree, tmp_path, experiment, extra):  # noqa: F811
    metrics = run(tree, tmp_path, f"experiment={experiment}", "model.class_weights=balanced",
                  *extra)
    assert 0 <= metrics["test/acc"] <= 1
