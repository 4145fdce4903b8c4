"""Generalisation levers for TF-IDF, judged by outlet-grouped cross-validation.

    .venv/bin/python benchmarks/cv_ablation.py --input DATA/allsides/articles.jsonl.gz [--out runs/ablation]

Runs ``newsbias prep`` (configs/demo.yaml's prep section) once per ``prep.clean.outlet_cues``
mode, pools train+val+test, and scores each lever on the same 5 outlet-grouped folds
(:func:`newsbias.cv.make_folds`; fold i tests, fold i+1 picks C, the rest train) and on 5 random
folds (outlets shared: the memorisation reference). This is ``newsbias cv`` with
``baseline.sampling``/``outlet_power`` varied, run in one process so that levers sharing a text
variant share each fold's TF-IDF vectoriser (the LR is the only part that differs). Prints one
Markdown row per lever: grouped-fold mean macro-F1 with its 95 % interval over folds, the change
against today's recipe paired by fold, per-fold scores, and the random-fold mean.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from newsbias.baseline import build_tfidf_lr, fit_lr  # noqa: E402
from newsbias.config import BaselineConfig, load_config  # noqa: E402
from newsbias.cv import fold_interval, fold_roles, make_folds, pooled_articles  # noqa: E402
from newsbias.metrics import macro_f1  # noqa: E402

NB = str(Path(sys.executable).with_name("newsbias"))
SAMPLING = {"natural": {}, "balanced-1": {"sampling": "outlet_balanced", "outlet_power": 1.0},
            "balanced-0.5": {"sampling": "outlet_balanced", "outlet_power": 0.5}}
ROWS = [  # (row name, outlet_cues mode, sampling)
    ("today: text as published, natural weights", "keep", "natural"),
    ("outlet cues masked (prep.clean.outlet_cues=mask)", "mask", "natural"),
    ("outlet cues dropped (prep.clean.outlet_cues=drop)", "drop", "natural"),
    ("outlet-balanced weights, power 1 (baseline.sampling=outlet_balanced)", "keep", "balanced-1"),
    ("outlet-balanced weights, power 0.5 (+ baseline.outlet_power=0.5)", "keep", "balanced-0.5"),
    ("cues masked + balanced, power 0.5", "mask", "balanced-0.5"),
    ("cues dropped + balanced, power 0.5", "drop", "balanced-0.5"),
]


def prep(inp: str, out: Path, mode: str) -> Path:
    data = out / f"data-{mode}"
    if not (data / "prep_meta.json").is_file():
        t0 = time.time()
        subprocess.run([NB, "prep", "-q", "-c", "configs/demo.yaml", f"prep.input.path={inp}",
                        f"prep.out_dir={data}", f"prep.clean.outlet_cues={mode}"], check=True, cwd=ROOT)
        print(f"prep {mode}: {time.time() - t0:.0f} s", file=sys.stderr)
    return data


def score_fold(frame, fold, i: int, k: int, base: BaselineConfig, samplings: list[str]) -> dict[str, float]:
    """Macro-F1 of each sampling lever on round ``i``, sharing one vectoriser."""
    tr, va, te = fold_roles(fold, i, k)
    train, val, test = frame[tr], frame[va], frame[te]
    pipe = build_tfidf_lr(base, base.lr.C)
    x_train = pipe.named_steps["tfidf"].fit_transform(train["text"])
    x_val, x_test = pipe.named_steps["tfidf"].transform(val["text"]), pipe.named_steps["tfidf"].transform(test["text"])
    out = {}
    for name in samplings:
        cfg = base.model_copy(update=SAMPLING[name])
        lr, _ = fit_lr(pipe.named_steps["lr"], cfg, x_train, train, x_val, val)
        pred = lr.predict(x_test)
        out[name] = macro_f1(test["gold"], pred)
    return out


def run_variant(data: Path, samplings: list[str], base: BaselineConfig, folds: int, jobs: int) -> dict:
    from joblib import Parallel, delayed

    frame = pooled_articles(data)
    res = {}
    for kind, grouped in (("grouped", True), ("random", False)):
        fold = make_folds(frame, folds, 0, grouped=grouped)
        per = Parallel(n_jobs=jobs)(delayed(score_fold)(frame, fold, i, folds, base, samplings) for i in range(folds))
        res[kind] = {s: np.array([p[s] for p in per]) for s in samplings}
    return res


def paired(a: np.ndarray, b: np.ndarray) -> str:
    """``b - a`` per fold: mean [95% t-interval], as ``newsbias cv`` reports a recipe's change."""
    mean, lo, hi = fold_interval((np.asarray(b) - np.asarray(a)).tolist())
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def fold_rows(per: list[dict[str, float]]) -> list[str]:
    """One Markdown row per key of ``per`` (a dict of scores per fold): mean [95% CI over folds], change
    against the first key paired by fold, per-fold scores."""
    names = list(per[0])
    first = np.array([p[names[0]] for p in per])
    rows = []
    for name in names:
        g = np.array([p[name] for p in per])
        mean, lo, hi = fold_interval(list(g))
        rows.append(f"| {name} | {mean:.3f} [{lo:.3f}, {hi:.3f}] | {paired(first, g) if name != names[0] else '–'} | "
                    f"{' '.join(f'{x:.3f}' for x in g)} |")
    return rows


def fold_table(first_column: str, per: list[dict[str, float]]) -> str:
    """:func:`fold_rows` under a Markdown header whose first column is ``first_column``."""
    return "\n".join([f"| {first_column} | grouped CV macro-F1 [95% CI over folds] | change vs today, paired by fold "
                      "[95% CI] | per fold |", "|---|---|---|---|", *fold_rows(per)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, help="AllSides corpus (articles.jsonl.gz or the release directory)")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    base = load_config(ROOT / "configs" / "demo.yaml").baseline
    t0 = time.time()
    results = {}
    for mode in dict.fromkeys(m for _, m, _ in ROWS):
        samplings = list(dict.fromkeys(s for _, m, s in ROWS if m == mode))
        results[mode] = run_variant(prep(args.input, Path(args.out), mode), samplings, base, args.folds, args.jobs)
        print(f"{mode}: done at {time.time() - t0:.0f} s", file=sys.stderr)
    today = results["keep"]["grouped"]["natural"]
    print(f"\n{args.folds} outlet-grouped folds (seed 0) over train+val+test of configs/demo.yaml's prep "
          f"(AllSides); TF-IDF + LR as configured there (C from {base.lr.C_grid} on the next fold). "
          f"{time.time() - t0:.0f} s in all.\n")
    print("| lever | grouped CV macro-F1 [95% CI over folds] | change vs today, paired by fold [95% CI] | "
          "per fold | random folds (outlets shared) |")
    print("|---|---|---|---|---:|")
    for name, mode, samp in ROWS:
        g, r = results[mode]["grouped"][samp], results[mode]["random"][samp]
        mean, lo, hi = fold_interval(list(g))
        delta = paired(today, g) if (mode, samp) != ("keep", "natural") else "–"
        print(f"| {name} | {mean:.3f} [{lo:.3f}, {hi:.3f}] | {delta} | {' '.join(f'{x:.3f}' for x in g)} | "
              f"{r.mean():.3f} |")


if __name__ == "__main__":
    main()
