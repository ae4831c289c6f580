"""Exact and near-duplicate images within and across data splits.

A pair is an exact duplicate when its pixels are identical, and a near duplicate when its
perceptual hashes differ in at most ``max_hamming`` bits and/or (``rule``) its pixels correlate
at ``min_correlation`` or more. Pearson correlation ignores brightness and contrast changes; the
hash tolerates small shifts and noise. Either criterion is switched off with ``None``.

Clusters are the connected components of the pairs: the groups a grouped split keeps on one side.
Record data sets pass ``samples`` (per split: the data module's ``index``, ``sample_id``, ``path``)
so that the outputs name files a user can open, by the indices ``evaluation.exclude_test`` reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.progress import track
from rich.table import Table
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from breastcls.analysis.similarity import (
    PairSearch,
    dhash,
    exact_groups,
    packed_hashes,
    phash,
    unit_pixels,
)

HASHES = ("dhash", "phash")
CORRELATION_SCOPES = ("auto", "all", "candidates")
FULL_CORRELATION_LIMIT = 20_000  # above it, auto correlates only pairs with close hashes
PAIR_COLUMNS = ["split_a", "index_a", "label_a", "split_b", "index_b", "label_b", "scope", "kind",
                "hamming", "correlation", "labels_disagree"]


def find_duplicates(splits: Mapping[str, tuple[np.ndarray, np.ndarray]], hash: str = "dhash",
                    hash_size: int = 8, max_hamming: int | None = 8,
                    min_correlation: float | None = 0.95, rule: str = "or",
                    correlation_scope: str = "auto", candidate_hamming: int = 16,
                    block_size: int = 256) -> pd.DataFrame:
    """All duplicate pairs among ``{split: (images, labels)}``, one row per pair (``PAIR_COLUMNS``).

    Split pairs follow the mapping's order (train before test); within a split ``index_a <
    index_b``. Indices are positions within their split, as in the data module.

    Hash distances are popcounts over blocks of ``block_size`` rows, so memory grows with N, not
    N². Correlations are exact for every pair (``correlation_scope=all``) or, beyond
    ``FULL_CORRELATION_LIMIT`` images under ``auto``, computed only for pairs whose hashes lie
    within ``candidate_hamming`` bits (``candidates``): the scale at which a dense correlation
    search would take hours.
    """
    if hash not in HASHES:
        raise ValueError(f"unknown hash {hash!r}; choose one of {HASHES}")
    if rule not in ("or", "and"):
        raise ValueError(f"rule must be 'or' or 'and', got {rule!r}")
    if correlation_scope not in CORRELATION_SCOPES:
        raise ValueError(f"correlation_scope={correlation_scope!r}; choose one of "
                         f"{CORRELATION_SCOPES}")
    names = list(splits)
    images = np.concatenate([np.asarray(splits[s][0]) for s in names])
    labels = np.concatenate([np.asarray(splits[s][1]).reshape(-1) for s in names])
    split_id = np.concatenate([np.full(len(splits[s][0]), i) for i, s in enumerate(names)])
    local = np.concatenate([np.arange(len(splits[s][0])) for s in names])
    n = len(images)
    if correlation_scope == "auto":
        correlation_scope = "all" if n <= FULL_CORRELATION_LIMIT else "candidates"
    search = PairSearch(exact_groups(images),
                         packed_hashes((dhash if hash == "dhash" else phash)(images, hash_size)),
                         unit_pixels(images), max_hamming, min_correlation, rule,
                         correlation_scope == "all", candidate_hamming)
    starts = range(0, n, block_size)
    found = [search.block(slice(i, min(i + block_size, n)))
             for i in track(starts, description="searching duplicates",
                            disable=n <= FULL_CORRELATION_LIMIT)]
    a, b, hamming, corr, exact = (np.concatenate(v) for v in zip(*found, strict=True)) if found \
        else (np.zeros(0, dtype=np.int64),) * 5
    # Order each pair by split so that across-split pairs read train -> val -> test.
    swap = split_id[a] > split_id[b]
    a, b = np.where(swap, b, a), np.where(swap, a, b)
    pairs = pd.DataFrame({
        "split_a": [names[i] for i in split_id[a]], "index_a": local[a], "label_a": labels[a],
        "split_b": [names[i] for i in split_id[b]], "index_b": local[b], "label_b": labels[b],
        "scope": np.where(split_id[a] == split_id[b], "within", "across"),
        "kind": np.where(exact.astype(bool), "exact", "near"),
        "hamming": hamming.astype(np.int64), "correlation": np.round(corr, 6),
        "labels_disagree": labels[a] != labels[b],
    }, columns=PAIR_COLUMNS)
    order = {s: i for i, s in enumerate(names)}
    return pairs.sort_values(["split_a", "split_b", "index_a", "index_b"],
                             key=lambda c: c.map(order) if c.name.startswith("split") else c,
                             ignore_index=True)


def _extra_columns(pairs: pd.DataFrame) -> list[str]:
    """Per-image columns beyond split, index and label (``sample_id``, ``path`` ...)."""
    return [c[:-2] for c in pairs if c.endswith("_a") and c[:-2] not in ("split", "index",
                                                                         "label")]


def flag_split(pairs: pd.DataFrame, query: str = "test",
               references: Sequence[str] = ("train", "val")) -> pd.DataFrame:
    """Images of ``query`` with a duplicate in any of ``references``, one row per image; their
    extra columns (``sample_id``, ``path``) and the matches' sample ids come along."""
    extra = _extra_columns(pairs)
    ids = ["sample_id"] if "sample_id" in extra else []
    sides = []
    for q, r in (("a", "b"), ("b", "a")):
        sel = pairs[(pairs[f"split_{q}"] == query) & pairs[f"split_{r}"].isin(references)]
        sides.append(pd.DataFrame({
            "pos": sel.index, "index": sel[f"index_{q}"], "label": sel[f"label_{q}"],
            **{c: sel[f"{c}_{q}"] for c in extra},
            "matches": sel[f"split_{r}"].astype(str) + "/" + sel[f"index_{r}"].astype(str),
            "match_labels": sel[f"label_{r}"].astype(str),
            **({"match_sample_ids": sel[f"sample_id_{r}"].astype(str)} if ids else {}),
            "max_correlation": sel.correlation, "any_label_disagrees": sel.labels_disagree}))
    long = pd.concat(sides).sort_values("pos", kind="stable")
    joined = {c: ";".join for c in ("matches", "match_labels", "match_sample_ids") if c in long}
    flagged = long.groupby("index").agg({
        "label": "first", **{c: "first" for c in extra}, "pos": "size", **joined,
        "max_correlation": "max", "any_label_disagrees": "any"}).reset_index()
    flagged = flagged.rename(columns={"pos": "n_matches"})
    columns = ["index", "label", *ids, "n_matches", "matches", "match_labels",
               *(["match_sample_ids"] if ids else []), "max_correlation",
               "any_label_disagrees", *[c for c in extra if c != "sample_id"]]
    return flagged[columns].astype({"index": int, "label": int, "n_matches": int,
                                    "max_correlation": float, "any_label_disagrees": bool})


def with_samples(pairs: pd.DataFrame, samples: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The pairs keyed by the samples' ``index`` (the data module's) instead of positions in
    the split, with the samples' other columns as ``<column>_a``/``_b``."""
    keys = pd.concat([df.reset_index(drop=True).assign(_split=s, _local=np.arange(len(df)))
                      for s, df in samples.items()], ignore_index=True)
    extra = [c for c in keys if c not in ("index", "_split", "_local", "label")]
    out = pairs.copy()
    for side in "ab":
        found = pd.DataFrame({"_split": out[f"split_{side}"], "_local": out[f"index_{side}"]})
        found = found.merge(keys, on=["_split", "_local"], how="left")
        out[f"index_{side}"] = found["index"].to_numpy()
        for column in extra:
            out[f"{column}_{side}"] = found[column].to_numpy()
    first = [c for c in ("split_a", "index_a", "sample_id_a", "label_a",
                         "split_b", "index_b", "sample_id_b", "label_b") if c in out]
    return out[first + [c for c in out if c not in first]]


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

    def clusters(self) -> pd.DataFrame:
        """One row per image that has a duplicate: its cluster (connected component of the
        pairs, numbered largest first), the cluster's size, splits and labels."""
        columns = ["split", "index", "label", *_extra_columns(self.pairs)]
        members = pd.concat([self.pairs[[f"{c}_{s}" for c in columns]].set_axis(columns, axis=1)
                             for s in "ab"]).drop_duplicates(["split", "index"], ignore_index=True)
        node = {k: i for i, k in enumerate(zip(members.split, members["index"], strict=True))}
        a = [node[k] for k in zip(self.pairs.split_a, self.pairs.index_a, strict=True)]
        b = [node[k] for k in zip(self.pairs.split_b, self.pairs.index_b, strict=True)]
        graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(node), len(node)))
        members["cluster"] = connected_components(graph, directed=False)[1]
        members = members.join(members.groupby("cluster").agg(
            size=("index", "size"), n_splits=("split", "nunique"), n_labels=("label", "nunique")),
            on="cluster")
        order = {s: i for i, s in enumerate(self.split_sizes)}
        members = members.sort_values(["size", "cluster", "split", "index"],
                                      ascending=[False, True, True, True],
                                      key=lambda c: c.map(order) if c.name == "split" else c)
        members["cluster"] = pd.factorize(members["cluster"])[0]
        head = ["cluster", "size", "n_splits", "n_labels"]
        return members[head + columns].reset_index(drop=True)

    def totals(self) -> dict[str, int]:
        """Headline numbers: pairs by kind and scope, label disagreements, clusters."""
        p, c = self.pairs, self.clusters().drop_duplicates("cluster")
        return {"images": sum(self.split_sizes.values()), "pairs": len(p),
                "exact": int((p.kind == "exact").sum()), "near": int((p.kind == "near").sum()),
                "within": int((p.scope == "within").sum()),
                "across": int((p.scope == "across").sum()),
                "labels_disagree": int(p.labels_disagree.sum()),
                "exact_labels_disagree": int((p.labels_disagree & (p.kind == "exact")).sum()),
                "images_involved": self.images_involved(), "clusters": len(c),
                "clusters_across_splits": int((c.n_splits > 1).sum()),
                "clusters_mixed_labels": int((c.n_labels > 1).sum()),
                "flagged": len(self.flagged)}

    def caption(self) -> str:
        return (f"{len(self.pairs)} pairs over {self.images_involved()} images; "
                f"{len(self.flagged)}/{self.split_sizes[self.query]} {self.query} images "
                f"have a duplicate in {'+'.join(self.references)} "
                f"({int(self.flagged.any_label_disagrees.sum())} with a different label)")

    def rows(self) -> list[tuple[str, ...]]:
        """The table's rows: one per pair of splits."""
        return [(key, "within" if key.split("-")[0] == key.split("-")[1] else "across",
                 *(str(v) for v in (c["exact"], c["near"], c["exact"] + c["near"],
                                    c["labels_disagree"]))) for key, c in self.counts().items()]

    def table(self) -> Table:
        table = Table(title=f"Duplicate audit ({sum(self.split_sizes.values())} images)",
                      padding=(0, 1), pad_edge=False, caption=self.caption())
        for name in TABLE_COLUMNS:
            table.add_column(name, justify="left" if name in ("splits", "scope") else "right")
        for row in self.rows():
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        t = self.totals()
        lines = [f"# Duplicate audit ({t['images']} images)", "",
                 *("| " + " | ".join(row) + " |" for row in [
                     TABLE_COLUMNS, ("---", "---", *["---:"] * 4), *self.rows()])]
        lines += ["", self.caption() + ".", "",
                  f"- pairs: {t['pairs']} ({t['exact']} exact, {t['near']} near; "
                  f"{t['within']} within a split, {t['across']} across splits)",
                  f"- pairs whose labels disagree: {t['labels_disagree']} "
                  f"({t['exact_labels_disagree']} of them exact copies)",
                  f"- clusters: {t['clusters']} over {t['images_involved']} images; "
                  f"{t['clusters_across_splits']} span several splits, "
                  f"{t['clusters_mixed_labels']} mix labels", ""]
        return "\n".join(lines)

    def save(self, output_dir: Path) -> tuple[Path, ...]:
        """``pairs.csv``, ``<query>_with_<reference>_duplicate.csv`` (the file
        ``evaluation.exclude_test`` reads), ``clusters.csv`` and ``summary.md``."""
        output_dir.mkdir(parents=True, exist_ok=True)
        paths = (output_dir / "pairs.csv",
                 output_dir / f"{self.query}_with_{self.references[0]}_duplicate.csv",
                 output_dir / "clusters.csv", output_dir / "summary.md")
        self.pairs.to_csv(paths[0], index=False)
        self.flagged.to_csv(paths[1], index=False)
        self.clusters().to_csv(paths[2], index=False)
        paths[3].write_text(self.markdown())
        return paths


TABLE_COLUMNS = ("splits", "scope", "exact", "near", "all", "labels disagree")


def run_audit(splits: Mapping[str, tuple[np.ndarray, np.ndarray]], query: str = "test",
              references: Sequence[str] = ("train", "val"),
              samples: Mapping[str, pd.DataFrame] | None = None, **criteria: Any) -> AuditResult:
    """Pairs plus the ``query`` images that have a duplicate in ``references``.

    ``samples`` (record data sets): per split a frame in the split's order with an ``index``
    column (the data module's) and columns to carry into the outputs (``sample_id``, ``path``).
    """
    missing = [s for s in (query, *references) if s not in splits]
    if missing:
        raise ValueError(f"splits {missing} are not in the data (have {list(splits)})")
    pairs = find_duplicates(splits, **criteria)
    if samples is not None:
        if any(len(samples.get(s, ())) != len(v[0]) for s, v in splits.items()):
            raise ValueError("samples must hold one row per image of every split")
        pairs = with_samples(pairs, {s: samples[s] for s in splits})
    return AuditResult(pairs, flag_split(pairs, query, references),
                       {s: len(v[0]) for s, v in splits.items()}, query, tuple(references))
