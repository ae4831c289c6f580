"""ONNX export of a trained classifier.

    python -m breastcls.export ckpt_path=.../checkpoints/epoch_012.ckpt output=model.onnx

The graph takes ``image``: float32 (batch, C, H, W), already normalised as the data module does
((x/255 - mean) / std), with a dynamic batch axis. It returns ``probs`` (softmax over the classes,
the default) or ``logits`` (``outputs=logits``). ``probs`` are averaged over the test-time flips
the checkpoint's threshold was chosen with (``tta``; ``tta=[]`` for none). H and W are the side
the network was trained on (``data.resize`` if set, else ``data.size``). Threshold, positive
class, test-time flips and the normalisation are stored as metadata properties of the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import onnx
import torch
from omegaconf import DictConfig
from torch import nn

from breastcls.checkpoints import load_checkpoint
from breastcls.models.classifier import class_probabilities, tta_views
from breastcls.predict import input_channels
from breastcls.runs import default_tta, run_data_config, stored_tta

log = logging.getLogger(__name__)


class _Probabilities(nn.Module):
    """Softmax probabilities, averaged over the image and its ``tta`` flips."""

    def __init__(self, model: nn.Module, tta: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        self.tta = tta_views(tta)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return class_probabilities(self.model, image, self.tta)


def export_onnx(model: nn.Module, output: str | Path, input_shape: tuple[int, int, int],
                outputs: str = "probs", opset: int | None = None,
                metadata: Mapping[str, Any] | None = None,
                tta: Sequence[str] | None = None) -> Path:
    """Write ``model`` (eval mode, on CPU) to ``output``; returns the path. ``tta``: flips
    averaged inside the graph (``outputs="probs"`` only)."""
    if outputs not in ("probs", "logits"):
        raise ValueError(f"outputs must be 'probs' or 'logits', got {outputs!r}")
    if tta_views(tta) and outputs != "probs":
        raise ValueError(f"tta={tta_views(tta)} averages probabilities: export outputs=probs, "
                         "or tta=[] for logits of the image alone")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    graph = (_Probabilities(model, tta) if outputs == "probs" else model).eval()
    example = torch.zeros(2, *input_shape)  # batch 2: a batch of 1 could be specialised away
    torch.onnx.export(
        graph, (example,), str(output), input_names=["image"], output_names=[outputs],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset, dynamo=True, external_data=False, verbose=False)
    if metadata:
        proto = onnx.load(str(output))
        onnx.helper.set_model_props(proto, {k: json.dumps(v) for k, v in metadata.items()})
        onnx.save(proto, str(output))
    return output


def check_onnx(path: str | Path, model: nn.Module, input_shape: tuple[int, int, int],
               outputs: str = "probs", batch: int = 3, atol: float = 1e-4,
               tta: Sequence[str] | None = None) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch on random images."""
    import onnxruntime as ort

    x = torch.randn(batch, *input_shape)
    with torch.no_grad():
        model = model.to("cpu").eval()
        expected = class_probabilities(model, x, tta) if outputs == "probs" else model(x)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    diff = float(np.abs(got - expected.numpy()).max())
    if diff > atol:
        raise AssertionError(f"ONNX Runtime differs from PyTorch by {diff:.2e} (> {atol})")
    return diff


def export(cfg: DictConfig) -> Path:
    model, info = load_checkpoint(cfg.ckpt_path, cfg.module_class)
    data_cfg = run_data_config(cfg.ckpt_path, "export", [
        (cfg.image_size, "28 x 28 inputs (image_size=...)"),
        (cfg.get("normalize"), "mean 0.5, std 0.5 in the metadata (normalize=...)")])
    # The graph takes the images the network saw: data.resize's side when training upsampled.
    size = int(cfg.image_size or data_cfg.get("resize") or data_cfg.get("size")
               or data_cfg.get("image_size") or 28)
    shape = (input_channels(model), size, size)
    normalize = cfg.get("normalize") or data_cfg.get("normalize") or {"mean": [0.5], "std": [0.5]}
    if cfg.outputs == "probs":
        tta = tta_views(default_tta(cfg.get("tta"), model, "export"))
    else:  # export_onnx refuses flips with logits
        tta = tta_views(cfg.get("tta"))
        if stored_tta(model):
            log.warning("export: the checkpoint's threshold was chosen on probabilities averaged "
                        "over %s, which logits output cannot include: average the softmax of "
                        "the flipped images yourself before applying it (metadata threshold_tta)",
                        stored_tta(model))
    metadata = {"outputs": cfg.outputs, "input_shape": list(shape),
                "threshold": model.hparams.get("threshold", 0.5),
                "positive_class": model.hparams.positive_class,
                "normalize": {k: list(v) for k, v in normalize.items()},
                # flips averaged inside the graph; threshold_tta: those the threshold assumes
                "tta": tta, "threshold_tta": stored_tta(model),
                "checkpoint": info["checkpoint"]}
    path = export_onnx(model, cfg.output, shape, cfg.outputs, cfg.opset, metadata, tta)
    if cfg.check:
        log.info("ONNX Runtime vs PyTorch: max |diff| %.2e",
                 check_onnx(path, model, shape, cfg.outputs, tta=tta))
    log.info("Wrote %s (input 'image' %s, output '%s'%s)", path, shape, cfg.outputs,
             f", averaged over {tta}" if tta else "")
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
