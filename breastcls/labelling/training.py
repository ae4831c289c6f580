"""Fine-tune a detector on the labelled pool through breastcls.train's own ``train``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from breastcls.data.readers import DataError
from breastcls.train import train

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def fine_tune(annotations: Path, init_from: str | None, output_dir: Path,
              overrides: Sequence[str], root_dir: str, seed: int) -> Path:
    """Train ``python -m breastcls.train *overrides data=coco`` on the COCO file
    ``annotations``, starting from ``init_from``'s weights; returns the best checkpoint."""
    settings = [*overrides, "data=coco", f"data.annotations={_quoted(annotations)}",
                f"paths.root_dir={_quoted(root_dir)}", f"paths.output_dir={_quoted(output_dir)}",
                f"seed={seed}"]
    if init_from:
        settings.append(f"model.init_from={_quoted(init_from)}")
    with _config_dir():
        cfg: DictConfig = compose("train", overrides=settings)
    train(cfg)
    return best_checkpoint(output_dir / "checkpoints")


def best_checkpoint(folder: Path) -> Path:
    """The best-on-monitor checkpoint a run saved, else its ``last.ckpt``."""
    best = sorted(p for p in folder.glob("*.ckpt") if p.name != "last.ckpt")
    if best:
        return max(best, key=lambda p: p.stat().st_mtime)
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise DataError(f"{folder}: the training run saved no checkpoint; keep callbacks "
                    "model_checkpoint on in train.overrides")


@contextmanager
def _config_dir() -> Iterator[None]:
    """Compose from conf/: inside a Hydra app its search path is set already."""
    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        yield


def _quoted(value: object) -> str:
    """A Hydra override value that may hold spaces or brackets (BUSI's file names)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
