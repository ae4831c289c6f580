"""Exact and near-duplicate images within and across data splits.

A pair is an exact duplicate when its pixels are identical, and a near duplicate when its
perceptual hashes differ in at most ``max_hamming`` bits and/or (``rule``) its pixels correlate
at ``min_correlation`` or more. Pearson correlation ignores brightness and contrast changes; the
hash tolerates small shifts and noise. Either criterion is switched off with ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from rich.table import Table
from scipy.fft import dct

HASHES = ("dhash", "phash")
PAIR_COLUMNS = ["split_a", "index_a", "label_a", "split_b", "index_b", "label_b", "scope", "kind",
                "hamming", "correlation", "labels_disagree"]


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


def _exact_groups(images: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(np.asarray(images).reshape(len(images), -1))
    _, inverse = np.unique(flat, axis=0, return_inverse=True)
    return inverse.reshape(-1)


def find_duplicates(splits: Mapping[str, tuple[np.ndarray, np.ndarray]], hash: str = "dhash",
                    hash_size: int = 8, max_hamming: int | None = 8,
                    min_correlation: float | None = 0.95, rule: str = "or") -> pd.DataFrame:
    """All duplicate pairs among ``{split: (images, labels)}``, one row per pair (``PAIR_COLUMNS``).

    Split pairs follow the mapping's order (train before test); within a split ``index_a <
    index_b``. Indices are positions within their split, as in the data module.
    """
    if hash not in HASHES:
        raise ValueError(f"unknown hash {hash!r}; choose one of {HASHES}")
    if rule not in ("or", "and"):
        raise ValueError(f"rule must be 'or' or 'and', got {rule!r}")
    names = list(splits)
    images = np.concatenate([np.asarray(splits[s][0]) for s in names])
    labels = np.concatenate([np.asarray(splits[s][1]).reshape(-1) for s in names])
    split_id = np.concatenate([np.full(len(splits[s][0]), i) for i, s in enumerate(names)])
    local = np.concatenate([np.arange(len(splits[s][0])) for s in names])

    exact_ids = _exact_groups(images)
    exact = exact_ids[:, None] == exact_ids[None, :]
    hamming = hamming_matrix((dhash if hash == "dhash" else phash)(images, hash_size))
    corr = correlation_matrix(images)
    tests = []
    if max_hamming is not None:
        tests.append(hamming <= max_hamming)
    if min_correlation is not None:
        tests.append(corr >= min_correlation)
    if tests:
        near = np.logical_or.reduce(tests) if rule == "or" else np.logical_and.reduce(tests)
    else:
        near = np.zeros_like(exact)
    a, b = np.nonzero(np.triu(exact | near, k=1))
    # Order each pair by split so that across-split pairs read train -> val -> test.
    swap = split_id[a] > split_id[b]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    pairs = pd.DataFrame({
        "split_a": [names[i] for i in split_id[a]], "index_a": local[a], "label_a": labels[a],
        "split_b": [names[i] for i in split_id[b]], "index_b": local[b], "label_b": labels[b],
        "scope": np.where(split_id[a] == split_id[b], "within", "across"),
        "kind": np.where(exact[a, b], "exact", "near"),
        "hamming": hamming[a, b], "correlation": np.round(corr[a, b], 6),
        "labels_disagree": labels[a] != labels[b],
    }, columns=PAIR_COLUMNS)
    order = {s: i for i, s in enumerate(names)}
    return pairs.sort_values(["split_a", "split_b", "index_a", "index_b"],
                             key=lambda c: c.map(order) if c.name.startswith("split") else c,
                             ignore_index=True)


def flag_split(pairs: pd.DataFrame, splits: Mapping[str, tuple[np.ndarray, np.ndarray]],
               query: str = "test", references: Sequence[str] = ("train", "val")) -> pd.DataFrame:
    """Images of ``query`` with a duplicate in any of ``references``, one row per image."""
    rows: dict[int, list[tuple[str, int, int, float, bool]]] = {}
    for p in pairs.itertuples(index=False):
        for q_split, q_idx, r_split, r_idx, r_label in (
                (p.split_a, p.index_a, p.split_b, p.index_b, p.label_b),
                (p.split_b, p.index_b, p.split_a, p.index_a, p.label_a)):
            if q_split == query and r_split in references:
                rows.setdefault(int(q_idx), []).append(
                    (r_split, int(r_idx), int(r_label), float(p.correlation), p.labels_disagree))
    labels = np.asarray(splits[query][1]).reshape(-1)
    records = [{
        "index": idx, "label": int(labels[idx]), "n_matches": len(matches),
        "matches": ";".join(f"{s}/{i}" for s, i, *_ in matches),
        "match_labels": ";".join(str(lab) for _, _, lab, *_ in matches),
        "max_correlation": max(c for *_, c, _ in matches),
        "any_label_disagrees": any(d for *_, d in matches),
    } for idx, matches in sorted(rows.items())]
    return pd.DataFrame(records, columns=["index", "label", "n_matches", "matches", "match_labels",
                                          "max_correlation", "any_label_disagrees"])


@dataclass
class AuditResult:
    pairs: pd.DataFrame
    flagged: pd.DataFrame
    split_sizes: dict[str, int]
    query: str
    references: tuple[str, ...]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"train-test": {"exact": .., "near": .., "labels_disagree": ..}, ...}``"""
        out = {}
        names = list(self.split_sizes)
        for s1, s2 in combinations_with_replacement(names, 2):
            sel = self.pairs[(self.pairs.split_a == s1) & (self.pairs.split_b == s2)]
            out[f"{s1}-{s2}"] = {"exact": int((sel.kind == "exact").sum()),
                                 "near": int((sel.kind == "near").sum()),
                                 "labels_disagree": int(sel.labels_disagree.sum())}
        return out

    def images_involved(self) -> int:
        keys = set(zip(self.pairs.split_a, self.pairs.index_a, strict=True))
        return len(keys | set(zip(self.pairs.split_b, self.pairs.index_b, strict=True)))

    def table(self) -> Table:
        table = Table(title=f"Duplicate audit ({sum(self.split_sizes.values())} images)",
                      padding=(0, 1), pad_edge=False)
        for name in ("splits", "scope", "exact", "near", "all", "labels disagree"):
            table.add_column(name, justify="left" if name in ("splits", "scope") else "right")
        for key, c in self.counts().items():
            s1, s2 = key.split("-")
            table.add_row(key, "within" if s1 == s2 else "across", str(c["exact"]),
                          str(c["near"]), str(c["exact"] + c["near"]), str(c["labels_disagree"]))
        table.caption = (f"{len(self.pairs)} pairs over {self.images_involved()} images; "
                         f"{len(self.flagged)}/{self.split_sizes[self.query]} {self.query} images "
                         f"have a duplicate in {'+'.join(self.references)} "
                         f"({int(self.flagged.any_label_disagrees.sum())} with a different label)")
        return table

    def save(self, output_dir: Path) -> tuple[Path, Path]:
        output_dir.mkdir(parents=True, exist_ok=True)
        pairs_path = output_dir / "pairs.csv"
        flagged_path = output_dir / f"{self.query}_with_{self.references[0]}_duplicate.csv"
        self.pairs.to_csv(pairs_path, index=False)
        self.flagged.to_csv(flagged_path, index=False)
        return pairs_path, flagged_path


def run_audit(splits: Mapping[str, tuple[np.ndarray, np.ndarray]], query: str = "test",
              references: Sequence[str] = ("train", "val"), **criteria: Any) -> AuditResult:
    """Pairs plus the ``query`` images that have a duplicate in ``references``."""
    missing = [s for s in (query, *references) if s not in splits]
    if missing:
        raise ValueError(f"splits {missing} are not in the data (have {list(splits)})")
    pairs = find_duplicates(splits, **criteria)
    return AuditResult(pairs, flag_split(pairs, splits, query, references),
                       {s: len(v[0]) for s, v in splits.items()}, query, tuple(references))
