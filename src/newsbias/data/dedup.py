"""Exact and near-duplicate detection: MinHash over word shingles with banded LSH.

Hashing is deterministic (CRC32 of words, fixed permutation seed), so the same texts give the same
signatures in any process and any row order. The signature computation is vectorised with numpy
over batches of documents: 34k news articles take seconds, not minutes as a per-shingle Python
loop would.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from .clean import dedup_key

_MASK32 = np.uint64(0xFFFFFFFF)
_PERM_SEED = 20200101  # fixed: signatures must not depend on the split seed


def _word_hashes(words: list[str], cache: dict[str, int]) -> np.ndarray:
    out = np.empty(len(words), dtype=np.uint64)
    for i, w in enumerate(words):
        h = cache.get(w)
        if h is None:
            h = cache[w] = zlib.crc32(w.encode("utf-8"))
        out[i] = h
    return out


def _shingles(word_hashes: np.ndarray, k: int) -> np.ndarray:
    n = len(word_hashes)
    if n == 0:
        return np.zeros(1, dtype=np.uint64)  # every empty text gets the same signature
    k = min(k, n)
    acc = np.zeros(n - k + 1, dtype=np.uint64)
    for j in range(k):
        # polynomial rolling combination; uint64 overflow wraps, which is what we want
        acc = acc * np.uint64(0x100000001B3) + word_hashes[j: n - k + 1 + j]
    acc ^= acc >> np.uint64(29)
    return (acc ^ (acc >> np.uint64(32))) & _MASK32


def minhash_signatures(texts: Sequence[str], num_perm: int = 64, shingle_words: int = 5,
                       progress: bool = False, batch: int = 256) -> np.ndarray:
    """MinHash signatures ``[len(texts), num_perm]`` (uint32) of word ``shingle_words``-grams."""
    rng = np.random.default_rng(_PERM_SEED)
    a = (rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1))[:, None]
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)[:, None]
    sigs = np.empty((len(texts), num_perm), dtype=np.uint32)
    cache: dict[str, int] = {}
    bar = tqdm(total=len(texts), desc="minhash", unit="doc", disable=not progress, leave=False)
    for start in range(0, len(texts), batch):
        chunk = [_shingles(_word_hashes(dedup_key(t).split(), cache), shingle_words)
                 for t in texts[start:start + batch]]
        lengths = np.fromiter((len(c) for c in chunk), dtype=np.int64, count=len(chunk))
        offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        flat = np.concatenate(chunk)
        # multiply-shift hashing: the high 32 bits of a*x+b (mod 2^64) are a 2-universal family
        vals = (a * flat[None, :] + b) >> np.uint64(32)
        sigs[start:start + len(chunk)] = np.minimum.reduceat(vals, offsets, axis=1).T
        bar.update(len(chunk))
    bar.close()
    return sigs


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows per band that minimise false positives + false negatives around ``threshold``."""
    xs = np.linspace(0.0, 1.0, 201)
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        if num_perm % bands:
            continue
        rows = num_perm // bands
        p = 1.0 - (1.0 - xs ** rows) ** bands
        fp = np.trapezoid(np.where(xs < threshold, p, 0.0), xs)
        fn = np.trapezoid(np.where(xs >= threshold, 1.0 - p, 0.0), xs)
        if fp + fn < best_err:
            best, best_err = (bands, rows), fp + fn
    return best


def near_duplicate_pairs(sigs: np.ndarray, threshold: float,
                         groups: Sequence[object] | None = None) -> list[tuple[int, int, float]]:
    """Pairs ``(i, j, similarity)``, ``i < j``, whose estimated Jaccard is at least ``threshold``.

    With ``groups``, only pairs whose members lie in different groups are returned (used for the
    cross-split leakage report).
    """
    n, num_perm = sigs.shape
    bands, rows = lsh_params(threshold, num_perm)
    seen: set[tuple[int, int]] = set()
    pairs: list[tuple[int, int, float]] = []
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        block = np.ascontiguousarray(sigs[:, band * rows:(band + 1) * rows])
        for i in range(n):
            buckets[block[i].tobytes()].append(i)
        for members in buckets.values():
            if len(members) < 2:
                continue
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    i, j = members[x], members[y]
                    if (i, j) in seen or (groups is not None and groups[i] == groups[j]):
                        continue
                    seen.add((i, j))
                    sim = float(np.mean(sigs[i] == sigs[j]))
                    if sim >= threshold:
                        pairs.append((i, j, sim))
    pairs.sort()
    return pairs


def clusters(n: int, pairs: Iterable[tuple[int, int]]) -> list[int]:
    """Union-find over ``pairs``: the smallest index of each item's cluster."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, *_ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(i) for i in range(n)]
