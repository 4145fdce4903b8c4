"""Honest metrics for left / center / right predictions (``newsbias evaluate``).

``prediction_frame`` loads a predictions JSONL (:class:`newsbias.records.Prediction`, written by
predict and baseline) into a frame; ``compute_metrics`` turns gold and predicted labels (plus optional
probabilities and outlets) into one JSON-ready dict; ``evaluate`` does both and writes the JSON.

Conventions, also written into every metrics JSON under ``notes``:

* An invalid prediction (an unparseable generation, ``valid: false``) is a wrong answer: it is a
  miss for its gold class's recall and for accuracy, and a false positive for no class. Micro-F1
  is computed over the three labels, so it equals accuracy only when nothing is invalid.
* Ordinal MAE (left=0, center=1, right=2) is over valid predictions only.
* Calibration error uses the highest probability as the confidence and its label as the guess,
  over rows that carry probabilities.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from .config import EvaluateConfig, MetricsConfig
from .errors import NewsbiasError
from .io import write_json
from .labels import LABELS
from .records import Prediction, at, read_predictions

log = logging.getLogger(__name__)

INVALID = -1  # class index of an invalid prediction

NOTES = {
    "invalid": "Invalid predictions (valid=false) count as wrong: misses for recall and accuracy, false "
               "positives for no class. micro_f1 is over the labels, so it equals accuracy only when "
               "n_invalid is 0.",
    "ordinal_mae": "Mean |gold - pred| with left=0, center=1, right=2, over valid predictions only.",
    "ece": "Expected calibration error: equal-width bins on the highest probability (its label is the "
           "guess), over rows with probabilities.",
    "confusion_matrix": "Rows are gold labels, columns predicted labels, in the order of `labels`, plus a "
                        "last column for invalid predictions.",
}


# ------------------------------------------------------------------------------------ reading


def _scored(preds: list[Prediction], path: Path, missing_gold: str) -> tuple[list[Prediction], list[str]]:
    """``(predictions with a gold label, ids of those without)``; rows without gold are an error unless skipped."""
    scored, skipped = [], []
    for pr in preds:
        if pr.gold is not None:
            scored.append(pr)
        elif missing_gold == "skip":
            skipped.append(pr.id)
        else:
            raise NewsbiasError(f"{at(path, pr.line)}: no gold label; evaluate needs labeled data "
                                "(or set evaluate.missing_gold=skip to skip and count such rows)")
    if not scored:
        raise NewsbiasError(f"predictions file {path} has no rows with a gold label ({len(skipped)} skipped)")
    return scored, skipped


def prediction_frame(path: str | Path, labels: Sequence[str] = LABELS,
                     missing_gold: str = "error") -> tuple[pd.DataFrame, dict[str, Any]]:
    """A predictions file (read by :func:`newsbias.records.read_predictions`) as a frame for the metrics.

    Returns ``(frame, info)``: one row per prediction with a gold label, columns ``id``, ``line``,
    ``gold`` and ``pred`` (class indices, ``pred`` -1 when invalid), ``valid``, ``probs`` (a list
    in label order, or None), ``outlet``, ``model``, ``adapter``; ``info`` counts what was read
    and skipped. Rows without gold are an error naming the line unless ``missing_gold`` is "skip".
    """
    p = Path(path)
    preds = read_predictions(p, labels)
    scored, skipped = _scored(preds, p, missing_gold)
    index = {lab: i for i, lab in enumerate(labels)}
    frame = pd.DataFrame([{"id": pr.id, "line": pr.line, "gold": index[pr.gold],
                           "pred": index[pr.pred] if pr.valid else INVALID, "valid": pr.valid,
                           "probs": None if pr.probs is None else [pr.probs[lab] for lab in labels],
                           "outlet": pr.outlet, "model": pr.model, "adapter": pr.adapter} for pr in scored])
    info = {"path": str(p), "rows_read": len(preds), "rows_scored": len(scored),
            "skipped_no_gold": len(skipped), "skipped_no_gold_ids": skipped[:20]}
    return frame, info


# ------------------------------------------------------------------------------------ metrics


def _f1_from_counts(cm: np.ndarray) -> np.ndarray:
    """Per-class F1 from confusion counts ``(..., k, k+1)`` (last column invalid): 2TP / (pred + gold).

    Zero where a class is neither predicted nor present, like scikit-learn's zero_division=0.
    """
    k = cm.shape[-2]
    tp = np.diagonal(cm[..., :k], axis1=-2, axis2=-1)
    predicted = cm[..., :k].sum(axis=-2)
    support = cm.sum(axis=-1)
    denom = predicted + support
    return np.divide(2.0 * tp, denom, out=np.zeros(tp.shape, dtype=float), where=denom > 0)


def bootstrap_macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int = len(LABELS), n_boot: int = 1000,
                       confidence: float = 0.95, seed: int = 0, chunk: int = 100) -> dict[str, Any]:
    """Percentile bootstrap interval for macro-F1 (rows resampled with replacement).

    Vectorised: each resample is reduced to confusion counts with one ``bincount``, so 1000
    resamples of 10k rows take well under a second. ``pred`` uses -1 for invalid predictions.
    """
    gold = np.asarray(gold, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    n = len(gold)
    width = n_labels + 1
    cells = gold * width + np.where(pred < 0, n_labels, pred)  # column n_labels = invalid
    n_cells = n_labels * width
    rng = np.random.default_rng(seed)
    scores = np.empty(n_boot, dtype=float)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        flat = cells[idx] + (np.arange(b) * n_cells)[:, None]
        cm = np.bincount(flat.ravel(), minlength=b * n_cells).reshape(b, n_labels, width)
        scores[start:start + b] = _f1_from_counts(cm).mean(axis=-1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(scores, [alpha, 1.0 - alpha]) if n_boot else (float("nan"), float("nan"))
    return {"low": float(lo), "high": float(hi), "confidence": confidence, "n_boot": n_boot, "seed": seed,
            "method": "percentile", "std": float(scores.std(ddof=1)) if n_boot > 1 else None}


def bootstrap_macro_f1_by_group(gold: np.ndarray, pred: np.ndarray, groups: Sequence[Any], n_labels: int = len(LABELS),
                                n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> Optional[dict[str, Any]]:
    """Cluster bootstrap for macro-F1: whole groups (outlets) are resampled with replacement.

    Articles of one outlet share its label and style, so they are not independent draws; when a
    few outlets dominate a test set, the article-level interval is too narrow. None with < 2 groups.
    """
    gold = np.asarray(gold, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    codes, uniq = pd.factorize(pd.Series(list(groups), dtype=object).fillna("(none)"))
    g = len(uniq)
    if g < 2 or n_boot == 0:
        return None
    width = n_labels + 1
    cells = gold * width + np.where(pred < 0, n_labels, pred)
    per_group = np.zeros((g, n_labels * width), dtype=np.int64)
    np.add.at(per_group, (codes, cells), 1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, g, size=(n_boot, g))
    cm = per_group[idx].sum(axis=1).reshape(n_boot, n_labels, width)
    scores = _f1_from_counts(cm).mean(axis=-1)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(scores, [alpha, 1.0 - alpha])
    return {"low": float(lo), "high": float(hi), "confidence": confidence, "n_boot": n_boot, "seed": seed,
            "method": "percentile, outlets resampled", "n_groups": int(g)}


def expected_calibration_error(probs: np.ndarray, gold: np.ndarray, n_bins: int = 15) -> dict[str, Any]:
    """ECE = sum over bins of (bin share) * |accuracy - mean confidence|, bins (i/B, (i+1)/B]."""
    probs = np.asarray(probs, dtype=float)
    gold = np.asarray(gold)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.searchsorted(edges[1:-1], conf, side="left")  # right-closed bins; 0 falls in the first
    n = len(conf)
    count = np.bincount(bins, minlength=n_bins)
    acc_sum = np.bincount(bins, weights=correct, minlength=n_bins)
    conf_sum = np.bincount(bins, weights=conf, minlength=n_bins)
    ece = float(np.abs(acc_sum - conf_sum).sum() / n) if n else float("nan")
    table = [{"low": i / n_bins, "high": (i + 1) / n_bins, "n": int(count[i]),
              "accuracy": float(acc_sum[i] / count[i]), "confidence": float(conf_sum[i] / count[i])}
             for i in range(n_bins) if count[i]]
    return {"ece": ece, "n": int(n), "n_bins": n_bins, "bins": table}


def _macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f1_score(gold, pred, labels=list(range(n_labels)), average="macro", zero_division=0))


def compute_metrics(gold: Sequence[int], pred: Sequence[int], probs: Optional[np.ndarray] = None,
                    outlets: Optional[Sequence[Any]] = None, labels: Sequence[str] = LABELS,
                    n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                    ece_bins: int = 15) -> dict[str, Any]:
    """All metrics for class-index arrays ``gold`` and ``pred`` (-1 = invalid prediction).

    ``probs`` is ``(n, k)`` or None; rows that are all-NaN have no probabilities and are left out
    of the calibration error. ``outlets`` (one per row) adds ``by_outlet``.
    """
    gold = np.asarray(gold, dtype=np.int64)
    pred = np.asarray(pred, dtype=np.int64)
    n = len(gold)
    if n == 0:
        raise NewsbiasError("no predictions to evaluate")
    k = len(labels)
    ids = list(range(k))
    valid = pred != INVALID
    n_invalid = int((~valid).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes absent from a small sample are scored 0, as documented
        prec, rec, f1, support = precision_recall_fscore_support(gold, pred, labels=ids, zero_division=0)
        micro = f1_score(gold, pred, labels=ids, average="micro", zero_division=0)
        weighted = f1_score(gold, pred, labels=ids, average="weighted", zero_division=0)
    macro = float(np.mean(f1))
    cm = confusion_matrix(gold, pred, labels=ids + [INVALID])[:k]  # gold is never invalid
    out: dict[str, Any] = {
        "n": n,
        "n_invalid": n_invalid,
        "invalid_rate": n_invalid / n,
        "accuracy": float((gold == pred).mean()),
        "macro_f1": macro,
        "macro_f1_ci": bootstrap_macro_f1(gold, pred, k, n_boot, confidence, seed) if n_boot else None,
        "micro_f1": float(micro),
        "weighted_f1": float(weighted),
        "per_class": {lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                            "support": int(support[i])} for i, lab in enumerate(labels)},
        "labels": list(labels),
        "confusion_matrix": {"rows": "gold", "columns": list(labels) + ["invalid"], "matrix": cm.tolist()},
        "ordinal_mae": float(np.abs(gold[valid] - pred[valid]).mean()) if valid.any() else None,
        "ordinal_mae_n": int(valid.sum()),
        "gold_counts": {lab: int((gold == i).sum()) for i, lab in enumerate(labels)},
        "pred_counts": {**{lab: int((pred == i).sum()) for i, lab in enumerate(labels)}, "invalid": n_invalid},
    }
    ece = None
    if probs is not None:
        probs = np.asarray(probs, dtype=float)
        has = ~np.isnan(probs).any(axis=1)
        if has.any():
            ece = expected_calibration_error(probs[has], gold[has], ece_bins)
    out["calibration"] = ece
    out["ece"] = ece["ece"] if ece else None
    if outlets is not None:
        out["by_outlet"] = per_outlet(gold, pred, outlets, k)
        out["macro_f1_ci_outlets"] = bootstrap_macro_f1_by_group(gold, pred, outlets, k, n_boot, confidence, seed)
    out["notes"] = NOTES
    return out


def per_outlet(gold: np.ndarray, pred: np.ndarray, outlets: Sequence[Any], n_labels: int = len(LABELS)
               ) -> list[dict[str, Any]]:
    """n, accuracy and macro-F1 per outlet, largest first (missing outlets grouped as null)."""
    df = pd.DataFrame({"gold": gold, "pred": pred, "outlet": list(outlets)})
    rows = []
    for outlet, g in df.groupby("outlet", dropna=False, sort=False):
        rows.append({"outlet": None if pd.isna(outlet) else outlet, "n": len(g),
                     "accuracy": float((g["gold"] == g["pred"]).mean()),
                     "macro_f1": _macro_f1(g["gold"].to_numpy(), g["pred"].to_numpy(), n_labels),
                     "invalid": int((g["pred"] == INVALID).sum())})
    rows.sort(key=lambda r: (-r["n"], str(r["outlet"])))
    return rows


def metrics_for_frame(frame: pd.DataFrame, opts: MetricsConfig, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """``compute_metrics`` on a frame from :func:`prediction_frame`."""
    probs = None
    if frame["probs"].notna().any():
        probs = np.array([p if p is not None else [np.nan] * len(labels) for p in frame["probs"]], dtype=float)
    outlets = frame["outlet"].tolist() if opts.by_outlet else None
    return compute_metrics(frame["gold"].to_numpy(), frame["pred"].to_numpy(), probs, outlets, labels,
                           opts.n_boot, opts.confidence, opts.seed, opts.ece_bins)


def default_metrics_path(preds: str | Path) -> Path:
    p = Path(preds)
    return p.with_name(p.name[:-len(".jsonl")] + ".metrics.json" if p.name.endswith(".jsonl") else p.name + ".metrics.json")


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Read ``cfg.preds``, compute metrics, write them to ``cfg.out``; returns the metrics dict."""
    if not cfg.preds:
        raise NewsbiasError("no predictions file given: pass --preds FILE (= evaluate.preds)")
    frame, info = prediction_frame(cfg.preds, missing_gold=cfg.missing_gold)
    metrics = metrics_for_frame(frame, cfg)
    models = sorted({str(m) for m in frame["model"].dropna()})
    adapters = sorted({str(a) for a in frame["adapter"].dropna()})
    result = {"stage": "evaluate", "preds": info, "model": models[0] if len(models) == 1 else models or None,
              "adapter": adapters[0] if len(adapters) == 1 else adapters or None, **metrics,
              "config": cfg.model_dump(mode="json")}
    out = Path(cfg.out) if cfg.out else default_metrics_path(cfg.preds)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    result["out"] = str(out)
    return result


def format_summary(m: dict[str, Any]) -> str:
    """One line for the terminal."""
    ci = m.get("macro_f1_ci")
    ci_s = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else ""
    ece = f", ECE {m['ece']:.3f}" if m.get("ece") is not None else ""
    return (f"n {m['n']}, macro-F1 {m['macro_f1']:.3f}{ci_s}, micro-F1 {m['micro_f1']:.3f}, "
            f"accuracy {m['accuracy']:.3f}, invalid {m['n_invalid']} ({m['invalid_rate']:.1%}){ece}")
