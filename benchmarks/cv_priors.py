"""Lever probe: does adapting TF-IDF's class priors to an unseen fold's articles help (outlet-grouped CV)?

    .venv/bin/python benchmarks/cv_priors.py --data PREP_DIR [--folds 5]

A fold of unseen outlets can carry another label mix than training, and macro-F1 punishes a
classifier that keeps the training mix. On the folds of ``newsbias cv`` (seed 0), each round fits
the baseline's TF-IDF + LR (``configs/demo.yaml``, C on the next fold) and then moves its
probabilities on the test fold three ways, none using the test fold's labels:

* EM prior adaptation (Saerens, Latinne & Decaestecker 2002): the test fold's label mix estimated
  from its own predicted probabilities, iterated to a fixed point, and the posteriors re-weighted;
* the same, half-way (the square root of the estimated prior ratio);
* per-class offsets on the log-probabilities that maximise macro-F1 on the val fold (the next
  fold, as C is picked), then applied to the test fold.

Prints the gold and predicted label mix of each test fold and one Markdown row per method: mean
macro-F1 with its 95 % interval over folds, the change paired by fold, per-fold scores.
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cv_ablation import fold_table  # noqa: E402
from cv_vocab import counted_folds  # noqa: E402
from newsbias.baseline import fit_tfidf_lr_on_counts  # noqa: E402
from newsbias.cv import fold_roles  # noqa: E402
from newsbias.labels import LABELS  # noqa: E402
from newsbias.metrics import macro_f1  # noqa: E402

OFFSETS = np.linspace(-1.5, 1.5, 31)


def em_priors(probs: np.ndarray, train_prior: np.ndarray, iters: int = 100) -> np.ndarray:
    """The label mix of ``probs``'s articles by EM: re-weight posteriors by prior ratio, re-estimate, repeat."""
    prior = train_prior.copy()
    for _ in range(iters):
        post = probs * (prior / train_prior)
        prior = (post / post.sum(1, keepdims=True)).mean(0)
    return prior


def score_round(frame, counts, fold: np.ndarray, i: int, k: int, base) -> dict[str, float]:
    """Test macro-F1 of each method on round ``i``."""
    gold = frame["gold"].to_numpy()

    def f1(rows: np.ndarray, scores: np.ndarray) -> float:
        return macro_f1(gold[rows], np.array(LABELS)[scores.argmax(1)])

    tr, va, te = fold_roles(fold, i, k)
    probs = fit_tfidf_lr_on_counts(counts, tr, frame.iloc[tr], base, va, frame.iloc[va])
    p_va, p_te = probs(va), probs(te)
    uniform = np.full(len(LABELS), 1 / len(LABELS))  # balanced class weights: the fit's implied prior
    ratio = em_priors(p_te, uniform) / uniform
    best = max(product(OFFSETS, OFFSETS), key=lambda o: f1(va, np.log(p_va) + [o[0], 0, o[1]]))
    mix = {lab: f"{(gold[te] == lab).mean():.2f}/{(p_te.argmax(1) == j).mean():.2f}" for j, lab in enumerate(LABELS)}
    print(f"round {i}: label mix gold/predicted {mix}; EM prior {np.round(ratio / 3, 2)}; val offsets {best}",
          file=sys.stderr, flush=True)
    return {"today (no adaptation)": f1(te, p_te), "EM prior adaptation": f1(te, p_te * ratio),
            "EM prior adaptation, half-way": f1(te, p_te * np.sqrt(ratio)),
            "class offsets tuned on the val fold": f1(te, np.log(p_te) + [best[0], 0, best[1]])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `newsbias prep` output (train/val/test pooled)")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    t0 = time.time()
    base, frame, counts, fold = counted_folds(args.data, args.folds)
    per = [score_round(frame, counts, fold, i, args.folds, base) for i in range(args.folds)]
    print(f"\n{args.folds} outlet-grouped folds (seed 0) of {args.data}; TF-IDF + LR as in configs/demo.yaml. "
          f"{time.time() - t0:.0f} s in all.\n")
    print(fold_table("method", per))

if __name__ == "__main__":
    main()
