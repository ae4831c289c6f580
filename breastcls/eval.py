"""Evaluate a saved checkpoint on chosen splits.

    python -m breastcls.eval ckpt_path=logs/train/runs/<run>/checkpoints/epoch_012.ckpt

The images are prepared as in training: the data config stored in the checkpoint (data set,
root, size, channels, normalisation, split or ``cv`` fold) is rebuilt, and ``data.*``/``cv.*``
given on the command line win (``data.root=`` where the images lie elsewhere now). Checkpoints
written before the data config was stored read the training run's ``<run>/.hydra/config.yaml``.
Test-time flips default to those the checkpoint's threshold was chosen with.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from breastcls.checkpoints import load_checkpoint
from breastcls.config import platform_info, register_resolvers, set_threads
from breastcls.console import print_result
from breastcls.data.build import build_datamodule, stored_data_config
from breastcls.instantiate import single_device_trainer
from breastcls.runs import default_tta, run_config, run_config_path
from breastcls.scoring.pipeline import evaluate_splits
from breastcls.scoring.settings import validate_settings

register_resolvers()
log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# data.* keys that belong to this machine or to training only: never taken from the run.
LOCAL_DATA_KEYS = ("data_dir", "download", "batch_size", "eval_batch_size", "num_workers",
                   "pin_memory", "augmentation", "cv")
_UNSET = object()


def evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> dict[str, float]:
    """Score ``cfg.ckpt_path`` on ``cfg.eval_splits``.

    ``overrides``: the settings the caller gave explicitly (Hydra override strings, as on the
    command line); they win over the training run's data settings, as does any ``data.*`` or
    ``cv.*`` value that differs from conf/eval.yaml's own.
    """
    if not cfg.get("ckpt_path"):
        raise ValueError("pass the checkpoint to evaluate: ckpt_path=/path/to/model.ckpt")
    stored = stored_data_config(cfg.ckpt_path)
    source = (apply_checkpoint_data(cfg, stored, overrides) if stored is not None
              else apply_run_data(cfg, overrides))
    validate_settings(cfg, optimized_metric=False)
    set_threads(cfg.get("threads"))
    datamodule = build_datamodule(cfg.data)
    model, info = load_checkpoint(cfg.ckpt_path, cfg.module_class)
    settings = OmegaConf.to_container(cfg.evaluation, resolve=True)
    rule = settings.get("threshold") or {}
    settings["tta"] = default_tta(settings.get("tta"), model, "eval",
                                  threshold_is_stored=not rule.get("method"),
                                  key="evaluation.tta")
    info = {**info, "data_config": str(source) if source else None, "tta": settings["tta"],
            "platform": platform_info()}
    result = evaluate_splits(single_device_trainer(cfg.trainer), model, datamodule,
                             cfg.eval_splits, Path(cfg.paths.output_dir), info, settings)
    print_result(result, f"eval: {cfg.ckpt_path}")
    return result.flat()


def apply_checkpoint_data(cfg: DictConfig, stored: Mapping[str, Any],
                          overrides: Sequence[str] | None = None, source: str = "checkpoint"
                          ) -> str:
    """Set ``cfg.data`` to the data config stored in the checkpoint (or the run's whole ``data``,
    ``source``), except the ``data.*`` keys given on the command line (``overrides``); ``cv.*``
    overrides go to its ``data.cv``."""
    given = {_data_key(o) for o in overrides or []} - {None}
    data = OmegaConf.create(dict(stored))
    kept = []
    for key in sorted(given):
        value = _select(cfg, key) if not key.startswith("data.cv.") else _select(
            cfg, key.removeprefix("data."))
        if OmegaConf.select(data, key.removeprefix("data."), default=_UNSET) != value:
            kept.append(f"{key}={value!r}")
        OmegaConf.update(data, key.removeprefix("data."), value, merge=False)
    with open_dict(cfg):
        cfg.data = data
    label = source if source == "checkpoint" else f"training run's config {source}"
    log.info("eval: data settings from the %s (%s, root %s)", label, stored["_target_"],
             stored.get("root", stored.get("data_dir")))
    if kept:
        log.warning("eval: the command line overrides the training data settings: %s",
                    ", ".join(kept))
    return source


def _data_key(override: str) -> str | None:
    """``data.root`` for ``data.root=...``; ``data.cv.fold`` for ``cv.fold=...``; else None."""
    key = override.lstrip("+~").split("=", 1)[0]
    if key.startswith("cv."):
        return f"data.{key}"
    return key if key.startswith("data.") else None


def apply_run_data(cfg: DictConfig, overrides: Sequence[str] | None = None) -> Path | None:
    """Set ``cfg``'s ``data.*`` and ``cv.*`` to the training run's, except the keys set
    explicitly (``overrides``, or values that differ from conf/eval.yaml's); returns the run
    config used, or None (with a warning) when there is none."""
    path = run_config_path(cfg.ckpt_path)
    run = run_config(cfg.ckpt_path)
    if run is None:
        log.warning(
            "eval: the training run's config %s is missing, so its data settings cannot be "
            "reused: scoring with eval's own (%s). If the model was trained with other ones "
            "(data.size, data.resize, data.as_rgb, data.normalize, cv.*), pass them, or the "
            "scores are wrong.", path, _describe(cfg))
        return None
    target = OmegaConf.select(run, "data._target_")
    if target and target != OmegaConf.select(cfg, "data._target_"):  # another data set than eval's
        data = _resolved(run, "data")
        if data is not _UNSET:
            return apply_checkpoint_data(cfg, data, overrides, source=str(path))
    values = run_data_values(run)
    explicit = explicit_keys(cfg, overrides, values)
    taken, kept = [], []
    with open_dict(cfg):
        for key, value in values.items():
            current = _select(cfg, key)
            if _covered(key, explicit):
                if current != value:
                    kept.append(f"{key}={current!r} (training run: {value!r})")
                continue
            if current != value:
                taken.append(f"{key}={value!r}")
            OmegaConf.update(cfg, key, value, merge=False)
    log.info("eval: data settings from the training run's config %s%s", path,
             f" (differing from eval's defaults: {', '.join(taken)})" if taken else "")
    if kept:
        log.warning("eval: the command line overrides the training run's data settings: %s",
                    ", ".join(kept))
    return path


def run_data_values(run: DictConfig) -> dict[str, Any]:
    """The run's ``data.*`` (less machine-local keys) and ``cv.*`` settings as resolved
    dotted-key leaves."""
    values: dict[str, Any] = {}
    for key in run.get("data") or {}:
        if key not in LOCAL_DATA_KEYS:
            values |= _leaves(_resolved(run, f"data.{key}"), f"data.{key}")
    cv = _resolved(run, "data.cv") if "cv" in (run.get("data") or {}) else None
    values |= _leaves(cv if cv is not None else _resolved(run, "cv") or {}, "cv")
    return {k: v for k, v in values.items() if v is not _UNSET}


def explicit_keys(cfg: DictConfig, overrides: Sequence[str] | None,
                  candidates: Mapping[str, Any]) -> set[str]:
    """Dotted keys set on purpose: named by an override, or (``candidates``) holding a value
    other than conf/eval.yaml's default."""
    keys = set()
    for override in overrides or []:
        key = override.lstrip("+~").split("=", 1)[0].split("@", 1)[0].replace("/", ".")
        keys.add("cv" + key[len("data.cv"):] if key.startswith("data.cv") else key)
    defaults = _eval_defaults()
    keys |= {k for k in candidates if _select(cfg, k) != defaults.get(k, _UNSET)}
    return keys


def _eval_defaults() -> dict[str, Any]:
    """conf/eval.yaml's own ``data.*`` (its data group) and ``cv.*`` values."""
    own = OmegaConf.load(CONF_DIR / "eval.yaml")
    group = next(entry["data"] for entry in own.defaults
                 if OmegaConf.is_dict(entry) and "data" in entry)
    data = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / f"{group}.yaml"))
    data = {k: v for k, v in data.items() if k != "defaults" and k not in LOCAL_DATA_KEYS}
    return {**_leaves(data, "data"), **_leaves(OmegaConf.to_container(own.cv), "cv")}


def _resolved(config: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(config, key, default=_UNSET)
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    except Exception as err:  # e.g. an interpolation only the training process could resolve
        log.warning("eval: cannot read %s from the training run's config (%s); eval's own "
                    "value is kept", key, err)
        return _UNSET


def _select(cfg: DictConfig, key: str) -> Any:
    value = OmegaConf.select(cfg, key, default=_UNSET)
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """``{"data.normalize.mean": [...], ...}``: nested mappings flattened, lists kept whole."""
    if isinstance(value, Mapping):
        return {k: v for key, item in value.items()
                for k, v in _leaves(item, f"{prefix}.{key}").items()}
    return {prefix: value}


def _covered(key: str, explicit: set[str]) -> bool:
    parts = key.split(".")
    return any(".".join(parts[:n]) in explicit for n in range(1, len(parts) + 1))


def _describe(cfg: DictConfig) -> str:
    data = cfg.get("data") or {}
    parts = [f"data.{k}={_select(cfg, f'data.{k}')!r}"
             for k in ("size", "resize", "as_rgb", "normalize") if k in data]
    return ", ".join([*parts, f"cv.folds={_select(cfg, 'cv.folds')!r}"])


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg, overrides=list(HydraConfig.get().overrides.task))


if __name__ == "__main__":
    main()
