"""Find exact and near-duplicate images within and across the splits of a data set.

    python -m breastcls.audit [min_correlation=0.95] [max_hamming=8] [rule=or]
    python -m breastcls.audit data=busi [data/split=stratified] [data.task=three_class]

Without ``data`` the official BreastMNIST splits are audited. With a record data set
(``data=busi``) the DataModule is built as training builds it, and its split assignment is
audited on 28-px gray thumbnails of the cached images: the thumbnails its
``split.groups=duplicates`` grouping uses, so the clusters found are the groups it keeps together.

Writes ``pairs.csv``, ``test_with_train_duplicate.csv``, ``clusters.csv`` and ``summary.md`` into
the run folder; a record data set also gets ``splits.csv`` and ``sample_id``/``path`` columns.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig
from rich.console import Console
from torchvision.transforms import v2

from breastcls.analysis.duplicates import AuditResult, run_audit
from breastcls.config import exit_on_user_error, register_resolvers
from breastcls.data.breastmnist import load_breastmnist
from breastcls.data.build import build_datamodule
from breastcls.data.readers import DataError

log = logging.getLogger(__name__)
register_resolvers()

BREASTMNIST_TARGET = "breastcls.data.breastmnist.BreastMNISTDataModule"


def audit(cfg: DictConfig) -> AuditResult:
    """Audit the data set of ``cfg.data`` (BreastMNIST when there is none); save and print."""
    data = cfg.get("data")
    samples = None
    output_dir = Path(cfg.paths.output_dir)
    if data is None or data.get("_target_") == BREASTMNIST_TARGET:
        source, size = (cfg.paths.data_dir, cfg.size) if data is None else (data.data_dir,
                                                                             data.size)
        try:
            splits = load_breastmnist(source, size)
        except FileNotFoundError as err:  # a user's path, not a bug: one message, exit 1
            raise DataError(str(err)) from None
    else:
        splits, samples, split_table = record_splits(data)
        output_dir.mkdir(parents=True, exist_ok=True)
        split_table.to_csv(output_dir / "splits.csv", index=False)
        spanning = split_table.groupby("group")["split"].nunique().gt(1)
        log.info("%d of %d groups (patients or clusters) lie in more than one split%s",
                 int(spanning.sum()), len(spanning),
                 f": {', '.join(map(str, spanning[spanning].index[:5]))}" if spanning.any()
                 else "")
    result = run_audit(splits, query=cfg.query_split, references=tuple(cfg.reference_splits),
                       samples=samples, hash=cfg.hash, hash_size=cfg.hash_size,
                       max_hamming=cfg.max_hamming, min_correlation=cfg.min_correlation,
                       rule=cfg.rule, correlation_scope=cfg.correlation_scope,
                       candidate_hamming=cfg.candidate_hamming)
    paths = result.save(output_dir)
    Console().print(result.table())
    log.info("Wrote %s", ", ".join(str(p) for p in paths))
    return result


def record_splits(data: DictConfig) -> tuple[dict, dict[str, pd.DataFrame], pd.DataFrame]:
    """``{split: (thumbnails, labels)}``, ``{split: samples}`` and the split table of a record
    DataModule, built from ``data`` as ``breastcls.train`` builds it.

    Thumbnails are made as :meth:`RecordsDataModule.setup` makes them for its duplicate groups
    (channel mean, antialiased resize to ``AUDIT_SIZE``, rounded to uint8)."""
    from breastcls.data.datamodule import AUDIT_SIZE

    datamodule = build_datamodule(data)
    if not hasattr(type(datamodule), "table"):
        raise DataError(f"data._target_={data.get('_target_')!r} is not a record data set "
                        "(RecordsDataModule); the audit reads BreastMNIST or record data")
    datamodule.setup()
    records = datamodule.records
    names = datamodule.class_names
    splits, samples = {}, {}
    for split, dataset in datamodule.datasets.items():
        gray = dataset.images.float().mean(1, keepdim=True)
        thumbs = v2.functional.resize(gray, [AUDIT_SIZE, AUDIT_SIZE], antialias=True)
        labels = dataset.labels.numpy()
        splits[split] = (thumbs.squeeze(1).round().to(torch.uint8).numpy(), labels)
        rows = datamodule.split_rows[split]
        samples[split] = pd.DataFrame({
            "index": dataset.indices.numpy(),
            "sample_id": records["sample_id"].iloc[rows].to_numpy(),
            "class": [names[label] for label in labels],
            "group": records["group"].iloc[rows].to_numpy(),
            "path": records["path"].iloc[rows].to_numpy()})
    log.info("Auditing %s (%s)", data.get("root", data.get("_target_")),
             ", ".join(f"{s} {len(v[1])}" for s, v in splits.items()))
    return splits, samples, datamodule.split_table



@hydra.main(version_base="1.3", config_path="../conf", config_name="audit")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    audit(cfg)


if __name__ == "__main__":
    main()
