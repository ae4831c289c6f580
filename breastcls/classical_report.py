"""Scores of the classical pipeline and its results table, laid out like the study's Table 2:
balanced accuracy mean ± std over folds, then accuracy and AUROC with 95% intervals on the pooled
out-of-fold predictions (or on the scored split)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from breastcls.analysis.bootstrap import bootstrap_ci

TABLE_FILE = "results.csv"  # one row per evaluation of one run; a multirun's rows are collected
COLUMNS = ("pipeline", "features", "evaluated on", "n", "features kept",
           "balanced acc (mean ± std over folds)", "balanced acc", "acc (95% CI)",
           "AUROC (95% CI)")


def scores_with_ci(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray,
                   positive_class: int | None, bootstrap: Mapping[str, Any]) -> dict[str, Any]:
    """Every metric of ``breastcls.metrics`` at threshold 0.5, with percentile intervals of
    ``bootstrap.n_resamples`` resamples (of whole groups when a group holds several rows).
    ``positive_class`` is None for a multi-class task (macro averages)."""
    grouped = len(np.unique(groups)) < len(groups)
    intervals = bootstrap_ci(probs, labels, positive_class or 0, 0.5,
                             int(bootstrap["n_resamples"]), float(bootstrap["confidence"]),
                             int(bootstrap["seed"]), groups=list(groups) if grouped else None)
    return {"values": {k: v["value"] for k, v in intervals.items()},
            "ci": {k: {"low": v["low"], "high": v["high"]} for k, v in intervals.items()}}


def _with_ci(scores: Mapping[str, Any], metric: str) -> str:
    value, ci = scores["values"][metric], scores["ci"][metric]
    return f"{value:.3f} ({ci['low']:.3f} to {ci['high']:.3f})"


def table_row(pipeline: str, features: str, evaluated_on: str, n: int,
              scores: Mapping[str, Any], folds: Mapping[str, float] | None = None,
              kept: float | None = None) -> dict[str, Any]:
    """One row of the results table."""
    spread = (f"{folds['balanced_acc_mean']:.3f} ± {folds['balanced_acc_std']:.3f}"
              if folds else "")
    return dict(zip(COLUMNS, (pipeline, features, evaluated_on, n,
                              "" if kept is None else f"{kept:.1f}", spread,
                              f"{scores['values']['balanced_acc']:.3f}",
                              _with_ci(scores, "acc"), _with_ci(scores, "auc")), strict=True))


def write_table(rows: Sequence[Mapping[str, Any]], out_dir: Path) -> pd.DataFrame:
    """``results.csv`` of this run; returns it as a frame."""
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    frame.to_csv(out_dir / TABLE_FILE, index=False)
    return frame


def collect_tables(folder: Path) -> pd.DataFrame:
    """Every run's ``results.csv`` under ``folder`` (a multirun: one run a Table 2 row), written
    as ``table.csv`` and ``table.md`` in ``folder``."""
    # As text: the rows keep their written digits (0.800 is not shortened to 0.8).
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False)
              .assign(run=p.parent.relative_to(folder).as_posix())
              for p in sorted(folder.rglob(TABLE_FILE))]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    table.to_csv(folder / "table.csv", index=False)
    (folder / "table.md").write_text(markdown(table) + "\n")
    return table


def markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def print_table(frame: pd.DataFrame, title: str) -> None:
    table = Table(title=title)
    for column in frame.columns:
        table.add_column(str(column))
    for row in frame.itertuples(index=False):
        table.add_row(*map(str, row))
    Console().print(table)


def fold_table(fold_results: Sequence[Any], labels: np.ndarray) -> pd.DataFrame:
    """Per fold: held-out size and class counts, balanced accuracy, the features Lasso kept."""
    return pd.DataFrame([{"fold": f.fold, "n_held_out": len(f.rows),
                          "class_counts": np.bincount(labels[f.rows],
                                                      minlength=labels.max() + 1).tolist(),
                          "balanced_acc": f.balanced_acc, "features_kept": int(f.kept.sum()),
                          "kept": " ".join(str(i) for i in np.flatnonzero(f.kept))}
                         for f in fold_results])
