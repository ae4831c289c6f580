"""A detector's start weights: a backbone from a ResNet classifier's checkpoint (a gray stem
spread over RGB, batch norm keeping its statistics), a whole detector from a local file or an
earlier run, and misplaced weights files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from breastcls.checkpoints import load_checkpoint
from breastcls.models.detector import DetectorModule, build_faster_rcnn
from breastcls.models.resnet import build_resnet


@pytest.fixture(scope="module")
def gray_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """A 1-channel ResNet-18 classifier (as busi_resnet18 trains) saved as breastcls saves it:
    a Lightning checkpoint whose state dict names the network ``backbone.*``."""
    torch.manual_seed(0)
    classifier = build_resnet("resnet18", in_channels=1, num_classes=2, small_input=False)
    for module in classifier.modules():  # statistics as a trained network would have
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
    path = tmp_path_factory.mktemp("classifier") / "epoch_003.ckpt"
    state = {f"backbone.{k}": v for k, v in classifier.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    return classifier.eval(), path


def test_backbone_starts_from_the_classifier(gray_classifier) -> None:
    classifier, path = gray_classifier
    model = build_faster_rcnn("resnet18_fpn", 2, min_size=64, max_size=64,
                              backbone_weights=str(path), image_mean=[0.5] * 3,
                              image_std=[0.5] * 3)
    body = model.backbone.body
    own = classifier.state_dict()
    for name in ("layer1.0.conv1.weight", "layer4.1.conv2.weight", "layer3.0.bn1.running_mean"):
        assert torch.equal(body.state_dict()[name], own[name]), name
    assert isinstance(body.bn1, FrozenBatchNorm2d)  # trained statistics are kept, not relearnt
    # The stem answers a gray image repeated in three channels as the classifier answers it.
    gray = torch.rand(1, 1, 64, 64)
    expected = classifier.maxpool(classifier.relu(classifier.bn1(classifier.conv1(gray))))
    found = body.maxpool(body.relu(body.bn1(body.conv1(gray.repeat(1, 3, 1, 1)))))
    assert torch.allclose(found, expected, atol=1e-5)
    # Stages before trainable_layers' last 3 are frozen, as with hub weights.
    assert not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad
    assert model.transform.image_mean == [0.5] * 3


@pytest.mark.parametrize("arch", ["resnet18_fpn", "mobilenet_v3_large_fpn"])
def test_scratch_backbone_learns_its_batch_norm(arch) -> None:
    model = build_faster_rcnn(arch, 2, min_size=64, max_size=64)
    body = model.backbone.body
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    assert all(p.requires_grad for p in body.parameters())


def test_detector_module_trains_a_step_from_the_classifier(gray_classifier) -> None:
    _, path = gray_classifier
    module = DetectorModule(arch="resnet18_fpn", class_names=["no_lesion", "benign", "malignant"],
                            min_size=64, max_size=64, anchor_sizes=[8, 16, 32, 64, 128],
                            backbone_weights=str(path))
    batch = {"image": [torch.rand(3, 64, 64)],
             "targets": [{"boxes": torch.tensor([[10.0, 12.0, 40.0, 44.0]]),
                          "labels": torch.tensor([1])}]}
    loss = module.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss) and module.hparams.backbone_weights == str(path)


@pytest.mark.parametrize(("arch", "weights", "message"), [
    ("mobilenet_v3_large_fpn", "any.ckpt", "model.backbone_weights loads a ResNet classifier"),
    ("resnet18_fpn", "no/such/weights.ckpt", "weights file not found"),
])
def test_bad_backbone_weights_are_refused(arch, weights, message) -> None:
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        build_faster_rcnn(arch, 2, min_size=64, max_size=64, backbone_weights=weights)


def test_weights_of_another_architecture_are_refused(tmp_path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ValueError, match="none of the 1 tensors"):
        build_faster_rcnn("resnet18_fpn", 2, min_size=64, max_size=64,
                          backbone_weights=str(path))


def test_checkpoint_loads_without_its_start_weights(gray_classifier, tmp_path) -> None:
    """A detector checkpoint names its start weights; rebuilding it must not need them."""
    start = tmp_path / "classifier.ckpt"
    start.write_bytes(gray_classifier[1].read_bytes())
    module = DetectorModule(arch="resnet18_fpn", class_names=["benign", "malignant"],
                            min_size=64, max_size=64, backbone_weights=str(start))
    path = tmp_path / "detector.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)},
               path)
    start.unlink()
    loaded, _ = load_checkpoint(path, "breastcls.models.detector.DetectorModule")
    for name, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_whole_detector_from_a_local_coco_file(tmp_path) -> None:
    """The offline route to hub weights: torchvision's COCO file (91 classes) loads, its box
    predictor for other classes stays new."""
    from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn

    coco = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None, num_classes=91)
    # As the hub's file: trained with frozen batch norm, so no num_batches_tracked.
    state = {k: v for k, v in coco.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "fasterrcnn_coco.pth"
    torch.save(state, path)
    model = build_faster_rcnn("mobilenet_v3_large_fpn", 2, min_size=64, max_size=64,
                              pretrained=str(path))
    own = model.state_dict()
    backbone = [k for k in state if k.startswith("backbone.")]
    assert backbone and all(torch.equal(own[k], state[k]) for k in backbone)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())  # stats as trained
    assert model.roi_heads.box_predictor.cls_score.out_features == 3


def test_fine_tuning_starts_from_a_detector_run_folder(tmp_path) -> None:
    first = DetectorModule(class_names=["benign", "malignant"], min_size=64, max_size=64)
    run = tmp_path / "round_1"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": first.state_dict()}, run / "checkpoints" / "epoch_000.ckpt")
    (run / "metrics.json").write_text('{"info": {"checkpoint": "/moved/epoch_000.ckpt"}}')
    second = DetectorModule(class_names=["benign", "malignant"], min_size=64, max_size=64,
                            init_from=str(run))
    for name, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], value), name
    with pytest.raises(FileNotFoundError, match=r"no/such/round\.ckpt"):
        DetectorModule(class_names=["benign"], min_size=64, max_size=64,
                       init_from="no/such/round.ckpt")
