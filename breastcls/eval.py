"""Evaluate a saved checkpoint on chosen splits.

    python -m breastcls.eval ckpt_path=logs/train/runs/<run>/checkpoints/epoch_012.ckpt
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from breastcls.config import register_resolvers
from breastcls.evaluation import evaluate_splits, load_checkpoint
from breastcls.instantiate import single_device_trainer
from breastcls.reporting import print_result

register_resolvers()


def evaluate(cfg: DictConfig) -> dict[str, float]:
    if not cfg.get("ckpt_path"):
        raise ValueError("pass the checkpoint to evaluate: ckpt_path=/path/to/model.ckpt")
    datamodule = instantiate(cfg.data)
    model, info = load_checkpoint(cfg.ckpt_path, cfg.module_class)
    result = evaluate_splits(single_device_trainer(cfg.trainer), model, datamodule,
                             cfg.eval_splits, Path(cfg.paths.output_dir), info,
                             OmegaConf.to_container(cfg.evaluation, resolve=True))
    print_result(result, f"eval: {cfg.ckpt_path}")
    return result.flat()


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
