"""Image similarity for the duplicate audit: perceptual hashes (dHash, pHash), their Hamming
distances by popcount, pixel correlations and exact-pixel groups, each over a stack of images."""

from __future__ import annotations

from dataclasses import dataclass

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


def packed_hashes(bits: np.ndarray) -> np.ndarray:
    """Hash bits ``(N, B)`` packed into ``(N, ceil(B / 64))`` uint64 words, for popcounts."""
    packed = np.packbits(np.asarray(bits, dtype=bool), axis=1)
    packed = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))
    return np.ascontiguousarray(packed).view(np.uint64)


def hamming_to(packed: np.ndarray, rows: slice) -> np.ndarray:
    """Hamming distances ``(rows, N)`` from the hashes of ``rows`` to every hash."""
    diff = np.bitwise_count(packed[rows, None, :] ^ packed[None, :, :])
    return diff.sum(axis=-1, dtype=np.int64) if diff.shape[-1] > 1 else diff[..., 0]


def unit_pixels(images: np.ndarray) -> np.ndarray:
    """Pixels centred and scaled to unit norm per image: their dot products are Pearson
    correlations (0 where an image is constant)."""
    x = _gray(images).reshape(len(images), -1).astype(np.float64)
    x -= x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def exact_groups(images: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(np.asarray(images).reshape(len(images), -1))
    _, inverse = np.unique(flat, axis=0, return_inverse=True)
    return inverse.reshape(-1)


@dataclass
class PairSearch:
    """The duplicate tests of one block of rows against every later image."""

    exact_ids: np.ndarray
    hashes: np.ndarray
    pixels: np.ndarray
    max_hamming: int | None
    min_correlation: float | None
    rule: str
    dense_correlation: bool
    candidate_hamming: int

    def block(self, rows: slice) -> tuple[np.ndarray, ...]:
        """``(a, b, hamming, correlation, exact)`` of the pairs ``a < b`` with ``a`` in rows."""
        n = len(self.exact_ids)
        ids = np.arange(rows.start, rows.stop)
        hamming = hamming_to(self.hashes, rows)
        later = np.arange(n)[None, :] > ids[:, None]
        exact = self.exact_ids[ids, None] == self.exact_ids[None, :]
        if self.dense_correlation:
            corr = self.pixels[rows] @ self.pixels.T
            i, j = np.nonzero(later & (exact | self.near(hamming, corr)))
            return ids[i], j, hamming[i, j], corr[i, j], exact[i, j]
        radius = max(self.candidate_hamming, self.max_hamming or 0)
        i, j = np.nonzero(later & (exact | (hamming <= radius)))
        corr = np.einsum("ij,ij->i", self.pixels[ids[i]], self.pixels[j])
        keep = exact[i, j] | self.near(hamming[i, j], corr)
        i, j, corr = i[keep], j[keep], corr[keep]
        return ids[i], j, hamming[i, j], corr, exact[i, j]

    def near(self, hamming: np.ndarray, corr: np.ndarray) -> np.ndarray:
        tests = []
        if self.max_hamming is not None:
            tests.append(hamming <= self.max_hamming)
        if self.min_correlation is not None:
            tests.append(corr >= self.min_correlation)
        if not tests:
            return np.zeros(hamming.shape, dtype=bool)
        return np.logical_or.reduce(tests) if self.rule == "or" else np.logical_and.reduce(tests)
