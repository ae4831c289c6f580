"""Bad input through the CLI: one message naming the file (or sample) and exit code 1, no
traceback, for each kind of problem a user's data can have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.test_train import run_cli

GOOD = [f"images/ok{i}.png" for i in range(4)]
PROBLEMS = {  # planted row -> what the message must say
    "missing": ("images/gone.png", 0, "gone.png: file not found"),
    "unknown_type": ("images/scan.xyz", 0, "scan.xyz: unsupported file type '.xyz'"),
    "corrupt": ("images/noise.png", 0, "noise.png: not a readable image"),
    "label_out_of_range": ("images/ok0.png", 5, "label outside the classes"),
}


def listed_root(root: Path, problem: str) -> Path:
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for path in GOOD:
        Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8)).save(root / path)
    (root / "images" / "scan.xyz").write_bytes(b"not an image")
    (root / "images" / "noise.png").write_bytes(rng.bytes(300))
    path, label, _ = PROBLEMS[problem]
    rows = [(p, i % 2) for i, p in enumerate(GOOD)]
    if problem == "label_out_of_range":
        rows[0] = (path, label)
    else:
        rows.append((path, label))
    pd.DataFrame(rows, columns=["path", "label"]).to_csv(root / "list.csv", index=False)
    return root


@pytest.mark.parametrize("problem", list(PROBLEMS))
def test_bad_row_is_one_clear_message(problem, tmp_path):
    root = listed_root(tmp_path / "data", problem)
    proc = run_cli("breastcls.train", "data=busi",
                   "data.records._target_=tests.listed_dataset.listed_records",
                   f"data.root={root}", "data.image_size=16", "data/split=stratified",
                   f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}",
                   "extras.print_config=false", "trainer.max_epochs=1", check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert PROBLEMS[problem][2] in proc.stderr
    if problem == "label_out_of_range":
        assert "ok0 (label 5)" in proc.stderr  # the sample is named


def test_bad_model_setting_is_one_clear_message(tmp_path):
    """A DataError raised while the model is built (Hydra wraps it once per nesting level)."""
    proc = run_cli("breastcls.train", "model=scratch_cnn", "model.backbone.global_pool=bogus",
                   f"hydra.run.dir={tmp_path / 'run'}", "extras.print_config=false",
                   "trainer.max_epochs=1", check=False)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "InstantiationException" not in proc.stderr
    assert "error: model.backbone.global_pool='bogus': choose from" in proc.stderr
