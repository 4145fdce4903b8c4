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

import hashlib
import logging
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import PrepConfig, dump_config
from ..errors import NewsbiasError, shorten
from ..io import atomic_dir, check_output_dir, package_versions, sha256_file, write_json, write_jsonl
from ..labels import LABELS, LabelNormalizer
from . import dedup as dd
from . import split as sp
from .clean import clean_text, outlet_of, source_key, with_title
from .readers import read_id_list, read_input

log = logging.getLogger(__name__)

OUTPUT_FIELDS = ("id", "instruction", "input", "output", "title", "source", "outlet", "date", "url")
MAX_LISTED = 200  # examples kept in prep_meta.json per list; the full lists are in drops.jsonl


class _Drops:
    """Collects dropped rows with their reason, and the counts per filter step."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []

    def drop(self, df: pd.DataFrame, mask: pd.Series, reason: str, detail: pd.Series | str | None = None) -> pd.DataFrame:
        gone = df[mask]
        for idx, row in gone.iterrows():
            d = detail.loc[idx] if isinstance(detail, pd.Series) else detail
            rec = {"id": row.get("id"), "line": int(row["line"]) if pd.notna(row.get("line")) else None, "reason": reason}
            if d is not None:
                rec["detail"] = d
            self.rows.append(rec)
        return df[~mask]

    def step(self, name: str, before: int, after: int, **extra: Any) -> None:
        self.steps.append({"step": name, "before": before, "after": after, "dropped": before - after, **extra})


def process_texts(texts: list[str], titles: list[str | None], fix: bool, prepend_title: bool,
                  num_perm: int, shingle_words: int) -> tuple[list[str], list[str | None], np.ndarray, list[str]]:
    """Clean texts and titles, prepend titles, and sign the result: ``(texts, titles, sigs, hashes)``.

    One function so that a worker process does all per-article work on its chunk in one go.
    """
    texts = [clean_text(t, fix) for t in texts]
    titles = [clean_text(t, fix) if isinstance(t, str) and t.strip() else None for t in titles]
    if prepend_title:
        texts = [with_title(t, x) for t, x in zip(titles, texts)]
    sigs, hashes = dd.minhash_signatures(texts, num_perm, shingle_words)
    return texts, titles, sigs, hashes


def _process_all(df: pd.DataFrame, cfg: PrepConfig, progress: bool) -> tuple[np.ndarray, list[str]]:
    """``process_texts`` over the frame, in worker processes when it is large; updates text/title in place."""
    texts = df["text"].map(lambda t: t if isinstance(t, str) else "" if t is None or pd.isna(t) else str(t)).tolist()
    titles = df["title"].tolist()
    args = (cfg.clean.fix_text, cfg.clean.prepend_title, cfg.dedup.num_perm, cfg.dedup.shingle_words)
    workers = cfg.workers or (os.cpu_count() or 1)
    size = max(250, len(texts) // (workers * 16))
    chunks = [(texts[i:i + size], titles[i:i + size]) for i in range(0, len(texts), size)]
    bar = tqdm(total=len(texts), desc="clean+minhash", unit="doc", disable=not progress, leave=False)
    results = []
    if workers <= 1 or len(texts) < 4000:
        for t, ti in chunks:
            results.append(process_texts(t, ti, *args))
            bar.update(len(t))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for res in pool.map(process_texts, *zip(*chunks), *[[a] * len(chunks) for a in args]):
                results.append(res)
                bar.update(len(res[0]))
    bar.close()
    df["text"] = [t for r in results for t in r[0]]
    df["title"] = [t for r in results for t in r[1]]
    sigs = np.concatenate([r[2] for r in results]) if results else np.zeros((0, cfg.dedup.num_perm), np.uint32)
    return sigs, [h for r in results for h in r[3]]


def _conflict_drop(df: pd.DataFrame, cluster: pd.Series, policy: str, kind: str, drops: _Drops,
                   conflicts: list[dict]) -> pd.DataFrame:
    """Keep the first member of each duplicate cluster; clusters with disagreeing labels follow ``policy``."""
    labels_per = df.groupby(cluster)["label"].nunique()
    conflicting = set(labels_per[labels_per > 1].index)
    for key in sorted(conflicting, key=str):
        members = df[cluster == key]
        conflicts.append({"kind": kind, "ids": members["id"].tolist(), "labels": members["label"].tolist(),
                          "outlets": members["outlet"].tolist()})
    first = ~cluster.duplicated(keep="first")
    keep_of = df.loc[first].set_index(cluster[first])["id"]
    if policy == "drop":
        bad = cluster.isin(conflicting)
        df = drops.drop(df, bad, "label_conflict", cluster[bad].map(lambda k: f"{kind} duplicates with different labels"))
        cluster = cluster[~bad]
        first = first[~bad]
    dup = ~first
    return drops.drop(df, dup, f"{kind}_duplicate", cluster[dup].map(lambda k: f"duplicate of {keep_of[k]}"))


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


def _output_row(row: pd.Series, instruction: str, with_label: bool = True) -> dict[str, Any]:
    out = {"id": row["id"], "instruction": instruction, "input": row["text"]}
    if with_label:
        out["output"] = row["label"]
    for f in ("title", "source", "outlet", "date", "url"):
        v = row.get(f)
        out[f] = None if v is None or (isinstance(v, float) and np.isnan(v)) else v
    return out


def _unique_ids(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Fill missing ids from the text hash; an id reused for different texts gets a hash suffix."""
    df = df.copy()
    missing = df["id"].isna() | (df["id"].astype(str).str.strip() == "")
    df.loc[missing, "id"] = "h" + df.loc[missing, "_hash"].str[:16]
    df["id"] = df["id"].astype(str).str.strip()
    clash = df.duplicated("id", keep=False) & ~df.duplicated(["id", "_hash"], keep=False)
    renamed = int(clash.sum())
    df.loc[clash, "id"] = df.loc[clash, "id"] + "~" + df.loc[clash, "_hash"].str[:8]
    return df, renamed


def _check_splits(frames: dict[str, pd.DataFrame], s: Any) -> None:
    """Every split needs rows (val selects checkpoints, test is the report); one label is only a warning."""
    empty = [name for name, f in frames.items() if f.empty and not (name == "val" and s.val_frac == 0)
             and not (name == "test" and s.test_frac == 0)]
    if empty:
        sizes = ", ".join(f"{k} {len(v)}" for k, v in frames.items())
        hint = (f"by_source keeps each outlet in one split and found {sum(f['outlet'].nunique() for f in frames.values())} "
                f"outlet(s): use more data or prep.split.mode=random" if s.mode == "by_source"
                else "use more data or other prep.split fractions")
        raise NewsbiasError(f"the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} empty ({sizes}); {hint}")
    for name, f in frames.items():
        if len(f) and f["label"].nunique() < 2:
            log.warning("prep: the %s split has only one label (%s); its scores will mean little",
                        name, f["label"].iloc[0])


def prepare(cfg: PrepConfig, progress: bool = False) -> tuple[dict[str, pd.DataFrame], dict[str, Any], list[dict]]:
    """Run every prep step in memory: ``({split: frame}, meta, drops)``; nothing is written."""
    drops = _Drops()
    res = read_input(cfg.input, cfg.clean.max_chars)
    df = res.frame
    n_read = len(df) + len(res.bad_rows)
    for b in res.bad_rows:
        drops.rows.append({"id": None, "line": b["line"], "reason": b.get("kind", "bad_row"), "detail": b["reason"]})
    drops.step("read", n_read, len(df), format=res.format, max_chars=cfg.clean.max_chars)

    # -- labels
    norm = LabelNormalizer(cfg.labels.numeric, cfg.labels.mapping)
    raw_labels = df["label"].copy()
    df["label"] = raw_labels.map(norm)
    bad = df["label"].isna()
    raw = raw_labels[bad]
    unknown = Counter("(missing)" if v is None or (isinstance(v, float) and np.isnan(v)) or str(v).strip() == ""
                      else str(v) for v in raw)
    if bad.any() and cfg.labels.on_unknown == "error":
        listed = ", ".join(f"{shorten(k)} ({v})" for k, v in unknown.most_common(8))
        lines = ", ".join(str(x) for x in df.loc[bad, "line"].head(5))
        hint = ("numeric labels need an explicit encoding: set prep.labels.numeric=012 (0=left) or -101 (-1=left)"
                if norm.saw_numeric and cfg.labels.numeric == "none" else
                "map them with prep.labels.mapping or set prep.labels.on_unknown=drop")
        raise NewsbiasError(f"{int(bad.sum())} rows have labels outside {'/'.join(LABELS)}: {listed} "
                            f"(first at lines {lines}) — {hint}")
    df = drops.drop(df, bad, "unknown_label", raw.map(lambda v: f"label {v!r}"))
    drops.step("labels", n_read - len(res.bad_rows), len(df))

    # -- text
    before = len(df)
    sigs, hashes = _process_all(df, cfg, progress)
    df["_hash"] = hashes
    df["_sig"] = np.arange(len(df))
    empty = df["text"].str.len() == 0
    df = drops.drop(df, empty, "empty_text")
    short = df["text"].str.len() < cfg.clean.min_chars
    if cfg.clean.min_words:
        short |= df["text"].map(lambda t: len(t.split())) < cfg.clean.min_words
    df = drops.drop(df, short, "too_short", df["text"].str.len().map(lambda n: f"{n} chars"))
    drops.step("text", before, len(df), min_chars=cfg.clean.min_chars, min_words=cfg.clean.min_words)

    # -- canonical order: everything after this is independent of the input's row order
    df, renamed = _unique_ids(df)
    df["outlet"] = [outlet_of(su, u, s) for su, u, s in zip(df["source_url"], df["url"], df["source"])]
    df["_source_key"] = df["source"].map(source_key)
    df = df.sort_values(["id", "_hash"], kind="stable").reset_index(drop=True)
    sigs = sigs[df["_sig"].to_numpy()]

    # -- duplicates
    conflicts: list[dict] = []
    before = len(df)
    if cfg.dedup.exact:
        df = _conflict_drop(df, df["_hash"], cfg.dedup.on_label_conflict, "exact", drops, conflicts)
        sigs = sigs[df.index.to_numpy()]
        df = df.reset_index(drop=True)
    drops.step("exact_dedup", before, len(df), enabled=cfg.dedup.exact)
    before = len(df)
    if cfg.dedup.near and len(df) > 1:
        pairs = dd.near_duplicate_pairs(sigs, cfg.dedup.threshold)
        roots = pd.Series(dd.clusters(len(df), pairs), index=df.index)
        df = _conflict_drop(df, roots, cfg.dedup.on_label_conflict, "near", drops, conflicts)
        sigs = sigs[df.index.to_numpy()]
        df = df.reset_index(drop=True)
    drops.step("near_dedup", before, len(df), enabled=cfg.dedup.near, threshold=cfg.dedup.threshold)
    if df.empty:
        raise NewsbiasError("no rows left after cleaning and de-duplication; see drops.jsonl / lower prep.clean.min_chars")

    # -- split
    s = cfg.split
    split_info: dict[str, Any] = {"mode": s.mode, "seed": s.seed, "test_frac": s.test_frac, "val_frac": s.val_frac,
                                  "group_by": s.group_by}
    if s.group_by and s.mode in ("by_time", "predefined"):
        raise NewsbiasError(f"prep.split.group_by works with split modes random and by_source, not {s.mode}")
    if s.group_by and s.group_by not in df.columns:
        raise NewsbiasError(f"prep.split.group_by={s.group_by!r} is not a record field; use one of "
                            f"id, title, source, outlet, date, url")
    before = len(df)
    if s.mode == "random":
        df["split"] = (sp.grouped_split(df, df[s.group_by], s.seed, s.test_frac, s.val_frac) if s.group_by
                       else sp.random_split(df, s.seed, s.test_frac, s.val_frac))
    elif s.mode == "by_source":
        groups = df["outlet"] if not s.group_by else df["outlet"].astype(str) + "|" + df[s.group_by].astype(str)
        df["split"] = sp.grouped_split(df, groups, s.seed, s.test_frac, s.val_frac)
        split_info["outlet_key"] = "registrable domain of source_url/url, else normalised source name"
    elif s.mode == "by_time":
        df["split"], undated = sp.time_split(df, s.test_frac, s.val_frac)
        split_info["undated_rows_in_train"] = undated
    else:
        p = s.predefined
        lists = {"train": read_id_list(Path(p.train), p.id_column), "val": read_id_list(Path(p.val), p.id_column)}
        if p.test:
            lists["test"] = read_id_list(Path(p.test), p.id_column)
        df["split"], info = sp.predefined_split(df, lists)
        split_info.update(info)
        df = drops.drop(df, df["split"].isna(), "not_in_predefined_split")
        if not p.test:
            tr = df["split"] == "train"
            carved = sp.random_split(df[tr], s.seed, s.test_frac, 0.0)
            df.loc[carved.index[carved == "test"], "split"] = "test"
            split_info["test_carved_from_train"] = True
        sigs = sigs[df.index.to_numpy()]
        df = df.reset_index(drop=True)
    drops.step("split", before, len(df))

    # -- anything duplicated across splits (possible when dedup is off) is removed from the held-out side
    report, near, exact = _leakage(df, sigs, cfg.dedup.threshold)
    rank = {"train": 0, "val": 1, "test": 2}
    victims: dict[int, str] = {}
    split_arr = df["split"].to_numpy()
    for i, j, *_ in [*exact, *near]:
        v = i if rank[split_arr[i]] > rank[split_arr[j]] else j
        victims.setdefault(v, f"duplicate of {df['id'].iat[i if v == j else j]} in {split_arr[i if v == j else j]}")
    found_before = {"exact": len(exact), "near": len(near)}
    before = len(df)
    if victims:
        mask = pd.Series(df.index.isin(list(victims)), index=df.index)
        df = drops.drop(df, mask, "cross_split_duplicate", pd.Series(victims))
        sigs = sigs[df.index.to_numpy()]
        df = df.reset_index(drop=True)
        report, _, _ = _leakage(df, sigs, cfg.dedup.threshold)
    report["cross_split_duplicates_removed"] = found_before
    drops.step("cross_split_dedup", before, len(df))
    if s.mode == "by_source" and report["shared_outlets"]["count"]:
        raise NewsbiasError("internal error: by_source split shares outlets between splits")  # pragma: no cover

    frames = {name: df[df["split"] == name] for name in sp.SPLITS}
    before_ds = {name: sp.label_counts(f) for name, f in frames.items()}
    d = cfg.downsample
    if d.train_cap or d.per_label_cap or d.fraction:
        frames["train"] = sp.downsample_train(frames["train"], s.seed, d.train_cap, d.per_label_cap, d.fraction, d.strategy)
    _check_splits(frames, s)
    frames = {k: v.sort_values("id", kind="stable") for k, v in frames.items()}

    meta: dict[str, Any] = {
        "stage": "prep",
        "input": {"path": str(cfg.input.path), "format": res.format, "rows_read": n_read,
                  "bad_rows": len(res.bad_rows)},
        "columns": res.columns,
        "labels": list(LABELS),
        "counts": {"read": n_read, "written": int(sum(len(f) for f in frames.values())),
                   "dropped_by_reason": dict(sorted(Counter(r["reason"] for r in drops.rows).items())),
                   "ids_renamed_for_clashes": renamed},
        "filters": drops.steps,
        "unknown_labels": dict(unknown.most_common()),
        "label_conflicts": {"count": len(conflicts), "examples": conflicts[:MAX_LISTED]},
        "splits": {
            **split_info,
            "sizes": {k: len(v) for k, v in frames.items()},
            "label_counts_before_downsample": before_ds,
            "label_counts": {k: sp.label_counts(v) for k, v in frames.items()},
            "outlets": {k: int(v["outlet"].nunique()) for k, v in frames.items()},
            "downsample": d.model_dump(),
        },
        "leakage": report,
    }
    return frames, meta, drops.rows


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
    out = check_output_dir(cfg.out_dir, "prep", "prep_meta.json", inputs)
    frames, meta, drop_rows = prepare(cfg, progress)
    small = _eval_small(frames["test"], cfg.eval_small, cfg.split.seed)
    with atomic_dir(out) as tmp:
        outputs: dict[str, dict[str, Any]] = {}
        for name, frame in frames.items():
            n = write_jsonl(tmp / f"{name}.jsonl", (_output_row(r, cfg.instruction) for _, r in frame.iterrows()))
            outputs[f"{name}.jsonl"] = {"rows": n}
        n = write_jsonl(tmp / "eval_small.jsonl", (_output_row(r, cfg.instruction, False) for _, r in small.iterrows()))
        outputs["eval_small.jsonl"] = {"rows": n}
        outputs["drops.jsonl"] = {"rows": write_jsonl(tmp / "drops.jsonl", drop_rows)}
        for name, info in outputs.items():
            info["sha256"] = sha256_file(tmp / name)
        meta["outputs"] = outputs
        input_path = Path(cfg.input.path)
        meta["input"]["sha256"] = sha256_file(input_path) if input_path.is_file() else None
        meta["config"] = dump_config(cfg)
        meta["versions"] = package_versions(("newsbias", "pandas", "numpy", "ftfy", "datasketch", "pydantic"))
        write_json(tmp / "prep_meta.json", meta)
    log.info("prep: %s", ", ".join(f"{k} {v}" for k, v in meta["splits"]["sizes"].items()))
    return meta


def content_digest(frames: dict[str, pd.DataFrame]) -> str:
    """A digest of split membership (used by tests to compare runs)."""
    h = hashlib.sha256()
    for name in sp.SPLITS:
        h.update(name.encode())
        h.update("\n".join(frames[name]["id"]).encode())
    return h.hexdigest()
