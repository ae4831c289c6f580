"""ONNX export of a trained classifier.

    python -m breastcls.export ckpt_path=.../checkpoints/epoch_012.ckpt output=model.onnx

The graph takes ``image``: float32 (batch, C, H, W), already normalised as the data module does
((x/255 - mean) / std), with a dynamic batch axis. It returns ``probs`` (softmax over the classes,
the default) or ``logits`` (``outputs=logits``). Threshold, positive class, class names and the
normalisation are stored as metadata properties of the model.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import onnx
import torch
from omegaconf import DictConfig
from torch import nn

from breastcls.evaluation import load_checkpoint
from breastcls.predict import input_channels, run_config

log = logging.getLogger(__name__)


class _Probabilities(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image).softmax(dim=1)


def export_onnx(model: nn.Module, output: str | Path, input_shape: tuple[int, int, int],
                outputs: str = "probs", opset: int | None = None,
                metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (eval mode, on CPU) to ``output``; returns the path."""
    if outputs not in ("probs", "logits"):
        raise ValueError(f"outputs must be 'probs' or 'logits', got {outputs!r}")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu").eval()
    graph = (_Probabilities(model) if outputs == "probs" else model).eval()
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
               outputs: str = "probs", batch: int = 3, atol: float = 1e-4) -> float:
    """Largest absolute difference between ONNX Runtime and PyTorch on random images."""
    import onnxruntime as ort

    x = torch.randn(batch, *input_shape)
    with torch.no_grad():
        expected = model.to("cpu").eval()(x)
        if outputs == "probs":
            expected = expected.softmax(dim=1)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    diff = float(np.abs(got - expected.numpy()).max())
    if diff > atol:
        raise AssertionError(f"ONNX Runtime differs from PyTorch by {diff:.2e} (> {atol})")
    return diff


def export(cfg: DictConfig) -> Path:
    model, info = load_checkpoint(cfg.ckpt_path, cfg.module_class)
    data_cfg: Any = (run_config(cfg.ckpt_path) or {}).get("data", {})
    size = int(cfg.image_size or data_cfg.get("size") or 28)
    shape = (input_channels(model), size, size)
    normalize = data_cfg.get("normalize") or {"mean": [0.5], "std": [0.5]}
    metadata = {"outputs": cfg.outputs, "input_shape": list(shape),
                "threshold": model.hparams.get("threshold", 0.5),
                "positive_class": model.hparams.positive_class,
                "normalize": {k: list(v) for k, v in normalize.items()},
                "checkpoint": info["checkpoint"]}
    path = export_onnx(model, cfg.output, shape, cfg.outputs, cfg.opset, metadata)
    if cfg.check:
        log.info("ONNX Runtime vs PyTorch: max |diff| %.2e",
                 check_onnx(path, model, shape, cfg.outputs))
    log.info("Wrote %s (input 'image' %s, output '%s')", path, shape, cfg.outputs)
    return path


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
