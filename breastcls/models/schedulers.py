"""Learning-rate schedules that torch offers only as compositions."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


def warmup_cosine(optimizer: Optimizer, warmup_epochs: int, max_epochs: int,
                  warmup_start_factor: float = 0.01, eta_min: float = 0.0) -> LRScheduler:
    """Linear warmup from ``warmup_start_factor`` x lr to lr, then cosine decay to ``eta_min``.

    Stepped once per epoch; with ``warmup_epochs=0`` it is plain cosine annealing.
    """
    if not 0 <= warmup_epochs < max_epochs:
        raise ValueError(f"warmup_epochs={warmup_epochs} must lie in [0, max_epochs={max_epochs})")
    cosine = CosineAnnealingLR(optimizer, T_max=max_epochs - warmup_epochs, eta_min=eta_min)
    if warmup_epochs == 0:
        return cosine
    warmup = LinearLR(optimizer, start_factor=warmup_start_factor, total_iters=warmup_epochs)
    return SequentialLR(optimizer, [warmup, cosine], milestones=[warmup_epochs])
