"""Training speed of the IDC study's networks: images/s of training steps on generated patches.

    python benchmarks/idc_epochs.py [--experiments idc_initial_cnn idc_own_cnn ...]
        [--patches 3000] [--batches 20] [--threads 2]

Generates ``--patches`` 50x50 patches in the real IDC layout (as benchmarks/idc_loading.py),
then for each experiment trains ``--batches`` batches through ``breastcls.train``'s own model
and data module (Lightning, the experiment's optimiser and batch size, no validation) and times
the steps after the first two (warm-up). A full epoch of the 277,524 patches takes
``277524 / images_per_s`` seconds. Writes ``benchmarks/results/idc_epochs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from idc_loading import generate  # noqa: E402

from breastcls.config import class_metadata, register_resolvers  # noqa: E402
from breastcls.data.build import build_datamodule  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "idc_epochs.json"
FULL_SET = 277_524
WARMUP = 2


class StepTimer(L.Callback):
    """Seconds of the training steps after the warm-up ones."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.steps = 0
        self.seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == WARMUP:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.start is not None:
            self.steps += 1
            self.seconds = time.perf_counter() - self.start


def measure(experiment: str, root: Path, cache: Path, batches: int) -> dict[str, float | str]:
    # A patch-level split: the speed does not depend on it, and a few generated patients
    # (500 patches each) are too few groups for the patient-level holdout. No scheduler: a
    # plateau schedule needs the validation this timing skips, and steps cost the same without.
    overrides = [f"experiment={experiment}", f"data.root={root}", f"paths.cache_dir={cache}",
                 "data/split=stratified", "model/scheduler=none",
                 f"paths.root_dir={cache.parent}", f"paths.output_dir={cache.parent}"]
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("train", overrides=overrides)
    datamodule = build_datamodule(cfg.data)
    model = instantiate(cfg.model, **class_metadata(datamodule, cfg))
    timer = StepTimer()
    trainer = L.Trainer(max_epochs=1, limit_train_batches=batches + WARMUP, limit_val_batches=0,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer], accelerator="cpu")
    trainer.fit(model, datamodule=datamodule)
    images = timer.steps * cfg.data.batch_size
    return {"experiment": experiment, "batch_size": cfg.data.batch_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "images_per_s": images / timer.seconds,
            "full_epoch_minutes": FULL_SET / (images / timer.seconds) / 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", nargs="+",
                        default=["idc_initial_cnn", "idc_own_cnn", "idc_xception"])
    parser.add_argument("--patches", type=int, default=3000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    register_resolvers()
    with tempfile.TemporaryDirectory(prefix="breastcls-idc-epochs-") as scratch:
        root = Path(scratch) / "idc"
        generate(root, args.patches, min(2, os.cpu_count() or 1))
        rows = [measure(e, root, Path(scratch) / "cache", args.batches)
                for e in args.experiments]
    result = {"patches": args.patches, "timed_batches": args.batches, "threads": args.threads,
              "networks": rows,
              "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                          "platform": platform.platform(), "torch": torch.__version__}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    for row in rows:
        print(f"{row['experiment']:24s} {row['parameters'] / 1e6:6.2f}M params  "
              f"{row['images_per_s']:8.1f} img/s  full epoch {row['full_epoch_minutes']:.1f} min")


if __name__ == "__main__":
    main()
