"""One table of test metrics over runs, sweeps and cross-validation folders.

    python -m breastcls.report inputs=[logs/train/runs,multirun_sweeps/paper_seeds]
    python -m breastcls.report table=idc inputs=[multirun_sweeps/idc]   # the IDC study's columns

Rows come from every ``metrics.json`` under the inputs (``<split>_ci`` adds 95% intervals) and
from every multirun ``summary.csv`` (mean ± standard deviation over its runs), followed by
a study's published results (``table.reference``). ``table.costs`` adds each run's parameter
count and seconds per epoch. Writes ``report.md`` and ``report.csv``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
from omegaconf import DictConfig

from breastcls.analysis.references import reference_rows
from breastcls.console import COLUMN_TITLES
from breastcls.metrics import TABLE_METRICS

log = logging.getLogger(__name__)

def metrics_row(path: Path, name: str, split: str = "test") -> dict[str, Any] | None:
    """A row from one metrics.json: values of ``split`` and, when present, ``<split>_ci``."""
    payload = json.loads(path.read_text())
    values = payload.get(split)
    if not isinstance(values, Mapping):
        log.warning("%s has no %r metrics; skipped", path, split)
        return None
    row: dict[str, Any] = {"name": name, "source": str(path)}
    row.update({m: values[m] for m in TABLE_METRICS if m in values})
    for metric, ci in (payload.get(f"{split}_ci") or {}).items():
        if metric in TABLE_METRICS:
            row[f"{metric}_low"], row[f"{metric}_high"] = ci["low"], ci["high"]
    row.update({c: payload[c] for c in COST_COLUMNS if payload.get(c) is not None})
    return row


def summary_rows(path: Path, name: str, split: str = "test") -> list[dict[str, Any]]:
    """One row (mean, with ``<metric>_std``) from a multirun ``summary.csv`` of
    ``breastcls.callbacks.multirun_summary`` (columns split, metric, count, mean, std, ...)."""
    frame = pd.read_csv(path)
    frame = frame[(frame["split"] == split) & frame["metric"].isin(TABLE_METRICS)]
    if frame.empty:
        return []
    row: dict[str, Any] = {"name": f"{name} (mean of {int(frame['count'].max())})",
                           "source": str(path)}
    for r in frame.itertuples(index=False):
        row[r.metric], row[f"{r.metric}_std"] = float(r.mean), float(r.std)
    return [row]


def collect(inputs: Iterable[str | Path], split: str = "test") -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for item in inputs:
        root = Path(item)
        if root.is_file():
            found = [root]
        elif root.is_dir():
            found = sorted([*root.rglob("metrics.json"), *root.rglob("summary.csv")])
        else:
            log.warning("input %s does not exist; skipped", root)
            continue
        for path in found:
            # Names keep the input folder's own name: "runs/2025-01-01_10-00-00", "sweep/3".
            name = (str(path.parent.relative_to(root.parent)) if root.is_dir()
                    else path.parent.name)
            if path.suffix == ".json":
                row = metrics_row(path, name, split)
                rows.extend([row] if row else [])
            else:
                rows.extend(summary_rows(path, name, split))
    return rows


def report_frame(rows: Sequence[Mapping[str, Any]], reference: str | None = "breastmnist",
                 metrics: Sequence[str] = TABLE_METRICS, costs: bool = False) -> pd.DataFrame:
    """Rows of values; per metric ``<m>``, ``<m>_low``/``<m>_high`` and ``<m>_std`` columns
    appear where some row has them, then the cost columns when asked."""
    unknown = sorted(set(metrics) - set(TABLE_METRICS))
    if unknown:
        raise ValueError(f"table.metrics has unknown metrics {unknown}; choose from "
                         f"{list(TABLE_METRICS)}")
    all_rows = [*rows, *reference_rows(reference)]
    columns = ["name"]
    for metric in metrics:
        for key in (metric, f"{metric}_low", f"{metric}_high", f"{metric}_std"):
            if any(key in r for r in all_rows):
                columns.append(key)
    columns += [c for c in COST_COLUMNS if costs and any(c in r for r in all_rows)]
    return pd.DataFrame(all_rows, columns=[*columns, "source"])


COST_COLUMNS = ("parameters", "epoch_seconds")  # written into metrics.json by training
COST_TITLES = {"parameters": "Params", "epoch_seconds": "s/epoch"}


def _cell(row: pd.Series, metric: str) -> str:
    value = row.get(metric)
    if value is None or pd.isna(value):
        return "-"
    if metric in COST_COLUMNS:
        return f"{value / 1e6:.2f}M" if metric == "parameters" else f"{value:.1f}"
    text = f"{value:.3f}"
    if pd.notna(row.get(f"{metric}_low", float("nan"))):
        text += f" [{row[f'{metric}_low']:.3f}, {row[f'{metric}_high']:.3f}]"
    elif pd.notna(row.get(f"{metric}_std", float("nan"))):
        text += f" ± {row[f'{metric}_std']:.3f}"
    return text


def to_markdown(frame: pd.DataFrame, split: str = "test", reference: str | None = None) -> str:
    titles = {**COLUMN_TITLES, **COST_TITLES}
    columns = [c for c in frame.columns if c in titles]  # in the order table.metrics gave
    lines = [f"| run | {' | '.join(titles[m] for m in columns)} |",
             f"|---|{'---:|' * len(columns)}"]
    for _, row in frame.iterrows():
        lines.append(f"| {row['name']} | {' | '.join(_cell(row, m) for m in columns)} |")
    notes = [f"Metrics on the {split} split; [low, high]: 95% bootstrap interval; "
             "± : standard deviation over runs."]
    sources = dict.fromkeys(r["source"] for r in reference_rows(reference))
    notes += [f"Reference rows: {s}." for s in sources if frame["source"].eq(s).any()]
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def write_report(inputs: Iterable[str | Path], output_dir: str | Path, split: str = "test",
                 reference: str | None = "breastmnist", metrics: Sequence[str] = TABLE_METRICS,
                 costs: bool = False) -> pd.DataFrame:
    frame = report_frame(collect(inputs, split), reference, metrics, costs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(output_dir / "report.csv", index=False)
    (output_dir / "report.md").write_text(to_markdown(frame, split, reference))
    log.info("Wrote %d rows to %s", len(frame), output_dir / "report.md")
    return frame


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
def main(cfg: DictConfig) -> None:
    table = cfg.table
    frame = write_report(cfg.inputs, cfg.output_dir, cfg.split, table.reference,
                         list(table.metrics or TABLE_METRICS), table.costs)
    print(to_markdown(frame, cfg.split, table.reference))


if __name__ == "__main__":
    main()
