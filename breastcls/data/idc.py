"""IDC histopathology patches (Janowczyk & Madabhushi 2016, "Breast Histopathology Images").

``<root>/<patient>/<0|1>/<patient>_idx5_x<X>_y<Y>_class<0|1>.png``: 50x50 RGB patches, 1 = invasive
ductal carcinoma; ``X``, ``Y`` place the patch in its slide. Patches at tissue edges are smaller;
``edge_patches`` keeps them (``data.fit=pad`` pads them to the full side) or drops them. The
patient is the group: ``data.split.groups=records`` keeps every patient on one side of a split.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd
from rich.progress import track

from breastcls.data.readers import DataError, image_size
from breastcls.data.records import ClassInfo, RecordTable, raise_problems

log = logging.getLogger(__name__)

TASKS = {"binary": ClassInfo(("non_idc", "idc"), positive=1)}
CLASS_FOLDERS = ("0", "1")
PATCH_NAME = re.compile(r"^(?P<patient>[^_]+)_idx5_x(?P<x>\d+)_y(?P<y>\d+)_class(?P<label>[01])$")
EDGE_PATCHES = ("keep", "drop")


def idc_records(root: str | Path, task: str = "binary", on_bad_file: str = "error",
                edge_patches: str = "keep", patch_size: int = 50) -> RecordTable:
    """One record per patch: patient (its group), label, slide coordinates ``x`` and ``y``."""
    if task not in TASKS:
        raise DataError(f"data.task={task!r}: IDC has the tasks {list(TASKS)}")
    if edge_patches not in EDGE_PATCHES:
        raise DataError(f"data.records.edge_patches={edge_patches!r}; choose one of "
                        f"{EDGE_PATCHES}")
    root = Path(root).expanduser()
    patients = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not patients:
        raise DataError(f"no patient folders under {root}: point data.root (or paths.data_dir / "
                        "BREASTCLS_DATA_DIR) at the folder holding <patient>/<0|1>/*.png")
    rows, problems, ignored = [], [], []
    for patient in track(patients, description="scanning IDC", disable=len(patients) < 50):
        for folder in sorted(patient.iterdir()):
            if not folder.is_dir():
                ignored.append(folder)
            elif folder.name not in CLASS_FOLDERS:
                problems.append(f"{folder}: class folder must be named 0 or 1")
            else:
                _scan(folder, patient.name, rows, problems, ignored)
    for path in ignored:
        log.warning("ignored (not a PNG patch): %s", path)
    raise_problems(problems, on_bad_file, "IDC")
    records = pd.DataFrame(rows, columns=["sample_id", "group", "label", "path", "x", "y"])
    if edge_patches == "drop" and len(records):
        full = [image_size(p) == (patch_size, patch_size) for p in records["path"]]
        log.info("dropped %d edge patches smaller than %dx%d", len(full) - sum(full), patch_size,
                 patch_size)
        records = records[full].reset_index(drop=True)
    return RecordTable(records, TASKS[task], skipped=problems)


def _scan(folder: Path, patient: str, rows: list[dict], problems: list[str],
          ignored: list[Path]) -> None:
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".png" or path.name.startswith("."):
            ignored.append(path)
            continue
        match = PATCH_NAME.match(path.stem)
        if match is None:
            problems.append(f"{path}: not an IDC patch name "
                            "(<patient>_idx5_x<X>_y<Y>_class<0|1>.png)")
        elif match["patient"] != patient or match["label"] != folder.name:
            problems.append(f"{path}: the name says patient {match['patient']}, class "
                            f"{match['label']}, but it lies in {patient}/{folder.name}/")
        else:
            rows.append({"sample_id": path.stem, "group": patient, "label": int(match["label"]),
                         "path": str(path), "x": int(match["x"]), "y": int(match["y"])})
