"""Exact and near-duplicate detection: MinHash over word shingles with banded LSH.

Hashing is deterministic (CRC32 of words, fixed permutation seed), so the same texts give the same
signatures in any process and any row order. The signature computation is vectorised with numpy
over batches of documents: 34k news articles take seconds, not minutes as a per-shingle Python
loop would — which is why this is not datasketch, whose ``MinHash.update`` is one Python call per shingle.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from itertools import chain

import numpy as np
import pandas as pd

from .clean import dedup_key

_MASK32 = np.uint64(0xFFFFFFFF)
_PERM_SEED = 20200101  # fixed: signatures must not depend on the split seed


_PRIME = np.uint64(0x100000001B3)


def _combine(word_hashes: np.ndarray) -> np.uint64:
    acc = np.uint64(0)
    with np.errstate(over="ignore"):
        for h in word_hashes:
            acc = acc * _PRIME + h
    return acc


def _shingle_hashes(word_hashes: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every k-word window inside one document, and each document's first shingle offset.

    A document shorter than k words contributes one shingle of all its words; an empty one a
    constant shingle (so all empty texts share a signature).
    """
    n = len(word_hashes)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)
    padded = np.concatenate((word_hashes, np.zeros(k, dtype=np.uint64)))
    acc = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):
            # polynomial combination of k consecutive words; uint64 overflow wraps, as wanted
            acc = acc * _PRIME + padded[j: j + n]
    n_sh = np.maximum(lengths - k + 1, 1)
    offsets = np.concatenate(([0], np.cumsum(n_sh)[:-1])).astype(np.int64)
    idx = np.repeat(starts - offsets, n_sh) + np.arange(int(n_sh.sum()))
    sh = acc[np.minimum(idx, max(n - 1, 0))] if n else np.zeros(len(idx), dtype=np.uint64)
    for d in np.nonzero(lengths < k)[0]:
        sh[offsets[d]] = _combine(word_hashes[starts[d]: starts[d] + lengths[d]]) if lengths[d] else np.uint64(0)
    sh ^= sh >> np.uint64(29)
    return (sh ^ (sh >> np.uint64(32))) & _MASK32, offsets


_BATCH_WORDS = 100_000  # words hashed per batch: bounds the [num_perm x shingles] temporaries


def minhash_signatures(texts: Sequence[str], num_perm: int = 64,
                       shingle_words: int = 5) -> tuple[np.ndarray, list[str]]:
    """MinHash signatures ``[len(texts), num_perm]`` (uint32) of word ``shingle_words``-grams,
    and the sha1 of each text's :func:`dedup_key` (for exact duplicates), in one pass."""
    rng = np.random.default_rng(_PERM_SEED)
    a = (rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1))[:, None]
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)[:, None]
    sigs = np.empty((len(texts), num_perm), dtype=np.uint32)
    hashes: list[str] = []
    start = 0
    while start < len(texts):
        keys, n_words = [], 0
        while start + len(keys) < len(texts) and (not keys or n_words < _BATCH_WORDS):
            keys.append(dedup_key(texts[start + len(keys)]))
            n_words += keys[-1].count(" ") + 1
        hashes.extend(hashlib.sha1(k.encode("utf-8")).hexdigest() for k in keys)
        words = [k.split() for k in keys]
        lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=len(words))
        flat = np.array(list(chain.from_iterable(words)), dtype=object)
        # pandas' hash_array uses a fixed key: the same word hashes the same in every process
        wh = pd.util.hash_array(flat, categorize=True) if len(flat) else np.zeros(0, dtype=np.uint64)
        sh, offsets = _shingle_hashes(wh, lengths, shingle_words)
        # multiply-shift hashing: the high 32 bits of a*x+b (mod 2^64) are a 2-universal family
        vals = (a * sh[None, :] + b) >> np.uint64(32)
        sigs[start:start + len(keys)] = np.minimum.reduceat(vals, offsets, axis=1).T
        start += len(keys)
    return sigs, hashes


def lsh_params(threshold: float, num_perm: int, fn_weight: float = 20.0) -> tuple[int, int]:
    """Bands and rows per band (``bands * rows <= num_perm``) for an LSH around ``threshold``.

    Candidates are verified against the full signature afterwards, so a false positive costs a
    comparison while a false negative loses a duplicate: misses weigh ``fn_weight`` times more.
    """
    xs = np.linspace(0.0, 1.0, 401)
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1.0 - (1.0 - xs ** rows) ** bands
            fp = np.trapezoid(np.where(xs < threshold, p, 0.0), xs)
            fn = np.trapezoid(np.where(xs >= threshold, 1.0 - p, 0.0), xs)
            if fp + fn_weight * fn < best_err:
                best, best_err = (bands, rows), fp + fn_weight * fn
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
