"""Lever probe: word and character n-grams side by side in one TF-IDF + LR (outlet-grouped CV).

    .venv/bin/python benchmarks/cv_union.py --data PREP_DIR [--char-weight 1.0] [--folds 5]

Word n-grams carry what an article says; character 3–5-grams inside word boundaries carry spelling
and word parts. Alone, the characters lost on every fold (docs/quality.md, "TF-IDF's own settings");
this asks whether they add anything beside the words. On the folds of ``newsbias cv``
(:func:`newsbias.cv.make_folds`, seed 0), each round fits each vocabulary's TF-IDF on its training
rows as the baseline does (:func:`cv_vocab.round_tfidf`), joins the two matrices column-wise (the
character block scaled by ``w``, the row rescaled to unit length: ``w = 1`` weighs the two blocks
equally), and fits the baseline's LR with C picked on the next fold. The first row, words alone, is
``newsbias cv``'s ``tfidf-lr``.
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
from newsbias.baseline import canonical, count_ngrams  # noqa: E402

CHARS = {"analyzer": "char_wb", "ngram_min": 3, "ngram_max": 5}


def score_round(words, chars, gold, fold, i: int, k: int, base, char_base, weights) -> dict[str, float]:
    """Test macro-F1 of words alone and of words + characters at each weight on round ``i``, C picked on the val fold."""
    (tr, va, te), xw = round_tfidf(words, fold, i, k, base, np.float32)
    _, xc = round_tfidf(chars, fold, i, k, char_base, np.float32)
    variants = {"words (today)": xw}
    for w in weights:
        scale = np.float32(1.0 / np.sqrt(1.0 + w * w))  # both blocks are unit rows: keep the joined row unit too
        variants[f"words + characters × {w:g}"] = [canonical(sp.hstack([a * scale, b * (w * scale)]).tocsr())
                                                   for a, b in zip(xw, xc)]
    return score_variants(base, i, {name: (x_tr, gold[tr], x_va, x_te) for name, (x_tr, x_va, x_te) in variants.items()},
                          gold[va], gold[te])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `newsbias prep` output (train/val/test pooled)")
    ap.add_argument("--char-weight", type=float, nargs="+", default=[1.0],
                    help="the character block's weight against the word block's")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    t0 = time.time()
    base, frame, words, fold = counted_folds(args.data, args.folds)
    char_base = base.model_copy(update={"tfidf": base.tfidf.model_copy(update=CHARS)})
    chars = count_ngrams(frame["text"], char_base, jobs=base.jobs).tocsr()
    gold = frame["gold"].to_numpy()
    per = [score_round(words, chars, gold, fold, i, args.folds, base, char_base, args.char_weight)
           for i in range(args.folds)]
    print(f"\n{args.folds} outlet-grouped folds (seed 0) of {args.data}; TF-IDF + LR as in configs/demo.yaml "
          f"(C from {base.lr.C_grid} on the next fold), characters {CHARS}. {time.time() - t0:.0f} s in all.\n")
    print(fold_table("terms", per))


if __name__ == "__main__":
    main()
