"""Proposals out and reviews back without a model: Label Studio tasks, COCO, outcomes, errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from label_studio_sdk.label_interface import LabelInterface
from PIL import Image

from breastcls.data.readers import DataError
from breastcls.labelling.boxes import ImageBoxes, compare
from breastcls.labelling.proposals import ProposalSettings, write_round
from breastcls.labelling.review import accept_round
from breastcls.labelling.rounds import (
    LABEL_CONFIG,
    POOL,
    PROPOSALS_COCO,
    PROPOSALS_LABEL_STUDIO,
    REVIEW_ORDER,
    read_meta,
    read_pool,
    round_dir,
    seed_pool,
    write_images,
)
from breastcls.labelling.selection import review_order, uncertainty

CLASSES = ("benign", "malignant")


def _box(path: str, boxes, labels, scores=None) -> ImageBoxes:
    return ImageBoxes(path, 100, 80, boxes, labels, scores)


def test_compare_outcomes() -> None:
    proposed = _box("a", [[10, 10, 50, 50], [60, 10, 90, 40]], ["benign", "malignant"], [.9, .6])
    same = _box("a", [[10, 10, 50, 50], [60, 10, 90, 40]], ["benign", "malignant"])
    assert compare(proposed, same).outcome == "accepted"
    moved = _box("a", [[15, 10, 55, 50], [60, 10, 90, 40]], ["benign", "malignant"])
    review = compare(proposed, moved)
    assert (review.outcome, review.kept, review.moved) == ("corrected", 1, 1)
    relabelled = _box("a", [[10, 10, 50, 50], [60, 10, 90, 40]], ["benign", "benign"])
    assert compare(proposed, relabelled).relabelled == 1
    one_deleted = _box("a", [[10, 10, 50, 50]], ["benign"])
    review = compare(proposed, one_deleted)
    assert (review.outcome, review.deleted) == ("corrected", 1)
    elsewhere = _box("a", [[0, 60, 10, 70]], ["malignant"])
    review = compare(proposed, elsewhere)
    assert (review.outcome, review.deleted, review.added) == ("rejected", 2, 1)
    missed = compare(_box("b", [], []), _box("b", [[1, 1, 5, 5]], ["benign"]))
    assert missed.outcome == "rejected" and missed.added == 1
    assert compare(_box("c", [], []), _box("c", [], [])).outcome == "accepted"


def test_uncertainty_and_order() -> None:
    confident = _box("a", [[10, 10, 50, 50]], ["benign"], [0.95])
    doubtful = _box("b", [[10, 10, 50, 50], [11, 11, 50, 50]], ["benign", "malignant"],
                    [0.5, 0.45])
    nothing = _box("c", [], [], [])
    assert uncertainty(nothing, "top_box") == 1.0
    assert uncertainty(doubtful, "top_box") == pytest.approx(0.5)
    assert uncertainty(doubtful, "entropy") > uncertainty(confident, "entropy") > 0
    order, values = review_order([confident, doubtful, nothing], "top_box")
    assert order.tolist() == [2, 1, 0] and values[0] == pytest.approx(0.05)
    random_order, _ = review_order([confident, doubtful, nothing], "random", seed=3)
    assert sorted(random_order.tolist()) == [0, 1, 2]
    assert review_order([confident, doubtful, nothing], "random", seed=3)[0].tolist() == \
        random_order.tolist()
    with pytest.raises(ValueError, match="choose one of"):
        review_order([confident], "margin")


def _round(tmp_path: Path, selection: str = "top_box", k: int | None = None) -> Path:
    folder = tmp_path / "pool"
    folder.mkdir()
    detections = []
    for name, score in (("benign (1).png", 0.9), ("benign (2).png", 0.6), ("x.png", 0.3)):
        Image.fromarray(np.zeros((80, 100), np.uint8)).save(folder / name)
        detections.append(_box(str(folder / name), [[10, 20, 40, 60], [50, 10, 60, 30]],
                               ["benign", "malignant"], [score, 0.55]))
    return write_round(tmp_path / "loop", detections, CLASSES, "m@1", "m.ckpt",
                       ProposalSettings(selection=selection, min_score=0.5,
                                        images_per_round=k))


def test_proposals_are_valid_label_studio_tasks(tmp_path: Path) -> None:
    folder = _round(tmp_path, k=2)
    tasks = json.loads((folder / PROPOSALS_LABEL_STUDIO).read_text())
    interface = LabelInterface((folder / LABEL_CONFIG).read_text())
    assert [Path(t["data"]["path"]).name for t in tasks] == ["x.png", "benign (2).png"]
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=pool/x.png"
    for task in tasks:
        prediction = task["predictions"][0]
        assert interface.validate_prediction(prediction, return_errors=True) == []
        assert prediction["model_version"] == "m@1"
    # x.png's top box (0.3) is under min_score: only the 0.55 box is shown
    assert [r["score"] for r in tasks[0]["predictions"][0]["result"]] == [0.55]
    value = tasks[1]["predictions"][0]["result"][0]["value"]
    assert value.pop("rectanglelabels") == ["benign"]
    assert value == pytest.approx({"x": 10, "y": 25, "width": 30, "height": 50, "rotation": 0})
    coco = json.loads((folder / PROPOSALS_COCO).read_text())
    assert [a["bbox"] for a in coco["annotations"] if a["image_id"] == 2] == [
        [10.0, 20.0, 30.0, 40.0], [50.0, 10.0, 10.0, 20.0]]
    assert (folder / REVIEW_ORDER).read_text().startswith("rank,image,uncertainty")
    assert read_meta(folder)["pool_size"] == 3


def _export(folder: Path, edit) -> Path:
    """A Label Studio export as the server writes it, the reviewer's ``edit`` applied."""
    tasks = json.loads((folder / PROPOSALS_LABEL_STUDIO).read_text())
    for number, task in enumerate(tasks, start=1):
        result, cancelled = edit(Path(task["data"]["path"]).name,
                                 copy.deepcopy(task["predictions"][0]["result"]))
        task.update(id=number, annotations=[{"id": number, "completed_by": 7,
                                             "was_cancelled": cancelled, "result": result,
                                             "updated_at": "2026-01-01T00:00:00Z"}])
    path = folder / "export.json"
    path.write_text(json.dumps(tasks))
    return path


def test_accept_records_outcomes_and_leaves_images(tmp_path: Path) -> None:
    folder = _round(tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "pool").iterdir()}

    def edit(name: str, result: list) -> tuple[list, bool]:
        if name == "benign (2).png":
            result[0]["value"]["y"] += 10
        return result, name == "x.png"

    rows = accept_round(tmp_path / "loop", _export(folder, edit)).set_index("image")
    outcomes = {Path(p).name: o for p, o in rows["outcome"].items()}
    assert outcomes == {"benign (1).png": "accepted", "benign (2).png": "corrected"}
    assert set(rows["reviewer"]) == {"7"} and set(rows["round"]) == {1}
    images, provenance = read_pool(tmp_path / "loop")
    assert len(images) == 2 and len(provenance) == 2
    assert {p: p.read_bytes() for p in (tmp_path / "pool").iterdir()} == before
    with pytest.raises(DataError, match="accepted already"):
        accept_round(tmp_path / "loop", folder / "export.json")


def test_accept_reads_coco_reviews_and_initial_pool(tmp_path: Path) -> None:
    folder = _round(tmp_path)
    proposals = json.loads((folder / PROPOSALS_COCO).read_text())
    first = proposals["images"][0]  # x.png, shown with its one box above min_score
    write_images(tmp_path / "reviewed.json", [ImageBoxes(first["file_name"], 100, 80)],
                 CLASSES)  # the box deleted
    old = tmp_path / "old.png"
    Image.fromarray(np.zeros((80, 100), np.uint8)).save(old)
    initial = write_images(tmp_path / "initial.json",
                           [_box(str(old), [[1, 1, 9, 9]], ["benign"])], CLASSES)
    seed_pool(tmp_path / "loop", initial)
    rows = accept_round(tmp_path / "loop", tmp_path / "reviewed.json")
    assert rows["outcome"].tolist() == ["rejected"] and rows["deleted"].tolist() == [1]
    _, provenance = read_pool(tmp_path / "loop")
    assert provenance["outcome"].tolist() == ["initial", "rejected"]
    assert json.loads((tmp_path / "loop" / POOL).read_text())["images"][0]["file_name"] == \
        str(tmp_path / "old.png")


@pytest.mark.parametrize(("edit", "message"), [
    (lambda n, r: ([{**r[0], "value": {**r[0]["value"], "rectanglelabels": ["cyst"]}}], False),
     "not among the model's classes"),
    (lambda n, r: ([{**r[0], "value": {**r[0]["value"], "rotation": 30}}], False),
     "rotated box"),
    (lambda n, r: (r, True), "none of round 1's"),
])
def test_bad_reviews_name_the_problem(tmp_path: Path, edit, message: str) -> None:
    folder = _round(tmp_path)
    with pytest.raises(DataError, match=message):
        accept_round(tmp_path / "loop", _export(folder, edit))
    assert not (tmp_path / "loop" / POOL).exists()


def test_export_of_another_project_is_refused(tmp_path: Path) -> None:
    folder = _round(tmp_path)
    (folder / "other.json").write_text(json.dumps([{"id": 4, "data": {"path": "/else.png"}}]))
    with pytest.raises(DataError, match=r"task 4 .*not proposed in this round"):
        accept_round(tmp_path / "loop", folder / "other.json")
    with pytest.raises(DataError, match="no labelling round yet"):
        accept_round(round_dir(tmp_path, 9), folder / "other.json")


def test_coco_review_with_a_box_outside_its_image_is_refused(tmp_path: Path) -> None:
    folder = _round(tmp_path)
    coco = json.loads((folder / PROPOSALS_COCO).read_text())
    coco["annotations"][0]["bbox"] = [90.0, 10.0, 30.0, 10.0]  # 100 px wide image
    (tmp_path / "reviewed.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match="lies outside the 100x80 image"):
        accept_round(tmp_path / "loop", tmp_path / "reviewed.json")
