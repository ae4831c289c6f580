"""The duplicate audit at IDC scale: ``python -m breastcls.audit data=idc`` over generated patches.

    python benchmarks/audit_scale.py [--patches 100000] [--workers 2] [--root DIR]

Generates ``--patches`` 50x50 RGB patches in the real IDC layout, one in every 200 a near copy
(noise and a brightness shift) of a patch of the next patient, so that copies cross the
patient-level split. Runs the audit CLI on them with a fresh cache and times it end to end
(scan, cache build, thumbnails, hashes, the blocked pair search, outputs), then counts how many
planted copies it found and whether any patient spans two splits.
Writes ``benchmarks/results/audit_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "audit_scale.json"
PER_PATIENT = 500
COPY_EVERY = 200


def patch_name(patient: int, k: int) -> str:
    return f"{patient}_idx5_x{50 * (k % 40) + 1}_y{50 * (k // 40) + 1}_class{int(k % 3 == 0)}"


def write_patient(args: tuple[Path, int, int]) -> None:
    """Random patches; patch k of every COPY_EVERY is a near copy of the next patient's patch
    k + 1, which is never a copy itself (generators are seeded per patient: redrawn here)."""
    root, patient, count = args
    rng = np.random.default_rng(patient)
    pixels = rng.integers(0, 255, (count, 50, 50, 3), dtype=np.uint8)
    source = np.random.default_rng(patient + 1).integers(0, 255, (count, 50, 50, 3),
                                                         dtype=np.uint8)
    for k in range(0, count, COPY_EVERY):
        noise = rng.integers(-4, 5, (50, 50, 3))
        pixels[k] = np.clip(source[k + 1].astype(int) + noise + 8, 0, 255).astype(np.uint8)
    for k in range(count):
        folder = root / str(patient) / str(int(k % 3 == 0))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[k]).save(folder / f"{patch_name(patient, k)}.png")


def generate(root: Path, patches: int, workers: int) -> list[int]:
    patients = list(range(10000, 10000 + -(-patches // PER_PATIENT)))
    if not any(root.glob("*/*/*.png")):
        jobs = [(root, p, min(PER_PATIENT, patches - i * PER_PATIENT))
                for i, p in enumerate(patients)]
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(write_patient, jobs))
    return patients


def planted_pairs(patients: list[int], patches: int) -> set[frozenset[str]]:
    """Sample-id pairs of every planted copy whose source patient exists."""
    pairs = set()
    for i, patient in enumerate(patients[:-1]):
        count = min(PER_PATIENT, patches - i * PER_PATIENT)
        for k in range(0, min(count, patches - (i + 1) * PER_PATIENT - 1), COPY_EVERY):
            pairs.add(frozenset((patch_name(patient, k), patch_name(patient + 1, k + 1))))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="breastcls-audit-") as scratch:
        root = args.root or Path(scratch) / "idc"
        patients = generate(root, args.patches, args.workers)
        out = Path(scratch) / "audit"
        env = {**os.environ, "BREASTCLS_CACHE_DIR": str(Path(scratch) / "cache")}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "breastcls.audit", "data=idc",
                        f"data.root={root}", f"data.cache_workers={args.workers}",
                        f"hydra.run.dir={out}"], cwd=ROOT, env=env, check=True)
        audit_s = time.perf_counter() - start
        pairs = pd.read_csv(out / "pairs.csv")
        splits = pd.read_csv(out / "splits.csv")
    found = {frozenset(p) for p in zip(pairs.sample_id_a, pairs.sample_id_b, strict=True)}
    planted = planted_pairs(patients, args.patches)
    result = {
        "patches": args.patches, "workers": args.workers, "audit_cli_s": audit_s,
        "pairs": len(pairs), "pairs_across_splits": int((pairs.scope == "across").sum()),
        "planted": len(planted), "planted_found": len(planted & found),
        "patients_in_two_splits": int(splits.groupby("group")["split"].nunique().gt(1).sum()),
        "machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg(),
                    "platform": platform.platform()}}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    for key, value in result.items():
        if key != "machine":
            print(f"{key:24s} {value:.1f}" if isinstance(value, float) else f"{key:24s} {value}")


if __name__ == "__main__":
    main()
