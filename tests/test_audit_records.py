"""The duplicate audit of a record data set: ``python -m breastcls.audit data=busi`` on the real
BUSI images, and the engine's sample columns on planted duplicates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from breastcls.analysis.duplicates import run_audit
from tests.conftest import ROOT, require_real_data
from tests.test_analysis import distinct_images

OUTPUTS = ("pairs.csv", "test_with_train_duplicate.csv", "clusters.csv", "summary.md",
           "splits.csv")


@pytest.fixture(scope="session")
def busi_data_dir() -> Path:
    """The real data folder holding busi/."""
    return require_real_data("busi/benign", "BUSI").parent.parent


def run_audit_cli(data_dir: Path, cache_dir: Path, out: Path, *overrides: str
                  ) -> subprocess.CompletedProcess:
    env = {**os.environ, "BREASTCLS_DATA_DIR": str(data_dir),
           "BREASTCLS_CACHE_DIR": str(cache_dir), "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "breastcls.audit", "data=busi",
                           f"hydra.run.dir={out}", *overrides], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def busi_audits(busi_data_dir, tmp_path_factory) -> dict[str, Path]:
    """The grouped (default) and the plain stratified split, audited through the CLI; the
    second run reads the image cache the first one wrote."""
    cache = tmp_path_factory.mktemp("cache")
    outs = {}
    for name, overrides in (("grouped", ()), ("stratified", ("data/split=stratified",))):
        out = tmp_path_factory.mktemp(name)
        proc = run_audit_cli(busi_data_dir, cache, out, *overrides)
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        outs[name] = out
    assert len(list(cache.glob("*.npy"))) == 1  # one cache, built once, read by both runs
    return outs


def read(out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return tuple(pd.read_csv(out / name) for name in OUTPUTS if name.endswith(".csv"))


@pytest.mark.parametrize("name", ["grouped", "stratified"])
def test_busi_audit_outputs_are_consistent(busi_audits, name):
    out = busi_audits[name]
    assert all((out / f).is_file() for f in OUTPUTS)
    pairs, flagged, clusters, splits = read(out)
    assert len(splits) == 780 and set(splits["split"]) == {"train", "val", "test"}
    by_index = splits.set_index("index")
    for side in "ab":  # indices are the data module's: they name the split table's rows
        rows = by_index.loc[pairs[f"index_{side}"]]
        assert (rows["sample_id"].to_numpy() == pairs[f"sample_id_{side}"].to_numpy()).all()
        assert (rows["split"].to_numpy() == pairs[f"split_{side}"].to_numpy()).all()
        assert (rows["label"].to_numpy() == pairs[f"label_{side}"].to_numpy()).all()
        assert all(Path(p).is_file() for p in pairs[f"path_{side}"])
    assert (pairs.labels_disagree == (pairs.label_a != pairs.label_b)).all()
    assert (pairs.scope == np.where(pairs.split_a == pairs.split_b, "within", "across")).all()
    # The byte-identical pair of the release, filed under two classes.
    exact = pairs[pairs.kind == "exact"]
    assert {"benign (433)", "malignant (145)"} <= set(exact.sample_id_a) | set(exact.sample_id_b)
    assert exact.labels_disagree.any()
    # Clusters cover exactly the images in pairs; every cluster is one duplicate group.
    members = set(pairs.sample_id_a) | set(pairs.sample_id_b)
    assert set(clusters.sample_id) == members and len(clusters) == len(members)
    assert (clusters.groupby("cluster").size() == clusters.groupby("cluster")["size"].first()).all()
    assert clusters.groupby("cluster")["n_splits"].first().ge(1).all()
    # Flagged test images: the test rows of the across-split pairs with train or val.
    test_index = set(by_index.index[by_index["split"] == "test"])
    across = pairs[(pairs.split_b == "test") & pairs.split_a.isin(["train", "val"])]
    assert set(flagged["index"]) == set(across.index_b) and set(flagged["index"]) <= test_index
    summary = (out / "summary.md").read_text()
    assert f"pairs: {len(pairs)} ({len(exact)} exact, {len(pairs) - len(exact)} near" in summary
    assert f"pairs whose labels disagree: {int(pairs.labels_disagree.sum())}" in summary
    assert f"clusters: {clusters.cluster.nunique()} over {len(members)} images" in summary


def test_grouped_split_keeps_duplicates_on_one_side(busi_audits):
    grouped, _, grouped_clusters, _ = read(busi_audits["grouped"])
    stratified, flagged, _, _ = read(busi_audits["stratified"])
    assert (grouped.scope == "within").all()  # the split's groups are the audit's clusters
    assert (grouped_clusters.groupby("cluster")["group"].nunique() == 1).all()
    # The same pairs (same images and thumbnails); only the split assignment differs.
    key = ["sample_id_a", "sample_id_b"]
    assert set(map(frozenset, grouped[key].to_numpy())) == set(
        map(frozenset, stratified[key].to_numpy()))
    assert (stratified.scope == "across").sum() > 0 and len(flagged) > 0


def test_missing_data_root_is_one_clear_message(tmp_path):
    proc = run_audit_cli(tmp_path / "nowhere", tmp_path / "cache", tmp_path / "out")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "BUSI folder(s)" in proc.stderr and str(tmp_path / "nowhere") in proc.stderr
    assert "error:" in proc.stderr


def test_samples_key_the_outputs():
    """Positions in a split become the samples' indices; sample ids ride along."""
    train, test = distinct_images(30, seed=0), distinct_images(10, seed=1)
    test[2], train[7] = train[4], train[3]
    labels = {"train": np.zeros(30, int), "test": np.r_[1, 1, 1, np.zeros(7, int)]}
    index = {"train": np.arange(30) * 2, "test": np.arange(10) * 2 + 1}  # interleaved records
    samples = {s: pd.DataFrame({"index": index[s], "sample_id": [f"{s}-{i}" for i in index[s]],
                                "path": [f"/data/{s}/{i}.png" for i in index[s]]})
               for s in index}
    result = run_audit({s: (im, labels[s]) for s, im in (("train", train), ("test", test))},
                       references=("train",), samples=samples)
    exact = result.pairs[result.pairs.kind == "exact"].set_index("split_b")
    assert exact.loc["test", ["index_a", "sample_id_a", "index_b", "sample_id_b"]].tolist() == [
        8, "train-8", 5, "test-5"]
    assert exact.loc["train", ["index_a", "index_b"]].tolist() == [6, 14]
    assert exact.loc["test", "labels_disagree"]
    row = result.flagged.set_index("index").loc[5]
    assert (row["sample_id"], row["matches"], row["match_sample_ids"], row["path"]) == (
        "test-5", "train/8", "train-8", "/data/test/5.png")
    assert len(result.pairs) == 2
    clusters = result.clusters().groupby("cluster")["sample_id"].apply(sorted).tolist()
    assert sorted(clusters) == [["test-5", "train-8"], ["train-14", "train-6"]]
    assert result.totals()["exact_labels_disagree"] == 1
