"""Lever probe: other linear classifiers on the same TF-IDF features (outlet-grouped CV).

    .venv/bin/python benchmarks/cv_models.py --data PREP_DIR [--folds 5]

TF-IDF's vocabulary settings and the text itself did not move the grouped mean (docs/quality.md);
this asks whether the classifier does. On the folds of ``newsbias cv`` (:func:`newsbias.cv.make_folds`,
seed 0), each round fits TF-IDF exactly as the baseline does (``configs/demo.yaml``), then every
model family below with each setting of its grid, and keeps the setting with the best macro-F1 on
the next fold (as the baseline picks C). Prints one Markdown row per family: mean macro-F1 with its
95 % interval over folds, the change against today's LR paired by fold, and per-fold scores.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cv_ablation import fold_table  # noqa: E402
from cv_vocab import counted_folds, round_tfidf  # noqa: E402
from newsbias.baseline import build_tfidf_lr  # noqa: E402
from newsbias.labels import LABELS  # noqa: E402
from newsbias.metrics import macro_f1  # noqa: E402


class NBLR(BaseEstimator, ClassifierMixin):
    """NB-weighted logistic regression (Wang & Manning 2012, "NBSVM"), one-vs-rest on binarised features.

    Not in scikit-learn; each class's columns are scaled by their smoothed log-count ratio (class vs rest).
    """

    def __init__(self, C: float = 1.0):
        self.C = C

    def fit(self, x, y):
        from sklearn.linear_model import LogisticRegression

        xb, y = (x > 0).astype(np.float32), np.asarray(y)
        self.members = []
        for c in LABELS:
            p = np.asarray(xb[y == c].sum(0)).ravel() + 1
            q = np.asarray(xb[y != c].sum(0)).ravel() + 1
            r = np.log((p / p.sum()) / (q / q.sum())).astype(np.float32)
            lr = LogisticRegression(C=self.C, class_weight="balanced", max_iter=1000)
            self.members.append((r, lr.fit(xb.multiply(r).tocsr(), y == c)))
        return self

    def predict(self, x):
        xb = (x > 0).astype(np.float32)
        s = np.column_stack([lr.decision_function(xb.multiply(r).tocsr()) for r, lr in self.members])
        return np.array(LABELS)[s.argmax(1)]


def families(base) -> dict[str, list]:
    """Each model family's unfitted candidates, one per setting of its grid (``base``: the baseline config)."""
    from sklearn.linear_model import RidgeClassifier, SGDClassifier
    from sklearn.naive_bayes import ComplementNB, MultinomialNB
    from sklearn.svm import LinearSVC

    seed = base.seed

    def lr(C):
        # the baseline's own LR; max_iter 1000 (the baseline: 2000) is what docs/quality.md's table was measured with
        return build_tfidf_lr(base, C).named_steps["lr"].set_params(max_iter=1000)

    return {
        "logistic regression, C from [1, 3, 10] (today)": [lr(C) for C in (1.0, 3.0, 10.0)],
        "logistic regression, C from [1, 3, 10, 30, 100]": [lr(C) for C in (1.0, 3.0, 10.0, 30.0, 100.0)],
        "complement naive Bayes, alpha from [0.03, 0.1, 0.3, 1]": [ComplementNB(alpha=a) for a in (0.03, 0.1, 0.3, 1.0)],
        "multinomial naive Bayes, alpha from [0.01, 0.03, 0.1]": [MultinomialNB(alpha=a) for a in (0.01, 0.03, 0.1)],
        "linear SVM, C from [0.1, 0.3, 1]": [LinearSVC(C=C, class_weight="balanced") for C in (0.1, 0.3, 1.0)],
        "ridge classifier, alpha from [0.3, 1, 3]": [RidgeClassifier(alpha=a, class_weight="balanced")
                                                     for a in (0.3, 1.0, 3.0)],
        "SGD, modified Huber loss, alpha from [1e-5, 3e-5, 1e-4]": [
            SGDClassifier(loss="modified_huber", alpha=a, class_weight="balanced", random_state=seed)
            for a in (1e-5, 3e-5, 1e-4)],
        "NB-weighted LR (NBSVM), C from [0.1, 0.3, 1]": [NBLR(C) for C in (0.1, 0.3, 1.0)],
    }


def score_round(counts, gold: np.ndarray, fold: np.ndarray, i: int, k: int, base) -> dict[str, float]:
    """Test macro-F1 of each family on round ``i``, its setting picked on the val fold."""
    from sklearn.base import clone

    (tr, va, te), (x_tr, x_va, x_te) = round_tfidf(counts, fold, i, k, base)
    out = {}
    for name, grid in families(base).items():
        fitted = [clone(m).fit(x_tr, gold[tr]) for m in grid]
        best = max(fitted, key=lambda m: macro_f1(gold[va], m.predict(x_va)))
        out[name] = macro_f1(gold[te], best.predict(x_te))
        print(f"round {i}, {name}: {out[name]:.4f}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `newsbias prep` output (train/val/test pooled)")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    t0 = time.time()
    base, frame, counts, fold = counted_folds(args.data, args.folds)
    gold = frame["gold"].to_numpy()
    per = [score_round(counts, gold, fold, i, args.folds, base) for i in range(args.folds)]
    print(f"\n{args.folds} outlet-grouped folds (seed 0) of {args.data}; TF-IDF as in configs/demo.yaml, each "
          f"family's setting picked on the next fold. {time.time() - t0:.0f} s in all.\n")
    print(fold_table("classifier on TF-IDF", per))

if __name__ == "__main__":
    main()
