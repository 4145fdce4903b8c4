"""Lever probe: does self-training on an unseen fold's own articles help TF-IDF (outlet-grouped CV)?

    .venv/bin/python benchmarks/cv_selftrain.py --data PREP_DIR [--folds 5] [--shares 0.3 0.6]

Articles of one outlet share words that no training outlet used, and their labels are the outlet's. On the
folds of ``newsbias cv`` (seed 0), each round fits the baseline's TF-IDF + LR (``configs/demo.yaml``, C on
the next fold), labels the test fold with it, adds the most confident share of each predicted class to the
training rows under the predicted label (no gold label of the test fold is read), refits vocabulary, IDF and
LR (C on the next fold again) and scores the test fold. This is transductive: it needs the articles to be
scored in one batch, as ``newsbias baseline`` scores a split.

With ``--pick-on-val`` the share is chosen per round as C is: self-training the val fold on its own confident
articles at each share (or not at all), scored on val's labels; the test fold then self-trains at that share.

Prints one Markdown row per share (or the val-picked one): mean macro-F1 with its 95 % interval over folds,
the change paired by fold, per-fold scores.
"""

from __future__ import annotations

import argparse
import sys
import time
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


def confident_rows(probs: np.ndarray, rows: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` most confident of ``rows`` within each predicted class (so no class is drowned)."""
    pred, conf = probs.argmax(1), probs.max(1)
    keep = []
    for j in range(probs.shape[1]):
        mine = np.flatnonzero(pred == j)
        keep += list(mine[np.argsort(-conf[mine], kind="stable")][:int(round(share * len(mine)))])
    return rows[np.sort(np.array(keep, dtype=int))]


def self_trained(frame, counts, base, tr, va, probs, target: np.ndarray, share: float) -> np.ndarray:
    """Labels of ``target`` after one round of self-training on its ``share`` most confident articles."""
    added = confident_rows(probs(target), target, share)
    pseudo = frame.copy()
    pseudo.loc[pseudo.index[added], "gold"] = np.array(LABELS)[probs(added).argmax(1)]
    rows = np.concatenate([tr, added])
    again = fit_tfidf_lr_on_counts(counts, rows, pseudo.iloc[rows], base, va, frame.iloc[va])
    return np.array(LABELS)[again(target).argmax(1)]


def score_round(frame, counts, fold: np.ndarray, i: int, k: int, base, shares: list[float],
                pick_on_val: bool) -> dict[str, float]:
    """Test macro-F1 on round ``i`` before and after one round of self-training at each share (``pick_on_val``:
    only at the share that self-training on the val fold scores best there, no self-training among them)."""
    gold = frame["gold"].to_numpy()
    tr, va, te = (np.flatnonzero(m) for m in fold_roles(fold, i, k))
    probs = fit_tfidf_lr_on_counts(counts, tr, frame.iloc[tr], base, va, frame.iloc[va])
    out = {"today (no self-training)": macro_f1(gold[te], np.array(LABELS)[probs(te).argmax(1)])}
    if pick_on_val:
        on_val = {0.0: macro_f1(gold[va], np.array(LABELS)[probs(va).argmax(1)])}
        on_val.update({sh: macro_f1(gold[va], self_trained(frame, counts, base, tr, va, probs, va, sh)) for sh in shares})
        share = max(on_val, key=lambda sh: (on_val[sh], -sh))
        print(f"round {i}: val macro-F1 by share {on_val}; picked {share}", file=sys.stderr, flush=True)
        out["self-trained at the share val picks"] = out["today (no self-training)"] if not share else macro_f1(
            gold[te], self_trained(frame, counts, base, tr, va, probs, te, share))
        return out
    for share in shares:
        out[f"self-trained on the {share:.0%} most confident test articles per class"] = macro_f1(
            gold[te], self_trained(frame, counts, base, tr, va, probs, te, share))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `newsbias prep` output (train/val/test pooled)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--shares", type=float, nargs="+", default=[0.3, 0.6])
    ap.add_argument("--pick-on-val", action="store_true", help="one row: the share chosen per round on the val fold")
    args = ap.parse_args()
    t0 = time.time()
    base, frame, counts, fold = counted_folds(args.data, args.folds)
    per = [score_round(frame, counts, fold, i, args.folds, base, args.shares, args.pick_on_val)
           for i in range(args.folds)]
    print(f"\n{args.folds} outlet-grouped folds (seed 0) of {args.data}; TF-IDF + LR as in configs/demo.yaml. "
          f"{time.time() - t0:.0f} s in all.\n")
    print(fold_table("method", per))


if __name__ == "__main__":
    main()
