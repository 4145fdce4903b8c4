"""Lever probe: keep only the n-grams that several training outlets use (TF-IDF, outlet-grouped CV).

    .venv/bin/python benchmarks/cv_vocab.py --data PREP_DIR [--min-outlets 1 2 3 5 10]
        [--max-share 1.0 0.8 0.5] [--folds 5]

An outlet's house words (its name, its columnists, its stock phrases) are n-grams few other outlets
use; a model that leans on them memorises outlets. This probe drops, on each round's training
folds, every n-gram used by fewer than ``m`` distinct training outlets, then applies the baseline's
own min_df / max_features rules (with ``--max-share s``, it also drops every n-gram of which one
training outlet writes more than a share ``s`` of the training articles that use it) and TF-IDF + LR (C picked on the next fold), on the folds of
``newsbias cv`` (:func:`newsbias.cv.make_folds`, seed 0). ``m = 1`` is today's recipe. The corpus is
tokenised once (:func:`newsbias.baseline.count_ngrams`). Prints one Markdown row per ``(m, s)``: mean
macro-F1 with its 95 % interval over folds, the change against the first row paired by fold,
per-fold scores, and vocabulary size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cv_ablation import paired  # noqa: E402
from newsbias.baseline import build_tfidf_lr, count_ngrams, fit_lr, kept_terms, label_columns  # noqa: E402
from newsbias.config import load_config  # noqa: E402
from newsbias.cv import fold_interval, fold_roles, make_folds, pooled_articles  # noqa: E402
from newsbias.labels import LABELS  # noqa: E402


def outlet_spread(train_counts, outlet_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column of ``train_counts`` (rows = training articles): how many distinct outlets use it,
    and the share of the articles using it that its most frequent outlet wrote."""
    n_out = outlet_codes.max() + 1
    member = sp.csr_matrix((np.ones(len(outlet_codes), np.float32), (outlet_codes, np.arange(len(outlet_codes)))),
                           shape=(n_out, len(outlet_codes)))
    per_outlet = (member @ (train_counts > 0).astype(np.float32)).tocsc()
    n_outlets = np.asarray((per_outlet > 0).sum(0)).ravel()
    top = per_outlet.max(0).toarray().ravel() / np.maximum(np.asarray(per_outlet.sum(0)).ravel(), 1)
    return n_outlets, top


def score_round(frame, counts, codes, fold, i: int, k: int, base, filters: list[tuple[int, float]]
                ) -> dict[tuple[int, float], tuple[float, int]]:
    """Macro-F1 and vocabulary size of each filter ``(m, s)`` on round ``i``."""
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.metrics import f1_score

    tr, va, te = fold_roles(fold, i, k)
    sub = counts[tr]
    uncapped = base.model_copy(update={"tfidf": base.tfidf.model_copy(update={"max_features": None})})
    cols = kept_terms(sub, uncapped)
    tfs = np.asarray(sub[:, cols].sum(0)).ravel()
    spread, top = outlet_spread(sub[:, cols], codes[tr])
    out = {}
    for m, share in filters:
        keep = np.flatnonzero((spread >= m) & (top <= share))
        if base.tfidf.max_features and len(keep) > base.tfidf.max_features:
            keep = np.sort(keep[(-tfs[keep]).argsort(kind="stable")[:base.tfidf.max_features]])
        c = cols[keep]
        tfidf = TfidfTransformer(sublinear_tf=base.tfidf.sublinear_tf)
        x_train = tfidf.fit_transform(sub[:, c])
        lr, _ = fit_lr(build_tfidf_lr(base, base.lr.C).named_steps["lr"], base, x_train, frame[tr],
                       tfidf.transform(counts[va][:, c]), frame[va])
        probs = label_columns(lr.classes_, lr.predict_proba(tfidf.transform(counts[te][:, c])))
        pred = [LABELS[j] for j in probs.argmax(1)]
        out[m, share] = (float(f1_score(frame["gold"][te], pred, labels=list(LABELS), average="macro",
                                        zero_division=0)), len(c))
        print(f"round {i}, m {m}, s {share}: macro-F1 {out[m, share][0]:.4f}, {len(c):,} terms", file=sys.stderr,
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `newsbias prep` output (train/val/test pooled)")
    ap.add_argument("--min-outlets", type=int, nargs="+", default=[1, 2, 3, 5, 10])
    ap.add_argument("--max-share", type=float, nargs="+", default=[1.0],
                    help="drop n-grams of which one outlet wrote more than this share of their articles")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    base = load_config(ROOT / "configs" / "demo.yaml").baseline
    t0 = time.time()
    frame = pooled_articles(args.data)
    counts = count_ngrams(frame["text"], base).tocsr()
    codes = frame["outlet"].astype("category").cat.codes.to_numpy()
    fold = make_folds(frame, args.folds, 0, grouped=True)
    filters = [(m, share) for m in args.min_outlets for share in args.max_share]
    per = [score_round(frame, counts, codes, fold, i, args.folds, base, filters) for i in range(args.folds)]
    print(f"\n{args.folds} outlet-grouped folds (seed 0) of {args.data}; TF-IDF + LR as in configs/demo.yaml "
          f"(C from {base.lr.C_grid} on the next fold). {time.time() - t0:.0f} s in all.\n")
    print("| n-grams kept | grouped CV macro-F1 [95% CI over folds] | change vs first row, paired by fold [95% CI] | "
          "per fold | terms (mean) |")
    print("|---|---|---|---|---:|")
    first = np.array([p[filters[0]][0] for p in per])
    for m, share in filters:
        g = np.array([p[m, share][0] for p in per])
        mean, lo, hi = fold_interval(list(g))
        delta = paired(first, g) if (m, share) != filters[0] else "–"
        top = f", top outlet ≤ {share:.0%} of their articles" if share < 1 else ""
        print(f"| used by ≥ {m} training outlets{top} | {mean:.3f} [{lo:.3f}, {hi:.3f}] | {delta} | "
              f"{' '.join(f'{x:.3f}' for x in g)} | {np.mean([p[m, share][1] for p in per]):,.0f} |")


if __name__ == "__main__":
    main()
