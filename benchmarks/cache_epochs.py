"""Data time of the first and second epoch of BUSI through ``RecordsDataModule``: the first
decodes every PNG and writes the image cache, later ones (and later runs) read the cache.

    python benchmarks/cache_epochs.py [--image-size 224] [--threads 1] [--data-dir DIR]

Run 1 starts from an empty cache folder (a fresh temporary one): its epoch 1 is ``setup``
(decode, resize, write the memory-mapped cache, duplicate groups, split) plus one pass over the
train DataLoader; epoch 2 is a second pass. Run 2 builds a new DataModule on the warm cache.
Only data is timed (no model). Prints a table and writes ``benchmarks/results/cache_epochs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from rich.console import Console
from rich.table import Table

from breastcls.config import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "cache_epochs.json"


def busi_data_config(data_dir: str, cache_dir: str, image_size: int):
    """The ``data`` config of ``experiment=busi_resnet18`` at ``image_size``."""
    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("train", overrides=[
            "experiment=busi_resnet18", f"paths.data_dir={data_dir}", f"paths.root_dir={ROOT}",
            f"paths.output_dir={cache_dir}", f"paths.cache_dir={cache_dir}",
            f"data.image_size={image_size}", "data.num_workers=0"])
    return cfg.data


def one_pass(loader: torch.utils.data.DataLoader) -> tuple[float, int]:
    """Seconds to draw every batch of ``loader``, and the images drawn."""
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch["image"])
    return time.perf_counter() - start, seen


def run(data_cfg, epochs: int) -> dict[str, float | int | list[float]]:
    """A fresh DataModule: setup time, then ``epochs`` passes over its train loader."""
    start = time.perf_counter()
    datamodule = instantiate(data_cfg, _recursive_=False)
    datamodule.setup()
    setup = time.perf_counter() - start
    passes = [one_pass(datamodule.train_dataloader()) for _ in range(epochs)]
    return {"setup_s": setup, "pass_s": [p for p, _ in passes], "images": passes[0][1],
            "epoch_s": [setup + passes[0][0], *(p for p, _ in passes[1:])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=os.environ.get(
        "BREASTCLS_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="breastcls-cache-") as cache_dir:
        cfg = busi_data_config(args.data_dir, cache_dir, args.image_size)
        cold = run(cfg, args.epochs)
        warm = run(cfg, args.epochs)
        cache_mb = sum(p.stat().st_size for p in Path(cache_dir).glob("*.npy")) / 2**20
    first, second = cold["epoch_s"][0], cold["epoch_s"][1]
    result = {
        "image_size": args.image_size, "images_per_epoch": cold["images"],
        "batch_size": int(cfg.batch_size), "num_workers": 0, "threads": args.threads,
        "cold_cache": cold, "warm_cache": warm, "cache_mb": round(cache_mb, 1),
        "speedup_epoch2_vs_epoch1": first / second,
        "speedup_warm_run_epoch1_vs_cold_epoch1": first / warm["epoch_s"][0],
        "machine": {"cpus": os.cpu_count(), "load_avg_before": load_before,
                    "load_avg_after": os.getloadavg(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__},
    }
    table = Table(title=f"BUSI train loader, {cold['images']} images at {args.image_size} px "
                  f"({os.cpu_count()} CPUs, {args.threads} torch thread(s))")
    for name in ("run", "setup s", "epoch 1 s", "epoch 2 s", "epoch 1 / epoch 2"):
        table.add_column(name, justify="left" if name == "run" else "right")
    for name, r in (("1: cold cache", cold), ("2: warm cache", warm)):
        e = r["epoch_s"]
        table.add_row(name, f"{r['setup_s']:.2f}", f"{e[0]:.2f}", f"{e[1]:.2f}",
                      f"{e[0] / e[1]:.1f}x")
    Console().print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
