"""Image similarity for the duplicate audit: perceptual hashes (dHash, pHash), their Hamming
distances, pixel correlations and exact-pixel groups, each over a stack of images."""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.fft import dct


def _gray(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 4:  # (N, H, W, C) colour: hash the luminance-like mean
        images = images.mean(axis=-1)
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {images.shape}")
    return images.astype(np.float32)


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    resized = Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(resized)


def dhash(images: np.ndarray, hash_size: int = 8) -> np.ndarray:
    """Difference hash: signs of horizontal gradients of a (hash_size+1, hash_size) thumbnail."""
    small = np.stack([_resize(im, hash_size + 1, hash_size) for im in _gray(images)])
    return (small[:, :, 1:] > small[:, :, :-1]).reshape(len(small), -1)


def phash(images: np.ndarray, hash_size: int = 8, highfreq_factor: int = 4) -> np.ndarray:
    """DCT hash: low-frequency DCT coefficients above their median."""
    side = hash_size * highfreq_factor
    small = np.stack([_resize(im, side, side) for im in _gray(images)])
    coeffs = dct(dct(small, axis=1, norm="ortho"), axis=2, norm="ortho")[:, :hash_size, :hash_size]
    flat = coeffs.reshape(len(small), -1)
    return flat > np.median(flat, axis=1, keepdims=True)


def hamming_matrix(bits: np.ndarray) -> np.ndarray:
    b = bits.astype(np.float32)
    return np.rint(b @ (1 - b).T + (1 - b) @ b.T).astype(np.int64)


def correlation_matrix(images: np.ndarray) -> np.ndarray:
    """Pearson correlation of the pixels of every pair; 0 where an image is constant."""
    x = _gray(images).reshape(len(images), -1).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)
    return x @ x.T


def exact_groups(images: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(np.asarray(images).reshape(len(images), -1))
    _, inverse = np.unique(flat, axis=0, return_inverse=True)
    return inverse.reshape(-1)
