"""Generalisation levers for TF-IDF, judged by outlet-grouped cross-validation (issue: unseen outlets).

    .venv/bin/python benchmarks/cv_ablation.py --input DATA/allsides/articles.jsonl.gz [--out runs/ablation]

Runs ``newsbias prep`` (configs/demo.yaml's prep section) once per ``prep.clean.outlet_cues``
mode, then ``newsbias cv`` (5 folds, TF-IDF + LR with the demo's baseline settings) for each lever
alone and combined, and prints one Markdown row per lever: grouped-fold mean macro-F1 with its
95 % interval over folds, the change against today's recipe on the same folds (paired per fold),
and the same recipe on random folds (outlets shared) as the memorisation reference.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NB = str(Path(sys.executable).with_name("newsbias"))
LEVERS = [  # (row name, outlet_cues mode, baseline overrides)
    ("today: text as published, natural weights", "keep", []),
    ("outlet cues masked", "mask", []),
    ("outlet cues dropped", "drop", []),
    ("outlet-balanced weights (power 1)", "keep", ["baseline.sampling=outlet_balanced"]),
    ("outlet-balanced weights (power 0.5)", "keep", ["baseline.sampling=outlet_balanced", "baseline.outlet_power=0.5"]),
    ("cues masked + balanced (power 0.5)", "mask", ["baseline.sampling=outlet_balanced", "baseline.outlet_power=0.5"]),
    ("cues dropped + balanced (power 0.5)", "drop", ["baseline.sampling=outlet_balanced", "baseline.outlet_power=0.5"]),
]


def run(cmd: list[str]) -> float:
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.time() - t0


def prep(inp: str, out: Path, mode: str) -> Path:
    data = out / f"data-{mode}"
    if not (data / "prep_meta.json").is_file():
        secs = run([NB, "prep", "-q", "-c", "configs/demo.yaml", f"prep.input.path={inp}", f"prep.out_dir={data}",
                    f"prep.clean.outlet_cues={mode}"])
        print(f"prep {mode}: {secs:.0f} s", file=sys.stderr)
    return data


def cv(data: Path, out: Path, overrides: list[str], folds: int) -> tuple[dict, float]:
    if (out / "cv.json").is_file():  # a finished row of an interrupted run
        done = json.loads((out / "cv.json").read_text())
        return done, done["seconds"]
    secs = run([NB, "cv", "-c", "configs/demo.yaml", "--data", str(data), "--out", str(out), "--folds", str(folds),
                "cv.recipes=[tfidf-lr]", "cv.save_predictions=false", *overrides])
    return json.loads((out / "cv.json").read_text()), secs


def fold_scores(summary: dict, key: str = "grouped") -> np.ndarray:
    return np.array([f["macro_f1"] for f in summary[key][0]["folds"]])


def paired_delta(a: np.ndarray, b: np.ndarray) -> str:
    from scipy import stats

    d = b - a
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    return f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--input", required=True, help="AllSides corpus (articles.jsonl.gz or the release directory)")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()
    out = Path(args.out)
    rows, base = [], None
    for name, mode, over in LEVERS:
        data = prep(args.input, out, mode)
        tag = name.split(":")[0].replace(" ", "-").replace("(", "").replace(")", "").replace("+", "and")
        summary, secs = cv(data, out / f"cv-{tag}", over, args.folds)
        g = summary["grouped"][0]
        scores = fold_scores(summary)
        base = scores if base is None else base
        rows.append(f"| {name} | {g['mean']:.3f} [{g['ci95'][0]:.3f}, {g['ci95'][1]:.3f}] | "
                    f"{paired_delta(base, scores) if rows else '–'} | "
                    f"{' '.join(f'{s:.3f}' for s in scores)} | {summary['random'][0]['mean']:.3f} | {secs:.0f} |")
        print(rows[-1], file=sys.stderr)
    print(f"\n{args.folds} outlet-grouped folds (seed 0) over train+val+test of the demo's prep; TF-IDF + LR as in "
          "configs/demo.yaml (C from [1, 3, 10] on the next fold).\n")
    print("| lever | grouped CV macro-F1 [95% CI over folds] | change vs today, paired by fold [95% CI] | "
          "per fold | random folds (outlets shared) | cv seconds |")
    print("|---|---|---|---|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
