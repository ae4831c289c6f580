"""Frozen then fine-tuned: the new head trains alone, then the backbone's last blocks join it."""

from __future__ import annotations

import logging

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

log = logging.getLogger(__name__)


class FreezeThenFinetune(BaseFinetuning):
    """Stage 1: the backbone is frozen, batch norm included (its parameters and running
    statistics), so only the head trains. From epoch ``unfreeze_at_epoch`` (0-based) the last
    ``unfreeze_blocks`` blocks the backbone names in ``blocks`` (VGG conv blocks, ResNet
    ``layer*``, Inception ``Mixed_*``, SqueezeNet Fire modules) join at ``lr x lr_factor``.
    ``unfreeze_blocks: null`` (or ``-1``) unfreezes the whole backbone."""

    def __init__(self, unfreeze_at_epoch: int = 10, unfreeze_blocks: int | None = 1,
                 lr_factor: float = 0.1, train_bn: bool = True) -> None:
        super().__init__()
        if unfreeze_blocks is not None and unfreeze_blocks == 0:
            raise ValueError("callbacks.finetune.unfreeze_blocks=0: nothing would be fine-tuned; "
                             "leave the finetune callback out to keep the backbone frozen")
        if lr_factor <= 0:
            raise ValueError(f"callbacks.finetune.lr_factor={lr_factor}: must be > 0")
        self.unfreeze_at_epoch, self.unfreeze_blocks = unfreeze_at_epoch, unfreeze_blocks
        self.lr_factor, self.train_bn = lr_factor, train_bn

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        self.freeze(pl_module.backbone, train_bn=False)

    def finetune_function(self, pl_module: L.LightningModule, epoch: int,
                          optimizer: Optimizer) -> None:
        if epoch != self.unfreeze_at_epoch:
            return
        blocks = finetune_blocks(pl_module.backbone, self.unfreeze_blocks)
        modules = [m for mods in blocks.values() for m in mods]
        self.unfreeze_and_add_param_group(modules, optimizer, initial_denom_lr=1 / self.lr_factor,
                                          train_bn=self.train_bn)
        log.info("Epoch %d: fine-tuning %s at lr x %g", epoch, ", ".join(blocks), self.lr_factor)


def finetune_blocks(backbone: nn.Module, count: int | None) -> dict[str, list[nn.Module]]:
    """The last ``count`` of ``backbone.blocks`` (all of the backbone when ``count`` is None or
    negative), by name."""
    if count is None or count < 0:
        return {"backbone": [backbone]}
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, dict) or not blocks:
        raise ValueError(f"{type(backbone).__name__} names no blocks to fine-tune; use "
                         "model=transfer (or a pair model built on it), or "
                         "callbacks.finetune.unfreeze_blocks=null for the whole backbone")
    if count > len(blocks):
        raise ValueError(f"callbacks.finetune.unfreeze_blocks={count}, but the backbone has "
                         f"{len(blocks)} blocks: {', '.join(blocks)}")
    return dict(list(blocks.items())[-count:])
