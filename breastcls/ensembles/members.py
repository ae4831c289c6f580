"""The members of a stacking ensemble and their per-sample values, joined on one sample key.

A member is one trained run, or (``members_are=folders``) one folder of CV-fold runs pooled as
the averaging ensemble pools them: each val image from the fold that held it out (out-of-fold),
test averaged over the fold models. A meta-learner needs every member's output for every
sample, so members are joined on ``sample_id`` (``index`` when a run records no ids), and
members that scored other samples, or gave a sample another label, are refused by name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from breastcls.data.readers import DataError
from breastcls.ensemble import average_predictions, member_runs
from breastcls.scoring.predictions import Predictions, read_predictions_csv

MEMBERS_ARE = ("runs", "folders")
KEY_COLUMNS = ("index", "sample_id", "group", "label")


@dataclass(frozen=True)
class Member:
    name: str  # the run or folder, as messages and metrics.json name it
    runs: tuple[Path, ...]  # one run, or the CV-fold runs pooled into this member


@dataclass
class MemberTable:
    """One split's samples in the first member's row order, and each member's values."""

    keys: pd.DataFrame  # index, label[, sample_id][, group]
    values: list[np.ndarray]  # one (n, k) array per member, rows as in ``keys``

    def predictions(self, probs: np.ndarray) -> Predictions:
        """``probs`` (n, classes) of these samples as Predictions, with their keys."""
        optional = {k: self.keys[k].astype(str).tolist() if k in self.keys else None
                    for k in ("sample_id", "group")}
        return Predictions(torch.tensor(probs, dtype=torch.float32),
                           torch.tensor(self.keys["label"].to_numpy(), dtype=torch.long),
                           torch.tensor(self.keys["index"].to_numpy(), dtype=torch.long),
                           optional["sample_id"], optional["group"])


def stacking_members(paths: str | Sequence[str], members_are: str = "runs") -> list[Member]:
    """The members named by ``runs``: every run found (``runs``), or one per listed folder of
    fold runs (``folders``)."""
    if members_are not in MEMBERS_ARE:
        raise DataError(f"members_are={members_are!r}; choose one of {list(MEMBERS_ARE)}")
    try:
        if members_are == "runs":
            members = [Member(str(run), (run,)) for run in member_runs(paths)]
        else:
            folders = [paths] if isinstance(paths, str) else list(paths)
            members = [Member(str(folder), tuple(member_runs(folder))) for folder in folders]
    except (FileNotFoundError, ValueError) as err:
        message = str(err)
        raise DataError(message if message.startswith("runs:") else f"runs: {message}") from None
    if len(members) < 2:
        raise DataError(f"stacking needs at least 2 members, got {[m.name for m in members]} "
                        "(members_are=folders: list one folder of fold runs per member)")
    return members


def member_predictions(member: Member, split: str) -> tuple[Predictions, list[str]]:
    """The member's class probabilities of ``split`` and their class names."""
    missing = [str(r) for r in member.runs if not (r / f"{split}_predictions.csv").is_file()]
    if missing:
        raise DataError(f"no {split}_predictions.csv in {missing}; score that split "
                        "(eval_splits) in every member run")
    try:
        if len(member.runs) == 1:
            return read_predictions_csv(member.runs[0] / f"{split}_predictions.csv")
        return average_predictions(member.runs, split)
    except (KeyError, ValueError) as err:
        raise DataError(f"{member.name}: cannot read its {split} predictions: {err}") from None


def probability_table(members: Sequence[Member], split: str) -> tuple[MemberTable, list[str]]:
    """Every member's class probabilities of ``split``, joined per sample; the class names."""
    frames, class_names = [], None
    for member in members:
        predictions, names = member_predictions(member, split)
        if class_names is not None and names != class_names:
            raise DataError(f"{member.name} scored classes {names}, {members[0].name} "
                            f"{class_names}: stack runs of one task")
        class_names = names
        frame = pd.DataFrame({"index": predictions.index.numpy(),
                              "label": predictions.labels.numpy()})
        for key, values in (("sample_id", predictions.sample_ids),
                            ("group", predictions.groups)):
            if values is not None:
                frame[key] = values
        frames.append(frame.join(pd.DataFrame(predictions.probs.numpy()).add_prefix("prob_")))
    columns = [f"prob_{c}" for c in range(len(class_names))]
    table = join_members(frames, [columns] * len(frames), [m.name for m in members], split)
    return table, class_names


def feature_table(members: Sequence[Member], split: str,
                  data_overrides: Mapping[str, Any] | None = None,
                  tta: Sequence[str] | None = None) -> MemberTable:
    """Every member's penultimate-layer features of ``split`` (its best checkpoint), joined."""
    try:
        from breastcls.features import checkpoint_features
    except ImportError:
        raise DataError("inputs=features is not available in this installation "
                        "(breastcls.features is missing); use inputs=probabilities") from None
    pooled = [m.name for m in members if len(m.runs) > 1]
    if pooled:
        raise DataError(f"inputs=features needs one checkpoint per member, but {pooled} pool "
                        "several fold runs; use inputs=probabilities with members_are=folders")
    frames = [checkpoint_features(member_checkpoint(m.runs[0]), [split], data_overrides,
                                  tta)[split] for m in members]
    columns = [[c for c in f.columns if c not in KEY_COLUMNS] for f in frames]
    return join_members(frames, columns, [m.name for m in members], split)


def member_checkpoint(run: Path) -> Path:
    """The checkpoint a run was scored with (its metrics.json), found again in the run's
    ``checkpoints/`` when the run folder was moved."""
    recorded = json.loads((run / "metrics.json").read_text()).get("checkpoint")
    candidates = [Path(recorded), run / "checkpoints" / Path(recorded).name] if recorded else []
    candidates += sorted((run / "checkpoints").glob("epoch_*.ckpt"))
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DataError(f"{run}: no checkpoint to compute features with (metrics.json names "
                        f"{recorded!r}; none in {run / 'checkpoints'})")
    return found


def join_members(frames: Sequence[pd.DataFrame], value_columns: Sequence[Sequence[str]],
                 names: Sequence[str], split: str) -> MemberTable:
    """The members' rows in the first member's order (by ``index``), joined on ``sample_id``
    when every member has ids, else on ``index``; mismatched samples or labels fail."""
    key = "sample_id" if all("sample_id" in f and f["sample_id"].notna().all()
                             for f in frames) else "index"
    keyed = []
    for frame, name in zip(frames, names, strict=True):
        values = frame[key].astype(str) if key == "sample_id" else frame[key]
        repeated = values[values.duplicated()]
        if len(repeated):
            raise DataError(f"{name}: {split} lists {key} {repeated.iloc[0]!r} more than once")
        keyed.append(pd.Index(values))
    first = frames[0].sort_values("index", kind="stable")
    reference = pd.Index(first[key].astype(str) if key == "sample_id" else first[key])
    aligned = []
    for frame, keys, name in zip(frames, keyed, names, strict=True):
        rows = keys.get_indexer(reference)
        if (rows < 0).any() or len(keys) != len(reference):
            lacking = reference[rows < 0].tolist()
            extra = keys.difference(reference).tolist()
            raise DataError(
                f"the members scored different {split} samples: {name} has {len(keys)}, "
                f"{names[0]} has {len(reference)}; {name} lacks {len(lacking)} ({key} "
                f"{lacking[:3]}) and adds {len(extra)} ({extra[:3]}); stack runs trained "
                "and scored on the same data and split")
        labels = frame["label"].to_numpy()[rows]
        differ = np.flatnonzero(labels != first["label"].to_numpy())
        if len(differ):
            raise DataError(f"{name} labels {split} {key} {reference[differ[0]]!r} "
                            f"{labels[differ[0]]}, {names[0]} {first['label'].iloc[differ[0]]}: "
                            "the members were trained on different data")
        aligned.append(frame[list(value_columns[len(aligned)])].to_numpy(np.float64)[rows])
    keys = first[[c for c in KEY_COLUMNS if c in first]].reset_index(drop=True)
    return MemberTable(keys, aligned)
