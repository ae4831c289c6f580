"""Time one training step of the detection task through breastcls (Lightning, the detector
module's training step and its logging) against torchvision's reference detection loop
(``references/detection/engine.py``: sum the loss dict, zero_grad, backward, step) on the same
BUSI batches and the same model, in one run.

    python benchmarks/detection_step.py --steps 12 --threads 2

Prints the median step time of each (the first two steps are warm-up and excluded), their
ratio, and writes ``benchmarks/results/detection_step.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from rich.console import Console
from rich.table import Table

from breastcls.config import class_metadata
from breastcls.data.build import build_datamodule, instantiate_or_data_error

ROOT = Path(__file__).resolve().parents[1]
WARM_UP = 2


class StepTimer(L.Callback):
    """Seconds from each batch's start to its end: forward, loss, backward, optimiser step and
    logging."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.times.append(time.perf_counter() - self._start)


def compose_study(output_dir: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from breastcls.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return compose("train", overrides=[
            "experiment=busi_fasterrcnn_mobilenet", "model.pretrained=null", "logger=none",
            f"paths.root_dir={output_dir}", f"paths.output_dir={output_dir}", *overrides])


def reference_steps(module: L.LightningModule, batches: list[dict]) -> list[float]:
    """torchvision's reference loop on the module's own Faster R-CNN and optimiser settings."""
    model = module.model
    model.train()
    optimizer = module.configure_optimizers()["optimizer"]
    times = []
    for batch in batches:
        start = time.perf_counter()
        targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in batch["targets"]]
        loss_dict = model(list(batch["image"]), targets)
        losses = sum(loss for loss in loss_dict.values())
        optimizer.zero_grad()
        losses.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def breastcls_steps(cfg, module: L.LightningModule, batches: list[dict]) -> list[float]:
    timer = StepTimer()
    trainer = instantiate(cfg.trainer, max_epochs=1, limit_train_batches=len(batches),
                          limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, callbacks=[timer])
    loader = torch.utils.data.DataLoader(batches, batch_size=None, collate_fn=lambda b: b)
    trainer.fit(module, train_dataloaders=loader)
    return timer.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data.batch_size=4 "
                        "(the images: $BREASTCLS_DATA_DIR/busi, or data.root=<folder>)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        cfg = compose_study(out, args.overrides)
        L.seed_everything(0, workers=True)
        datamodule = build_datamodule(cfg.data)
        datamodule.setup("fit")
        batches = list(islice(datamodule.train_dataloader(), args.steps))  # same images twice
        module = instantiate_or_data_error(cfg.model, **class_metadata(datamodule, cfg))
        twin = copy.deepcopy(module)  # the same initial weights for the reference loop
        plain = reference_steps(twin, batches)
        ours = breastcls_steps(cfg, module, batches)
    plain_median = statistics.median(plain[WARM_UP:])
    ours_median = statistics.median(ours[WARM_UP:])
    ratio = ours_median / plain_median
    size = f"{len(batches[0]['image'])} images of {cfg.data.image_size} px"
    table = Table(title=f"one Faster R-CNN MobileNetV3-FPN training step, {size}, "
                        f"{args.threads} threads, median of steps {WARM_UP + 1}-{len(batches)}")
    for column in ("loop", "step times (s)", "median (s)"):
        table.add_column(column)
    table.add_row("torchvision reference", " ".join(f"{t:.2f}" for t in plain),
                  f"{plain_median:.3f}")
    table.add_row("breastcls", " ".join(f"{t:.2f}" for t in ours), f"{ours_median:.3f}")
    Console().print(table)
    print(f"ratio breastcls / reference: {ratio:.3f} (target <= 1.10)")
    result = {"command": "python benchmarks/detection_step.py " + " ".join(
                  [f"--steps {args.steps}", f"--threads {args.threads}", *args.overrides]),
              "batch": size, "reference_s": plain, "breastcls_s": ours,
              "reference_median_s": plain_median, "breastcls_median_s": ours_median,
              "ratio": ratio, "torch": torch.__version__}
    path = ROOT / "benchmarks" / "results" / "detection_step.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
