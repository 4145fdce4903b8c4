"""Lever probe: training on mixtures of articles from different outlets of one label (outlet-grouped CV).

    .venv/bin/python benchmarks/cv_mix.py --data PREP_DIR [--k 2 4] [--folds 5]

Every label in the corpus is its outlet's rating, so an n-gram can predict the label on training
outlets because one outlet uses it (its name, its house phrases) or because many outlets of a
leaning do. Averaging the TF-IDF rows of ``k`` articles from ``k`` different outlets of one label
keeps the second kind at full strength and dilutes the first to 1/k: a logistic regression that
also has to classify such mixtures should lean more on what outlets of a label share. This
measures that idea on the folds of ``newsbias cv`` (:func:`newsbias.cv.make_folds`, seed 0):
TF-IDF fitted as the baseline does, then the baseline's LR on the training rows alone (today) and
on the training rows plus as many mixtures (outlets drawn in proportion to their article counts,
without repeats, one random article each; rows rescaled to unit length), C picked on the next fold.
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

from cv_ablation import fold_table  # noqa: E402
from cv_vocab import counted_folds, round_tfidf, score_variants  # noqa: E402
from newsbias.baseline import canonical  # noqa: E402


def mixtures(x, gold: np.ndarray, outlets: np.ndarray, k: int, seed: int):
    """``(rows, labels)``: per label, as many unit-length means of ``k`` rows from ``k`` distinct outlets of
    that label as the label has rows (``k`` capped at the label's outlet count)."""
    from sklearn.preprocessing import normalize

    rng = np.random.default_rng(seed)
    mats, labels = [], []
    for lab in np.unique(gold):
        rows = np.flatnonzero(gold == lab)
        names, inverse, counts = np.unique(outlets[rows], return_inverse=True, return_counts=True)
        members = [rows[inverse == j] for j in range(len(names))]
        kk = min(k, len(names))
        picks = np.array([[rng.choice(members[j]) for j in rng.choice(len(names), kk, replace=False,
                                                                          p=counts / counts.sum())]
                          for _ in range(len(rows))])
        m = sp.csr_matrix((np.full(picks.size, 1.0 / kk), (np.repeat(np.arange(len(rows)), kk), picks.ravel())),
                          shape=(len(rows), x.shape[0]))
        mats.append(m @ x)
        labels += [lab] * len(rows)
    return normalize(sp.vstack(mats).tocsr()).astype(np.float32), np.array(labels)


def score_round(counts, gold, outlets, fold, i: int, k: int, base, ks) -> dict[str, float]:
    """Test macro-F1 of today's LR and of each mixture setting on round ``i``, C picked on the val fold."""
    (tr, va, te), (x_tr, x_va, x_te) = round_tfidf(counts, fold, i, k, base, np.float32)
    variants = {"today: the training articles": (x_tr, gold[tr], x_va, x_te)}
    for kk in ks:
        xm, ym = mixtures(x_tr, gold[tr], outlets[tr], kk, base.seed + i)
        variants[f"+ mixtures of {kk} outlets"] = (canonical(sp.vstack([x_tr, xm]).tocsr()),
                                                   np.concatenate([gold[tr], ym]), x_va, x_te)
    return score_variants(base, i, variants, gold[va], gold[te])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `newsbias prep` output (train/val/test pooled)")
    ap.add_argument("--k", type=int, nargs="+", default=[2, 4], help="outlets per mixture")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    t0 = time.time()
    base, frame, counts, fold = counted_folds(args.data, args.folds)
    gold, outlets = frame["gold"].to_numpy(), frame["outlet"].fillna("?").to_numpy()
    per = [score_round(counts, gold, outlets, fold, i, args.folds, base, args.k) for i in range(args.folds)]
    print(f"\n{args.folds} outlet-grouped folds (seed 0) of {args.data}; TF-IDF + LR as in configs/demo.yaml "
          f"(C from {base.lr.C_grid} on the next fold). {time.time() - t0:.0f} s in all.\n")
    print(fold_table("training rows", per))

if __name__ == "__main__":
    main()
