"""Time one training epoch of the BreastMNIST study's recipe through breastcls (Lightning, its
callbacks, metrics and logger) against a plain PyTorch loop doing the same work: same model,
data loaders, batch size, optimiser, scheduler and threads, training plus a validation pass.

    python benchmarks/epoch_overhead.py --epochs 4 --threads 2

Prints the median epoch time of each (the first epoch is a warm-up and excluded) and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from breastcls.instantiate import instantiate_callbacks, instantiate_loggers

ROOT = Path(__file__).resolve().parents[1]


class EpochTimer(L.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # after validation and checkpoints
        self.times.append(time.perf_counter() - self._start)


def compose_study(data_dir: str, output_dir: str):
    from hydra import compose, initialize_config_dir

    from breastcls.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("train", overrides=[
            "experiment=breastmnist_resnet18_paper", f"paths.data_dir={data_dir}",
            f"paths.root_dir={output_dir}", f"paths.output_dir={output_dir}"])


def breastcls_epochs(cfg, epochs: int) -> list[float]:
    L.seed_everything(0, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    timer = EpochTimer()
    cfg.callbacks.early_stopping = None
    trainer = instantiate(cfg.trainer, max_epochs=epochs, num_sanity_val_steps=0,
                          callbacks=[timer, *instantiate_callbacks(cfg.callbacks)],
                          logger=instantiate_loggers(cfg.logger))
    trainer.fit(model, datamodule=datamodule)
    return timer.times


def plain_epochs(cfg, epochs: int) -> list[float]:
    L.seed_everything(0, workers=True)
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    spec = OmegaConf.to_container(cfg.model, resolve=True)
    model = instantiate(spec["backbone"], num_classes=spec["num_classes"])
    optimizer = instantiate(spec["optimizer"], params=model.parameters())
    scheduler_cfg = {k: v for k, v in spec["scheduler"].items() if k != "interval"}
    scheduler = instantiate(scheduler_cfg, optimizer=optimizer)
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for x, y, _ in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        scores, labels = [], []
        with torch.no_grad():
            for x, y, _ in val_loader:
                scores.append(model(x).softmax(1)[:, 0])
                labels.append(y == 0)
        roc_auc_score(torch.cat(labels).numpy(), torch.cat(scores).numpy())
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="default: $BREASTCLS_DATA_DIR")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import os

    data_dir = args.data_dir or os.environ.get("BREASTCLS_DATA_DIR", str(ROOT / "data"))
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_study(data_dir, out)
        plain = plain_epochs(cfg, args.epochs)
        ours = breastcls_epochs(cfg, args.epochs)
    plain_median, ours_median = statistics.median(plain[1:]), statistics.median(ours[1:])
    table = Table(title=f"one epoch of the study's recipe, {args.threads} threads, "
                        f"median of epochs 2-{args.epochs}")
    for column in ("loop", "epoch times (s)", "median (s)"):
        table.add_column(column)
    table.add_row("plain PyTorch", " ".join(f"{t:.2f}" for t in plain), f"{plain_median:.2f}")
    table.add_row("breastcls", " ".join(f"{t:.2f}" for t in ours), f"{ours_median:.2f}")
    Console().print(table)
    print(f"ratio breastcls / plain: {ours_median / plain_median:.3f}")


if __name__ == "__main__":
    main()
