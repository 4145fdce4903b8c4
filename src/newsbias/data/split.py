"""Deterministic train/val/test splits and train-only downsampling.

Every function orders rows by a seeded hash of their id, never by their position, so the same
input and seed give the same split whatever order the rows came in.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pandas as pd

from ..errors import NewsbiasError
from ..labels import LABELS
from ..records import SPLITS


def seeded_key(value: object, seed: int) -> str:
    return hashlib.sha1(f"{seed}\x1f{value}".encode("utf-8")).hexdigest()


def seeded_order(ids: pd.Series, seed: int) -> pd.Index:
    """Index of ``ids`` sorted by a seeded hash: a row-order-independent shuffle."""
    keys = ids.map(lambda v: seeded_key(v, seed))
    return keys.sort_values(kind="stable").index


def _targets(n: int, test_frac: float, val_frac: float) -> dict[str, int]:
    n_test = int(round(n * test_frac))
    n_val = int(round((n - n_test) * val_frac))
    return {"test": n_test, "val": n_val, "train": n - n_test - n_val}


def random_split(df: pd.DataFrame, seed: int, test_frac: float, val_frac: float) -> pd.Series:
    """Stratified by label: each label is cut into the split fractions on its own."""
    out = pd.Series("train", index=df.index, dtype=object)
    for _, part in df.groupby("label", sort=True):
        order = seeded_order(part["id"], seed)
        t = _targets(len(order), test_frac, val_frac)
        out.loc[order[: t["test"]]] = "test"
        out.loc[order[t["test"]: t["test"] + t["val"]]] = "val"
    return out


def grouped_split(df: pd.DataFrame, groups: pd.Series, seed: int, test_frac: float, val_frac: float) -> pd.Series:
    """No group in two splits; sizes and label balance as close to the fractions as groups allow.

    Groups go one at a time (the large ones first, then the rest in seeded order) to the split
    whose per-label deficit they fill best, so that label balance survives outlet-level labels.
    """
    if groups.isna().any():
        raise NewsbiasError(f"{int(groups.isna().sum())} of {len(groups)} rows have no group value, and every row "
                            f"needs one: for split.mode by_source map a url or source column "
                            f"(prep.input.columns.url / .source), or use prep.split.mode=random")
    labels = sorted(df["label"].unique(), key=lambda l: LABELS.index(l) if l in LABELS else len(LABELS))
    counts = pd.crosstab(groups, df["label"]).reindex(columns=labels, fill_value=0)
    totals = counts.sum(axis=0).to_numpy(dtype=float)
    fr = {"test": test_frac, "val": (1 - test_frac) * val_frac}
    fr["train"] = 1.0 - fr["test"] - fr["val"]
    target = {s: totals * fr[s] for s in SPLITS}
    current = {s: np.zeros(len(labels)) for s in SPLITS}

    sizes = counts.sum(axis=1)
    smallest = min((target[s].sum() for s in SPLITS if target[s].sum() > 0), default=0.0)
    keys = pd.Series([seeded_key(g, seed) for g in counts.index], index=counts.index)
    big = sizes[sizes > smallest / 2].index
    order = sorted(big, key=lambda g: (-sizes[g], keys[g])) + sorted(counts.index.difference(big), key=lambda g: keys[g])

    assign: dict[object, str] = {}
    for g in order:
        vec = counts.loc[g].to_numpy(dtype=float)
        best, best_score = "train", None
        for s in SPLITS:
            if target[s].sum() == 0:
                continue
            deficit = np.maximum(target[s] - current[s], 0.0)
            fit = np.minimum(vec, deficit).sum() - np.maximum(vec - deficit, 0.0).sum()
            score = (fit, deficit.sum() / max(target[s].sum(), 1.0))
            if best_score is None or score > best_score:
                best, best_score = s, score
        assign[g] = best
        current[best] += vec
    return groups.map(assign)


def joint_groups(a: pd.Series, b: pd.Series) -> pd.Series:
    """One group per connected set of rows that share an ``a`` value or a (non-missing) ``b`` value (e.g. an
    outlet or an author), named by an ``a`` value: keeping these groups apart keeps both fields' values apart."""
    parent: dict[object, object] = {}

    def root(x: object) -> object:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    # a missing b value links nothing: rows without an author are not one group
    left = [("a", str(v)) for v in a]
    right = [("b", str(v)) if ok else ("row", i) for i, (v, ok) in enumerate(zip(b, b.notna()))]
    for x, y in zip(left, right):
        parent[root(y)] = root(x)
    return pd.Series([root(x)[1] for x in left], index=a.index)


_SLASHED = r"^\s*(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}\b"


def ambiguous_dates(dates: pd.Series) -> int:
    """How many dates read differently day-first and month-first (``03/04/2020``: both parts 12 or less, unequal)."""
    parts = dates.dropna().astype(str).str.extract(_SLASHED).dropna().astype(int)
    return int(((parts[0] <= 12) & (parts[1] <= 12) & (parts[0] != parts[1])).sum())


def time_split(df: pd.DataFrame, test_frac: float, val_frac: float) -> tuple[pd.Series, int]:
    """Newest articles to test, the next newest to val. Undated rows go to train (and are counted)."""
    dates = pd.to_datetime(df["date"], errors="coerce", format="mixed", utc=True)
    dated = df.index[dates.notna()]
    out = pd.Series("train", index=df.index, dtype=object)
    if len(dated) == 0:
        raise NewsbiasError("split.mode by_time: no row has a parseable date (check the date column mapping)")
    order = pd.DataFrame({"d": dates[dated], "id": df.loc[dated, "id"]}).sort_values(["d", "id"], ascending=[False, True]).index
    t = _targets(len(order), test_frac, val_frac)
    out.loc[order[: t["test"]]] = "test"
    out.loc[order[t["test"]: t["test"] + t["val"]]] = "val"
    return out, int(dates.isna().sum())


def predefined_split(df: pd.DataFrame, id_lists: dict[str, list[str]]) -> tuple[pd.Series, dict]:
    """Assign rows by the given id lists; rows in none of them are returned as None."""
    where: dict[str, str] = {}
    clashes = []
    for split, ids in id_lists.items():
        for i in ids:
            if i in where and where[i] != split:
                clashes.append(i)
            where[i] = split
    if clashes:
        raise NewsbiasError(f"predefined split files share {len(clashes)} ids (e.g. {clashes[0]!r}); "
                            f"each article may be in one split only")
    present = set(df["id"])
    info = {"ids_in_files": {s: len(v) for s, v in id_lists.items()},
            "ids_not_in_data": {s: sum(1 for i in v if i not in present) for s, v in id_lists.items()}}
    return df["id"].map(where), info


def downsample_train(train: pd.DataFrame, seed: int, train_cap: int | None, per_label_cap: int | None,
                     fraction: float | None, strategy: str) -> pd.DataFrame:
    """Train-only caps, stratified: per-label cap, then fraction, then the total cap."""
    order = seeded_order(train["id"], seed + 1)
    train = train.loc[order]
    by_label = {lab: part for lab, part in train.groupby("label", sort=True)}
    if per_label_cap:
        by_label = {lab: part.head(per_label_cap) for lab, part in by_label.items()}
    if fraction:
        by_label = {lab: part.head(max(1, int(round(len(part) * fraction)))) for lab, part in by_label.items()}
    if train_cap and sum(len(p) for p in by_label.values()) > train_cap:
        sizes = {lab: len(p) for lab, p in by_label.items()}
        quota = _allocate(sizes, train_cap, strategy)
        by_label = {lab: p.head(quota[lab]) for lab, p in by_label.items()}
    out = pd.concat(list(by_label.values())) if by_label else train.head(0)
    return out


def _allocate(sizes: dict[str, int], cap: int, strategy: str) -> dict[str, int]:
    """Share ``cap`` among labels: proportionally (largest remainder) or as evenly as sizes allow."""
    labels = sorted(sizes)
    if strategy == "balanced":
        quota = {lab: 0 for lab in labels}
        left = cap
        open_ = [l for l in labels if sizes[l] > 0]
        while left > 0 and open_:
            share = max(1, left // len(open_))
            for lab in list(open_):
                take = min(share, sizes[lab] - quota[lab], left)
                quota[lab] += take
                left -= take
                if quota[lab] >= sizes[lab]:
                    open_.remove(lab)
                if left == 0:
                    break
        return quota
    total = sum(sizes.values())
    raw = {lab: cap * sizes[lab] / total for lab in labels}
    quota = {lab: int(np.floor(raw[lab])) for lab in labels}
    rest = cap - sum(quota.values())
    for lab in sorted(labels, key=lambda l: (-(raw[l] - quota[l]), l))[:rest]:
        quota[lab] += 1
    return quota


def label_counts(df: pd.DataFrame) -> dict[str, int]:
    c = Counter(df["label"])
    return {lab: int(c.get(lab, 0)) for lab in LABELS}
