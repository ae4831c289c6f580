"""Result tables printed at the end of a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf
from rich import box
from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table
from rich.tree import Tree

from breastcls.metrics import TABLE_METRICS

if TYPE_CHECKING:
    from breastcls.scoring.result import EvaluationResult

COLUMN_TITLES = {"auc": "AUC", "acc": "ACC", "auprc": "AUPRC", "recall": "Recall", "f1": "F1",
                 "precision": "Prec", "f2": "F2", "specificity": "Spec", "balanced_acc": "BalACC",
                 "npv": "NPV"}


def metrics_table(metrics: Mapping[str, Mapping[str, float]], title: str) -> Table:
    """Rows are splits, columns the study's metrics (AUC, ACC, AUPRC, Recall, F1, Precision)
    followed by F2, specificity and balanced accuracy."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("split", min_width=max(map(len, metrics), default=5))
    for name in TABLE_METRICS:
        table.add_column(COLUMN_TITLES[name], justify="right", min_width=len(COLUMN_TITLES[name]))
    for split, values in metrics.items():
        table.add_row(split, *(f"{values[m]:.3f}" if m in values else "-" for m in TABLE_METRICS))
    return table


def print_config_tree(cfg: DictConfig, first: tuple[str, ...] = ("data", "model", "trainer")
                      ) -> None:
    """The resolved run config as a rich tree, the main groups first."""
    tree = Tree("config", guide_style="dim")
    keys = [k for k in first if k in cfg] + [k for k in cfg if k not in first]
    for key in keys:
        value = cfg[key]
        is_group = isinstance(value, DictConfig)
        text = OmegaConf.to_yaml(value, resolve=True) if is_group else str(value)
        tree.add(key).add(Syntax(text, "yaml"))
    _console().print(tree)


def interval_table(intervals: Mapping[str, Mapping[str, Mapping[str, float]]], title: str) -> Table:
    """Rows are metrics, columns splits: ``value (low-high)``."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("metric")
    for split in intervals:
        table.add_column(split, justify="right")
    for name in TABLE_METRICS:
        cells = []
        for ci in intervals.values():
            c = ci.get(name)
            cells.append(f"{c['value']:.3f} ({c['low']:.3f}-{c['high']:.3f})" if c else "-")
        table.add_row(COLUMN_TITLES[name], *cells)
    return table


def per_class_table(classes: Mapping[str, Mapping[str, float]], title: str) -> Table:
    """Rows are classes, columns the one-vs-rest metrics of a multi-class task."""
    table = Table(title=title, box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
    table.add_column("class", min_width=max(map(len, classes), default=5))
    columns = list(next(iter(classes.values()), {}))
    for name in columns:
        table.add_column(COLUMN_TITLES.get(name, name), justify="right")
    for name, values in classes.items():
        table.add_row(name, *(f"{values[c]:.0f}" if c == "support" else f"{values[c]:.3f}"
                              for c in columns))
    return table


def print_result(result: EvaluationResult, title: str) -> None:
    """The metrics table, then the bootstrap intervals of the held-out splits."""
    console = _console()
    threshold = result.info.get("threshold")
    suffix = "macro averages" if threshold is None else f"threshold {threshold:.3g}"
    console.print(metrics_table(result.metrics, f"{title}, {suffix}"))
    for split, classes in result.per_class.items():
        if split != "train":
            console.print(per_class_table(classes, f"{title}, {split} per class"))
    held_out = {s: ci for s, ci in result.intervals.items() if s != "train"}
    if held_out:
        level = (result.info.get("bootstrap") or {}).get("confidence", 0.95)
        console.print(interval_table(held_out, f"{level:.0%} bootstrap intervals"))


def _console() -> Console:
    """The terminal's width on a terminal; wide enough for the tables in logs and pipes."""
    console = Console()
    return console if console.is_terminal else Console(width=120)
