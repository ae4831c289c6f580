"""One step of the model-assisted labelling loop (docs/labelling.md).

    python -m breastcls.label propose checkpoint=<ckpt> pool=<folder> workdir=<loop folder>
    python -m breastcls.label accept reviewed=<export.json> workdir=<loop folder>
    python -m breastcls.label retrain workdir=<loop folder>
    python -m breastcls.label simulate [simulate.rounds=3 simulate.images_per_round=40]

The step is the first argument (or ``step=...``); everything else is a Hydra override of
conf/label.yaml.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import hydra
from omegaconf import DictConfig

from breastcls.config import exit_on_user_error, register_resolvers, set_threads
from breastcls.data.readers import DataError
from breastcls.labelling import steps
from breastcls.labelling.simulate import simulate

register_resolvers()
STEPS: dict[str, Callable[[DictConfig], object]] = {
    "propose": steps.propose, "accept": steps.accept, "retrain": steps.retrain,
    "simulate": simulate}


def step_override(argv: Sequence[str]) -> list[str]:
    """``propose a=1`` -> ``step=propose a=1``: the step may come first, without ``step=``."""
    if argv and "=" not in argv[0] and not argv[0].startswith("-"):
        return [f"step={argv[0]}", *argv[1:]]
    return list(argv)


@hydra.main(version_base="1.3", config_path="../conf", config_name="label")
@exit_on_user_error
def run(cfg: DictConfig) -> None:
    if cfg.step not in STEPS:
        raise DataError(f"unknown step {cfg.step!r}: python -m breastcls.label "
                        f"<{'|'.join(STEPS)}> ...")
    set_threads(cfg.get("threads"))
    STEPS[cfg.step](cfg)


def main() -> None:
    sys.argv[1:] = step_override(sys.argv[1:])
    run()


if __name__ == "__main__":
    main()
