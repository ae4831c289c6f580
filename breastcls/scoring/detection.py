"""Scoring a detector on a split: COCO mAP, FROC, image-level results, files and a plot.

Writes ``<split>_ground_truth_coco.json`` and ``<split>_predictions_coco.json`` (COCO results,
which pycocotools' COCOeval scores as they are), ``<split>_image_level.csv`` (per image: truth,
top box, calls), ``<split>_boxes.png`` and returns the metrics ``metrics.json`` holds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

from breastcls.analysis.bootstrap import stratified_resamples
from breastcls.data.coco import CocoImage, coco_dict, write_coco_results

FROC_RATES = (0.5, 1.0, 2.0, 4.0)


@torch.no_grad()
def predict_split(model: torch.nn.Module, loader: Any) -> tuple[list[dict], list[dict], list]:
    """Detections, targets and images of every batch, in loader order (CPU tensors)."""
    model.eval()
    found, targets, images = [], [], []
    for batch in loader:
        found += [{k: v.cpu() for k, v in d.items()} for d in model(batch["image"])]
        targets += batch["targets"]
        images += batch["image"]
    return found, targets, images


def froc(found: Sequence[dict], targets: Sequence[dict], iou: float = 0.5,
         rates: Sequence[float] = FROC_RATES) -> dict[str, float]:
    """Lesion sensitivity at ``rates`` false positives per image (class-agnostic; a detection
    hits a lesion at IoU >= ``iou``, each lesion counted once)."""
    scores, hits = [], []
    lesions = sum(len(t["boxes"]) for t in targets)
    for d, t in zip(found, targets, strict=True):
        order = d["scores"].argsort(descending=True)
        taken = torch.zeros(len(t["boxes"]), dtype=torch.bool)
        overlap = box_iou(d["boxes"][order], t["boxes"]) if len(t["boxes"]) else None
        for k, i in enumerate(order):
            hit = False
            if overlap is not None:
                free = overlap[k].clone()
                free[taken] = 0
                j = int(free.argmax())
                if free[j] >= iou:
                    taken[j], hit = True, True
            scores.append(float(d["scores"][i]))
            hits.append(hit)
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits_sorted = np.asarray(hits, dtype=bool)[order]
    tp, fp = np.cumsum(hits_sorted), np.cumsum(~hits_sorted) / max(len(targets), 1)
    out = {}
    for rate in rates:
        within = np.flatnonzero(fp <= rate)
        out[f"froc_sens@{rate:g}fp"] = float(tp[within[-1]] / lesions) if len(within) and lesions \
            else 0.0
    return out


def image_level(found: Sequence[dict], targets: Sequence[dict], labels: Sequence[int],
                class_names: Sequence[str], threshold: float) -> pd.DataFrame:
    """Per image: true class (0 no lesion, 1 + box class), the top box's class and score and
    the call (no lesion when the top score is under ``threshold``)."""
    rows = []
    for d, label in zip(found, labels, strict=True):
        top = int(d["scores"].argmax()) if len(d["scores"]) else None
        score = float(d["scores"][top]) if top is not None else 0.0
        called = 1 + int(d["labels"][top]) if top is not None and score >= threshold else 0
        rows.append({"true": int(label), "top_score": score, "predicted": called})
    table = pd.DataFrame(rows)
    names = ["no_lesion", *class_names]
    table["true_name"] = [names[i] for i in table["true"]]
    table["predicted_name"] = [names[i] for i in table["predicted"]]
    return table


def _rates(truth: np.ndarray, called: np.ndarray) -> np.ndarray:
    """Accuracy, sensitivity, specificity per row of boolean (rows, N) arrays."""
    tp, tn = (truth & called).sum(-1), (~truth & ~called).sum(-1)
    pos, neg = truth.sum(-1), (~truth).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([(tp + tn) / truth.shape[-1], tp / pos, tn / neg], -1)


def screening(table: pd.DataFrame, positive: int | None, n_resamples: int = 1000,
              seed: int = 0) -> dict[str, Any]:
    """Lesion present (``positive`` None) or ``positive`` class vs the rest: the 2x2 table
    and accuracy / sensitivity / specificity with 95 % bootstrap CIs over images."""
    if positive is None:
        truth, called = table["true"].to_numpy() > 0, table["predicted"].to_numpy() > 0
    else:
        truth = table["true"].to_numpy() == positive
        called = table["predicted"].to_numpy() == positive
    rows = stratified_resamples(truth.astype(int), n_resamples, seed)
    values, draws = _rates(truth, called), _rates(truth[rows], called[rows])
    # rows: truly positive / negative; columns: called positive / negative (the study's layout)
    out: dict[str, Any] = {"confusion": [[int((truth & c).sum()), int((truth & ~c).sum())]
                                         for truth in (truth, ~truth) for c in (called,)]}
    for k, name in enumerate(("accuracy", "sensitivity", "specificity")):
        low, high = np.nanpercentile(draws[:, k], [2.5, 97.5])
        out[name] = float(values[k])
        out[f"{name}_ci"] = [float(low), float(high)]
    return out


def plot_boxes(images: Sequence[torch.Tensor], found: Sequence[dict], targets: Sequence[dict],
               path: Path, count: int = 8, threshold: float = 0.5) -> Path:
    """The first ``count`` images: true boxes green, predictions over ``threshold`` red."""
    count = min(count, len(images))
    fig = Figure(figsize=(3 * min(count, 4), 3 * ((count + 3) // 4)), layout="constrained")
    for i, ax in enumerate(fig.subplots((count + 3) // 4, min(count, 4), squeeze=False).flat):
        ax.axis("off")
        if i >= count:
            continue
        ax.imshow(images[i].permute(1, 2, 0).clamp(0, 1).numpy(), cmap="gray")
        for boxes, colour in ((targets[i]["boxes"], "lime"),
                              (found[i]["boxes"][found[i]["scores"] >= threshold], "red")):
            for x0, y0, x1, y1 in boxes.tolist():
                ax.add_patch(_rect(x0, y0, x1, y1, colour))
    fig.savefig(path, dpi=80)
    return path


def _rect(x0: float, y0: float, x1: float, y1: float, colour: str) -> Any:
    from matplotlib.patches import Rectangle
    return Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour, linewidth=1.2)


def evaluate_detection(model: torch.nn.Module, datamodule: Any, splits: Sequence[str],
                       output_dir: Path, info: dict[str, Any], threshold: float = 0.5
                       ) -> dict[str, Any]:
    """Score ``splits`` (those the data has); metrics.json and the files above in
    ``output_dir``; returns ``{"test/map": ...}``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    if getattr(datamodule, "split_table", None) is not None:  # data.split.file= reuses it
        datamodule.split_table.to_csv(output_dir / "splits.csv", index=False)
    names = list(model.hparams.class_names)
    metrics: dict[str, Any] = {}
    for split in (s for s in splits if s in datamodule.datasets):
        found, targets, images = predict_split(model, datamodule.eval_dataloader(split))
        result = mean_average_precision(found, targets, names)
        metrics.update({f"{split}/{k}": v for k, v in result.items()})
        metrics.update({f"{split}/{k}": v for k, v in froc(found, targets).items()})
        labels = datamodule.dataset(split).labels.tolist()
        table = image_level(found, targets, labels, names, threshold)
        table.insert(0, "sample_id", datamodule.dataset(split).sample_ids)
        table.to_csv(output_dir / f"{split}_image_level.csv", index=False)
        metrics[f"{split}/lesion"] = screening(table, None)
        metrics[f"{split}/{names[-1]}_vs_rest"] = screening(table, len(names))
        write_predictions(output_dir, split, found, targets, images, names)
        if split == "test":
            plot_boxes(images, found, targets, output_dir / "test_boxes.png", threshold=threshold)
    (output_dir / "metrics.json").write_text(json.dumps({**metrics, "info": info}, indent=2,
                                                        default=str))
    return metrics


def mean_average_precision(found: Sequence[dict], targets: Sequence[dict],
                           names: Sequence[str]) -> dict[str, float]:
    """COCO mAP, mAP@0.5, mAP@0.75 and ``ap_<name>`` per box class (0-based labels index
    ``names``); a class absent from both truth and detections has AP -1, as in COCO."""
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True,
                                  backend="pycocotools")
    metric.update(list(found), list(targets))
    result = metric.compute()
    out = {k: float(result[k]) for k in ("map", "map_50", "map_75")}
    classes = result["classes"].reshape(-1).tolist()
    for c, ap in zip(classes, result["map_per_class"].reshape(-1).tolist(), strict=True):
        out[f"ap_{names[int(c)]}"] = float(ap)
    return out


def write_predictions(folder: Path, split: str, found: Sequence[dict], targets: Sequence[dict],
                      images: Sequence[torch.Tensor], names: Sequence[str]) -> None:
    """Ground truth (image ids 1..N in loader order) and detections as COCO files."""
    truth = [CocoImage(f"{split}_{i}", int(im.shape[-1]), int(im.shape[-2]),
                       t["boxes"].numpy(), t["labels"].tolist())
             for i, (im, t) in enumerate(zip(images, targets, strict=True))]
    (folder / f"{split}_ground_truth_coco.json").write_text(json.dumps(coco_dict(truth, names)))
    write_coco_results(folder / f"{split}_predictions_coco.json",
                       list(range(1, len(found) + 1)),
                       [{k: d[k].numpy() for k in ("boxes", "labels", "scores")} for d in found])
