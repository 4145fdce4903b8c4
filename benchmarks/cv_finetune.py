"""The demo's encoder recipe (linear probe, then full fine-tune) on outlet-grouped folds, for settings to compare.

    .venv/bin/python benchmarks/cv_finetune.py --data PREP_DIR --encoder MINILM_DIR --work DIR
        [--rounds 0 1 2] [--setting NAME="key=value key=value" ...] [--test-cap 1000] [--device cuda]
        [--line 0 0.25 0.5 0.75 1]

Val and the demo's test slice disagree on the encoder's learning rate (docs/quality.md: val picks
5e-5, the test slice prefers 1e-5), and each is dominated by a few outlets. This script asks the
folds of ``newsbias cv`` (:func:`newsbias.cv.make_folds`, seed 0, as ``benchmarks/cv_probe.py``):
round i tests on fold i and validates on fold i+1. Each round's training set is the first 3,000
articles of a seeded shuffle of the other folds (``train.data.train_limit`` of
``configs/demo-encoder.yaml``), val its first 500, test ``--test-cap`` articles of fold i. Every
setting runs through the real ``newsbias train`` and ``newsbias predict`` with its overrides, and the
untrained head (``enc-base``) is scored on the same articles as the chance reference. Prints one
Markdown row per run (mean macro-F1, 95 % interval over rounds, change vs the first setting paired
by round, per-round scores). ``--line`` also scores, from each run's last checkpoint, the checkpoint
val kept before any WiSE step (``NAME@kept``) and the points ``start + alpha * (last - start)``
(``NAME@ALPHA``; alpha 1 is the last step's weights); it needs ``train.wise_alphas`` in the
setting, whose checkpoints hold the start.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cv_ablation import paired  # noqa: E402
from cv_probe import macro_f1  # noqa: E402
from newsbias.cv import fold_interval, fold_roles, make_folds, pooled_articles, prep_lines  # noqa: E402
from newsbias.labels import LABELS  # noqa: E402
from newsbias.records import read_predictions  # noqa: E402

CONFIG = ROOT / "configs" / "demo-encoder.yaml"
# the CLI as a module: runs wherever the package imports (a GPU machine with only PYTHONPATH=src too)
NB = [sys.executable, "-m", "newsbias.cli"]


def write_round(lines: dict[str, str], out: Path, ids: dict[str, np.ndarray]) -> None:
    """The rows of each role's ids, in the given order (a prep output directory for one round)."""
    out.mkdir(parents=True, exist_ok=True)
    for role, role_ids in ids.items():
        (out / f"{role}.jsonl").write_text("".join(lines[i] + "\n" for i in role_ids))


def score(preds: Path, gold: dict[str, str]) -> float:
    rows = read_predictions(preds)
    probs = np.array([[r.probs[lab] for lab in LABELS] for r in rows])
    return macro_f1(np.array([gold[r.id] for r in rows]), probs)


def line_scores(run_dir: Path, test: Path, alphas: list[float], gold: dict[str, str]) -> dict[str, float]:
    """Test macro-F1 of the checkpoint val kept (``kept``) and of points on the run's WiSE line (``str(alpha)``)."""
    from safetensors.torch import load_file

    from newsbias.classifier import Classifier
    from newsbias.records import read_articles
    from newsbias.train import _load_trainable_state, interpolate_weights, latest_checkpoint

    ck = latest_checkpoint(run_dir)
    if ck is None or not (ck / "init.safetensors").is_file():
        raise SystemExit(f"{run_dir}: no checkpoint with init.safetensors; --line needs train.wise_alphas")
    start, last = load_file(str(ck / "init.safetensors")), load_file(str(ck / "trainable.safetensors"))
    clf = Classifier.load(str(run_dir))
    arts = read_articles(test)
    y = np.array([gold[a.id] for a in arts])
    points = {"kept": load_file(str(ck / "best.safetensors")),
              **{str(a): interpolate_weights(start, last, a) for a in alphas}}
    out = {}
    for name, weights in points.items():
        _load_trainable_state(clf.model, weights)
        out[name] = macro_f1(y, clf.predict_proba([a.text for a in arts], batch_size=64))
    return out


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, type=Path, help="a `newsbias prep` output (train/val/test pooled)")
    ap.add_argument("--encoder", required=True, help="the sentence encoder's directory (all-MiniLM-L6-v2)")
    ap.add_argument("--work", required=True, type=Path, help="where each round's data, models and predictions go")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--rounds", type=int, nargs="+", default=None, help="which rounds to run (default: all)")
    ap.add_argument("--setting", nargs="+", default=['lr5e-5=train.optim.lr=5e-5', 'lr1e-5=train.optim.lr=1e-5'],
                    help='NAME="override override ..." for newsbias train, one per setting')
    ap.add_argument("--test-cap", type=int, default=1000)
    ap.add_argument("--device", default="cpu", help="train and predict on this device (cpu, cuda)")
    ap.add_argument("--no-base", action="store_true", help="skip the untrained head (another process scores it)")
    ap.add_argument("--line", type=float, nargs="+", default=None,
                    help="also score the kept checkpoint and these points on each run's WiSE line (0 = start, 1 = last)")
    args = ap.parse_args()

    frame = pooled_articles(args.data)
    fold = make_folds(frame, args.folds, seed=0)
    rng = np.random.default_rng(0)
    lines, gold = prep_lines(args.data), dict(zip(frame["id"], frame["gold"]))
    settings = dict(s.split("=", 1) for s in args.setting)
    scores: dict[str, list[float]] = {**({} if args.no_base else {"enc-base": []}), **{n: [] for n in settings}}
    for n in settings if args.line else ():
        scores.update({f"{n}@kept": [], **{f"{n}@{a}": [] for a in args.line}})
    rounds = set(args.rounds if args.rounds is not None else range(args.folds))
    for i in range(args.folds):
        tr, va, te = fold_roles(fold, i, args.folds)
        # every round's shuffle is drawn, run or not, so `--rounds 3 4` sees what a full run would
        ids = {"train": rng.permutation(frame["id"][tr].to_numpy()), "val": rng.permutation(frame["id"][va].to_numpy()),
               "test": rng.permutation(frame["id"][te].to_numpy())[:args.test_cap]}
        if i not in rounds:
            continue
        rdir = args.work / f"round{i}"
        write_round(lines, rdir / "data", ids)
        predict = [*NB, "predict", "-q", "-c", str(CONFIG), "--input", str(rdir / "data"), "--overwrite",
                   f"predict.device={args.device}", "predict.limit=null"]
        if not args.no_base:
            run(predict + ["--model", args.encoder, "--out", str(rdir / "enc-base.jsonl")])
            scores["enc-base"].append(score(rdir / "enc-base.jsonl", gold))
        for name, overrides in settings.items():
            out = rdir / name
            run([*NB, "train", "-q", "-c", str(CONFIG), f"train.model.name_or_path={args.encoder}",
                 f"train.data.path={rdir / 'data'}", f"train.out_dir={out}", f"train.model.device={args.device}",
                 *shlex.split(overrides), "--overwrite"])
            run(predict + ["--model", str(out), "--out", str(rdir / f"{name}.jsonl")])
            scores[name].append(score(rdir / f"{name}.jsonl", gold))
            if args.line:
                for point, f1 in line_scores(out, rdir / "data" / "test.jsonl", args.line, gold).items():
                    scores[f"{name}@{point}"].append(f1)
        print(f"round {i}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in scores.items()), flush=True)

    ref = next(iter(settings))
    print(f"\n| run | grouped CV macro-F1 [95% CI over rounds] | change vs {ref}, paired by round | per round |")
    print("|---|---|---|---|")
    for name, s in scores.items():
        mean, lo, hi = fold_interval(s)
        change = "–" if name == ref else paired(np.array(scores[ref]), np.array(s))
        print(f"| {name} | {mean:.3f} [{lo:.3f}, {hi:.3f}] | {change} | {' '.join(f'{x:.3f}' for x in s)} |")


if __name__ == "__main__":
    main()
