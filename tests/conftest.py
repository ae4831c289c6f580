"""Shared fixtures: the real data folder and composed configs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from breastcls.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
register_resolvers()


def real_data_dir() -> Path:
    return Path(os.environ.get("BREASTCLS_DATA_DIR", ROOT.parent / "shared" / "data"))


def require_real_data(relative: str, name: str) -> Path:
    """``real_data_dir() / relative``: CI must have it (the test fails), elsewhere it skips."""
    path = real_data_dir() / relative
    if not path.exists():
        message = f"real {name} not found at {path} (set BREASTCLS_DATA_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the real breastmnist.npz."""
    return require_real_data("breastmnist.npz", "BreastMNIST").parent


@pytest.fixture
def other_threads():
    """A CPU thread count other than the current one (so setting it shows); restored after."""
    before = torch.get_num_threads()
    yield 1 if before != 1 else 2
    torch.set_num_threads(before)


def compose_train(overrides: Sequence[str] = (), output_dir: Path | None = None,
                  config_name: str = "train") -> DictConfig:
    """The config ``python -m breastcls.<config_name> *overrides`` would run, outside Hydra's
    runtime: output paths point at ``output_dir``."""
    out = Path(output_dir) if output_dir else ROOT / "logs" / "pytest"
    paths = [f"paths.root_dir={out}", f"paths.output_dir={out}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name, overrides=[*paths, *overrides])


# A few batches of real data: enough to exercise every stage on 2 CPU cores.
FAST = ["extras.print_config=false", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1", "callbacks.rich_progress_bar=null",
        "callbacks.model_summary=null"]
