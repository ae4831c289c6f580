"""Summary of a multirun (seed repeats, folds, grids): runs.csv, summary.csv and summary.md.

Registered as a Hydra callback (conf/hydra/callbacks/multirun_summary.yaml), it runs when a
multirun ends. To rebuild the files of a finished sweep:

    python -m breastcls.callbacks.multirun_summary multirun_sweeps/NAME
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# Sweepers that write their own summary (a search's trials are no repeats to average).
SKIP_SWEEPERS = ("hydra_plugins.breastcls_optuna_sweeper.",)


def read_runs(sweep_dir: Path) -> list[dict[str, Any]]:
    """One row per job folder with a metrics.json: job, overrides, ``split/metric`` values."""
    rows = []
    for path in sorted(sweep_dir.rglob("metrics.json")):
        job_dir = path.parent
        data = json.loads(path.read_text())
        row: dict[str, Any] = {"job": job_dir.relative_to(sweep_dir).as_posix()}
        overrides = job_dir / ".hydra" / "overrides.yaml"
        if overrides.is_file():
            row["overrides"] = " ".join(OmegaConf.load(overrides))
        if "best_epoch" in data:
            row["best_epoch"] = data["best_epoch"]
        for split, values in data.items():
            if not isinstance(values, dict) or "acc" not in values:  # settings, intervals
                continue
            row.update({f"{split}/{k}": v for k, v in values.items()
                        if isinstance(v, int | float) and not isinstance(v, bool)})
        rows.append(row)
    # Numeric job folders (0, 1, ..., 10) in numeric order.
    return sorted(rows, key=lambda r: [int(p) if p.isdigit() else p for p in r["job"].split("/")])


def write_multirun_summary(sweep_dir: str | Path) -> dict[str, Path]:
    """runs.csv (every job) and summary.csv / summary.md (mean, std, min, max per metric)."""
    import pandas as pd

    sweep_dir = Path(sweep_dir)
    rows = read_runs(sweep_dir)
    if not rows:
        log.warning("No metrics.json under %s: no multirun summary", sweep_dir)
        return {}
    runs = pd.DataFrame(rows)
    runs.to_csv(sweep_dir / "runs.csv", index=False)
    metrics = [c for c in runs.columns if "/" in c]
    stats = runs[metrics].agg(["count", "mean", "std", "min", "max"]).T  # std: sample (n-1)
    stats.insert(0, "split", [m.split("/", 1)[0] for m in metrics])
    stats.insert(1, "metric", [m.split("/", 1)[1] for m in metrics])
    stats["count"] = stats["count"].astype(int)
    stats.to_csv(sweep_dir / "summary.csv", index=False)

    lines = [f"# {sweep_dir.name}: {len(runs)} runs", "",
             "| split | metric | mean ± std | min | max | n |", "|---|---|---|---|---|---|"]
    for _, r in stats.iterrows():
        std = "nan" if pd.isna(r["std"]) else f"{r['std']:.4f}"
        lines.append(f"| {r['split']} | {r['metric']} | {r['mean']:.4f} ± {std} | "
                     f"{r['min']:.4f} | {r['max']:.4f} | {r['count']} |")
    (sweep_dir / "summary.md").write_text("\n".join(lines) + "\n")
    log.info("Multirun summary of %d runs in %s", len(runs), sweep_dir)
    return {name: sweep_dir / name for name in ("runs.csv", "summary.csv", "summary.md")}


class MultirunSummary(Callback):
    """Hydra callback: writes the multirun summary into ``hydra.sweep.dir`` at the end."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweeper = OmegaConf.select(config, "hydra.sweeper._target_", default="") or ""
        if sweeper.startswith(SKIP_SWEEPERS):
            return
        try:
            write_multirun_summary(config.hydra.sweep.dir)
        except Exception:  # a summary must not turn a finished multirun into a failure
            log.exception("Multirun summary failed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if not write_multirun_summary(args.sweep_dir):
        raise SystemExit(f"no metrics.json under {args.sweep_dir}")


if __name__ == "__main__":
    main()
