"""Class probabilities for new images from a trained checkpoint.

    python -m breastcls.predict ckpt_path=.../checkpoints/epoch_012.ckpt input=images/ \
        output=predictions.csv [tta=[hflip]]

``input`` is a folder of PNG/JPEG files or an ``.npz`` (key ``images``, or ``<split>_images``
with ``split=...``). Images are converted to the model's channels, resized to the training size
and normalised as the data module does; labels are called at the model's stored threshold
(or ``threshold=...``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from PIL import Image
from rich.progress import track
from torch import nn

from breastcls.checkpoints import load_checkpoint
from breastcls.config import set_threads
from breastcls.data.arrays import build_transform, upsample
from breastcls.data.cache import Preprocessing, preprocess
from breastcls.data.readers import DataError, read_image
from breastcls.metrics import predict_labels
from breastcls.models.classifier import class_probabilities
from breastcls.runs import default_tta, run_data_config

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DICOM_SUFFIXES = (".dcm", ".dicom")
INTERPOLATIONS = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
                  "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def input_channels(model: nn.Module) -> int:
    backbone = model.hparams.get("backbone", {}) if hasattr(model, "hparams") else {}
    if "in_channels" in backbone:
        return int(backbone["in_channels"])
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return first_conv.in_channels


def _resize(image: Image.Image, size: int | None, interpolation: str) -> Image.Image:
    if size is None or image.size == (size, size):
        return image
    return image.resize((size, size), INTERPOLATIONS[interpolation])


def _to_array(images: list[Image.Image], channels: int) -> np.ndarray:
    """(N, C, H, W) uint8."""
    mode = "L" if channels == 1 else "RGB"
    arrays = [np.asarray(im.convert(mode)) for im in images]
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"images differ in size ({sorted({a.shape for a in arrays})}); set "
                         "image_size=... to resize them to the size the model was trained on")
    stacked = np.stack(arrays)
    return stacked[:, None] if channels == 1 else stacked.transpose(0, 3, 1, 2)


def read_folder(folder: Path, channels: int, size: int | None, interpolation: str = "bilinear"
                ) -> tuple[np.ndarray, pd.DataFrame]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {folder}")
    images = []
    for f in files:
        with Image.open(f) as im:
            images.append(_resize(im.copy(), size, interpolation))
    return _to_array(images, channels), pd.DataFrame({"file": [f.name for f in files]})


def read_records_folder(folder: Path, settings: Preprocessing) -> tuple[np.ndarray, pd.DataFrame]:
    """Every image file of ``folder`` (PNG, JPEG, DICOM), read and resized or padded exactly as
    a record data set's cache prepares its images."""
    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in (*IMAGE_SUFFIXES, *DICOM_SUFFIXES))
    if not files:
        raise DataError(f"no PNG, JPEG or DICOM images in {folder}")
    mode = "L" if settings.channels == 1 else "RGB"
    images = [preprocess(read_image(f, mode, voi=settings.voi), settings)
              for f in track(files, description="reading", disable=len(files) < 200)]
    return np.stack(images), pd.DataFrame({"file": [f.name for f in files]})


def read_npz(path: Path, channels: int, size: int | None, split: str | None = None,
             interpolation: str = "bilinear") -> tuple[np.ndarray, pd.DataFrame]:
    prefix = f"{split}_" if split else ""
    with np.load(path) as npz:
        key = f"{prefix}images" if f"{prefix}images" in npz else None
        if key is None:
            raise KeyError(f"{path} has no '{prefix}images' array (keys: {list(npz.keys())}); "
                           "set split=train/val/test for medmnist files")
        images = npz[key]
        labels = npz[f"{prefix}labels"].reshape(-1) if f"{prefix}labels" in npz else None
    if images.dtype != np.uint8:
        raise ValueError(f"{path}:{key} holds {images.dtype}; expected uint8 images")
    pil = [Image.fromarray(im[..., 0] if im.ndim == 3 and im.shape[-1] == 1 else im)
           for im in images]
    info = pd.DataFrame({"index": np.arange(len(images))})
    if labels is not None:
        info["label"] = labels.astype(np.int64)
    return _to_array([_resize(im, size, interpolation) for im in pil], channels), info


@torch.no_grad()
def predict_probs(model: nn.Module, images: np.ndarray, mean: Sequence[float],
                  std: Sequence[float], tta: bool | Sequence[str] | None = None,
                  batch_size: int = 256) -> torch.Tensor:
    """Softmax probabilities for uint8 images (N, C, H, W), normalised like the data module.

    ``tta`` averages the probabilities over the image and the named flips (``True``: both).
    """
    transform = build_transform(None, mean, std, images.shape[1])
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = transform(torch.from_numpy(images[start:start + batch_size])).to(device)
        out.append(class_probabilities(model, x, tta).cpu())
    return torch.cat(out)


def predict(cfg: DictConfig) -> pd.DataFrame:
    if not cfg.get("ckpt_path") or not cfg.get("input"):
        raise ValueError("pass ckpt_path=/path/to/model.ckpt and input=<folder or .npz>")
    set_threads(cfg.get("threads"))
    model, _ = load_checkpoint(cfg.ckpt_path, cfg.module_class)
    data_cfg = run_data_config(cfg.ckpt_path, "predict", [
        (cfg.image_size, "images used at their own size (image_size=...)"),
        (cfg.get("resize") is not None, "no upsampling (resize=...)"),
        (cfg.normalize, "mean 0.5, std 0.5 (normalize=...)")])
    size = cfg.image_size or data_cfg.get("size") or data_cfg.get("image_size")
    normalize = cfg.normalize or data_cfg.get("normalize") or {"mean": [0.5], "std": [0.5]}
    threshold = cfg.get("threshold")
    tta = default_tta(cfg.tta, model, "predict", threshold_is_stored=threshold is None)
    channels = input_channels(model)
    source = Path(cfg.input)
    if source.is_dir() and "image_size" in data_cfg:  # a record data set: its readers and cache
        images, info = read_records_folder(source, Preprocessing(
            int(size), data_cfg.get("fit", "resize"), channels, data_cfg.get("voi", "auto")))
    elif source.is_dir():
        images, info = read_folder(source, channels, size, cfg.interpolation)
    elif source.suffix == ".npz":
        images, info = read_npz(source, channels, size, cfg.get("split"), cfg.interpolation)
    else:
        raise FileNotFoundError(f"input={source}: expected a folder of images or an .npz file")
    resize = cfg.resize if cfg.get("resize") is not None else data_cfg.get("resize")
    images = upsample(torch.from_numpy(images), resize).numpy()
    probs = predict_probs(model, images, list(normalize["mean"]), list(normalize["std"]),
                          tta, cfg.batch_size)
    positive = model.hparams.positive_class
    if threshold is None:
        threshold = model.hparams.get("threshold", 0.5)
    names = list(cfg.class_names or model.hparams.get("class_names")
                 or [f"class_{c}" for c in range(probs.shape[1])])
    if len(names) != probs.shape[1]:
        raise ValueError(f"class_names has {len(names)} names for {probs.shape[1]} classes")
    frame = info.copy()
    for c, name in enumerate(names):
        frame[f"prob_{name}"] = probs[:, c].numpy()
    frame["pred"] = predict_labels(probs, positive, threshold).numpy()
    if cfg.get("output"):
        output = Path(cfg.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(output, index=False, float_format="%.8f")
        log.info("Wrote %d predictions (threshold %.4g) to %s", len(frame), threshold, output)
    return frame


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    predict(cfg)


if __name__ == "__main__":
    main()
