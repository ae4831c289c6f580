"""OmegaConf resolvers, lookups and process settings shared by the entry points."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from breastcls.data.readers import DataError

log = logging.getLogger(__name__)


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


def class_metadata(datamodule: Any, cfg: Mapping[str, Any]) -> dict[str, int]:
    """The model's ``num_classes``, ``positive_class`` and ``class_names`` as the data set
    declares them (stored in the checkpoint, so predict names its columns).

    A threshold method is refused for a multi-class task before anything trains."""
    num_classes = getattr(datamodule, "num_classes", None)
    if num_classes is None:
        return {}
    method = ((cfg.get("evaluation") or {}).get("threshold") or {}).get("method")
    if num_classes > 2 and method is not None:
        raise DataError(f"evaluation.threshold.method={method!r} moves a binary threshold, but "
                        f"this task has {num_classes} classes {list(datamodule.class_names)}; "
                        "set evaluation.threshold.method=null or pick a binary task")
    positive = getattr(datamodule, "positive_class", None)
    return {"num_classes": num_classes, "positive_class": 0 if positive is None else positive,
            "class_names": list(datamodule.class_names)}


def exit_on_user_error(main: Callable[..., Any]) -> Callable[..., Any]:
    """Bad data or settings end a single run with one message and exit code 1, not a
    traceback; ``HYDRA_FULL_ERROR=1`` keeps the trace (multiruns keep theirs too)."""

    @functools.wraps(main)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            if args and OmegaConf.is_config(args[0]):
                require_values(args[0])
            return main(*args, **kwargs)
        except DataError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or _multirun():
                raise
            log.error("%s", err)
            raise SystemExit(f"error: {err}") from None

    return wrapper


def require_values(cfg: Any) -> None:
    """Refuse a config that leaves mandatory values (``???``) unset, naming each."""
    missing = sorted(_missing_keys(cfg, ""))
    if missing:
        raise DataError(f"{', '.join(missing)} must be given (the config leaves "
                        f"{'it' if len(missing) == 1 else 'them'} to you): add "
                        + " ".join(f"{key}=..." for key in missing))


def _missing_keys(node: Any, prefix: str) -> list[str]:
    """Keys left at ``???``, found without resolving interpolations (which may point at them)."""
    if not isinstance(node, DictConfig):
        return []
    found = []
    for key in node:
        name = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            found.append(name)
        elif not OmegaConf.is_interpolation(node, key):
            found += _missing_keys(node[key], f"{name}.")
    return found


def _multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
