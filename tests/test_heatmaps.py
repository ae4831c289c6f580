"""Slide heatmaps: every prediction at its slide coordinates (a known shape drawn by positive
patches), PNGs per patient through the CLI, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from breastcls.analysis.heatmaps import slide_maps
from breastcls.heatmaps import heatmaps
from tests.conftest import ROOT, compose_train

# An "L" of positive patches on a 5 x 4 patch grid; (row 4, col 3) has no patch (off tissue).
L_SHAPE = np.array([[1, 0, 0, 0],
                    [1, 0, 0, 0],
                    [1, 0, 0, 0],
                    [1, 1, 1, 0],
                    [0, 0, 0, -1]])
X0, Y0 = 1001, 2051  # slide pixels of the top-left patch, as in IDC file names


def patient_patches(patient: str = "1234") -> pd.DataFrame:
    rows = []
    for (r, c), truth in np.ndenumerate(L_SHAPE):
        if truth >= 0:
            x, y = X0 + 50 * c, Y0 + 50 * r
            rows.append({"sample_id": f"{patient}_idx5_x{x}_y{y}_class{truth}", "group": patient,
                         "label": int(truth), "probability": 0.1 + 0.01 * (4 * r + c)})
    return pd.DataFrame(rows)


def test_each_prediction_lands_at_its_coordinates():
    patches = patient_patches()
    coords = patches["sample_id"].str.extract(r"_x(?P<x>\d+)_y(?P<y>\d+)").astype(int)
    maps = slide_maps(patches.assign(x=coords.x, y=coords.y, positive=patches.label), "1234")
    assert maps.origin == (X0, Y0) and maps.probability.shape == L_SHAPE.shape
    assert maps.patches == 19
    assert np.isnan(maps.truth[4, 3]) and np.isnan(maps.probability[4, 3])
    np.testing.assert_array_equal(np.nan_to_num(maps.truth, nan=-1), L_SHAPE)
    rows, cols = np.nonzero(L_SHAPE >= 0)
    np.testing.assert_allclose(maps.probability[rows, cols], 0.1 + 0.01 * (4 * rows + cols))


def fake_run(folder: Path) -> Path:
    frame = pd.concat([patient_patches("1234"), patient_patches("5678")], ignore_index=True)
    frame.insert(0, "index", range(len(frame)))
    frame["prob_idc"] = frame.pop("probability")
    frame.insert(4, "prob_non_idc", 1 - frame["prob_idc"])
    frame["pred"] = (frame["prob_idc"] > 0.5).astype(int)
    folder.mkdir(parents=True)
    frame.to_csv(folder / "test_predictions.csv", index=False)
    (folder / "metrics.json").write_text(json.dumps({"class_names": ["non_idc", "idc"],
                                                     "positive_class": 1}))
    return folder


def run_cli(run: Path, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "breastcls.heatmaps", f"run={run}",
                           f"hydra.run.dir={out}", *overrides], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_cli_writes_one_png_per_test_patient(tmp_path):
    run = fake_run(tmp_path / "run")
    proc = run_cli(run, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-2000:]
    pngs = sorted((run / "heatmaps" / "test").glob("*.png"))
    assert [p.stem for p in pngs] == ["1234", "5678"]
    assert Image.open(pngs[0]).size[0] > 400


@pytest.mark.parametrize(("override", "message"), [
    ("patients=[999]", "patients ['999'] are not in test_predictions.csv"),
    ("coordinates_pattern='_x(\\d+)'", "needs groups named x and y"),
    ("split=val", "val_predictions.csv not found"),
])
def test_cli_mistakes_are_one_message(tmp_path, override, message):
    proc = run_cli(fake_run(tmp_path / "run"), tmp_path / "out", override)
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_heatmaps_reach_wandb_offline_without_an_account(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    run = fake_run(tmp_path / "run")
    heatmaps(compose_train([f"run={run}", "wandb=true"], tmp_path / "out",
                           config_name="heatmaps"))
    logged = sorted(p.name for p in (run / "heatmaps" / "test").rglob("offline-run-*/files/media/"
                                                                      "images/heatmaps/*.png"))
    assert [name.split("_")[0] for name in logged] == ["1234", "5678"]
