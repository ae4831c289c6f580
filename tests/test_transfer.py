"""Pretrained backbones: local weights, the frozen->fine-tuned stages, one epoch per family."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from lightning.pytorch import Callback

from breastcls.callbacks.finetune import FreezeThenFinetune, finetune_blocks
from breastcls.loggers import finish_wandb
from breastcls.models.classifier import ImageClassifier
from breastcls.models.transfer import build_pretrained
from breastcls.train import train
from tests.cbis_ddsm_tree import PATCH_OVERRIDES, write_tree
from tests.conftest import FAST, compose_train

BACKBONE = {"_target_": "breastcls.models.transfer.build_pretrained", "arch": "resnet18"}
OPTIM = {"_target_": "torch.optim.Adam", "lr": 1e-3}


QUIET = ["logger=csv", "data.batch_size=8", "data.split.val_fraction=0.3", "evaluation.gradcam=0",
         "evaluation.plots=false", "evaluation.bootstrap.n_resamples=0", "threads=1"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("cbis") / "cbis_ddsm")


def run(root: Path, out: Path, *overrides: str) -> dict[str, float]:
    """One tiny training on the generated CBIS-DDSM tree (32-px patches)."""
    cfg = compose_train([*FAST, *QUIET, f"data.root={root}", f"paths.cache_dir={out / 'cache'}",
                         *PATCH_OVERRIDES, *overrides], out / "run")
    try:
        return train(cfg)
    finally:
        finish_wandb()


def test_local_weights_load(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = build_pretrained("resnet18", pretrained=str(path))
    for name, tensor in reference.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(model.body.state_dict()[name], tensor), name


def test_gray_input_scaled_to_imagenet():
    model = build_pretrained("vgg16", in_channels=1, data_mean=[0.5], data_std=[0.5])
    out = model.scale(torch.zeros(1, 1, 8, 8))  # gray 0.5
    assert out.shape[1] == 3
    expected = (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(out[0, :, 0, 0], expected)
    inception = build_pretrained("inception_v3", input_size=299)
    assert inception.scale(torch.ones(1, 1, 75, 75)).shape[-1] == 299


def trainable(module: ImageClassifier) -> set[str]:
    return {n for n, p in module.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(("arch", "blocks"), [("resnet18", ["layer3", "layer4"]),
                                              ("vgg16", ["block4", "block5"]),
                                              ("inception_v3", ["Mixed_7b", "Mixed_7c"])])
def test_stages_on_requires_grad(arch, blocks):
    model = ImageClassifier({**BACKBONE, "arch": arch}, OPTIM)
    callback = FreezeThenFinetune(unfreeze_at_epoch=1, unfreeze_blocks=2)
    callback.freeze_before_training(model)
    head = {n for n, _ in model.named_parameters() if n.startswith("head.")}
    assert trainable(model) == head
    optimizer = model.configure_optimizers()["optimizer"]
    callback.finetune_function(model, 0, optimizer)
    assert trainable(model) == head
    callback.finetune_function(model, 1, optimizer)
    named = finetune_blocks(model.backbone, 2)
    assert list(named) == blocks
    expected = {f"backbone.body.{n}" for n, p in model.backbone.body.named_parameters()
                if any(n == path or n.startswith(path + ".")
                       for b in blocks for path in model.backbone.block_paths[b])}
    assert trainable(model) == head | expected
    assert len(optimizer.param_groups) == 2
    assert optimizer.param_groups[1]["lr"] == pytest.approx(1e-4)


class Trainable(Callback):
    """Writes each epoch's trainable parameter count (the callback runs before it)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        with self.path.open("a") as f:
            f.write(f"{sum(p.requires_grad for p in pl_module.parameters())}\n")


@pytest.mark.parametrize(("experiment", "extra"), [
    ("cbis_ddsm_vgg16_transfer", []),
    ("cbis_ddsm_resnet50_transfer", ["data.task=mass_calc"]),
    ("cbis_ddsm_inceptionv3_transfer", ["data.image_size=75"])])
def test_transfer_experiments_train(tree, tmp_path, experiment, extra):
    log = tmp_path / "trainable.txt"
    metrics = run(tree, tmp_path, f"experiment={experiment}", "model.backbone.pretrained=null",
                  "trainer.max_epochs=2", "callbacks.finetune.unfreeze_at_epoch=1",
                  "+callbacks.trainable._target_=tests.test_transfer.Trainable",
                  f"+callbacks.trainable.path={log}", *extra)
    assert 0 <= metrics["test/acc"] <= 1
    counts = [int(c) for c in log.read_text().split()]
    assert counts[0] < counts[1]  # the blocks joined in epoch 2
