"""Baselines every report shows beside the LLM (``newsbias baseline``).

* ``majority``: always the most frequent train label; its probabilities are the train label
  distribution (ties go to the earlier label in :data:`LABELS`).
* ``tfidf-lr``: TF-IDF over word 1-2 grams (sublinear tf, min_df) + logistic regression, with an
  optional choice of C by macro-F1 on val.jsonl.

Both train on the prep output's ``train.jsonl`` and predict one split, writing the shared
prediction record (``<out_dir>/majority.jsonl``, ``tfidf-lr.jsonl``) with a manifest beside each
(``<name>.manifest.json``) and the fitted TF-IDF + LR pipeline (``tfidf-lr.joblib``) for reuse.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .config import BaselineConfig, dump_config
from .errors import NewsbiasError
from .io import git_commit, iter_jsonl, package_versions, sha256_file, write_json, write_jsonl
from .labels import LABELS

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")


def resolve_split(data: str | Path, split: str) -> Path:
    """The JSONL for ``split`` (a split name in the prep directory ``data``, or a file path)."""
    if split in SPLIT_NAMES or split == "eval_small":
        path = Path(data) / f"{split}.jsonl"
    else:
        path = Path(split)
    if not path.is_file():
        raise NewsbiasError(f"split file not found: {path} (run `newsbias prep` first, or point --data at a "
                            "directory holding train.jsonl / val.jsonl / test.jsonl)")
    return path


def load_split(path: str | Path, require_labels: bool = True, prepend_title: bool = False) -> pd.DataFrame:
    """Read a prep-format JSONL into a frame with ``id, text, gold, outlet``.

    ``id`` is the record's own id, else its 1-based line number (the Kaggle sample has none).
    Gold labels outside the label set, rows without text, and (when ``require_labels``) rows
    without a label are errors naming the line.
    """
    p = Path(path)
    rows = []
    for lineno, rec in iter_jsonl(p):
        text = rec.get("input", rec.get("text"))
        if not isinstance(text, str) or not text.strip():
            raise NewsbiasError(f"{p}, line {lineno}: no article text in 'input'")
        if prepend_title and rec.get("title"):
            text = f"{rec['title']}\n\n{text}"
        gold = rec.get("output")
        if gold is None and require_labels:
            raise NewsbiasError(f"{p}, line {lineno}: no label in 'output'")
        if gold is not None and gold not in LABELS:
            raise NewsbiasError(f"{p}, line {lineno}: label {gold!r} is not one of {', '.join(LABELS)}")
        rid = rec.get("id")
        rows.append({"id": lineno if rid is None else rid, "text": text, "gold": gold,
                     "outlet": rec.get("outlet", rec.get("source"))})
    if not rows:
        raise NewsbiasError(f"split file {p} is empty")
    return pd.DataFrame(rows)


def fit_majority(labels: Sequence[str]) -> dict[str, float]:
    """Train label distribution, in :data:`LABELS` order."""
    counts = pd.Series(list(labels)).value_counts()
    n = int(counts.sum())
    return {lab: float(counts.get(lab, 0)) / n for lab in LABELS}


def build_tfidf_lr(cfg: BaselineConfig, C: float):
    """An unfitted TF-IDF + logistic regression pipeline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    t = cfg.tfidf
    return Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, t.ngram_max), min_df=t.min_df, max_df=t.max_df,
                                  max_features=t.max_features, sublinear_tf=t.sublinear_tf, lowercase=t.lowercase,
                                  dtype=np.float32)),
        ("lr", LogisticRegression(C=C, class_weight=None if cfg.lr.class_weight == "none" else "balanced",
                                  max_iter=cfg.lr.max_iter, random_state=cfg.seed)),
    ])


def fit_tfidf_lr(train: pd.DataFrame, cfg: BaselineConfig, val: pd.DataFrame | None = None
                 ) -> tuple[Any, dict[str, Any]]:
    """Fit on ``train``; with ``cfg.lr.C_grid`` and ``val``, pick C by val macro-F1 first.

    Returns ``(pipeline, selection)`` where ``selection`` records the C values tried and chosen.
    """
    from sklearn.metrics import f1_score

    if train["text"].nunique() < 2:
        raise NewsbiasError("tfidf-lr needs at least two distinct training articles")
    if train["gold"].nunique() < 2:
        raise NewsbiasError("tfidf-lr needs at least two labels in train.jsonl; only "
                            f"{train['gold'].iloc[0]!r} is present")
    pipe = build_tfidf_lr(cfg, cfg.lr.C)
    vec, lr = pipe.named_steps["tfidf"], pipe.named_steps["lr"]
    try:
        x_train = vec.fit_transform(train["text"])
    except ValueError as exc:
        if any(m in str(exc) for m in ("no terms remain", "empty vocabulary", "max_df corresponds")):
            raise NewsbiasError(f"tfidf-lr: no terms left in the vocabulary ({exc}); lower baseline.tfidf.min_df "
                                "or raise baseline.tfidf.max_df") from None
        raise
    selection: dict[str, Any] = {"C": cfg.lr.C, "grid": None}
    if cfg.lr.C_grid:
        if val is None or val.empty:
            raise NewsbiasError("baseline.lr.C_grid needs val.jsonl next to train.jsonl to choose C; "
                                "or leave C_grid empty and set baseline.lr.C")
        # the vectoriser does not depend on C: fit it once, then only the classifier per candidate
        x_val = vec.transform(val["text"])
        scores = {}
        for C in cfg.lr.C_grid:
            lr.set_params(C=C).fit(x_train, train["gold"])
            scores[C] = float(f1_score(val["gold"], lr.predict(x_val), labels=list(LABELS),
                                       average="macro", zero_division=0))
            log.info("baseline: C=%g val macro-F1 %.4f", C, scores[C])
        best = max(cfg.lr.C_grid, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
        selection = {"C": best, "grid": [{"C": c, "val_macro_f1": s} for c, s in scores.items()]}
    lr.set_params(C=selection["C"]).fit(x_train, train["gold"])
    return pipe, selection


def predict_proba_labels(pipe, texts: Sequence[str]) -> np.ndarray:
    """``(n, 3)`` probabilities in :data:`LABELS` order (0 for a label never seen in training)."""
    raw = pipe.predict_proba(list(texts))
    out = np.zeros((len(texts), len(LABELS)))
    classes = list(pipe.classes_)
    for j, lab in enumerate(LABELS):
        if lab in classes:
            out[:, j] = raw[:, classes.index(lab)]
    return out


def prediction_rows(frame: pd.DataFrame, probs: np.ndarray, model: str) -> list[dict[str, Any]]:
    """Prediction records (the shared format) for ``frame`` given ``(n, 3)`` probabilities."""
    preds = np.asarray(probs).argmax(axis=1)
    return [{"id": rid, "pred": LABELS[k], "probs": {lab: round(float(p[j]), 6) for j, lab in enumerate(LABELS)},
             "gold": gold, "valid": True, "outlet": outlet, "model": model, "adapter": None}
            for rid, k, p, gold, outlet in zip(frame["id"], preds, probs, frame["gold"], frame["outlet"])]


def _atomic_jsonl(path: Path, rows: list[dict[str, Any]]) -> int:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = write_jsonl(tmp, rows)
    os.replace(tmp, path)
    return n


def _file_info(path: Path, rows: int) -> dict[str, Any]:
    return {"path": str(path), "sha256": sha256_file(path), "rows": rows}


def run_baseline(cfg: BaselineConfig) -> dict[str, Any]:
    """Train the configured baselines and write their predictions; returns ``{name: manifest}``."""
    t0 = time.time()
    train_path = resolve_split(cfg.data, "train")
    eval_path = resolve_split(cfg.data, cfg.split)
    train = load_split(train_path, prepend_title=cfg.prepend_title)
    val = None
    if "tfidf-lr" in cfg.models and cfg.lr.C_grid:
        val_path = Path(cfg.data) / "val.jsonl"
        val = load_split(val_path, prepend_title=cfg.prepend_title) if val_path.is_file() else None
    target = load_split(eval_path, require_labels=False, prepend_title=cfg.prepend_title)
    if cfg.limit:
        target = target.head(cfg.limit)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {
        "stage": "baseline", "split": cfg.split,
        "data": {"train": _file_info(train_path, len(train)), "eval": _file_info(eval_path, len(target))},
        "train_label_counts": {lab: int((train["gold"] == lab).sum()) for lab in LABELS},
        "config": dump_config(cfg), "versions": package_versions(("newsbias", "scikit-learn", "numpy", "pandas")),
        "git_commit": git_commit(),
    }
    manifests: dict[str, Any] = {}
    for name in cfg.models:
        t1 = time.time()
        extra: dict[str, Any] = {}
        if name == "majority":
            prior = fit_majority(train["gold"])
            probs = np.tile([prior[lab] for lab in LABELS], (len(target), 1))
            extra["prior"] = prior
        else:
            pipe, selection = fit_tfidf_lr(train, cfg, val)
            probs = predict_proba_labels(pipe, target["text"])
            import joblib

            model_path = out_dir / "tfidf-lr.joblib"
            joblib.dump(pipe, model_path)
            extra = {"C": selection, "vocabulary_size": len(pipe.named_steps["tfidf"].vocabulary_),
                     "pipeline": {"path": str(model_path), "sha256": sha256_file(model_path)}}
        rows = prediction_rows(target, probs, name)
        pred_path = out_dir / f"{name}.jsonl"
        n = _atomic_jsonl(pred_path, rows)
        manifest = {**common, "model": name, **extra,
                    "counts": {"rows": n, "valid": n, "invalid": 0,
                               "pred_counts": {lab: sum(r["pred"] == lab for r in rows) for lab in LABELS}},
                    "output": _file_info(pred_path, n), "seconds": round(time.time() - t1, 3),
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        write_json(out_dir / f"{name}.manifest.json", manifest)
        manifests[name] = manifest
        log.info("baseline: %s -> %s (%d rows, %.1fs)", name, pred_path, n, time.time() - t1)
    log.info("baseline: done in %.1fs", time.time() - t0)
    return manifests
