"""Faster R-CNN lesion detectors (torchvision) as a LightningModule, and ``detect`` on files.

Batches are dicts with ``image`` (a list of (3, H, W) float images in [0, 1]) and ``targets``
(a list of ``{"boxes": (K, 4) XYXY, "labels": (K,)}`` with labels 0-based into
``class_names``); torchvision's own labels are 1-based (0 is its background).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn
from torchmetrics.detection import MeanAveragePrecision
from torchvision.models import ResNet50_Weights, detection, get_model_weights
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    mobilenet_backbone,
    resnet_fpn_backbone,
)
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.ops import FrozenBatchNorm2d

from breastcls.data.readers import read_image, to_uint8
from breastcls.models.weights import load_local_weights, read_state_dict

ARCHS = ("resnet50_fpn", "resnet50_fpn_v2", "resnet101_fpn", "resnet18_fpn", "resnet34_fpn",
         "mobilenet_v3_large_fpn")
FPN_RESNETS = ("resnet18_fpn", "resnet34_fpn", "resnet101_fpn")  # built from backbone utilities
NO_LESION = "no_lesion"
LOOP_KEYS = ("interval", "frequency", "monitor")


def build_faster_rcnn(arch: str, num_classes: int, min_size: int = 800, max_size: int = 1333,
                      anchor_sizes: Sequence[int] | None = None,
                      aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                      pretrained: bool | str | None = None,
                      trainable_layers: int = 3, backbone_weights: str | None = None,
                      image_mean: Sequence[float] | None = None,
                      image_std: Sequence[float] | None = None, load_weights: bool = True,
                      **rpn: Any) -> nn.Module:
    """A Faster R-CNN of ``arch`` for ``num_classes`` box classes (+ background).

    ``pretrained``: true (COCO detection weights from the hub; the ImageNet backbone for
    resnet18/34/101_fpn), a local weights file (a torchvision detection state dict such as the
    hub's COCO file, or a breastcls detector checkpoint or run folder; tensors that do not fit,
    like a box predictor for other classes, stay new), or null (scratch). ``backbone_weights``
    (resnet18/34/101_fpn): a ResNet classifier's weights file (a breastcls checkpoint or a
    torchvision state dict) for the backbone alone.
    ``image_mean``/``image_std``: the input normalisation (null: ImageNet's; a backbone from
    ``backbone_weights`` wants its classifier's). ``rpn``: FasterRCNN's rpn_*/box_* settings."""
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r}; choose one of {ARCHS}")
    if backbone_weights and arch not in FPN_RESNETS:
        raise ValueError(f"model.backbone_weights loads a ResNet classifier's weights; "
                         f"model.arch={arch!r} takes it not (use one of {FPN_RESNETS})")
    hub = pretrained is True
    common = {"min_size": min_size, "max_size": max_size, "image_mean": image_mean,
              "image_std": image_std, **rpn}
    levels = 3 if arch.startswith("mobilenet") else 5
    sizes = tuple(anchor_sizes or ((32, 64, 128, 256, 512) if levels == 5 else (32, 64, 128)))
    if len(sizes) != levels:
        raise ValueError(f"model.anchor_sizes needs {levels} sizes for {arch}, got {list(sizes)}")
    common["rpn_anchor_generator"] = AnchorGenerator(
        tuple((s,) for s in sizes), (tuple(aspect_ratios),) * levels)
    if arch in FPN_RESNETS:
        name = arch.removesuffix("_fpn")
        trained = hub or bool(backbone_weights)
        # Trained statistics stay frozen (detection batches are too small for batch norm);
        # a scratch backbone needs batch norm that learns.
        backbone = resnet_fpn_backbone(
            backbone_name=name, weights=get_model_weights(name).DEFAULT if hub else None,
            norm_layer=FrozenBatchNorm2d if trained else nn.BatchNorm2d,
            trainable_layers=trainable_layers if trained else 5)
        if backbone_weights and load_weights:
            load_local_weights(backbone.body, backbone_weights)
        model = detection.FasterRCNN(backbone, num_classes=num_classes + 1, **common)
    elif arch == "mobilenet_v3_large_fpn":
        if hub:
            model = detection.fasterrcnn_mobilenet_v3_large_fpn(
                weights="DEFAULT", trainable_backbone_layers=trainable_layers, **common)
        else:
            # Learning batch norm (mobilenet_backbone's default, frozen identity statistics,
            # would leave a scratch network unnormalised).
            backbone = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None,
                                          fpn=True, trainable_layers=6,
                                          norm_layer=nn.BatchNorm2d)
            model = detection.FasterRCNN(backbone, num_classes=91, **common)
    else:
        v2 = arch.endswith("v2")
        build = detection.fasterrcnn_resnet50_fpn_v2 if v2 else detection.fasterrcnn_resnet50_fpn
        anchors = common.pop("rpn_anchor_generator") if v2 else None  # v2 builds its own head
        if v2 and len(aspect_ratios) != 3:
            raise ValueError("model.aspect_ratios: resnet50_fpn_v2's RPN head takes 3 ratios")
        model = build(weights="DEFAULT" if hub else None,
                      weights_backbone=None if not hub else ResNet50_Weights.DEFAULT,
                      trainable_backbone_layers=trainable_layers if hub else 5, **common)
        if anchors is not None:
            model.rpn.anchor_generator = anchors
    box = model.roi_heads.box_predictor
    if box.cls_score.out_features != num_classes + 1:
        model.roi_heads.box_predictor = FastRCNNPredictor(box.cls_score.in_features,
                                                          num_classes + 1)
    if isinstance(pretrained, str) and pretrained:
        from timm.layers import freeze_batch_norm_2d  # here: timm is slow to import

        # A trained detector's statistics stay as trained (detection batches are too small to
        # re-estimate them); tolerant: a COCO file's 91-class box predictor stays new.
        freeze_batch_norm_2d(model)
        if load_weights:
            load_local_weights(model, pretrained, strip_prefix="model.")
    return model


class DetectorModule(L.LightningModule):
    """Faster R-CNN trained on box targets; validation logs COCO mAP (``val/map``,
    ``val/map_50``). ``class_names``: the box classes (an image-level list that starts with
    ``no_lesion``, as the detection data sets give, loses that entry). ``load_weights=False``
    skips the local start weights (``pretrained`` file, ``backbone_weights``, ``init_from``):
    a checkpoint rebuilt from its hyperparameters needs none of them to exist."""

    task = "detection"

    def __init__(self, arch: str = "mobilenet_v3_large_fpn", class_names: Sequence[str] = (),
                 optimizer: Mapping[str, Any] | None = None,
                 scheduler: Mapping[str, Any] | None = None, min_size: int = 800,
                 max_size: int = 1333, anchor_sizes: Sequence[int] | None = None,
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 rpn: Mapping[str, Any] | None = None, pretrained: bool | str | None = None,
                 trainable_layers: int = 3, backbone_weights: str | None = None,
                 image_mean: Sequence[float] | None = None,
                 image_std: Sequence[float] | None = None,
                 init_from: str | None = None, load_weights: bool = True,
                 num_classes: int | None = None, positive_class: int | None = None) -> None:
        super().__init__()
        names = [str(n) for n in class_names]
        if names and names[0] == NO_LESION:
            names = names[1:]
        if not names:
            raise ValueError("DetectorModule needs the box class names (model.class_names)")
        optimizer, scheduler, rpn, anchor_sizes, aspect_ratios, image_mean, image_std = (
            _plain(c) for c in (optimizer, scheduler, rpn, anchor_sizes, aspect_ratios,
                                image_mean, image_std))
        # Plain floats: checkpoints load with weights_only=True.
        aspect_ratios = [float(r) for r in aspect_ratios]
        image_mean, image_std = ([float(v) for v in c] if c is not None else None
                                 for c in (image_mean, image_std))
        self.save_hyperparameters(ignore=["num_classes", "positive_class", "load_weights"])
        self.hparams.class_names = names
        self.model = build_faster_rcnn(arch, len(names), min_size, max_size, anchor_sizes,
                                       aspect_ratios, pretrained, trainable_layers,
                                       backbone_weights, image_mean, image_std, load_weights,
                                       **(rpn or {}))
        if init_from and load_weights:  # fine-tuning: an earlier detector checkpoint's weights
            self.load_state_dict(read_state_dict(init_from))
        self.val_map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")

    def forward(self, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Detections per image in its input pixels, labels 0-based."""
        found = self.model(list(images))
        return [{**d, "labels": d["labels"] - 1} for d in found]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in batch["targets"]]
        losses = self.model(list(batch["image"]), targets)
        loss = sum(losses.values())
        size = len(batch["image"])
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=size)
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self.val_map.update(self(batch["image"]), list(batch["targets"]))

    def on_validation_epoch_end(self) -> None:
        result = self.val_map.compute()
        self.log_dict({f"val/{k}": result[k] for k in ("map", "map_50", "map_75")},
                      prog_bar=True)
        self.val_map.reset()

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> list[dict[str, Any]]:
        return self(batch["image"])

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.parameters() if p.requires_grad]
        settings = dict(self.hparams.optimizer or {"_target_": "torch.optim.SGD", "lr": 0.01,
                                                   "momentum": 0.9, "weight_decay": 1e-4})
        optimizer = instantiate(settings, params=params)
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        cfg = dict(self.hparams.scheduler)
        loop = {k: cfg.pop(k) for k in LOOP_KEYS if k in cfg}
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": instantiate(cfg, optimizer=optimizer), **loop}}


def load_image(path: str | Path) -> torch.Tensor:
    """A file as a (3, H, W) float image in [0, 1] at its own size (gray repeated)."""
    array = to_uint8(read_image(path, "RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


@torch.no_grad()
def detect(model: DetectorModule, paths: Sequence[str | Path], batch_size: int = 4,
           score_threshold: float = 0.0) -> list[dict[str, Any]]:
    """Per file: ``boxes`` (XYXY, the file's own pixels), ``labels`` (into
    ``model.hparams.class_names``) and ``scores``, as numpy arrays, scores at least
    ``score_threshold``."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(paths), batch_size):
        images = [load_image(p).to(device) for p in paths[start:start + batch_size]]
        for found in model(images):
            keep = found["scores"] >= score_threshold
            out.append({k: found[k][keep].cpu().numpy() for k in ("boxes", "labels", "scores")})
    return out


def _plain(value: Any) -> Any:
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    return value
