"""Summary of an Optuna hyperparameter search: trials.csv, best.yaml and Optuna's plots.

The sweeper writes it at the end of every sweep; to rebuild it from a study:

    python -m breastcls.analysis.sweep_summary sqlite:///multirun_sweeps/NAME/optuna.db NAME
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

INTERRUPTED_ATTR = "interrupted_at"  # a trial a killed sweep left running, failed on resume
RETRY_OF_ATTR = "retry_of"  # the interrupted trial this one runs again
RESTARTED_ATTR = "restarted_at"  # older studies: an interrupted trial re-run in place, from then
FIXED_ATTR = "fixed_overrides"  # overrides every trial shared (command line, non-searched keys)
GROUPS_ATTR = "config_groups"  # config group names, for best.yaml's defaults list
# Shared overrides that do not belong in an experiment file: the search itself, machine paths.
NOT_IN_EXPERIMENT = ("hparams_search", "experiment", "hydra", "paths")
PLOTS = ("optimization_history", "param_importances", "parallel_coordinate",
         "intermediate_values")


def read_split_metrics(output_dir: str | Path | None, split: str = "val") -> dict[str, float]:
    """``{"val/auc": ...}`` from a trial's metrics.json; empty when the trial wrote none (or,
    queued and never run, has no folder: pandas gives it NaN)."""
    path = Path(output_dir) / "metrics.json" if isinstance(output_dir, str | Path) else None
    if path is None or not path.is_file():
        return {}
    values = json.loads(path.read_text()).get(split, {})
    return {f"{split}/{k}": v for k, v in values.items() if isinstance(v, int | float)}


def attempt_seconds(trial: optuna.trial.FrozenTrial) -> float | None:
    """Seconds the trial ran; None for an interrupted trial, whose end nobody saw (it is
    failed when the next sweep starts)."""
    if trial.datetime_complete is None or INTERRUPTED_ATTR in trial.user_attrs:
        return None
    restarted = trial.user_attrs.get(RESTARTED_ATTR)
    start = datetime.fromisoformat(restarted) if restarted else trial.datetime_start
    return (trial.datetime_complete - start).total_seconds() if start else None


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: number, state, value, duration, params and the val metrics of its
    best checkpoint (test metrics are left out: they must not choose the configuration)."""
    df = study.trials_dataframe(attrs=("number", "state", "value", "duration", "params",
                                       "user_attrs"))
    if df.empty:
        return df
    df.pop("duration")
    seconds = {t.number: attempt_seconds(t) for t in study.trials}
    df["duration_s"] = df["number"].map(seconds).astype(float).round(1)
    df.columns = [c.removeprefix("params_").removeprefix("user_attrs_") for c in df.columns]
    metric = study.user_attrs.get("optimized_metric")
    if metric:
        df = df.rename(columns={"value": f"value ({metric})"})
    dirs = df["output_dir"] if "output_dir" in df else [None] * len(df)
    val = pd.DataFrame([read_split_metrics(d) for d in dirs], index=df.index)
    return pd.concat([df, val], axis=1)


def best_experiment_yaml(study: optuna.Study) -> str:
    """A ``# @package _global_`` experiment config with the best trial's params and the
    overrides all trials shared (less the search's own and machine paths) as nested keys:
    copy it to conf/experiment/NAME.yaml and run ``python -m breastcls.train experiment=NAME``."""
    best = study.best_trial
    space = study.user_attrs.get("search_space", {})
    group_names = set(study.user_attrs.get(GROUPS_ATTR, []))
    parser = OverridesParser.create()
    overrides = [parser.parse_override(line) for line in study.user_attrs.get(FIXED_ATTR, [])]
    overrides = [o for o in overrides
                 if o.key_or_group.split(".")[0].split("/")[0] not in NOT_IN_EXPERIMENT]
    settings = {(("~" if o.is_delete() else "") + o.key_or_group): o.value() for o in overrides}
    settings.update(best.params)  # searched keys are never fixed ones; they win regardless

    def is_group(key: str) -> bool:
        key = key.lstrip("+~").split("@")[0]
        return key in group_names or "/" in key

    groups = {k.lstrip("+~"): v for k, v in settings.items() if is_group(k)}
    values = OmegaConf.create()
    for key, value in settings.items():
        if not is_group(key):
            # A deleted key becomes null: callbacks and loggers set to null are left out.
            OmegaConf.update(values, key.lstrip("+~"), None if key.startswith("~") else value,
                             force_add=True)
    base = study.user_attrs.get("experiment")
    metric = study.user_attrs.get("optimized_metric") or "value"
    lines = ["# @package _global_",
             f"# Best trial of the Optuna study {study.study_name!r}: trial {best.number}, "
             f"{metric} = {best.value:.6g}.",
             *_how_to_rerun(study.user_attrs.get("task_name"), overrides, best.params),
             "# Search space:",
             *(f"#   {k}: {space.get(k, '?')}" for k in sorted(k.lstrip("+~")
                                                            for k in best.params))]
    defaults = ([f"  - {base}  # the experiment the search ran on"] if base else [])
    defaults += [f"  - override /{k}: {v}" for k, v in groups.items()]
    if defaults:
        lines += ["defaults:", *defaults, "  - _self_"]
    lines.append("")
    body = OmegaConf.to_yaml(values) if len(values) else ""
    return "\n".join(lines) + body


def _how_to_rerun(task: str | None, fixed: list[Any], best: dict[str, Any]) -> list[str]:
    """The comment saying how to run the best trial again: an experiment file for training,
    the same overrides on the command line for the other entry points (e.g. classical)."""
    if task in (None, "train"):
        return ["# Copy to conf/experiment/NAME.yaml and run: "
                "python -m breastcls.train experiment=NAME"]
    args = [o.input_line for o in fixed] + [f"{k}={v}" for k, v in best.items()]
    return [f"# Run it again: python -m breastcls.{task} {' '.join(args)}"]


def save_plots(study: optuna.Study, out_dir: Path) -> list[Path]:
    """Optuna's plots as PNG (matplotlib), plus HTML when plotly is installed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    try:
        import optuna.visualization as ovp
        import plotly  # noqa: F401
    except ImportError:
        ovp = None
    written = []
    for name in PLOTS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                ax = getattr(ovm, f"plot_{name}")(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.savefig(out_dir / f"{name}.png", dpi=120, bbox_inches="tight")
            plt.close(fig)
            written.append(out_dir / f"{name}.png")
            if ovp is not None:
                getattr(ovp, f"plot_{name}")(study).write_html(out_dir / f"{name}.html")
                written.append(out_dir / f"{name}.html")
        except Exception as err:  # e.g. importances need two finished trials
            log.warning("Optuna plot %s skipped: %s", name, err)
    return written


def write_sweep_summary(study: optuna.Study, out_dir: str | Path) -> dict[str, Any]:
    """Write trials.csv, best.yaml (when a trial completed) and the plots into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    table = trials_table(study)
    table.to_csv(out_dir / "trials.csv", index=False)
    written["trials"] = out_dir / "trials.csv"
    if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        log.warning("No trial of %r completed: no best.yaml, no plots", study.study_name)
        return written
    (out_dir / "best.yaml").write_text(best_experiment_yaml(study))
    written["best"] = out_dir / "best.yaml"
    written["plots"] = save_plots(study, out_dir)
    log.info("Sweep summary in %s", out_dir)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("storage", help="Optuna storage URL, e.g. sqlite:///.../optuna.db")
    parser.add_argument("study_name")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the SQLite file's folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    study = optuna.load_study(study_name=args.study_name, storage=args.storage)
    out = args.out
    if out is None:
        if not args.storage.startswith("sqlite:///"):
            parser.error("--out is required for non-SQLite storages")
        out = Path(args.storage.removeprefix("sqlite:///")).parent
    write_sweep_summary(study, out)


if __name__ == "__main__":
    main()
