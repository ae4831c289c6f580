"""ResNet backbones, the classification module, weight loading and input checks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from breastcls.models.classifier import ImageClassifier, check_input_shape
from breastcls.models.resnet import build_resnet

SGD = {"_target_": "torch.optim.SGD", "lr": 0.01}


def make_module(**backbone) -> ImageClassifier:
    spec = {"_target_": "breastcls.models.resnet.build_resnet", "in_channels": 1, **backbone}
    return ImageClassifier(backbone=spec, optimizer=SGD)


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_small_input_stem_and_head(source):
    model = build_resnet("resnet18", source=source, in_channels=1, dropout=0.8)
    conv = model.conv1
    assert (conv.in_channels, conv.out_channels) == (1, 64)
    assert conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
    assert conv.bias is not None
    assert isinstance(model.maxpool, nn.Identity)
    dropout, linear = model.fc
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.8
    assert isinstance(linear, nn.Linear) and linear.out_features == 2
    assert model(torch.randn(4, 1, 28, 28)).shape == (4, 2)


@pytest.mark.parametrize("arch", ["resnet34", "resnet50"])
def test_other_depths(arch):
    model = build_resnet(arch, in_channels=3, small_input=False, num_classes=3)
    assert model.conv1.kernel_size == (7, 7)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_gray_input_on_standard_stem():
    model = build_resnet("resnet18", in_channels=1, small_input=False)
    assert model.conv1.in_channels == 1
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 2)


@pytest.fixture
def imagenet_file(tmp_path) -> tuple[nn.Module, str]:
    """A torchvision ResNet-18 and its state dict saved as a local "pretrained" weights file."""
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(reference.state_dict(), path)
    return reference, str(path)


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_local_pretrained_weights(source, imagenet_file):
    reference, path = imagenet_file
    model = build_resnet("resnet18", source=source, in_channels=1, pretrained=path)
    for name in ("layer1.0.conv1.weight", "layer4.1.bn2.running_mean", "bn1.weight"):
        assert torch.equal(model.state_dict()[name], reference.state_dict()[name]), name
    assert model.conv1.weight.shape == (64, 1, 3, 3)  # replaced stem starts fresh
    assert model.fc[1].out_features == 2


@pytest.mark.parametrize("source", ["torchvision", "timm"])
def test_local_weights_reach_an_adapted_gray_stem(source, imagenet_file):
    reference, path = imagenet_file
    model = build_resnet("resnet18", source=source, in_channels=1, small_input=False,
                         pretrained=path)
    expected = reference.conv1.weight.mean(dim=1, keepdim=True)  # the RGB filters, averaged
    assert torch.allclose(model.conv1.weight, expected)
    assert torch.equal(model.state_dict()["bn1.weight"], reference.state_dict()["bn1.weight"])
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 2)


def test_local_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        build_resnet(pretrained=str(tmp_path / "missing.pth"))
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="none of the 1 tensors"):
        build_resnet(pretrained=str(tmp_path / "other.pth"))


def test_pretrained_download_failure_explains_the_fix(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models, "resnet18", offline)
    with pytest.raises(RuntimeError, match=r"model.backbone.pretrained=/path/to/weights.pth"):
        build_resnet("resnet18", pretrained=True)


def test_unknown_arch_and_source():
    with pytest.raises(ValueError, match="unknown ResNet"):
        build_resnet("resnet19")
    with pytest.raises(ValueError, match="unknown source"):
        build_resnet(source="keras")


def test_input_shape_mismatch_is_explained():
    module = make_module()
    check_input_shape(module, (1, 28, 28))
    with pytest.raises(ValueError, match="cannot take images of shape \\(3, 28, 28\\)"):
        check_input_shape(module, (3, 28, 28))


def test_module_hparams_are_plain_and_reload(tmp_path):
    from omegaconf import OmegaConf

    spec = OmegaConf.create({"_target_": "breastcls.models.resnet.build_resnet", "in_channels": 1})
    module = ImageClassifier(backbone=spec, optimizer=OmegaConf.create(SGD),
                             scheduler=OmegaConf.create({"_target_": "torch.optim.lr_scheduler"
                                                         ".StepLR", "step_size": 2,
                                                         "interval": "epoch"}),
                             class_weights=OmegaConf.create([1.0, 2.0]))
    assert type(module.hparams.backbone) is dict and type(module.hparams.class_weights) is list
    optim = module.configure_optimizers()
    assert optim["lr_scheduler"]["interval"] == "epoch"
    assert optim["lr_scheduler"]["scheduler"].step_size == 2
    assert module.loss_weights.tolist() == [1.0, 2.0]


def test_class_weights_validation():
    with pytest.raises(ValueError, match="2 classes"):
        ImageClassifier(backbone={"_target_": "breastcls.models.resnet.build_resnet"},
                        optimizer=SGD, class_weights=[1.0])
    with pytest.raises(ValueError, match="'balanced'"):
        ImageClassifier(backbone={"_target_": "breastcls.models.resnet.build_resnet"},
                        optimizer=SGD, class_weights="inverse")


@pytest.mark.parametrize("mix", [{"mixup_alpha": 1.0}, {"cutmix_alpha": 1.0},
                                 {"mixup_alpha": 0.4, "cutmix_alpha": 1.0}])
def test_batch_mixing_changes_the_training_loss_only(mix):
    spec = {"_target_": "breastcls.models.resnet.build_resnet", "in_channels": 1}
    torch.manual_seed(0)
    plain = ImageClassifier(backbone=spec, optimizer=SGD, label_smoothing=0.1)
    mixed = ImageClassifier(backbone=spec, optimizer=SGD, label_smoothing=0.1, **mix)
    mixed.load_state_dict(plain.state_dict())
    batch = {"image": torch.randn(8, 1, 28, 28), "label": torch.tensor([0, 1] * 4),
             "index": torch.arange(8)}
    plain.eval(), mixed.eval()
    assert torch.equal(plain(batch["image"]), mixed(batch["image"]))  # evaluation is untouched
    plain.train(), mixed.train()
    for model in (plain, mixed):
        model.log = lambda *args, **kwargs: None
    torch.manual_seed(1)
    assert not torch.isclose(plain.training_step(batch, 0), mixed.training_step(batch, 0))


@pytest.mark.parametrize("spec", [
    {"_target_": "breastcls.models.resnet.build_resnet", "in_channels": 1, "dropout": 0.5},
    {"_target_": "breastcls.models.timm_models.build_timm_model", "arch": "resnet18",
     "in_channels": 1}])
def test_frozen_backbone_leaves_the_head_trainable(spec):
    from lightning.pytorch.callbacks import BaseFinetuning

    torch.manual_seed(0)
    module = ImageClassifier(backbone=spec, optimizer=SGD).eval()
    x = torch.randn(2, 1, 32, 32)
    before = module(x)
    BaseFinetuning.freeze(module.backbone, train_bn=False)
    assert not any(p.requires_grad for p in module.backbone.parameters())
    assert all(p.requires_grad for p in module.head.parameters())
    # A checkpoint whose head still sits inside the backbone (backbone.fc.*) loads unchanged.
    old = {k.replace("head.", "backbone.fc.", 1) if k.startswith("head.") else k: v
           for k, v in module.state_dict().items()}
    fresh = ImageClassifier(backbone=spec, optimizer=SGD).eval()
    fresh.load_state_dict(old)
    assert torch.equal(fresh(x), before)
