"""INbreast full-field mammograms (Moreira et al. 2012) in the layout its owners distribute.

``<root>/INbreast.csv`` (``;``-separated: ``Patient ID;Patient age;Laterality;View;Acquisition
date;File Name;ACR;Bi-Rads``; ``File Name`` is the numeric prefix of a DICOM's name; cells may be
blank, ``removed`` or padded with spaces), ``<root>/AllDICOMs/<file id>_<hash>_MG_<L|R>_<CC|ML>
_ANON.dcm`` and, optionally, ``<root>/AllXML/<file id>.xml``: lesion ROIs as point lists in an
Apple property list. Labels come from BI-RADS through the ``tasks`` groupings; images are
prepared by :mod:`breastcls.data.mammogram`. The released table hides the patient
(``removed``), so ``patient_sources`` falls back to the DICOM header and then to the hash in
the file name: with ``data.split.groups=records`` one patient's images never straddle folds.
"""

from __future__ import annotations

import csv
import logging
import plistlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.parsers.expat import ExpatError

import pandas as pd

from breastcls.data.mammogram import MammogramSettings, prepare_all
from breastcls.data.readers import DataError
from breastcls.data.records import ClassInfo, RecordTable, raise_problems

log = logging.getLogger(__name__)

TABLE, DICOMS, XMLS = "INbreast.csv", "AllDICOMs", "AllXML"
BIRADS = ("1", "2", "3", "4a", "4b", "4c", "5", "6")
DICOM_NAME = re.compile(r"^(?P<file_id>\d+)_(?P<hash>[0-9A-Za-z]+)_MG_(?P<laterality>[LR])_"
                        r"(?P<view>CC|ML)_ANON\.dcm$")
POINT = re.compile(r"\(\s*([-+0-9.eE]+)\s*,\s*([-+0-9.eE]+)")
HIDDEN = ("", "removed")  # table cells that hold no value
PATIENT_SOURCES = ("table", "dicom", "file_name")


@dataclass(frozen=True)
class Row:
    """One line of INbreast.csv, cells stripped."""

    line: int
    cells: dict[str, str]

    def where(self) -> str:
        return f"{TABLE} line {self.line} (File Name {self.cells.get('File Name') or '?'})"


def inbreast_records(root: str | Path, task: str = "binary", on_bad_file: str = "error",
                     cache_dir: str | Path = ".cache/breastcls",
                     tasks: Mapping[str, Mapping[str, Sequence[str | int]]] | None = None,
                     positive_class: str = "malignant",
                     patient_sources: Sequence[str] = PATIENT_SOURCES,
                     roi_names: Sequence[str] | None = None, long_side: int | None = 512,
                     flip_to: str | None = "L", breast_threshold: float = 0.05,
                     voi: str = "auto") -> RecordTable:
    """One record per mammogram with a row and a DICOM: label of ``task``, patient, laterality,
    view, BI-RADS, ROI ``boxes`` (prepared pixels; ``height``/``width`` their image's size)."""
    classes, label_of = _task(tasks or {}, task, positive_class)
    unknown = sorted(set(patient_sources) - set(PATIENT_SOURCES))
    if unknown or not patient_sources:
        raise DataError(f"data.records.patient_sources={list(patient_sources)}: use some of "
                        f"{list(PATIENT_SOURCES)}, first found wins")
    settings = MammogramSettings(long_side, flip_to, breast_threshold, voi)
    root = Path(root).expanduser()
    if not (root / TABLE).is_file() or not (root / DICOMS).is_dir():
        raise DataError(f"INbreast not found under {root.resolve()}: data.root (or "
                        f"paths.data_dir / BREASTCLS_DATA_DIR) must hold {TABLE} and {DICOMS}/ "
                        "as INbreast's owners distribute them (see docs/inbreast.md)")
    problems: list[str] = []
    rows = _read_table(root / TABLE, problems)
    dicoms = _list_dicoms(root / DICOMS, problems)
    samples = []
    for file_id, row in rows.items():
        match = dicoms.pop(file_id, None)
        problem = _row_problem(row, match, label_of)
        if problem:
            problems.append(problem)
        elif match is not None and _value(row, "Bi-Rads").lower() in label_of:
            samples.append((row, match))
    problems += [f"{DICOMS}/{m.string}: no row of {TABLE} has File Name {file_id}"
                 for file_id, m in sorted(dicoms.items())]
    boxes = {}
    for row, match in list(samples):
        found = _roi_boxes(root / XMLS / f"{match['file_id']}.xml", roi_names)
        if isinstance(found, str):
            problems.append(found)
            samples.remove((row, match))
        else:
            boxes[match["file_id"]] = found
    raise_problems(problems, on_bad_file, "INbreast")
    items = [(m["file_id"], root / DICOMS / m.string, m["laterality"]) for _, m in samples]
    prepared, failed = prepare_all(items, settings, cache_dir, stop_at_error=on_bad_file != "skip")
    raise_problems(list(failed.values()), on_bad_file, "INbreast")
    problems += list(failed.values())
    records = []
    for row, match in samples:
        file_id = match["file_id"]
        if file_id not in prepared:
            continue
        done = prepared[file_id]
        birads = _value(row, "Bi-Rads").lower()
        patient = {"table": _value(row, "Patient ID"), "dicom": done.patient_id,
                   "file_name": match["hash"]}
        records.append({
            "sample_id": file_id, "group": next((patient[s] for s in patient_sources
                                                 if patient[s].lower() not in HIDDEN), file_id),
            "label": label_of[birads], "path": str(done.path),
            "dicom": str(root / DICOMS / match.string),
            "laterality": match["laterality"], "view": match["view"], "birads": birads,
            "acr": _value(row, "ACR"), "boxes": done.geometry.move_boxes(boxes[file_id][0]),
            "roi_names": ";".join(boxes[file_id][1]), "height": done.geometry.height,
            "width": done.geometry.width})
    table = pd.DataFrame(records)
    if len(table):
        log.info("INbreast: %d images of %d patients", len(table), table["group"].nunique())
    return RecordTable(table, classes, skipped=problems)


def _task(tasks: Mapping[str, Mapping[str, Sequence[str | int]]], task: str,
          positive_class: str) -> tuple[ClassInfo, dict[str, int]]:
    """The classes of ``task`` and each BI-RADS value's label; values in no class are left out."""
    if task not in tasks:
        raise DataError(f"data.task={task!r}: INbreast has the tasks {list(tasks)} "
                        "(data.records.tasks)")
    names = list(tasks[task])
    label_of: dict[str, int] = {}
    for label, name in enumerate(names):
        for value in map(lambda v: str(v).strip().lower(), tasks[task][name]):
            if value not in BIRADS:
                raise DataError(f"data.records.tasks.{task}.{name}: {value!r} is not a BI-RADS "
                                f"value; INbreast's are {list(BIRADS)}")
            if value in label_of:
                raise DataError(f"data.records.tasks.{task}: BI-RADS {value} is in two classes")
            label_of[value] = label
    positive = None
    if len(names) == 2:
        if positive_class not in names:
            raise DataError(f"data.records.positive_class={positive_class!r} is not a class of "
                            f"the binary task {task!r}: {names}")
        positive = names.index(positive_class)
    left_out = [v for v in BIRADS if v not in label_of]
    if left_out:
        log.info("data.task=%s leaves out images of BI-RADS %s", task, left_out)
    return ClassInfo(tuple(names), positive), label_of


def _read_table(path: Path, problems: list[str]) -> dict[str, Row]:
    """The table's rows by File Name; blank lines skipped, repeated names reported."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:  # spreadsheet exports in a legacy code page
        text = path.read_text(encoding="latin-1")
    reader = csv.reader(text.splitlines(), delimiter=";")
    header = [cell.strip() for cell in next(reader, [])]
    missing = [c for c in ("File Name", "Bi-Rads") if c not in header]
    if missing:
        raise DataError(f"{path}: no column(s) {missing} in the header {header}; is it "
                        "INbreast's semicolon-separated table?")
    rows: dict[str, Row] = {}
    for cells in reader:
        row = Row(reader.line_num, dict(zip(header, (c.strip() for c in cells), strict=False)))
        file_id = row.cells.get("File Name", "")
        if not any(row.cells.values()):
            continue
        if not file_id:
            problems.append(f"{row.where()}: blank File Name, so no DICOM belongs to it")
        elif file_id in rows:
            problems.append(f"{row.where()}: File Name repeats line {rows[file_id].line}")
        else:
            rows[file_id] = row
    return rows


def _list_dicoms(folder: Path, problems: list[str]) -> dict[str, re.Match[str]]:
    found: dict[str, re.Match[str]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() != ".dcm" or path.name.startswith("."):
            log.warning("ignored (not a DICOM): %s", path)
            continue
        match = DICOM_NAME.match(path.name)
        if match is None:
            problems.append(f"{path}: not an INbreast DICOM name "
                            "(<file id>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm)")
        elif match["file_id"] in found:
            problems.append(f"{path}: a second DICOM for File Name {match['file_id']} "
                            f"(first: {found[match['file_id']].string})")
        else:
            found[match["file_id"]] = match
    return found


def _row_problem(row: Row, match: re.Match[str] | None, label_of: Mapping[str, int]
                 ) -> str | None:
    birads = _value(row, "Bi-Rads").lower()
    if match is None:
        return f"{row.where()}: no DICOM {DICOMS}/{row.cells['File Name']}_*_ANON.dcm"
    if not birads or birads == "removed":
        return f"{row.where()}: blank Bi-Rads cell"
    if birads not in BIRADS:
        return f"{row.where()}: unknown Bi-Rads {birads!r}; INbreast's are {list(BIRADS)}"
    laterality = _value(row, "Laterality").upper()
    if laterality not in HIDDEN and laterality != match["laterality"]:
        return (f"{row.where()}: Laterality {laterality} but the DICOM {match.string} is "
                f"{match['laterality']}")
    return None


def _value(row: Row, column: str) -> str:
    return row.cells.get(column, "")


def _roi_boxes(path: Path, roi_names: Sequence[str] | None
               ) -> tuple[list[list[float]], list[str]] | str:
    """``[x0, y0, x1, y1]`` around every ROI's ``Point_px`` (points cover their pixel, so a
    single-point calcification is a 1x1 box) and the ROI names; no file: no ROIs; a file that
    cannot be parsed: the message."""
    if not path.is_file():
        return [], []
    keep = None if roi_names is None else {n.lower() for n in roi_names}
    boxes, names = [], []
    try:
        plist = plistlib.loads(path.read_bytes(), fmt=plistlib.FMT_XML)
        for roi in (r for image in plist["Images"] for r in image["ROIs"]):
            name = str(roi.get("Name", "")).strip()
            if keep is not None and name.lower() not in keep:
                continue
            points = [(float(x), float(y)) for p in roi["Point_px"]
                      for x, y in POINT.findall(p)]
            if not points:
                raise ValueError(f"ROI {name!r} has no Point_px points")
            xs, ys = zip(*points, strict=True)
            boxes.append([min(xs), min(ys), max(xs) + 1, max(ys) + 1])
            names.append(name)
    except (ExpatError, ValueError, KeyError, TypeError) as err:
        return f"{path}: not an INbreast ROI file ({type(err).__name__}: {err})"
    return boxes, names
