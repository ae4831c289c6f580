"""The patch data set built from the TCIA download: every lesion's abnormality and baseline patch,
extracted once per setting into ``<cache_dir>/cbis_ddsm_patches-<key>/``.

The key hashes the patch settings, the root, the CSVs and every listed DICOM file's size and
modification time, so a changed setting or a re-downloaded file extracts again; ``lesions.csv`` in
that folder lists the patches, and ``problems.json`` the rows that could not be read and the
lesions dropped for want of a baseline patch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pandas as pd
from rich.progress import track

from breastcls.data.cbis_ddsm_csv import CSV_FILES
from breastcls.data.cbis_ddsm_files import DicomTree, LesionFiles, find_files, read_mask
from breastcls.data.cbis_ddsm_patches import (
    Box,
    PatchSettings,
    baseline_square,
    breast_region,
    cut,
    lesion_square,
    mask_box,
    write_png16,
)
from breastcls.data.readers import DataError, read_image
from breastcls.data.records import raise_problems

log = logging.getLogger(__name__)

MANIFEST, PROBLEMS = "lesions.csv", "problems.json"


def tcia_patches(root: Path, lesions: pd.DataFrame, settings: PatchSettings,
                 cache_dir: str | Path, on_bad_file: str) -> tuple[pd.DataFrame, list[str]]:
    """``lesions`` that have both patches, with ``path`` and ``baseline_path`` (16-bit PNGs),
    ``patch_box``/``baseline_box`` (``x0,y0,x1,y1`` in the mammogram) and ``baseline_side``;
    and the rows skipped as unreadable (raised instead unless ``on_bad_file`` is skip)."""
    tree = DicomTree(root)
    folder = Path(cache_dir).expanduser() / f"cbis_ddsm_patches-{_key(tree, lesions, settings)}"
    if (folder / MANIFEST).is_file() and (folder / PROBLEMS).is_file():
        patches = pd.read_csv(folder / MANIFEST, dtype={"sample_id": str})
        problems = json.loads((folder / PROBLEMS).read_text())
        raise_problems(problems["unreadable"], on_bad_file, "CBIS-DDSM")
        if patches["path"].map(os.path.isfile).all():
            _report_dropped(problems["no_baseline"])
            return lesions.merge(patches, on="sample_id"), problems["unreadable"]
    files, unreadable = {}, []
    for row in lesions.to_dict("records"):
        found = find_files(tree, row)
        if isinstance(found, str):
            unreadable.append(found)
        else:
            files[row["sample_id"]] = found
    if not files:
        raise DataError(f"none of the {len(lesions)} CSV rows' DICOM files is under {root}: the "
                        "CBIS-DDSM images (~160 GB) come from TCIA (see docs/cbis_ddsm.md); put "
                        "the downloaded CBIS-DDSM/ folder beside the CSVs, or point data.root at "
                        "the folder holding both")
    # Every row is read before refusing, so the message lists all problems at once, and the
    # patches of the good rows are cached for the rerun with data.on_bad_file=skip.
    folder.mkdir(parents=True, exist_ok=True)
    rows, no_baseline = [], []
    groups = lesions[lesions["sample_id"].isin(files)].groupby("image_path", sort=False)
    for _, group in track(groups, description="extracting CBIS-DDSM patches",
                          total=groups.ngroups, disable=groups.ngroups < 20):
        found, failed = _image_patches(group.to_dict("records"), files, settings, folder)
        unreadable += failed
        rows += [r for r in found if r["path"]]
        no_baseline += [r["sample_id"] for r in found if not r["path"]]
    _report_dropped(no_baseline)
    patches = pd.DataFrame(rows, columns=["sample_id", "path", "baseline_path", "patch_box",
                                          "baseline_box", "baseline_side", "image_file",
                                          "mask_file"])
    patches.to_csv(folder / MANIFEST, index=False)
    (folder / PROBLEMS).write_text(json.dumps({"unreadable": unreadable,
                                               "no_baseline": no_baseline}, indent=1))
    log.info("%d CBIS-DDSM patch pairs in %s", len(patches), folder)
    raise_problems(unreadable, on_bad_file, "CBIS-DDSM")
    return lesions.merge(patches, on="sample_id"), unreadable


def _image_patches(rows: list[dict], files: dict[str, LesionFiles], settings: PatchSettings,
                   folder: Path) -> tuple[list[dict], list[str]]:
    """The patches of one mammogram's lesions (``path`` empty where no baseline fits), and the
    messages of rows that could not be read."""
    image_file = files[rows[0]["sample_id"]].image
    try:
        image = read_image(image_file, "L", voi="none")
    except DataError as err:
        return [], [f"{row['source']} ({row['sample_id']}): {err}" for row in rows]
    boxes: dict[str, Box] = {}
    mask_files: dict[str, Path] = {}
    failed = []
    for row in rows:
        try:
            mask, mask_files[row["sample_id"]] = read_mask(files[row["sample_id"]], row,
                                                           image.shape)
            boxes[row["sample_id"]] = mask_box(mask)
        except DataError as err:
            failed.append(f"{row['source']} ({row['sample_id']}): {err}")
    breast = breast_region(image, settings.breast_threshold)
    out = []
    for sample_id, box in boxes.items():
        square = lesion_square(box, image.shape, settings)
        found = baseline_square(square, list(boxes.values()), breast, settings)
        result = {"sample_id": sample_id, "path": "", "image_file": str(image_file),
                  "mask_file": str(mask_files[sample_id]), "patch_box": _text(square)}
        if found is not None:
            side, baseline = found
            path, baseline_path = folder / f"{sample_id}.png", folder / f"{sample_id}_baseline.png"
            write_png16(cut(image, square, settings), path)
            write_png16(cut(image, baseline, settings), baseline_path)
            result |= {"path": str(path), "baseline_path": str(baseline_path),
                       "baseline_box": _text(baseline), "baseline_side": side}
        out.append(result)
    return out, failed


def _report_dropped(sample_ids: list[str]) -> None:
    if sample_ids:
        log.warning("dropped %d lesion(s) with no baseline patch (no square of the patch's size "
                    "beside it lies inside the breast and clear of every lesion, as the study "
                    "required): %s%s", len(sample_ids), ", ".join(sample_ids[:10]),
                    " ..." if len(sample_ids) > 10 else "")


def _text(box: Box) -> str:
    return ",".join(map(str, box))


def _key(tree: DicomTree, lesions: pd.DataFrame, settings: PatchSettings) -> str:
    """A hash of what the patches depend on (see the module docstring)."""
    digest = hashlib.sha256(json.dumps(settings.as_dict(), sort_keys=True).encode())
    digest.update(str(tree.root.resolve()).encode())
    listed = [tree.root / name for name in CSV_FILES.values()]
    for column in ("image_path", "mask_path", "crop_path"):
        listed += [tree.literal(p) or Path(p) for p in lesions[column]]
    for path in listed:
        try:
            stat = path.stat()
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
    digest.update("\n".join(lesions["sample_id"]).encode())
    return digest.hexdigest()[:16]
