"""Find exact and near-duplicate images within and across the BreastMNIST splits.

    python -m breastcls.audit [min_correlation=0.95] [max_hamming=8] [rule=or]

Writes ``pairs.csv`` and ``test_with_train_duplicate.csv`` into the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig
from rich.console import Console

from breastcls.analysis.audit import AuditResult, run_audit
from breastcls.data.breastmnist import load_breastmnist

log = logging.getLogger(__name__)


def audit(cfg: DictConfig) -> AuditResult:
    splits = load_breastmnist(cfg.paths.data_dir, cfg.size)
    result = run_audit(splits, query=cfg.query_split, references=tuple(cfg.reference_splits),
                       hash=cfg.hash, hash_size=cfg.hash_size, max_hamming=cfg.max_hamming,
                       min_correlation=cfg.min_correlation, rule=cfg.rule)
    paths = result.save(Path(cfg.paths.output_dir))
    Console().print(result.table())
    log.info("Wrote %s", ", ".join(str(p) for p in paths))
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="audit")
def main(cfg: DictConfig) -> None:
    audit(cfg)


if __name__ == "__main__":
    main()
