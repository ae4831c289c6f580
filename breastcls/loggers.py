"""Experiment loggers that need more than a plain ``_target_``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)


def _wandb_api_key_available() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        import wandb

        return bool(wandb.api.api_key)
    except Exception:  # no settings file, no netrc: treat as no key
        return False


def wandb_logger(save_dir: str, project: str, offline: bool | None = None, **kwargs: Any
                 ) -> WandbLogger:
    """A ``WandbLogger`` that falls back to offline mode when no W&B key is configured.

    ``offline=None`` decides from the environment: ``WANDB_MODE`` if set, otherwise online only
    when an API key is found.
    """
    if offline is None:
        mode = os.environ.get("WANDB_MODE")
        offline = mode in ("offline", "dryrun") if mode else not _wandb_api_key_available()
        if offline and not mode:
            log.warning("W&B: no API key found, logging offline under %s/wandb. Sync later with "
                        "`wandb sync %s/wandb/offline-run-*` (after `wandb login`).", save_dir,
                        save_dir)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    if offline:
        # Lightning marks offline runs with WANDB_MODE=dryrun, which current wandb no longer
        # reads as offline; an explicit mode keeps wandb from asking for a login.
        kwargs.setdefault("mode", "offline")
    return WandbLogger(save_dir=save_dir, project=project, offline=offline, **kwargs)


def finish_wandb() -> None:
    """Close an open W&B run so its files (summary included) are flushed."""
    import sys

    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()
