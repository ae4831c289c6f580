"""Grad-CAM heat maps (pytorch-grad-cam) over the images a classifier saw."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from breastcls.data.arrays import ArrayDataset
from breastcls.metrics import predict_labels


def target_layer_candidates(model: nn.Module) -> list[nn.Module]:
    """Layers worth explaining, best first: a ResNet's ``layer4``; the last stage of timm's
    ``feature_info`` (ConvNeXt ``stages.3``, EfficientNet ``blocks.6``, ...); the last
    ``nn.Conv2d``."""
    backbone = getattr(model, "backbone", model)
    candidates: list[nn.Module] = []
    if isinstance(getattr(backbone, "layer4", None), nn.Module):
        candidates.append(backbone.layer4)
    feature_info = getattr(backbone, "feature_info", None)
    if isinstance(feature_info, list) and feature_info and isinstance(feature_info[-1], dict):
        with contextlib.suppress(AttributeError, KeyError):
            candidates.append(backbone.get_submodule(feature_info[-1]["module"]))
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if convs:
        candidates.append(convs[-1])
    return list({id(m): m for m in candidates}.values())


def default_target_layer(model: nn.Module, inputs: torch.Tensor | None = None
                         ) -> nn.Module | None:
    """The last convolutional stage of the backbone, or ``None`` when it has none.

    With example ``inputs``, only a layer whose output is a 4-D feature map (N, C, H, W) is
    taken: a transformer block's tokens cannot be drawn as a heat map.
    """
    candidates = target_layer_candidates(model)
    if inputs is None or not candidates:
        return candidates[0] if candidates else None
    shapes: dict[int, tuple[int, ...]] = {}

    def record(module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            shapes[id(module)] = tuple(output.shape)

    hooks = [m.register_forward_hook(record) for m in candidates]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(inputs[:1].to(next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return next((m for m in candidates if len(shapes.get(id(m), ())) == 4), None)


def gradcam_maps(model: nn.Module, inputs: torch.Tensor, classes: Sequence[int],
                 target_layer: nn.Module | None = None) -> np.ndarray:
    """Heat maps in [0, 1] of shape (N, H, W) for the logit of ``classes[i]`` of image ``i``."""
    was_training = model.training
    model.eval()
    try:
        layer = target_layer if target_layer is not None else default_target_layer(model, inputs)
        if layer is None:
            raise ValueError(f"{type(getattr(model, 'backbone', model)).__name__} has no "
                             "convolutional stage to explain; pass target_layer explicitly")
        with GradCAM(model=model, target_layers=[layer]) as cam:
            device = next(model.parameters()).device
            return cam(inputs.to(device), [ClassifierOutputTarget(int(c)) for c in classes])
    finally:
        model.train(was_training)


def gradcam_figure(model: nn.Module, dataset: ArrayDataset, rows: Sequence[int],
                   class_names: Sequence[str], positive_class: int, threshold: float = 0.5,
                   target: str | int = "predicted", per_row: int = 4,
                   target_layer: nn.Module | None = None) -> Figure:
    """Two panels per image (the image, then its Grad-CAM overlay) for dataset ``rows``.

    ``target``: explain the ``"predicted"`` class, the ``"positive"`` class or a class index.
    """
    if not rows:
        raise ValueError("no images to explain")
    inputs = torch.stack([dataset[i]["image"] for i in rows])
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        probs = model(inputs.to(device)).float().softmax(dim=1).cpu()
    preds = predict_labels(probs, positive_class, threshold)
    if target == "predicted":
        classes = preds.tolist()
    elif target == "positive":
        classes = [positive_class] * len(rows)
    else:
        classes = [int(target)] * len(rows)
    maps = gradcam_maps(model, inputs, classes, target_layer)

    n_rows = -(-len(rows) // per_row)
    fig = Figure(figsize=(3.2 * min(per_row, len(rows)), 1.9 * n_rows), layout="constrained")
    axes = fig.subplots(n_rows, 2 * min(per_row, len(rows)), squeeze=False).reshape(-1, 2)
    for pair in axes:
        for ax in pair:
            ax.set_axis_off()
    for k, (i, cam_map) in enumerate(zip(rows, maps, strict=True)):
        raw = dataset.images[i].float().div(255)  # (C, H, W) uint8 before normalisation
        rgb = raw.expand(3, -1, -1).permute(1, 2, 0).numpy() if len(raw) == 1 else \
            raw.permute(1, 2, 0).numpy()
        image_ax, cam_ax = axes[k]
        image_ax.imshow(rgb)
        label = int(dataset.labels[i])
        image_ax.set_title(f"#{int(dataset.indices[i])} true {class_names[label]}", fontsize=7)
        cam_ax.imshow(show_cam_on_image(np.ascontiguousarray(rgb, dtype=np.float32), cam_map,
                                        use_rgb=True))
        cam_ax.set_title(f"pred {class_names[int(preds[k])]} "
                         f"p={float(probs[k, preds[k]]):.2f}\ncam: {class_names[classes[k]]}",
                         fontsize=7)
    return fig


def save_gradcam(path: str | Path, *args: Any, **kwargs: Any) -> Path:
    """``gradcam_figure(*args, **kwargs)`` written to ``path`` as PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    gradcam_figure(*args, **kwargs).savefig(path, dpi=120)
    return path
