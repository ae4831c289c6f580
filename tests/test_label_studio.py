"""breastcls's pre-annotations through a real Label Studio server and back.

A reviewer accepts two images, moves a box on one, deletes one of two boxes on another, deletes
the only box of a fourth and skips a fifth; ``accept`` must read back exactly those changes.
"""

from __future__ import annotations

import copy
import json
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from label_studio_sdk import LabelStudio
from PIL import Image

from breastcls.labelling.boxes import ImageBoxes
from breastcls.labelling.proposals import ProposalSettings, write_round
from breastcls.labelling.review import accept_round
from breastcls.labelling.rounds import LABEL_CONFIG, POOL, PROPOSALS_LABEL_STUDIO, round_dir
from tests.label_studio_server import label_studio_server

pytestmark = pytest.mark.slow
CLASSES = ("benign", "malignant")
# name: (boxes XYXY, labels, scores) of the model's proposals, on 200x120 images
PROPOSED = {
    "benign (1).png": ([[20, 10, 80, 60]], ["benign"], [0.9]),
    "benign (2).png": ([[100, 40, 180, 100]], ["malignant"], [0.8]),
    "malignant (1).png": ([[10, 10, 60, 50]], ["malignant"], [0.7]),
    "malignant (2).png": ([[10, 10, 60, 50], [120, 60, 190, 110]], ["malignant", "benign"],
                          [0.95, 0.6]),
    "benign (3).png": ([[30, 30, 90, 90]], ["benign"], [0.55]),
    "normal (1).png": ([[50, 20, 70, 40]], ["benign"], [0.5]),
}
MOVE_X_PERCENT = 10.0  # the moved box shifts right by 10% of the width (20 px)


def _images(folder: Path) -> list[ImageBoxes]:
    folder.mkdir()
    detections = []
    for name, (boxes, labels, scores) in PROPOSED.items():
        Image.fromarray(np.full((120, 200), 90, np.uint8)).save(folder / name)
        detections.append(ImageBoxes(str(folder / name), 200, 120, boxes, labels, scores))
    return detections


def _review(result: list[dict], name: str) -> tuple[list[dict], bool]:
    """What the reviewer submits for ``name``'s prediction result, and whether they skip it."""
    result = copy.deepcopy(result)
    if name == "malignant (1).png":
        result[0]["value"]["x"] += MOVE_X_PERCENT
    elif name == "malignant (2).png":
        result = [r for r in result if r["value"]["rectanglelabels"] != ["benign"]]
    elif name == "normal (1).png":
        result = []
    return result, name == "benign (3).png"


def test_label_studio_round_trip(tmp_path: Path) -> None:
    detections = _images(tmp_path / "pool")
    workdir = tmp_path / "loop"
    settings = ProposalSettings(selection="top_box", min_score=0.5)  # root: tmp_path
    folder = write_round(workdir, detections, CLASSES, "round0-test", None, settings)
    (tmp_path / "server").mkdir()
    with label_studio_server(tmp_path / "server", tmp_path) as server:
        client = LabelStudio(base_url=server.url, api_key=server.token)
        project = client.projects.create(title="breastcls review",
                                         label_config=(folder / LABEL_CONFIG).read_text())
        # Label Studio serves local files only under a project's Local Files storage.
        client.import_storage.local.create(project=project.id, path=str(tmp_path / "pool"),
                                           use_blob_urls=False, title="pool")
        tasks = json.loads((folder / PROPOSALS_LABEL_STUDIO).read_text())
        imported = client.projects.import_tasks(id=project.id, request=tasks,
                                                return_task_ids=True)
        assert imported.task_count == len(PROPOSED) and imported.prediction_count == len(PROPOSED)

        listed = list(client.tasks.list(project=project.id, fields="all"))
        first = listed[0]
        request = urllib.request.Request(server.url + first.data["image"],
                                         headers={"Authorization": f"Token {server.token}"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=10) as response:  # the image the reviewer sees
            assert response.status == 200 and response.read()[:4] == b"\x89PNG"
        for task in listed:
            prediction = task.predictions[0]
            result = prediction["result"] if isinstance(prediction, dict) else prediction.result
            submitted, skipped = _review(result, Path(task.data["path"]).name)
            client.annotations.create(id=task.id, result=[] if skipped else submitted,
                                      was_cancelled=skipped)
        export = tmp_path / "export.json"
        export.write_bytes(b"".join(client.projects.exports.download_sync(
            project.id, export_type="JSON", download_all_tasks=True)))

    rows = accept_round(workdir, export).set_index("image")
    by_name = {Path(p).name: row for p, row in rows.iterrows()}
    assert set(by_name) == set(PROPOSED) - {"benign (3).png"}  # the skipped one stays out
    assert by_name["benign (1).png"]["outcome"] == "accepted"
    assert by_name["benign (2).png"]["outcome"] == "accepted"
    moved = by_name["malignant (1).png"]
    assert (moved["outcome"], moved["moved"], moved["kept"]) == ("corrected", 1, 0)
    two = by_name["malignant (2).png"]
    assert (two["outcome"], two["kept"], two["deleted"]) == ("corrected", 1, 1)
    gone = by_name["normal (1).png"]
    assert (gone["outcome"], gone["deleted"], gone["boxes"]) == ("rejected", 1, 0)
    assert set(rows["round"]) == {1} and set(rows["model_version"]) == {"round0-test"}

    pool = json.loads((workdir / POOL).read_text())
    boxes = {Path(i["file_name"]).name: [a["bbox"] for a in pool["annotations"]
                                         if a["image_id"] == i["id"]] for i in pool["images"]}
    np.testing.assert_allclose(boxes["malignant (1).png"], [[10 + 20, 10, 50, 40]], atol=1e-6)
    np.testing.assert_allclose(boxes["benign (1).png"], [[20, 10, 60, 50]], atol=1e-6)
    np.testing.assert_allclose(boxes["malignant (2).png"], [[10, 10, 50, 40]], atol=1e-6)
    assert boxes["normal (1).png"] == []
    provenance = pd.read_csv(workdir / "provenance.csv")
    assert len(provenance) == 5 and round_dir(workdir, 1).is_dir()
