"""OmegaConf resolvers, lookups and process settings shared by the entry points."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${num_channels:${data.as_rgb}}``: the channel count a backbone must accept;
    ``${coalesce:${data.resize},${data.size}}``: the first value that is not null."""
    if not OmegaConf.has_resolver("num_channels"):
        OmegaConf.register_new_resolver("num_channels", lambda as_rgb: 3 if as_rgb else 1)
    if not OmegaConf.has_resolver("coalesce"):
        OmegaConf.register_new_resolver(
            "coalesce", lambda *values: next((v for v in values if v is not None), None))


def set_threads(threads: int | None) -> None:
    """Fix torch's CPU threads when ``threads`` is given: on CPU a seed reproduces a run's
    numbers only at the same thread count (reductions split by thread)."""
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads={threads!r}: give a positive number of CPU threads, or "
                             "null for torch's default (one per core)")
        torch.set_num_threads(threads)


def platform_info() -> dict[str, str | int | None]:
    """What a seeded run's numbers depend on beyond its config: torch build, CPU kernels
    (another CPU generation gives other floating-point results), thread count and GPU."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def metric_value(metrics: Mapping[str, float], name: str | None) -> float | None:
    """The value of ``optimized_metric`` (what a sweep optimises), or a clear error."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} was not computed; choose one of "
                       f"{sorted(metrics)}")
    return metrics[name]
