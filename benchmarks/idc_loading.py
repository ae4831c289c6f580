"""Data loading on IDC-sized data: the packed image cache vs torchvision ImageFolder + PIL.

    python benchmarks/idc_loading.py [--patches 100000] [--workers 2] [--root DIR]

Generates ``--patches`` 50x50 RGB PNG patches in the real layout
(``<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<0|1>.png``, 2% of them 32-row edge patches) in
``--root`` (a temporary folder by default; kept when given), then times on the same files:
one ImageFolder epoch (PIL decode, pad to 50x50, batch 128, no model), the cache build (scan,
decode, pad, write; ``--workers`` processes) and one epoch from the cache, each in images/s.
Writes ``benchmarks/results/idc_loading.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from breastcls.data.arrays import ArrayDataset, build_transform, collate
from breastcls.data.cache import Preprocessing, load_or_build
from breastcls.data.idc import idc_records

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "idc_loading.json"
PER_PATIENT = 500


def write_patient(args: tuple[Path, int, int]) -> None:
    root, patient, count = args
    rng = np.random.default_rng(patient)
    for k in range(count):
        label = int(k % 3 == 0)
        folder = root / str(patient) / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        rows = 32 if k % 50 == 49 else 50
        pixels = rng.integers(0, 255, (rows, 50, 3), dtype=np.uint8)
        x, y = 50 * (k % 40) + 1, 50 * (k // 40) + 1
        Image.fromarray(pixels).save(folder / f"{patient}_idx5_x{x}_y{y}_class{label}.png")


def generate(root: Path, patches: int, workers: int) -> None:
    if any(root.glob("*/*/*.png")):
        return
    jobs = [(root, 10000 + p, min(PER_PATIENT, patches - p * PER_PATIENT))
            for p in range(-(-patches // PER_PATIENT))]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(write_patient, jobs))


def epoch(loader: DataLoader, key: str | int) -> tuple[float, int]:
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch[key])
    return time.perf_counter() - start, seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="breastcls-idc-") as scratch:
        root = args.root or Path(scratch) / "idc"
        start = time.perf_counter()
        generate(root, args.patches, args.workers)
        generated_s = time.perf_counter() - start

        folder = ImageFolder(str(root), transform=v2.Compose([v2.PILToTensor(),
                                                              v2.CenterCrop(50)]))
        folder_s, folder_n = epoch(DataLoader(folder, batch_size=128, num_workers=0), 0)

        start = time.perf_counter()
        records = idc_records(root).records
        scan_s = time.perf_counter() - start
        settings = Preprocessing(50, "pad", 3)
        start = time.perf_counter()
        cached = load_or_build(records["path"].tolist(), settings, Path(scratch) / "cache",
                               workers=args.workers)
        build_s = time.perf_counter() - start
        # The loaders every data module serves: the cache in memory, batches built whole.
        data = ArrayDataset(torch.from_numpy(np.array(cached.images)),
                            torch.tensor(records["label"].to_numpy()),
                            build_transform(None, [0.5] * 3, [0.5] * 3, 3))
        cache_s, cache_n = epoch(DataLoader(data.as_whole_batches(), batch_size=128,
                                            collate_fn=collate, num_workers=0), "image")
    result = {
        "patches": args.patches, "workers": args.workers, "generate_s": generated_s,
        "imagefolder_epoch_s": folder_s, "imagefolder_images_per_s": folder_n / folder_s,
        "scan_s": scan_s, "cache_build_s": build_s,
        "cache_build_vs_imagefolder_epoch": (scan_s + build_s) / folder_s,
        "cache_epoch_s": cache_s, "cache_images_per_s": cache_n / cache_s,
        "cache_vs_imagefolder_speedup": (cache_n / cache_s) / (folder_n / folder_s),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                    "platform": platform.platform(), "torch": torch.__version__}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    for key, value in result.items():
        if key != "machine":
            print(f"{key:36s} {value:.3f}" if isinstance(value, float) else f"{key:36s} {value}")


if __name__ == "__main__":
    main()
