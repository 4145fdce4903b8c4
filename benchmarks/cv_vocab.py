"""Lever probe: keep only the n-grams that several training outlets use (TF-IDF, outlet-grouped CV).

    .venv/bin/python benchmarks/cv_vocab.py --data PREP_DIR [--min-outlets 1 2 3 5 10]
        [--max-share 1.0 0.8 0.5] [--min-eta 0 0.05 0.1] [--eta-power 0 1] [--folds 5]

An outlet's house words (its name, its columnists, its stock phrases) are n-grams few other outlets
use; a model that leans on them memorises outlets. This probe drops, on each round's training
folds, every n-gram used by fewer than ``m`` distinct training outlets, then applies the baseline's
own min_df / max_features rules (with ``--max-share s``, it also drops every n-gram of which one
training outlet writes more than a share ``s`` of the training articles that use it) and TF-IDF + LR (C picked on the next fold), on the folds of
``newsbias cv`` (:func:`newsbias.cv.make_folds`, seed 0). ``--min-eta r`` also drops n-grams whose per-outlet
rate the outlets' labels explain less than ``r`` (:func:`label_eta2`); ``--eta-power g`` scales each
TF-IDF column by that eta² to the power ``g``. ``m = 1`` is today's recipe. The corpus is
tokenised once (:func:`newsbias.baseline.count_ngrams`). Prints one Markdown row per filter ``(m, s, r, g)``: mean
macro-F1 with its 95 % interval over folds, the change against the first row paired by fold,
per-fold scores, and vocabulary size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cv_ablation import paired  # noqa: E402
from newsbias.baseline import (build_tfidf_lr, canonical, count_ngrams, fit_lr, kept_terms,  # noqa: E402
                               label_columns, tfidf_on_counts)
from newsbias.config import load_config  # noqa: E402
from newsbias.cv import fold_interval, fold_roles, make_folds, pooled_articles  # noqa: E402
from newsbias.labels import LABELS  # noqa: E402
from newsbias.metrics import macro_f1  # noqa: E402


def outlet_usage(train_counts, outlet_codes: np.ndarray):
    """Per outlet code (rows) and column of ``train_counts``: how many of its articles use the column."""
    member = sp.csr_matrix((np.ones(len(outlet_codes), np.float32), (outlet_codes, np.arange(len(outlet_codes)))),
                           shape=(outlet_codes.max() + 1, len(outlet_codes)))
    return (member @ (train_counts > 0).astype(np.float32)).tocsc()


def outlet_spread(per_outlet) -> tuple[np.ndarray, np.ndarray]:
    """Per column of :func:`outlet_usage`: how many distinct outlets use it, and the share of the
    articles using it that its most frequent outlet wrote."""
    n_outlets = np.asarray((per_outlet > 0).sum(0)).ravel()
    top = per_outlet.max(0).toarray().ravel() / np.maximum(np.asarray(per_outlet.sum(0)).ravel(), 1)
    return n_outlets, top


def label_eta2(per_outlet, outlet_codes: np.ndarray, gold, min_articles: int = 10) -> np.ndarray:
    """Per column of :func:`outlet_usage`: the share of its variance across outlets that the outlets'
    labels explain (eta²).

    Each outlet (with at least ``min_articles`` training articles) counts once, by the share of its
    articles that use the n-gram, under its most frequent label. An n-gram that tells apart outlets
    of one label (a house word) has a low eta²; one whose rate moves with the label across many
    outlets (a leaning word) has a high one. Under no relation, eta² is about (labels − 1) / (outlets − 1).
    """
    sizes = np.bincount(outlet_codes, minlength=per_outlet.shape[0])
    outlets = np.flatnonzero(sizes >= min_articles)
    label_of = (pd.Series(np.asarray(gold)).groupby(outlet_codes).agg(lambda g: g.value_counts().index[0])
                .loc[outlets].to_numpy())
    rate = per_outlet[outlets].toarray() / sizes[outlets, None]
    grand = rate.mean(0)
    between = np.zeros(rate.shape[1])
    within = np.zeros(rate.shape[1])
    for label in np.unique(label_of):
        part = rate[label_of == label]
        between += len(part) * (part.mean(0) - grand) ** 2
        within += ((part - part.mean(0)) ** 2).sum(0)
    return between / np.maximum(between + within, 1e-12)


def scaled(x, scale):
    """``x`` with its columns multiplied by the diagonal ``scale`` (None: unchanged)."""
    return x if scale is None else (x @ scale).tocsr()


def score_round(frame, counts, codes, fold, i: int, k: int, base, filters: list[tuple]) -> dict[tuple, tuple[float, int]]:
    """Macro-F1 and vocabulary size of each filter ``(m, s, r, g)`` on round ``i``."""
    from sklearn.feature_extraction.text import TfidfTransformer

    tr, va, te = fold_roles(fold, i, k)
    sub = counts[tr]
    uncapped = base.model_copy(update={"tfidf": base.tfidf.model_copy(update={"max_features": None})})
    cols = kept_terms(sub, uncapped)
    tfs = np.asarray(sub[:, cols].sum(0)).ravel()
    per_outlet = outlet_usage(sub[:, cols], codes[tr])
    spread, top = outlet_spread(per_outlet)
    needs_eta = any(r > 0 or g > 0 for _, _, r, g in filters)
    eta = label_eta2(per_outlet, codes[tr], frame["gold"].to_numpy()[tr]) if needs_eta else None
    out = {}
    for m, share, r, g in filters:
        ok = (spread >= m) & (top <= share)
        if r > 0:
            ok &= eta >= r
        keep = np.flatnonzero(ok)
        if base.tfidf.max_features and len(keep) > base.tfidf.max_features:
            keep = np.sort(keep[(-tfs[keep]).argsort(kind="stable")[:base.tfidf.max_features]])
        c = cols[keep]
        # eta²^g after the row norm: in an L2-penalised LR, a smaller column is a costlier weight
        scale = sp.diags(eta[keep] ** g) if g > 0 else None
        tfidf = TfidfTransformer(sublinear_tf=base.tfidf.sublinear_tf).fit(sub[:, c])
        x_train, x_val, x_test = (scaled(tfidf.transform(counts[rows][:, c]), scale) for rows in (tr, va, te))
        lr, _ = fit_lr(build_tfidf_lr(base, base.lr.C).named_steps["lr"], base, x_train, frame[tr], x_val, frame[va])
        probs = label_columns(lr.classes_, lr.predict_proba(x_test))
        pred = [LABELS[j] for j in probs.argmax(1)]
        key = (m, share, r, g)
        out[key] = (macro_f1(frame["gold"][te], pred), len(c))
        print(f"round {i}, {key}: macro-F1 {out[key][0]:.4f}, {len(c):,} terms", file=sys.stderr, flush=True)
    return out


def counted_folds(data: str, k: int):
    """``(baseline config of configs/demo.yaml, pooled articles, their n-gram counts, fold per article)``."""
    base = load_config(ROOT / "configs" / "demo.yaml").baseline
    frame = pooled_articles(data)
    return base, frame, count_ngrams(frame["text"], base, jobs=base.jobs).tocsr(), make_folds(frame, k, 0, grouped=True)


def round_tfidf(counts, fold: np.ndarray, i: int, k: int, base, dtype=None) -> tuple:
    """``(train, val, test masks, their TF-IDF matrices)`` of round ``i``, TF-IDF fitted on the training rows as the
    baseline fits it (:func:`newsbias.baseline.tfidf_on_counts`), each row's columns in order (``canonical``)."""
    tr, va, te = fold_roles(fold, i, k)
    cols, tfidf, x_tr = tfidf_on_counts(counts[tr], base)
    xs = [x_tr.tocsr()] + [tfidf.transform(counts[rows][:, cols]).tocsr() for rows in (va, te)]
    return (tr, va, te), [canonical(x if dtype is None else x.astype(dtype)) for x in xs]


def fit_on_round(base, x_tr, y_tr, x_va, y_va) -> tuple:
    """``(LR, its C)``: the baseline's LR fitted on a round's training rows, C picked on its val fold as
    ``newsbias baseline`` picks it (:func:`newsbias.baseline.fit_lr`; no temperature: it changes no label)."""
    cfg = base.model_copy(update={"calibrate": "none", "sampling": "natural"})
    lr, selection = fit_lr(build_tfidf_lr(cfg, cfg.lr.C).named_steps["lr"], cfg, x_tr, pd.DataFrame({"gold": y_tr}),
                           x_va, pd.DataFrame({"gold": y_va}))
    return lr, selection["C"]


def score_variants(base, i: int, variants: dict, y_va, y_te) -> dict[str, float]:
    """Test macro-F1 of each ``name: (x_train, y_train, x_val, x_test)`` of round ``i``, C picked on its val fold
    (:func:`fit_on_round`); each printed to stderr as it finishes."""
    out = {}
    for name, (x_tr, y_tr, x_va, x_te) in variants.items():
        best, C = fit_on_round(base, x_tr, y_tr, x_va, y_va)
        out[name] = macro_f1(y_te, best.predict(x_te))
        print(f"round {i}, {name}: C {C:g}, {out[name]:.4f}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `newsbias prep` output (train/val/test pooled)")
    ap.add_argument("--min-outlets", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    ap.add_argument("--max-share", type=float, nargs="+", default=[1.0],
                    help="drop n-grams of which one outlet wrote more than this share of their articles")
    ap.add_argument("--min-eta", type=float, nargs="+", default=[0.0],
                    help="drop n-grams whose outlet-level rate the labels explain less than this (eta², 0 = off)")
    ap.add_argument("--eta-power", type=float, nargs="+", default=[0.0],
                    help="scale each TF-IDF column by eta² to this power (0 = off)")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    t0 = time.time()
    base, frame, counts, fold = counted_folds(args.data, args.folds)
    codes = frame["outlet"].astype("category").cat.codes.to_numpy()
    filters = [(m, share, r, g) for m in args.min_outlets for share in args.max_share for r in args.min_eta
               for g in args.eta_power]
    per = [score_round(frame, counts, codes, fold, i, args.folds, base, filters) for i in range(args.folds)]
    print(f"\n{args.folds} outlet-grouped folds (seed 0) of {args.data}; TF-IDF + LR as in configs/demo.yaml "
          f"(C from {base.lr.C_grid} on the next fold). {time.time() - t0:.0f} s in all.\n")
    print("| n-grams kept | grouped CV macro-F1 [95% CI over folds] | change vs first row, paired by fold [95% CI] | "
          "per fold | terms (mean) |")
    print("|---|---|---|---|---:|")
    first = np.array([p[filters[0]][0] for p in per])
    for key in filters:
        m, share, r, power = key
        g = np.array([p[key][0] for p in per])
        mean, lo, hi = fold_interval(list(g))
        delta = paired(first, g) if key != filters[0] else "–"
        what = f"used by ≥ {m} training outlets"
        what += f", top outlet ≤ {share:.0%} of their articles" if share < 1 else ""
        what += f", label eta² ≥ {r}" if r > 0 else ""
        what += f", columns × eta²^{power}" if power > 0 else ""
        print(f"| {what} | {mean:.3f} [{lo:.3f}, {hi:.3f}] | {delta} | "
              f"{' '.join(f'{x:.3f}' for x in g)} | {np.mean([p[key][1] for p in per]):,.0f} |")


if __name__ == "__main__":
    main()
