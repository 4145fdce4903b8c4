"""The prep stage: raw labeled articles -> clean, de-duplicated, leakage-safe splits.

``run_prep(cfg)`` reads the input, normalises labels, repairs and filters text, drops exact and
near duplicates, splits (random / by_source / by_time / predefined), removes any duplicate that
still crosses splits, downsamples train only, and writes into ``cfg.out_dir``:

* ``train.jsonl``, ``val.jsonl``, ``test.jsonl`` — ``id, instruction, input, output, title,
  source, outlet, date, url``;
* ``eval_small.jsonl`` — a few unlabeled test articles for qualitative checks;
* ``drops.jsonl`` — every dropped row with its reason;
* ``prep_meta.json`` — counts per filter, split sizes and label counts, the leakage report,
  config, versions and the sha256 of every output. Later stages read it.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import DEFAULT_INSTRUCTION, PrepConfig
from ..errors import NewsbiasError, counted, shorten
from ..io import (
    atomic_dir,
    check_output_dir,
    die_with_parent,
    sha256_file,
    stage_manifest,
    usable_cpus,
    write_json,
    write_jsonl,
)
from ..labels import LABELS, LabelNormalizer, is_numeric_label
from ..records import PREP_META, Article, has_words, join_title, split_file, write_articles
from . import dedup as dd
from . import split as sp
from .clean import clean_text, outlet_of, source_key
from .cues import CueRemover
from .readers import ReadResult, read_id_list, read_input

log = logging.getLogger(__name__)

MAX_LISTED = 200  # examples kept in prep_meta.json per list; the full lists are in drops.jsonl


@dataclass
class _Run:
    """What the prep steps share besides the frame: config, drop log, per-step counts, facts for the meta.

    ``sigs`` holds the MinHash signature of every row the text step saw; a row's ``_sig`` column
    points into it, so dropping rows never re-indexes the signatures.
    """

    cfg: PrepConfig
    progress: bool = False
    drops: list[dict[str, Any]] = field(default_factory=list)
    filters: list[dict[str, Any]] = field(default_factory=list)
    read: ReadResult | None = None
    n_read: int = 0
    sigs: np.ndarray | None = None
    unknown_labels: Counter = field(default_factory=Counter)
    renamed: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    split_info: dict[str, Any] = field(default_factory=dict)
    leakage: dict[str, Any] = field(default_factory=dict)
    before_downsample: dict[str, dict[str, int]] = field(default_factory=dict)
    cues: dict[str, Any] | None = None

    def drop(self, df: pd.DataFrame, mask: pd.Series, reason: str, detail: pd.Series | str | None = None) -> pd.DataFrame:
        """``df`` without the ``mask`` rows, each logged with ``reason`` and its ``detail``."""
        for idx, row in df[mask].iterrows():
            d = detail.loc[idx] if isinstance(detail, pd.Series) else detail
            rec = {"id": row.get("id"), "line": int(row["line"]) if pd.notna(row.get("line")) else None, "reason": reason}
            if d is not None:
                rec["detail"] = d
            self.drops.append(rec)
        return df[~mask]

    def step(self, name: str, before: int, after: int, **extra: Any) -> None:
        """Record one filter step's counts (``prep_meta.json``'s ``filters``)."""
        self.filters.append({"step": name, "before": before, "after": after, "dropped": before - after, **extra})

    def sigs_of(self, df: pd.DataFrame) -> np.ndarray:
        """The signatures of ``df``'s rows, in its row order."""
        return self.sigs[df["_sig"].to_numpy()]


def process_texts(texts: list[str], titles: list[str | None], fix: bool, prepend_title: bool,
                  num_perm: int, shingle_words: int) -> tuple[list[str], list[str | None], np.ndarray, list[str]]:
    """Clean texts and titles, prepend titles, and sign the result: ``(texts, titles, sigs, hashes)``.

    One function so that a worker process does all per-article work on its chunk in one go.
    """
    texts = [clean_text(t, fix) for t in texts]
    titles = [clean_text(t, fix) if isinstance(t, str) and t.strip() else None for t in titles]
    if prepend_title:
        texts = [join_title(t, x) for t, x in zip(titles, texts)]
    sigs, hashes = dd.minhash_signatures(texts, num_perm, shingle_words)
    return texts, titles, sigs, hashes


def _process_all(df: pd.DataFrame, cfg: PrepConfig, progress: bool) -> tuple[np.ndarray, list[str]]:
    """``process_texts`` over the frame, in worker processes when it is large; updates text/title in place."""
    texts = df["text"].map(lambda t: t if isinstance(t, str) else "" if t is None or pd.isna(t) else str(t)).tolist()
    titles = df["title"].tolist()
    args = (cfg.clean.fix_text, cfg.clean.prepend_title, cfg.dedup.num_perm, cfg.dedup.shingle_words)
    workers = cfg.workers or usable_cpus()
    size = max(250, len(texts) // (workers * 16))
    chunks = [(texts[i:i + size], titles[i:i + size]) for i in range(0, len(texts), size)]
    bar = tqdm(total=len(texts), desc="clean+minhash", unit="doc", disable=not progress, leave=False)
    results = []
    if workers <= 1 or len(texts) < 4000:
        for t, ti in chunks:
            results.append(process_texts(t, ti, *args))
            bar.update(len(t))
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            for res in pool.map(process_texts, *zip(*chunks), *[[a] * len(chunks) for a in args]):
                results.append(res)
                bar.update(len(res[0]))
    bar.close()
    df["text"] = [t for r in results for t in r[0]]
    df["title"] = [t for r in results for t in r[1]]
    sigs = np.concatenate([r[2] for r in results]) if results else np.zeros((0, cfg.dedup.num_perm), np.uint32)
    return sigs, [h for r in results for h in r[3]]


def _conflict_drop(df: pd.DataFrame, cluster: pd.Series, kind: str, run: _Run) -> pd.DataFrame:
    """Keep the first member of each duplicate cluster; clusters with disagreeing labels follow on_label_conflict."""
    labels_per = df.groupby(cluster)["label"].nunique()
    conflicting = set(labels_per[labels_per > 1].index)
    for key in sorted(conflicting, key=str):
        members = df[cluster == key]
        run.conflicts.append({"kind": kind, "ids": members["id"].tolist(), "labels": members["label"].tolist(),
                              "outlets": members["outlet"].tolist()})
    first = ~cluster.duplicated(keep="first")
    keep_of = df.loc[first].set_index(cluster[first])["id"]
    if run.cfg.dedup.on_label_conflict == "drop":
        bad = cluster.isin(conflicting)
        df = run.drop(df, bad, "label_conflict", cluster[bad].map(lambda k: f"{kind} duplicates with different labels"))
        cluster = cluster[~bad]
        first = first[~bad]
    dup = ~first
    return run.drop(df, dup, f"{kind}_duplicate", cluster[dup].map(lambda k: f"duplicate of {keep_of[k]}"))


def _leakage(df: pd.DataFrame, sigs: np.ndarray, threshold: float) -> tuple[dict, list[tuple[int, int, float]], list[tuple[int, int]]]:
    """Outlets, source names, exact and near duplicates shared between splits."""
    report: dict[str, Any] = {}
    for key, col in (("shared_outlets", "outlet"), ("shared_source_names", "_source_key")):
        per = df.dropna(subset=[col]).groupby(col)["split"].nunique()
        shared = sorted(per[per > 1].index)
        report[key] = {"count": len(shared), "examples": shared[:MAX_LISTED]}
    pos = np.arange(len(df))
    split_arr = df["split"].to_numpy()
    exact_pairs = []
    for _, idx in pd.Series(pos).groupby(df["_hash"].to_numpy()):
        members = idx.to_list()
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                if split_arr[members[a]] != split_arr[members[b]]:
                    exact_pairs.append((members[a], members[b]))
    near = dd.near_duplicate_pairs(sigs, threshold, groups=split_arr) if len(df) > 1 else []
    ids = df["id"].to_numpy()
    report["exact_duplicate_pairs_across_splits"] = {
        "count": len(exact_pairs),
        "examples": [[ids[i], ids[j], split_arr[i], split_arr[j]] for i, j in exact_pairs[:MAX_LISTED]]}
    report["near_duplicate_pairs_across_splits"] = {
        "count": len(near), "threshold": threshold,
        "examples": [[ids[i], ids[j], split_arr[i], split_arr[j], round(s, 3)] for i, j, s in near[:MAX_LISTED]]}
    return report, near, exact_pairs


def _articles(frame: pd.DataFrame, instruction: str, with_label: bool = True) -> Iterator[Article]:
    """The frame's rows as split-file records (no label for eval_small.jsonl)."""
    def value(v: Any) -> Any:
        return None if v is None or (isinstance(v, float) and np.isnan(v)) else v

    for row in frame.to_dict("records"):
        yield Article(id=row["id"], text=row["text"], label=row["label"] if with_label else None,
                      instruction=instruction, **{f: value(row.get(f)) for f in ("title", "source", "outlet", "date",
                                                                                   "url")})


def _unique_ids(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Fill missing ids from the text hash; an id reused for different texts gets a hash suffix."""
    df = df.copy()
    missing = df["id"].isna() | (df["id"].astype(str).str.strip() == "")
    df.loc[missing, "id"] = "h" + df.loc[missing, "_hash"].str[:16]
    df["id"] = df["id"].astype(str).str.strip()
    clash = df.duplicated("id", keep=False) & ~df.duplicated(["id", "_hash"], keep=False)
    renamed = int(clash.sum())
    old = df.loc[clash, "id"]
    df.loc[clash, "id"] = df.loc[clash, "id"] + "~" + df.loc[clash, "_hash"].str[:8]
    if renamed:
        shown = ", ".join(f"{o!r} -> {n!r}" for o, n in list(zip(old, df.loc[clash, "id"]))[:3])
        log.warning("prep: %s share an id with a different text and were renamed (%s%s); the id column may not "
                    "be unique (prep_meta.json: counts.ids_renamed_for_clashes)", counted(renamed, "row"), shown,
                    ", ..." if renamed > 3 else "")
    return df, renamed


def _check_splits(frames: dict[str, pd.DataFrame], s: Any) -> None:
    """Every split needs rows (val selects checkpoints, test is the report); one label is only a warning."""
    empty = [name for name, f in frames.items() if f.empty and not (name == "val" and s.val_frac == 0)
             and not (name == "test" and s.test_frac == 0)]
    if empty:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in frames.items())
        outlets = sorted({str(o) for f in frames.values() for o in f["outlet"].dropna()})
        if s.mode == "by_source":
            shown = ", ".join(outlets[:3]) + (", ..." if len(outlets) > 3 else "")
            hint = (f"by_source keeps each outlet in one split and found {counted(len(outlets), 'outlet')} ({shown}): "
                    f"check that the url / source columns name each article's outlet (prep.input.columns.*), or "
                    f"use more data (prep.split.mode=random shares outlets: an upper bound, not a test)")
        elif s.mode == "predefined":
            hint = "the split files list no article of that split that prep kept (drops.jsonl says why rows went)"
        else:
            hint = "use more data or other prep.split fractions"
        raise NewsbiasError(f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty ({sizes}); {hint}")
    labels = sorted(set().union(*(set(f["label"]) for f in frames.values())))
    for name, f in frames.items():
        missing = [lab for lab in labels if lab not in set(f["label"])]
        if len(f) and f["label"].nunique() < 2:
            log.warning("prep: the %s split has only one label (%s); its scores will mean little",
                        name, f["label"].iloc[0])
        elif len(f) and missing:
            log.warning("prep: the %s split has no %s article: a macro-F1 on it counts %s as 0 (larger split "
                        "fractions or more data give it one)", name, " or ".join(map(repr, missing)),
                        "that label" if len(missing) == 1 else "those labels")


def _read(run: _Run) -> pd.DataFrame:
    """Read the input; rows the reader skipped (malformed, too long) are logged as drops."""
    cfg = run.cfg
    res = run.read = read_input(cfg.input, cfg.clean.max_chars)
    run.n_read = len(res.frame) + len(res.bad_rows)
    for b in res.bad_rows:
        run.drops.append({"id": b.get("id"), "line": b["line"], "reason": b.get("kind", "bad_row"), "detail": b["reason"]})
    run.step("read", run.n_read, len(res.frame), format=res.format, max_chars=cfg.clean.max_chars)
    return res.frame


def _shown_label(v: Any) -> str:
    return "(missing)" if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == "" else str(v)


def _label_hint(unknown: pd.Series, numeric: str) -> str:
    """What to set for labels outside the set: a numeric scheme when the numbers fit one, else a mapping."""
    values = sorted({float(v) for v in (str(x).strip() for x in unknown) if is_numeric_label(v)})
    if not values:
        return "map them with prep.labels.mapping or set prep.labels.on_unknown=drop"
    shown = ", ".join(f"{v:g}" for v in values[:8])
    fits = [s for s, allowed in (("012", {0, 1, 2}), ("-101", {-1, 0, 1})) if set(values) <= allowed]
    if numeric == "none" and fits:
        return (f"numeric labels ({shown}) need an explicit encoding: set prep.labels.numeric=012 (0=left) or -101 "
                f"(-1=left)")
    example = ", ".join(f"'{v:g}': LABEL" for v in values[:5])
    return (f"the numbers {shown} fit neither numeric scheme (012, -101): map each one, e.g. "
            f"\"prep.labels.mapping={{{example}}}\" with LABEL one of {'/'.join(LABELS)}")


def _labels(df: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """Normalise labels to left/center/right; others are an error or dropped (prep.labels.on_unknown)."""
    cfg = run.cfg.labels
    norm = LabelNormalizer(cfg.numeric, cfg.mapping)
    raw_labels = df["label"].copy()
    df["label"] = raw_labels.map(norm)
    bad = df["label"].isna()
    raw = raw_labels[bad]
    run.unknown_labels = Counter(_shown_label(v) for v in raw)
    if bad.any() and cfg.on_unknown == "error":
        listed = ", ".join(f"{shorten(k)} ({v})" for k, v in run.unknown_labels.most_common(8))
        lines = ", ".join(str(x) for x in df.loc[bad, "line"].head(5))
        hint = _label_hint(raw, cfg.numeric)
        raise NewsbiasError(f"{int(bad.sum())} rows have labels outside {'/'.join(LABELS)}: {listed} "
                            f"(first at lines {lines}) — {hint}")
    before = len(df)
    df = run.drop(df, bad, "unknown_label", raw.map(lambda v: f"label {v!r}"))
    run.step("labels", before, len(df))
    return df


def _text(df: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """Repair and sign every text; drop empty and too short ones (prep.clean)."""
    c = run.cfg.clean
    before = len(df)
    run.sigs, hashes = _process_all(df, run.cfg, run.progress)
    df["_hash"] = hashes
    df["_sig"] = np.arange(len(df))
    df = run.drop(df, df["text"].str.len() == 0, "empty_text")
    # "... ... ..." or emoji alone: no model reads anything there (predict skips such a text, serve refuses it)
    df = run.drop(df, ~df["text"].map(has_words).astype(bool), "no_words")
    short = df["text"].str.len() < c.min_chars
    if c.min_words:
        short |= df["text"].map(lambda t: len(t.split())) < c.min_words
    df = run.drop(df, short, "too_short", df["text"].str.len().map(lambda n: f"{n} chars"))
    run.step("text", before, len(df), min_chars=c.min_chars, min_words=c.min_words)
    return df


def _canonical_order(df: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """Unique ids, outlet keys, rows sorted by (id, hash): every later step is independent of the input's row order."""
    df, run.renamed = _unique_ids(df)
    df["outlet"] = [outlet_of(su, u, s) for su, u, s in zip(df["source_url"], df["url"], df["source"])]
    df["_source_key"] = df["source"].map(source_key)
    return df.sort_values(["id", "_hash"], kind="stable").reset_index(drop=True)


def _outlet_cues(df: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """Mask or drop outlet cues (prep.clean.outlet_cues); texts left too short are dropped."""
    mode = run.cfg.clean.outlet_cues
    before = len(df)
    if mode != "keep":
        remover = CueRemover.learn(df, mode)
        df["text"] = [remover.apply(t, o) for t, o in zip(df["text"], df["outlet"])]
        df["title"] = [remover.apply(t, o) if isinstance(t, str) else t for t, o in zip(df["title"], df["outlet"])]
        df = run.drop(df, df["text"].str.len() < run.cfg.clean.min_chars, "too_short_after_cues",
                      df["text"].str.len().map(lambda n: f"{n} chars"))
        run.cues = remover.report()
    run.step("outlet_cues", before, len(df), mode=mode)
    return df


def _exact_dedup(df: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """Drop texts equal after normalisation (prep.dedup.exact)."""
    before = len(df)
    if run.cfg.dedup.exact:
        df = _conflict_drop(df, df["_hash"], "exact", run).reset_index(drop=True)
    run.step("exact_dedup", before, len(df), enabled=run.cfg.dedup.exact)
    return df


def _near_dedup(df: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """Drop near duplicates by MinHash similarity (prep.dedup.near, .threshold); no rows left is an error."""
    d = run.cfg.dedup
    before = len(df)
    if d.near and len(df) > 1:
        pairs = dd.near_duplicate_pairs(run.sigs_of(df), d.threshold)
        roots = pd.Series(dd.clusters(len(df), pairs), index=df.index)
        df = _conflict_drop(df, roots, "near", run).reset_index(drop=True)
    run.step("near_dedup", before, len(df), enabled=d.near, threshold=d.threshold)
    if df.empty:
        raise NewsbiasError("no rows left after cleaning and de-duplication; see drops.jsonl / lower prep.clean.min_chars")
    return df


def _split(df: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """Assign each row a split (prep.split.mode); predefined splits drop rows their files do not list."""
    s = run.cfg.split
    run.split_info = {"mode": s.mode, "seed": s.seed, "test_frac": s.test_frac, "val_frac": s.val_frac,
                      "group_by": s.group_by}
    if s.group_by and s.mode in ("by_time", "predefined"):
        raise NewsbiasError(f"prep.split.group_by works with split modes random and by_source, not {s.mode}")
    if s.group_by and s.group_by not in df.columns:
        raise NewsbiasError(f"prep.split.group_by={s.group_by!r} is not a record field; use one of "
                            f"id, title, source, outlet, date, url")
    before = len(df)
    if s.mode == "predefined":
        df = _predefined_split(df, run)
    else:
        df["split"] = _computed_split(df, run)
    run.step("split", before, len(df))
    return df


def _computed_split(df: pd.DataFrame, run: _Run) -> pd.Series:
    """The split of each row for modes random, by_source and by_time."""
    s = run.cfg.split
    if s.mode == "random":
        return (sp.grouped_split(df, df[s.group_by], s.seed, s.test_frac, s.val_frac) if s.group_by
                else sp.random_split(df, s.seed, s.test_frac, s.val_frac))
    if s.mode == "by_source":
        groups = df["outlet"] if not s.group_by else sp.joint_groups(df["outlet"], df[s.group_by])
        split = sp.grouped_split(df, groups, s.seed, s.test_frac, s.val_frac)
        run.split_info["outlet_key"] = "registrable domain of source_url/url, else normalised source name"
        return split
    split, run.split_info["undated_rows_in_train"] = sp.time_split(df, s.test_frac, s.val_frac)
    ambiguous = sp.ambiguous_dates(df["date"])
    run.split_info["ambiguous_dates_read_month_first"] = ambiguous
    if ambiguous:
        log.warning("prep: %d dates such as 03/04/2020 could be day-first or month-first; by_time reads them "
                    "month-first (US order); write dates as YYYY-MM-DD if yours are day-first", ambiguous)
    return split


def _predefined_split(df: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """Splits from id files; without a test file, test is carved out of train."""
    s = run.cfg.split
    p = s.predefined
    lists = {"train": read_id_list(Path(p.train), p.id_column), "val": read_id_list(Path(p.val), p.id_column)}
    if p.test:
        lists["test"] = read_id_list(Path(p.test), p.id_column)
    df["split"], info = sp.predefined_split(df, lists)
    run.split_info.update(info)
    df = run.drop(df, df["split"].isna(), "not_in_predefined_split")
    if not p.test:  # carved by outlet where articles name theirs, so test shares no outlet with train
        train = df[df["split"] == "train"]
        by_outlet = train["outlet"].notna().any()
        carved = (sp.grouped_split(train, train["outlet"].fillna(train["id"]), s.seed, s.test_frac, 0.0) if by_outlet
                  else sp.random_split(train, s.seed, s.test_frac, 0.0))
        df.loc[carved.index[carved == "test"], "split"] = "test"
        run.split_info["test_carved_from_train"] = "by outlet" if by_outlet else "at random (no outlets known)"
    return df.reset_index(drop=True)


def _cross_split_dedup(df: pd.DataFrame, run: _Run) -> pd.DataFrame:
    """Anything duplicated across splits (possible when dedup is off) is removed from the held-out side."""
    threshold = run.cfg.dedup.threshold
    report, near, exact = _leakage(df, run.sigs_of(df), threshold)
    victims = _held_out_side(df, [*exact, *near])
    before = len(df)
    if victims:
        mask = pd.Series(df.index.isin(list(victims)), index=df.index)
        df = run.drop(df, mask, "cross_split_duplicate", pd.Series(victims)).reset_index(drop=True)
        report, _, _ = _leakage(df, run.sigs_of(df), threshold)
    report["cross_split_duplicates_removed"] = {"exact": len(exact), "near": len(near)}
    run.leakage = report
    run.step("cross_split_dedup", before, len(df))
    if run.cfg.split.mode == "by_source" and report["shared_outlets"]["count"]:
        raise NewsbiasError("internal error: by_source split shares outlets between splits")  # pragma: no cover
    return df


def _held_out_side(df: pd.DataFrame, pairs: list[tuple]) -> dict[int, str]:
    """For each cross-split pair, the row on the later split (train < val < test) and what it duplicates."""
    rank = {"train": 0, "val": 1, "test": 2}
    split_arr = df["split"].to_numpy()
    victims: dict[int, str] = {}
    for i, j, *_ in pairs:
        v = i if rank[split_arr[i]] > rank[split_arr[j]] else j
        kept = i if v == j else j
        victims.setdefault(v, f"duplicate of {df['id'].iat[kept]} in {split_arr[kept]}")
    return victims


def _downsample(df: pd.DataFrame, run: _Run) -> dict[str, pd.DataFrame]:
    """The frame per split, train capped (prep.downsample), each sorted by id; an empty split is an error."""
    s, d = run.cfg.split, run.cfg.downsample
    frames = {name: df[df["split"] == name] for name in sp.SPLITS}
    run.before_downsample = {name: sp.label_counts(f) for name, f in frames.items()}
    if d.train_cap or d.per_label_cap or d.fraction:
        frames["train"] = sp.downsample_train(frames["train"], s.seed, d.train_cap, d.per_label_cap, d.fraction, d.strategy)
    _check_splits(frames, s)
    return {k: v.sort_values("id", kind="stable") for k, v in frames.items()}


def _meta(frames: dict[str, pd.DataFrame], run: _Run) -> dict[str, Any]:
    """``prep_meta.json`` as far as ``prepare`` knows it (``run_prep`` adds outputs, config, versions)."""
    res = run.read
    return {
        "stage": "prep",
        "input": {"path": str(run.cfg.input.path), "format": res.format, "rows_read": run.n_read,
                  "bad_rows": len(res.bad_rows)},
        "columns": res.columns,
        "labels": list(LABELS),
        "counts": {"read": run.n_read, "written": int(sum(len(f) for f in frames.values())),
                   "dropped_by_reason": dict(sorted(Counter(r["reason"] for r in run.drops).items())),
                   "ids_renamed_for_clashes": run.renamed},
        "filters": run.filters,
        "unknown_labels": dict(run.unknown_labels.most_common()),
        "label_conflicts": {"count": len(run.conflicts), "examples": run.conflicts[:MAX_LISTED]},
        "splits": {
            **run.split_info,
            "sizes": {k: len(v) for k, v in frames.items()},
            "label_counts_before_downsample": run.before_downsample,
            "label_counts": {k: sp.label_counts(v) for k, v in frames.items()},
            "outlets": {k: int(v["outlet"].nunique()) for k, v in frames.items()},
            "downsample": run.cfg.downsample.model_dump(),
        },
        "leakage": run.leakage,
        "outlet_cues": run.cues or {"mode": run.cfg.clean.outlet_cues},
        "instruction": prep_instruction(run.cfg, res),
    }


def prep_instruction(cfg: PrepConfig, read: ReadResult) -> dict[str, Any]:
    """The instruction the output rows carry and where it came from: the config, the input's own, or the default."""
    if cfg.instruction:
        return {"text": cfg.instruction, "from": "prep.instruction"}
    if not read.instructions:
        return {"text": DEFAULT_INSTRUCTION, "from": "default"}
    text, n = read.instructions.most_common(1)[0]
    if len(read.instructions) > 1:
        log.warning("prep: the input holds %s; every row gets the most common (%d rows): %.60r — set "
                    "prep.instruction to choose", counted(len(read.instructions), "different instruction"), n, text)
    return {"text": text, "from": "input", "variants": len(read.instructions)}


def prepare(cfg: PrepConfig, progress: bool = False) -> tuple[dict[str, pd.DataFrame], dict[str, Any], list[dict]]:
    """Run every prep step in memory: ``({split: frame}, meta, drops)``; nothing is written."""
    run = _Run(cfg, progress)
    df = _read(run)
    for step in (_labels, _text, _canonical_order, _outlet_cues, _exact_dedup, _near_dedup, _split, _cross_split_dedup):
        df = step(df, run)
    frames = _downsample(df, run)
    missing = [lab for lab, n in sp.label_counts(frames["train"]).items() if n == 0]
    if missing:
        log.warning("prep: the train split has no %s articles, so no model can learn %s; check the label column "
                    "and prep.labels (prep_meta.json's label_counts)", "/".join(missing),
                    "it" if len(missing) == 1 else "them")
    return frames, _meta(frames, run), run.drops


def _eval_small(test: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    if n == 0 or test.empty:
        return test.head(0)
    return test.loc[sp.seeded_order(test["id"], seed + 2)[:n]].sort_values("id", kind="stable")


def run_prep(cfg: PrepConfig, progress: bool = False) -> dict[str, Any]:
    """Run prep and write its outputs atomically into ``cfg.out_dir``; returns ``prep_meta``.

    The output directory must be new, empty, or a previous prep output (its ``prep_meta.json``),
    and must not contain the input: prep replaces it whole.
    """
    pre = cfg.split.predefined
    inputs = [cfg.input.path] + ([pre.train, pre.val] + ([pre.test] if pre.test else []) if pre else [])
    started = time.time()
    out = check_output_dir(cfg.out_dir, "prep", PREP_META, inputs)
    frames, meta, drop_rows = prepare(cfg, progress)
    small = _eval_small(frames["test"], cfg.eval_small, cfg.split.seed)
    with atomic_dir(out, PREP_META) as tmp:
        outputs: dict[str, dict[str, Any]] = {}
        instruction = meta["instruction"]["text"]
        for name, frame in frames.items():
            outputs[split_file(tmp, name).name] = {"rows": write_articles(split_file(tmp, name),
                                                                          _articles(frame, instruction))}
        outputs["eval_small.jsonl"] = {"rows": write_articles(split_file(tmp, "eval_small"),
                                                              _articles(small, instruction, with_label=False))}
        outputs["drops.jsonl"] = {"rows": write_jsonl(tmp / "drops.jsonl", drop_rows)}
        for name, info in outputs.items():
            info["sha256"] = sha256_file(tmp / name)
        meta["outputs"] = outputs
        input_path = Path(cfg.input.path)
        meta["input"]["sha256"] = sha256_file(input_path) if input_path.is_file() else None
        meta.update(stage_manifest("prep", cfg, started))
        write_json(tmp / PREP_META, meta)
    log.info("prep: %s", ", ".join(f"{k} {v}" for k, v in meta["splits"]["sizes"].items()))
    return meta
