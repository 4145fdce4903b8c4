"""Does the TF-IDF baseline's logistic regression stop where float rounding decides?

    .venv/bin/python benchmarks/lr_tolerance.py --data PREP_DIR [--C 10] [--tols 1e-4 1e-6] [--solvers lbfgs newton-cg] [--n-test 1000]

The baseline (``configs/demo.yaml``: word 1-2-grams, 200k terms, balanced class weights) stops when
the largest gradient entry falls below ``tol``. Its L2 penalty is weak at the C values the demo
picks, so the objective is flat near the optimum, and a fit stopped short of it (lbfgs at
scikit-learn's default 1e-4) lands where summation order puts it: another CPU, BLAS or row layout.
This fits the same vectorised training split (``train.jsonl``) with each solver and ``tol``, once as
read and once with its rows shuffled (the same objective, the same optimum, sums in another order),
and prints a Markdown row per fit: iterations, seconds, val macro-F1, macro-F1 on the first ``n``
test articles (the demo's slice), and the test labels that differ between the two row orders.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.base import clone

from newsbias.baseline import build_tfidf_lr, canonical, split_frame
from newsbias.config import BaselineConfig
from newsbias.metrics import macro_f1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `newsbias prep` output directory")
    ap.add_argument("--C", type=float, default=10.0)
    ap.add_argument("--tols", type=float, nargs="+", default=[1e-4, 1e-6])
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--solvers", nargs="+", default=["lbfgs"], help="scikit-learn LogisticRegression solvers")
    ap.add_argument("--max-iter", type=int, default=2000)
    args = ap.parse_args()

    train, val = split_frame(f"{args.data}/train.jsonl"), split_frame(f"{args.data}/val.jsonl")
    test = split_frame(f"{args.data}/test.jsonl").iloc[:args.n_test]
    pipe = build_tfidf_lr(BaselineConfig(), args.C)
    t = time.perf_counter()
    x_train = canonical(pipe.named_steps["tfidf"].fit_transform(train["text"]))
    x_val, x_test = (canonical(pipe.named_steps["tfidf"].transform(f["text"])) for f in (val, test))
    print(f"vectorised {x_train.shape[0]} train articles, {x_train.shape[1]} terms, {time.perf_counter() - t:.0f} s")
    order = np.random.default_rng(0).permutation(x_train.shape[0])
    lr = pipe.named_steps["lr"].set_params(max_iter=args.max_iter)

    print("| solver | tol | rows | iterations | seconds | val macro-F1 | test macro-F1 | test labels ≠ the other order |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for solver, tol in ((s, t) for s in args.solvers for t in args.tols):
        preds, rows = {}, []
        for name, idx in (("as read", np.arange(x_train.shape[0])), ("shuffled", order)):
            t = time.perf_counter()
            fit = clone(lr).set_params(tol=tol, solver=solver).fit(x_train[idx], train["gold"].to_numpy()[idx])
            seconds = time.perf_counter() - t
            preds[name] = fit.predict(x_test)
            rows.append((name, int(fit.n_iter_[0]), seconds, macro_f1(val["gold"], fit.predict(x_val)),
                         macro_f1(test["gold"], preds[name])))
        differ = float((preds["as read"] != preds["shuffled"]).mean())
        for name, n_iter, seconds, f1_val, f1_test in rows:
            print(f"| {solver} | {tol:g} | {name} | {n_iter} | {seconds:.0f} | {f1_val:.4f} | {f1_test:.4f} | {differ:.1%} |",
                  flush=True)


if __name__ == "__main__":
    main()
