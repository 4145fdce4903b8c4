"""Pick SmoothQuant's alpha for ``newsbias export --quantize int8 --smooth ALPHA`` on val, not test.

    .venv/bin/python benchmarks/int8_smooth.py MODEL_DIR PREP_DIR [--alphas 0 0.5 0.7 0.85 1.0] [--n 300]
        [--keep default|all] [--work DIR]

For each alpha (0 = no smoothing) the model is loaded afresh, exported as `newsbias export` does
(per-tensor int8, calibrated on the first 128 articles of PREP_DIR's train split) and scored on
``--n`` articles of the val split (from article 200 on: `export --check-data` scores the first
200). Prints a Markdown table: the share of labels identical to the fp32 model's, macro-F1 of
both, the median and largest probability change. Label agreement with fp32 needs no gold labels,
but the choice is still made on val so that the test split stays unseen.
"""

from __future__ import annotations

import argparse
import time
from itertools import islice
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.85, 1.0])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--keep", choices=["default", "all"], default="default",
                    help="default: export.keep_fp32's default (MLP output projections fp32); all: every layer int8")
    ap.add_argument("--work", default="/tmp/int8_smooth")
    args = ap.parse_args()
    from newsbias.classifier import Classifier
    from newsbias.config import INT8_KEEP_FP32
    from newsbias.labels import LABELS
    from newsbias.metrics import macro_f1
    from newsbias.modeling import set_threads
    from newsbias.records import read_articles, resolve_split

    set_threads(None)
    val = list(islice(read_articles(resolve_split(args.data, "val")), 200, 200 + args.n))
    calib = [a.text for a in read_articles(resolve_split(args.data, "train"), limit=128)]
    texts, gold = [a.text for a in val], [LABELS.index(a.label) for a in val]
    keep = list(INT8_KEEP_FP32) if args.keep == "default" else []
    ref = Classifier.load(args.model, device="cpu", dtype="float32").predict_proba(texts, batch_size=16)
    print(f"\n{Path(args.model).name}: {len(texts)} val articles, int8 per tensor, keep_fp32 {args.keep}\n")
    print("| smoothing alpha | labels = fp32 | macro-F1 (fp32) | median / max prob change | export s |")
    print("|---|---|---|---|---|")
    for alpha in args.alphas:
        out = Path(args.work) / f"alpha-{alpha}-{args.keep}"
        clf = Classifier.load(args.model, device="cpu", dtype="float32")
        t = time.perf_counter()
        clf.save(out, format="onnx", quantize="int8", keep_fp32=keep, smooth=alpha or None, calibration_texts=calib)
        seconds = time.perf_counter() - t
        probs = Classifier.load(str(out)).predict_proba(texts, batch_size=16)
        change = np.abs(probs - ref).max(1)
        f1 = [macro_f1(gold, p.argmax(1), range(len(LABELS))) for p in (probs, ref)]
        print(f"| {alpha or 'none'} | {(probs.argmax(1) == ref.argmax(1)).mean():.1%} | {f1[0]:.3f} ({f1[1]:.3f}) | "
              f"{np.median(change):.4f} / {change.max():.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
