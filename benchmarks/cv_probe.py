"""A frozen sentence encoder's linear probe against TF-IDF, and their equal-weight ensemble (outlet-grouped CV).

    .venv/bin/python benchmarks/cv_probe.py --data PREP_DIR --encoder MINILM_DIR [--folds 5]
        [--train-cap 3000 0] [--cache FEATURES.npy]

The demo's encoder starts from a linear probe (``train.head_init: probe``): a logistic regression on
the frozen encoder's mean-pooled features. Val and the demo's test slice disagree on how much the
fine-tune after it helps, and both are dominated by a few outlets; this script asks the cheaper
half of the question on every fold of ``newsbias cv`` (:func:`newsbias.cv.make_folds`, seed 0): how
well does the probe alone do on outlets never seen, next to TF-IDF + LR (C picked on the next fold,
as ``newsbias cv`` does), and does averaging the two help? Features are computed once for the whole
corpus with the prompt of ``configs/demo-encoder.yaml`` by :func:`newsbias.train.head_inputs` (what
the probe itself reads) and cached in ``--cache``. ``--train-cap N`` fits each round's probe on the
first N training rows of a seeded shuffle (0 = all): the demo's probe sees 3,000 articles.
Prints one Markdown row per run: mean macro-F1 with its 95 % interval over folds, the change
against TF-IDF paired by fold, and per-fold scores. The ensembles average raw probabilities, and
again calibrated members: each member's temperature fitted on the round's val fold, as
``train.calibrate`` and ``baseline.calibrate`` do.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cv_ablation import paired  # noqa: E402
from newsbias.baseline import count_ngrams  # noqa: E402
from newsbias.config import load_config  # noqa: E402
from newsbias.cv import fold_interval, fold_roles, make_folds, pooled_articles, run_recipe  # noqa: E402
from newsbias import metrics  # noqa: E402
from newsbias.labels import LABELS  # noqa: E402


def encoder_features(texts: list[str], encoder: str, cache: Path | None) -> np.ndarray:
    """Mean-pooled features of ``texts`` as the demo's encoder config builds its prompts (cached)."""
    if cache is not None and cache.is_file():
        feats = np.load(cache)
        if len(feats) == len(texts):
            return feats
    from newsbias.modeling import load_model_and_tokenizer
    from newsbias.prompt import PromptBuilder
    from newsbias.train import head_inputs

    cfg = load_config(ROOT / "configs" / "demo-encoder.yaml").train
    model, tok = load_model_and_tokenizer(encoder, head="cls", device="cpu", dtype="float32", pooling="mean")
    builder = PromptBuilder(tok, cfg.prompt.with_instruction(), "cls")
    encoded = [builder.encode(t) for t in texts]
    rows = [{"input_ids": e.input_ids, "answer_pos": e.answer_pos} for e in encoded]
    feats = head_inputs(model, rows, tok.pad_token_id, 64, show=True)
    if cache is not None:
        np.save(cache, feats)
    return feats


def probe_probs(feats: np.ndarray, gold: np.ndarray, tr: np.ndarray, va: np.ndarray, te: np.ndarray, cap: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Test-row probabilities (LABELS order) of the probe the trainer fits (balanced class weights, as in the
    demo): raw, and with the temperature fitted on the val rows (as ``train.calibrate`` does)."""
    from newsbias.baseline import TemperatureScaled
    from newsbias.train import fit_probe

    idx = np.flatnonzero(tr)
    if cap:
        idx = np.sort(np.random.default_rng(0).permutation(idx)[:cap])
    lr = fit_probe(feats[idx], gold[idx], balanced=True)
    order = [list(lr.classes_).index(lab) for lab in LABELS]
    scaled = TemperatureScaled(lr).fit(feats[va], gold[va])
    return lr.predict_proba(feats[te])[:, order], scaled.predict_proba(feats[te])[:, order]


def macro_f1(gold: np.ndarray, probs: np.ndarray) -> float:
    """The project's macro-F1 of the argmax of ``probs`` (columns in LABELS order)."""
    return metrics.macro_f1(gold, np.asarray(LABELS)[probs.argmax(1)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a `newsbias prep` output (train/val/test pooled)")
    ap.add_argument("--encoder", required=True, help="the sentence encoder's directory (all-MiniLM-L6-v2)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--train-cap", type=int, nargs="+", default=[3000, 0],
                    help="training rows for each round's probe (0 = all)")
    ap.add_argument("--cache", type=Path, default=None, help="a .npy file to keep the corpus features in")
    args = ap.parse_args()
    base = load_config(ROOT / "configs" / "demo.yaml").baseline
    t0 = time.time()
    frame = pooled_articles(args.data)
    gold = frame["gold"].to_numpy()
    feats = encoder_features(frame["text"].tolist(), args.encoder, args.cache)
    t_feats = time.time() - t0
    counts = count_ngrams(frame["text"], base).tocsr()
    fold = make_folds(frame, args.folds, 0, grouped=True)
    names = ["tfidf-lr"] + [f"probe ({cap or 'all'} articles)" for cap in args.train_cap] + \
            [f"tfidf-lr + probe ({cap or 'all'})" for cap in args.train_cap] + \
            [f"tfidf-lr + probe ({cap or 'all'}), calibrated members" for cap in args.train_cap]
    scores: dict[str, list[float]] = {n: [] for n in names}
    raw_base = base.model_copy(update={"calibrate": "none"})
    for i in range(args.folds):
        tr, va, te = fold_roles(fold, i, args.folds)
        tfidf = run_recipe("tfidf-lr", frame, (tr, va, te), raw_base, counts)
        tfidf_cal = run_recipe("tfidf-lr", frame, (tr, va, te), base, counts)  # its temperature fitted on va
        scores["tfidf-lr"].append(macro_f1(gold[te], tfidf))
        for cap in args.train_cap:
            probe, probe_cal = probe_probs(feats, gold, tr, va, te, cap)
            scores[f"probe ({cap or 'all'} articles)"].append(macro_f1(gold[te], probe))
            scores[f"tfidf-lr + probe ({cap or 'all'})"].append(macro_f1(gold[te], (tfidf + probe) / 2))
            scores[f"tfidf-lr + probe ({cap or 'all'}), calibrated members"].append(
                macro_f1(gold[te], (tfidf_cal + probe_cal) / 2))
        print(f"fold {i}: " + ", ".join(f"{n} {s[-1]:.3f}" for n, s in scores.items()), flush=True)
    print(f"\n{args.folds} outlet-grouped folds (seed 0) of {args.data}; features {t_feats:.0f} s, "
          f"{time.time() - t0:.0f} s in all.\n")
    print("| run | grouped CV macro-F1 [95% CI over folds] | change vs tfidf-lr, paired by fold [95% CI] | per fold |")
    print("|---|---|---|---|")
    ref = np.array(scores["tfidf-lr"])
    for name, s in scores.items():
        mean, lo, hi = fold_interval(s)
        delta = paired(ref, np.array(s)) if name != "tfidf-lr" else "–"
        print(f"| {name} | {mean:.3f} [{lo:.3f}, {hi:.3f}] | {delta} | {' '.join(f'{x:.3f}' for x in s)} |")


if __name__ == "__main__":
    main()
