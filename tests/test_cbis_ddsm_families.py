"""Every CBIS-DDSM model family trains a tiny epoch in every task it takes, with class weights
from the train split; runs of different families stack on ``sample_id``; bad input gives one
message through the command line (or is skipped); every documented command composes or runs."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lightning.pytorch import Callback
from sklearn.utils.class_weight import compute_class_weight

from breastcls.data.cbis_ddsm import TASKS
from breastcls.loggers import finish_wandb
from breastcls.stacking import stack
from breastcls.train import train
from tests.cbis_ddsm_tree import PATCH_OVERRIDES, write_tree
from tests.conftest import FAST, ROOT, compose_train
from tests.test_cbis_ddsm import ROW_COUNT, _empty_mask, _missing, _resized_mask, _truncated

QUIET = ["logger=csv", "data.batch_size=8", "data.split.val_fraction=0.3", "evaluation.gradcam=0",
         "evaluation.plots=false", "evaluation.bootstrap.n_resamples=0", "threads=1"]
# Each family's experiment at test size (32-px patches; small encoders where the real ones are
# ImageNet-sized; scratch weights).
FAMILIES = {
    "scratch": ["experiment=cbis_ddsm_scratch_basic"],
    "transfer": ["experiment=cbis_ddsm_resnet50_transfer", "model.backbone.arch=resnet18",
                 "model.backbone.pretrained=null"],
    "siamese": ["experiment=cbis_ddsm_siamese", "model.backbone.encoder.arch=resnet18"],
    "two_channel": ["experiment=cbis_ddsm_two_channel",
                    "model.backbone.encoder.small_input=true"],
    "conv3d": ["experiment=cbis_ddsm_conv3d", "model.backbone.channels=[8,16]",
               "model.backbone.hidden=[8]"],
}
PAIRS = {"siamese", "two_channel", "conv3d"}  # data.pairs=true: no five_class
CASES = [(f, t) for f in FAMILIES for t in TASKS if not (f in PAIRS and t == "five_class")]
DOCS = ROOT / "docs" / "cbis_ddsm.md"
# The models the documented stacking commands name (runs/<task>/<model>): their family here.
DOC_MODELS = {"basic": "scratch", "model10": "scratch", "model7": "scratch",
              "vgg16": "transfer", "resnet50": "transfer", "inceptionv3": "transfer",
              "siamese": "siamese", "two_channel": "two_channel", "conv3d": "conv3d"}


class TrainWeights(Callback):
    """Writes the loss weights and the train split's labels as training starts."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_start(self, trainer, pl_module) -> None:
        table = trainer.datamodule.split_table
        self.path.write_text(json.dumps({
            "weights": pl_module.loss_weights.tolist(),
            "labels": table.loc[table["split"] == "train", "label"].astype(int).tolist()}))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Callable[[str, str], Path]:
    """``trained(family, task)``: the folder of one tiny run (each trained once per module, on
    one generated tree with one patch cache)."""
    base = tmp_path_factory.mktemp("families")
    root = write_tree(base / "cbis_ddsm")
    done: dict[tuple[str, str], Path] = {}

    def run(family: str, task: str) -> Path:
        if (family, task) not in done:
            out = base / "runs" / f"{family}_{task}"
            cfg = compose_train([*FAST, *QUIET, f"data.root={root}",
                                 f"paths.cache_dir={base / 'cache'}", *PATCH_OVERRIDES,
                                 *FAMILIES[family], f"data.task={task}",
                                 "model.class_weights=balanced",
                                 "+callbacks.weights._target_=tests.test_cbis_ddsm_families."
                                 "TrainWeights", f"+callbacks.weights.path={out / 'weights.json'}"],
                                out)
            try:
                train(cfg)
            finally:
                finish_wandb()
            done[family, task] = out
        return done[family, task]

    return run


@pytest.mark.parametrize(("family", "task"), CASES)
def test_family_trains_in_task_with_train_split_class_weights(trained, family, task):
    run = trained(family, task)
    names = TASKS[task][0].names
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 <= metrics["test"]["acc"] <= 1
    preds = pd.read_csv(run / "test_predictions.csv")
    assert list(preds.filter(like="prob_")) == [f"prob_{n}" for n in names]
    recorded = json.loads((run / "weights.json").read_text())
    labels = np.asarray(recorded["labels"])
    assert set(labels) == set(range(len(names)))  # every class in train: sklearn's rule applies
    expected = compute_class_weight("balanced", classes=np.arange(len(names)), y=labels)
    assert np.allclose(recorded["weights"], expected, atol=1e-6)


def run_stacking(out: Path, *overrides: str) -> dict:
    cfg = compose_train(["evaluation.plots=false", "evaluation.bootstrap.n_resamples=0",
                         *overrides], out, "stacking")
    return stack(cfg)


@pytest.mark.parametrize("inputs", ["probabilities", "features"])
def test_members_of_different_families_join_on_sample_id(trained, tmp_path, inputs):
    single, pair = trained("transfer", "benign_malignant"), trained("siamese", "benign_malignant")
    result = run_stacking(tmp_path, f"runs=[{single},{pair}]", f"inputs={inputs}")["stacking"]
    for split in ("val", "test"):
        ids = pd.read_csv(single / f"{split}_predictions.csv").sort_values("index")["sample_id"]
        assert result.predictions[split].sample_ids == ids.astype(str).tolist()
    assert result.info["members"] == [str(single), str(pair)]


def cli(*overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "WANDB_MODE": "disabled"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "breastcls.train", *overrides], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)


def test_bad_rows_through_the_command_line(tmp_path):
    """Four bad rows: one message naming each row and file, no traceback; with
    data.on_bad_file=skip they are reported and every other row trains."""
    root = write_tree(tmp_path / "cbis_ddsm")
    damaged = {"calc_case_description_test_set.csv row 3": _missing(root),
               "mass_case_description_train_set.csv row 6": _resized_mask(root),
               "mass_case_description_train_set.csv row 7": _empty_mask(root),
               "calc_case_description_train_set.csv row 7": _truncated(root)}
    common = [*FAST, *QUIET, "data=cbis_ddsm", f"data.root={root}",
              "model.backbone.small_input=true",
              f"paths.cache_dir={tmp_path / 'cache'}", *PATCH_OVERRIDES]
    proc = cli(*common, f"hydra.run.dir={tmp_path / 'refused'}")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "4 CBIS-DDSM file problem(s)" in proc.stderr
    for row, path in damaged.items():
        assert re.search(rf"{re.escape(row)}.*{re.escape(path.name)}", proc.stderr), row
    proc = cli(*common, "data.on_bad_file=skip", f"hydra.run.dir={tmp_path / 'skipped'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert all(row in log for row in damaged)
    splits = pd.read_csv(tmp_path / "skipped" / "splits.csv")
    assert len(splits) == ROW_COUNT - len(damaged) - 1  # and the lesion with no baseline patch


def documented(module: str) -> list[list[str]]:
    """The overrides of every ``python -m <module>`` command in the docs page's code blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text(), re.S)
    lines = [line.split("  #")[0] for block in blocks for line in block.splitlines()]
    prefix = f"python -m {module} "
    return [shlex.split(line.removeprefix(prefix)) for line in lines if line.startswith(prefix)]


@pytest.mark.parametrize("overrides", documented("breastcls.train"), ids=" ".join)
def test_documented_training_commands_compose(overrides, tmp_path):
    cfg = compose_train([o for o in overrides if not o.startswith("hydra.")], tmp_path)
    assert cfg.data._target_ and cfg.model._target_


def test_every_cbis_ddsm_experiment_is_documented():
    text = DOCS.read_text()
    experiments = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("cbis_ddsm_*.yaml"))
    assert [e for e in experiments if f"experiment={e}" not in text] == []


@pytest.mark.parametrize("overrides", documented("breastcls.stacking"), ids=" ".join)
def test_documented_stacking_commands_run(overrides, trained, tmp_path):
    """Each stacking command of the docs on tiny runs: ``runs/<task>/<model>`` is a run of that
    task by the model's family (a copy of it when another model of the family is stacked)."""
    (listed,) = [o for o in overrides if o.startswith("runs=")]
    members = []
    for task, model in re.findall(r"runs/(\w+)/(\w+)", listed):
        member = tmp_path / "runs" / task / model
        shutil.copytree(trained(DOC_MODELS[model], task), member)
        members.append(member)
    rest = [o for o in overrides if not o.startswith(("runs=", "hydra."))]
    if "stacking=svm" in rest:  # its Platt scaling's 5 internal folds need > 9 val samples
        rest.append("stacking.estimator.cv=2")
    results = run_stacking(tmp_path / "out", f"runs=[{','.join(map(str, members))}]", *rest)
    assert set(results) == {"average", "stacking"}
    assert (tmp_path / "out" / "comparison.csv").is_file()
    assert 0 <= results["stacking"].metrics["test"]["acc"] <= 1
