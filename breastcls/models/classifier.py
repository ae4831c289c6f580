"""The image-classification LightningModule shared by every backbone family."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric
from torchvision.transforms import v2

from breastcls.data.errors import DataError
from breastcls.metrics import classification_metrics, metric_inputs

# Keys of a scheduler config that Lightning reads rather than the scheduler itself.
SCHEDULER_LOOP_KEYS = ("interval", "frequency", "monitor")


class ImageClassifier(L.LightningModule):
    """Backbone + cross-entropy, with optimiser and scheduler built from config dicts.

    Every argument is a plain value (dicts of ``_target_`` strings and numbers), so checkpoints
    load with ``torch.load(weights_only=True)`` and ``load_from_checkpoint`` needs nothing else.
    """

    def __init__(
        self,
        backbone: Mapping[str, Any],
        optimizer: Mapping[str, Any],
        scheduler: Mapping[str, Any] | None = None,
        num_classes: int = 2,
        positive_class: int = 0,
        class_weights: str | list[float] | None = None,
        label_smoothing: float = 0.0,
        threshold: float = 0.5,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        tta: list[str] | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        # Plain containers only: Lightning loads checkpoints with weights_only=True.
        backbone, optimizer, scheduler = (_plain(c) for c in (backbone, optimizer, scheduler))
        class_weights, tta, class_names = _plain(class_weights), _plain(tta), _plain(class_names)
        self.save_hyperparameters()
        # Backbone and head as separate modules: freezing the backbone (BaseFinetuning) leaves
        # the head trainable.
        self.backbone, self.head = split_head(instantiate(dict(backbone), num_classes=num_classes))
        # Not a buffer: weight averaging (EMA) copies the module's buffers before ``setup``
        # fills in balanced weights, then swaps them in for validation by position and size.
        self.loss_weights = _fixed_class_weights(class_weights, num_classes)
        self.batch_mix = _batch_mix(mixup_alpha, cutmix_alpha, num_classes)
        self.train_metrics = classification_metrics(num_classes, threshold).clone("train/")
        self.val_metrics = classification_metrics(num_classes, threshold).clone("val/")
        # Epoch losses as metrics, so that under DDP they average every rank's images.
        self.train_loss, self.val_loss = MeanMetric(), MeanMetric()
        # ``tta`` (hparam): the flips ``threshold`` was chosen with, written into the best
        # checkpoint after training; ``predict_tta``: the flips predict_step applies now.
        self.predict_tta: bool | list[str] | None = None

    def forward(self, x: torch.Tensor, baseline: torch.Tensor | None = None) -> torch.Tensor:
        # Pair models (breastcls.models.pairs) also see the baseline patch beside the lesion.
        return self.head(self.backbone(x) if baseline is None else self.backbone(x, baseline))

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        # Checkpoints written before backbone and head were split keep the head in the backbone.
        state_dict = {_split_key(k): v for k, v in state_dict.items()}
        return super().load_state_dict(state_dict, *args, **kwargs)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is None:
            return
        if self.hparams.class_weights == "balanced" and stage == "fit":
            counts = datamodule.class_counts("train").float()
            self.loss_weights = counts.sum() / (len(counts) * counts.clamp(min=1))
        check_input_shape(self, datamodule.input_shape)

    def _step(self, batch: Mapping[str, Any], split: str, mix: bool = False) -> torch.Tensor:
        x, y = batch["image"], batch["label"]
        baseline = pair_input(self, batch)
        target = y
        if mix and self.batch_mix is not None:  # soft targets; metrics keep the hard labels
            if baseline is not None:
                raise ValueError("model.mixup_alpha / cutmix_alpha mix single images; set them "
                                 "to 0 for a pair model")
            x, target = self.batch_mix(x, y)
        logits = self(x, baseline)
        if self.loss_weights is not None and self.loss_weights.device != logits.device:
            self.loss_weights = self.loss_weights.to(logits.device)  # once, not a copy per step
        loss = F.cross_entropy(logits, target, weight=self.loss_weights,
                               label_smoothing=self.hparams.label_smoothing)
        probs = logits.detach().float().softmax(dim=1)
        getattr(self, f"{split}_metrics").update(*metric_inputs(probs, y,
                                                                self.hparams.positive_class))
        getattr(self, f"{split}_loss").update(loss.detach(), weight=len(y))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", mix=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Any]:
        probs = class_probabilities(self, batch["image"], self.predict_tta,
                                    baseline=pair_input(self, batch))
        keys = {k: batch[k] for k in ("sample_id", "group") if k in batch}
        return {"probs": probs, "labels": batch["label"], "index": batch["index"], **keys}

    def _log_epoch(self, split: str) -> dict[str, torch.Tensor]:
        # torchmetrics synchronises compute() across processes, so these values (and
        # auc_acc_mean, made from them) are already the same on every rank: no sync_dist.
        # The loss is computed here too, in the same order on every rank: logged as a metric
        # object for Lightning to compute (or with sync_dist=True), it broke two-process
        # training with mismatched collectives.
        metrics, loss = getattr(self, f"{split}_metrics"), getattr(self, f"{split}_loss")
        values = metrics.compute()
        epoch_loss = loss.compute()
        metrics.reset()
        loss.reset()
        self.log_dict(values, prog_bar=False)
        self.log(f"{split}/loss", epoch_loss, prog_bar=True)
        return values

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        values = self._log_epoch("val")
        self.log("val/auc_acc_mean", (values["val/auc"] + values["val/acc"]) / 2, prog_bar=True)

    def configure_optimizers(self) -> dict[str, Any]:
        # Frozen parameters (FreezeThenFinetune) join the optimiser later, as their own group.
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = instantiate(dict(self.hparams.optimizer), params=params)
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        cfg = dict(self.hparams.scheduler)
        loop = {k: cfg.pop(k) for k in SCHEDULER_LOOP_KEYS if k in cfg}
        scheduler = instantiate(cfg, optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, **loop}}


FLIP_DIMS = {"hflip": -1, "vflip": -2}


def split_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """``(backbone, head)`` of a classifier: the backbone returns pooled features."""
    if isinstance(getattr(model, "fc", None), nn.Module) and not hasattr(model, "reset_classifier"):
        head, model.fc = model.fc, nn.Identity()  # torchvision ResNets
    elif hasattr(model, "get_classifier"):
        head = model.get_classifier()
        model.reset_classifier(0)  # timm: forward now ends at the pooled (and dropped) features
    else:
        raise TypeError(f"{type(model).__name__} has neither a torchvision `fc` nor timm's "
                        "get_classifier(): cannot tell its head from its backbone")
    return model, head


def _split_key(key: str) -> str:
    for old in ("backbone.fc.", "backbone.head.fc.", "backbone.classifier."):
        if key.startswith(old):
            return "head." + key.removeprefix(old)
    return key


def class_probabilities(model: nn.Module, x: torch.Tensor,
                        tta: bool | Sequence[str] | None = None,
                        baseline: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax probabilities, averaged over flipped views when ``tta`` names flips
    (``hflip``, ``vflip``; ``True`` means both); a pair model's baseline flips with the image."""
    inputs = [x] if baseline is None else [x, baseline]
    return torch.stack([model(*view).float().softmax(dim=1)
                        for view in flipped_views(inputs, tta)]).mean(0)


def flipped_views(inputs: Sequence[torch.Tensor], tta: bool | Sequence[str] | None
                  ) -> list[list[torch.Tensor]]:
    """``inputs`` as given, then flipped by each of ``tta``'s flips, all inputs (a pair model's
    lesion and baseline patch) alike."""
    return [list(inputs), *([t.flip(FLIP_DIMS[f]) for t in inputs] for f in tta_views(tta))]


def takes_pairs(model: nn.Module) -> bool:
    """Whether ``model`` (a classifier or its backbone) needs the baseline patch too."""
    return bool(getattr(getattr(model, "backbone", model), "takes_pairs", False))


def pair_input(model: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor | None:
    """``batch["baseline"]`` for a pair model (a clear error when the data has none); None for
    single-input models, which ignore a baseline in the batch."""
    if not takes_pairs(model):
        return None
    if "baseline" not in batch:
        raise DataError("this pair model needs the baseline patch of every sample: set "
                        "data.pairs=true (CBIS-DDSM)")
    return batch["baseline"]


def tta_views(tta: bool | str | Sequence[str] | None) -> list[str]:
    """The flips ``tta`` names as a plain list (``True``: all of them; ``None``/``False``:
    none), or a clear error."""
    if tta is None or tta is False:
        return []
    if tta is True:
        return list(FLIP_DIMS)
    if isinstance(tta, str) or not isinstance(tta, Sequence):
        raise ValueError(f"test-time augmentation must be a list of flips such as [hflip], "
                         f"got {tta!r}; choose from {list(FLIP_DIMS)}")
    flips = [str(f) for f in tta]
    unknown = sorted(set(flips) - set(FLIP_DIMS))
    if unknown:
        raise ValueError(f"unknown test-time augmentation {unknown}; choose from {list(FLIP_DIMS)}")
    return flips


def _batch_mix(mixup_alpha: float, cutmix_alpha: float, num_classes: int) -> nn.Module | None:
    """MixUp and/or CutMix (torchvision), one of them picked per batch when both are on."""
    mixers = [cls(alpha=alpha, num_classes=num_classes)
              for cls, alpha in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if alpha > 0]
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def _plain(value: Any) -> Any:
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _fixed_class_weights(class_weights: str | list[float] | None, num_classes: int
                         ) -> torch.Tensor | None:
    """Explicit weights now; ``balanced`` is filled in from the train split at ``setup``."""
    if class_weights is None or class_weights == "balanced":
        return None
    if isinstance(class_weights, str):
        raise ValueError(f"model.class_weights={class_weights!r}: use null, 'balanced' or a list "
                         f"of {num_classes} numbers")
    if len(class_weights) != num_classes:
        raise ValueError(f"model.class_weights has {len(class_weights)} values for "
                         f"{num_classes} classes")
    return torch.tensor(list(class_weights), dtype=torch.float32)


def check_input_shape(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Fail early, with the fix, when the data's images do not fit the model."""
    was_training = model.training
    model.eval()  # batch-norm statistics stay untouched
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            x = torch.zeros(2, *input_shape, device=device)
            model(x, x) if takes_pairs(model) else model(x)
    except RuntimeError as err:
        raise ValueError(
            f"the model cannot take images of shape {tuple(input_shape)} (channels, height, "
            f"width): {err}\nMatch the model to the data: data.as_rgb / model.backbone.in_channels "
            "for channels, data.size or the model's stem for the image size.") from err
    finally:
        model.train(was_training)
