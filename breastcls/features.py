"""Penultimate-layer features of a backbone, keyed by sample id, for classical models and stacking.

    python -m breastcls.features +extractors.busi.ckpt_path=<run>/checkpoints/epoch_027.ckpt \
        splits=[train,test]
    python -m breastcls.features data=busi +extractors.r50.backbone.arch=resnet50 ...

An extractor is a breastcls checkpoint (its stored data config rebuilds the images it was trained
on) or a backbone config (a timm / torchvision model, ImageNet weights from the hub or a local
file) run over ``data``. Features are the backbone's pooled output (the head is dropped), averaged
over the configured test-time flips. ``combine=average`` averages several extractors' features
per sample (the study's "Avg"), which needs the same samples and feature sizes in every one.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.progress import track
from torch import nn
from torch.utils.data import DataLoader

from breastcls.checkpoints import load_checkpoint
from breastcls.config import exit_on_user_error, platform_info, register_resolvers, set_threads
from breastcls.data.base import SplitsDataModule
from breastcls.data.build import build_datamodule, stored_data_config
from breastcls.data.readers import DataError
from breastcls.models.classifier import flipped_views, pair_input, split_head
from breastcls.runs import default_tta, run_config, run_config_path

register_resolvers()
log = logging.getLogger(__name__)

KEY_COLUMNS = ("sample_id", "group", "label", "index")
MODULE_CLASS = "breastcls.models.classifier.ImageClassifier"
COMBINES = ("none", "average", "concat")
FORMATS = ("csv", "parquet")
FEATURE_COLUMN = re.compile(r"f\d+")


@torch.no_grad()
def extract_features(backbone: nn.Module, loader: DataLoader,
                     tta: bool | Sequence[str] | None = None, description: str = "features"
                     ) -> pd.DataFrame:
    """``sample_id, group, label, index, f0..f{D-1}`` for every sample of ``loader``, rows in
    index order; each feature vector is the mean over the image and its ``tta`` flips."""
    backbone.eval()
    device = next(backbone.parameters()).device
    features, keys = [], {k: [] for k in KEY_COLUMNS}
    for batch in track(loader, description=description, disable=len(loader) < 5):
        x = batch["image"].to(device)
        baseline = pair_input(backbone, batch)
        inputs = [x] if baseline is None else [x, baseline.to(device)]
        features.append(torch.stack([backbone(*view).float().flatten(1)
                                     for view in flipped_views(inputs, tta)]).mean(0).cpu())
        keys["label"] += batch["label"].tolist()
        keys["index"] += batch["index"].tolist()
        for key in ("sample_id", "group"):
            keys[key] += [str(v) for v in batch[key]] if key in batch else [None] * len(x)
    values = torch.cat(features).numpy()
    frame = pd.DataFrame(keys)
    if frame["sample_id"].isna().all():  # data sets without record keys: the split row
        frame["sample_id"] = [f"{description}_{i}" for i in frame["index"]]
    frame["group"] = frame["group"].fillna(frame["sample_id"])
    columns = pd.DataFrame(values, columns=[f"f{i}" for i in range(values.shape[1])])
    return pd.concat([frame, columns], axis=1).sort_values("index", ignore_index=True)


def checkpoint_features(ckpt_path: str | Path, splits: Sequence[str],
                        data_overrides: Mapping[str, Any] | None = None,
                        tta: Sequence[str] | None = None, module_class: str = MODULE_CLASS
                        ) -> dict[str, pd.DataFrame]:
    """Features of a breastcls checkpoint's backbone per split, over the data it was trained on.

    ``data_overrides``: ``data.*`` keys (nested or dotted, e.g. ``{"root": <folder>}``) that
    replace the stored ones; ``tta``: flips to average over, ``None`` the checkpoint's own
    (those its threshold was chosen with).
    """
    return split_features(*checkpoint_extractor(ckpt_path, data_overrides, tta, module_class),
                          splits)


def checkpoint_extractor(ckpt_path: str | Path, data_overrides: Mapping[str, Any] | None,
                         tta: Sequence[str] | None, module_class: str = MODULE_CLASS
                         ) -> tuple[nn.Module, SplitsDataModule, list[str] | None]:
    """A checkpoint's backbone, the data it was trained on and the flips to average over."""
    model, _ = load_checkpoint(ckpt_path, module_class)
    datamodule = build_datamodule(checkpoint_data_config(ckpt_path, data_overrides))
    return model.backbone, datamodule, default_tta(tta, model, "features")


def split_features(backbone: nn.Module, datamodule: SplitsDataModule,
                   tta: Sequence[str] | None, splits: Sequence[str]) -> dict[str, pd.DataFrame]:
    return {split: extract_features(backbone, datamodule.eval_dataloader(split), tta, split)
            for split in splits}


def checkpoint_data_config(ckpt_path: str | Path,
                           overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint's stored data config, else its training run's (``<run>/.hydra``), with
    ``overrides`` applied; the run's paths are resolved from this folder, as a fresh run would."""
    stored = stored_data_config(ckpt_path)
    if stored is not None:
        config = OmegaConf.create(stored)
    else:
        run = run_config(ckpt_path)
        if run is None or "data" not in run:
            raise DataError(f"{ckpt_path}: neither the checkpoint nor its run folder "
                            f"({run_config_path(ckpt_path)}) records the data it was trained on; "
                            "extract with a backbone extractor and data=<name> instead")
        log.info("features: data settings from the training run's config %s",
                 run_config_path(ckpt_path))
        if "paths" in run:  # ${hydra:runtime.cwd} has no value outside Hydra's runtime
            run.paths.root_dir = str(Path.cwd())
        config = run.data
    for key, value in (overrides or {}).items():
        OmegaConf.update(config, str(key).removeprefix("data."), value, merge=True)
    try:
        return OmegaConf.to_container(config, resolve=True)
    except Exception as err:  # an interpolation only the training process could resolve
        raise DataError(f"{ckpt_path}: the training run's data config cannot be resolved here "
                        f"({err}); pass the value through data_overrides") from None


def backbone_extractor(backbone_config: Mapping[str, Any], data: DictConfig | Mapping[str, Any]
                       ) -> tuple[nn.Module, SplitsDataModule]:
    """A fresh or pretrained backbone (``backbone_config`` as in conf/model; the classifier head
    its builder adds is dropped) and the DataModule of ``data``."""
    config = (OmegaConf.to_container(backbone_config, resolve=True)
              if OmegaConf.is_config(backbone_config) else dict(backbone_config))
    backbone, _ = split_head(instantiate(config, num_classes=2))
    return backbone, build_datamodule(data)


def combine_extractors(tables: Mapping[str, pd.DataFrame], how: str) -> pd.DataFrame:
    """Several extractors' features of one split as one table: ``average`` (per sample, the
    study's "Avg") or ``concat``; every extractor must hold the same samples and labels."""
    names = list(tables)
    first = tables[names[0]].set_index("sample_id")
    parts = []
    for name in names:
        table = tables[name].set_index("sample_id")
        missing, extra = first.index.difference(table.index), table.index.difference(first.index)
        if len(missing) or len(extra):
            raise DataError(f"extractors {names[0]!r} and {name!r} hold different samples "
                            f"({len(missing)} only in {names[0]!r}, e.g. {list(missing[:3])}; "
                            f"{len(extra)} only in {name!r}, e.g. {list(extra[:3])}); combine "
                            "extractors over the same data and splits")
        table = table.loc[first.index]
        if not (table["label"] == first["label"]).all():
            raise DataError(f"extractors {names[0]!r} and {name!r} disagree on labels; their "
                            "data configs differ (data.task?)")
        parts.append(table[feature_columns(table)])
    if how == "average":
        sizes = {name: part.shape[1] for name, part in zip(names, parts, strict=True)}
        if len(set(sizes.values())) > 1:
            raise DataError(f"combine=average needs the same number of features from every "
                            f"extractor, got {sizes}; use combine=concat")
        values = sum(part.to_numpy() for part in parts) / len(parts)
    else:
        values = pd.concat(parts, axis=1).to_numpy()
    features = pd.DataFrame(values, index=first.index,
                            columns=[f"f{i}" for i in range(values.shape[1])])
    keys = first[[c for c in KEY_COLUMNS if c != "sample_id"]]
    return pd.concat([keys, features], axis=1).reset_index()[list(KEY_COLUMNS)
                                                              + list(features.columns)]


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The ``f0..f{D-1}`` columns of a feature table, in order."""
    return [c for c in frame.columns if FEATURE_COLUMN.fullmatch(str(c))]


def write_features(tables: Mapping[str, pd.DataFrame], path: Path, file_format: str) -> Path:
    """One file with every split's rows and a ``split`` column after the keys."""
    frame = pd.concat([t.assign(split=split) for split, t in tables.items()], ignore_index=True)
    frame.insert(len(KEY_COLUMNS), "split", frame.pop("split"))
    path = path.with_suffix(f".{file_format}")
    if file_format == "parquet":
        try:
            frame.to_parquet(path, index=False)
        except ImportError as err:
            raise DataError(f"format=parquet needs pyarrow ({err}); pip install pyarrow, or "
                            "use format=csv") from None
    else:
        frame.to_csv(path, index=False, float_format="%.7g")
    return path


def run_extractors(cfg: DictConfig) -> dict[str, Path]:
    """Extract every configured extractor (and their combination), write the files and the
    provenance JSON; returns the written feature files by name."""
    extractors = OmegaConf.to_container(cfg.extractors, resolve=False) or {}
    if not extractors:
        raise DataError("no extractor given: add +extractors.<name>.ckpt_path=<checkpoint> or "
                        "+extractors.<name>.backbone=<backbone config> (see conf/features.yaml)")
    if cfg.combine not in COMBINES or cfg.format not in FORMATS:
        raise DataError(f"combine={cfg.combine!r}, format={cfg.format!r}: combine is one of "
                        f"{COMBINES}, format one of {FORMATS}")
    set_threads(cfg.get("threads"))
    out_dir = Path(cfg.paths.output_dir)
    splits = list(cfg.splits)
    tta = None if cfg.tta is None else list(cfg.tta)
    tables, provenance = {}, {}
    for name in extractors:
        spec = cfg.extractors[name]
        if bool(spec.get("ckpt_path")) == bool(spec.get("backbone")):
            raise DataError(f"extractors.{name}: give exactly one of ckpt_path (a breastcls "
                            "checkpoint) or backbone (a model config)")
        if spec.get("ckpt_path"):
            overrides = OmegaConf.to_container(cfg.data_overrides, resolve=True)
            backbone, datamodule, flips = checkpoint_extractor(spec.ckpt_path, overrides, tta,
                                                               cfg.module_class)
            source = {"ckpt_path": str(Path(spec.ckpt_path).resolve()),
                      "data": checkpoint_data_config(spec.ckpt_path, overrides)}
        else:
            backbone, datamodule = backbone_extractor(spec.backbone, cfg.data)
            flips = tta
            source = {"backbone": OmegaConf.to_container(spec.backbone, resolve=True),
                      "data": OmegaConf.to_container(cfg.data, resolve=True)}
        tables[name] = split_features(backbone, datamodule, flips, splits)
        provenance[name] = {**source, "tta": flips, "class_names": list(datamodule.class_names),
                            "positive_class": getattr(datamodule, "positive_class", None),
                            "dim": len(feature_columns(tables[name][splits[0]]))}
    written = {name: write_features(by_split, out_dir / f"features_{name}", cfg.format)
               for name, by_split in tables.items()}
    if cfg.combine != "none" and len(tables) > 1:
        combined = {split: combine_extractors({n: t[split] for n, t in tables.items()},
                                              cfg.combine) for split in splits}
        written[cfg.combine] = write_features(combined, out_dir / f"features_{cfg.combine}",
                                              cfg.format)
    info = {"extractors": provenance, "splits": splits, "tta": tta, "combine": cfg.combine,
            "rows": {s: len(next(iter(tables.values()))[s]) for s in splits},
            "files": {n: p.name for n, p in written.items()}, "platform": platform_info()}
    (out_dir / "features.json").write_text(json.dumps(info, indent=2, default=str))
    for name, path in written.items():
        log.info("features %s: %s", name, path)
    return written


@hydra.main(version_base="1.3", config_path="../conf", config_name="features")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run_extractors(cfg)


if __name__ == "__main__":
    main()
