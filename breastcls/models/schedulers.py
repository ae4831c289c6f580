"""Learning-rate schedules that torch offers only as compositions."""

from __future__ import annotations

import logging

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR

log = logging.getLogger(__name__)


def warmup_cosine(optimizer: Optimizer, warmup_epochs: int, max_epochs: int | None,
                  warmup_start_factor: float = 0.01, eta_min: float = 0.0) -> LRScheduler:
    """Linear warmup from ``warmup_start_factor`` x lr to lr, then cosine decay to ``eta_min``.

    Stepped once per epoch; with ``warmup_epochs=0`` it is plain cosine annealing. A warmup as
    long as training or longer (``debug=fdr``/``limit`` cut ``max_epochs`` to 1 or 3) is
    shortened to ``max_epochs - 1`` epochs, with a warning, so the cosine part keeps one epoch.
    """
    if max_epochs is None or max_epochs < 1 or warmup_epochs < 0:
        raise ValueError(f"warmup_cosine needs max_epochs >= 1 and warmup_epochs >= 0, got "
                         f"max_epochs={max_epochs}, warmup_epochs={warmup_epochs}")
    if warmup_epochs >= max_epochs:
        log.warning("warmup_epochs=%d >= max_epochs=%d: warming up for %d epoch(s) instead",
                    warmup_epochs, max_epochs, max_epochs - 1)
        warmup_epochs = max_epochs - 1
    cosine = CosineAnnealingLR(optimizer, T_max=max_epochs - warmup_epochs, eta_min=eta_min)
    if warmup_epochs == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
