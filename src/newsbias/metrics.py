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
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from .config import EvaluateConfig, MetricsConfig
from .errors import NewsbiasError
from .io import read_json, write_json
from .labels import LABELS
from .records import Prediction, at, prediction_stem, read_predictions

log = logging.getLogger(__name__)

INVALID = -1  # class index of an invalid prediction
TEMPERATURE_BOUNDS = (0.05, 20.0)  # what fit_temperature may return

NOTES = {
    "invalid": "Invalid predictions (valid=false) count as wrong: misses for recall and accuracy, false "
               "positives for no class. micro_f1 is over the labels, so it equals accuracy only when "
               "n_invalid is 0.",
    "ordinal_mae": "Mean |gold - pred| with left=0, center=1, right=2, over valid predictions only.",
    "ece": "Expected calibration error: equal-width bins on the highest probability (its label is the "
           "guess), over rows with probabilities.",
    "confusion_matrix": "Rows are gold labels, columns predicted labels, in the order of `labels`, plus a "
                        "last column for invalid predictions.",
    "log_loss": "Mean -ln p(gold label) over rows with probabilities (p clipped at 1e-12); a uniform guess scores "
                "ln(number of labels), 1.099 for three. Unlike ECE it rewards probabilities that tell right "
                "answers from wrong ones.",
}


FEW_FOR_TEMPERATURE = 100  # held-out articles below which a fitted temperature moves a lot between samples


def log_loss(probs: np.ndarray, gold: np.ndarray) -> Optional[float]:
    """Mean negative log-probability of the gold label over the rows that have probabilities, or None."""
    probs = np.asarray(probs, dtype=float)
    has = ~np.isnan(probs).any(axis=1)
    if not has.any():
        return None
    from sklearn.metrics import log_loss as sklearn_log_loss

    rows = probs[has] / probs[has].sum(axis=1, keepdims=True)  # float32 rows sum to 1 within 1e-7: not for sklearn
    return float(sklearn_log_loss(np.asarray(gold)[has], rows, labels=list(range(probs.shape[1]))))


def _scored(preds: list[Prediction], path: Path, missing_gold: str) -> tuple[list[Prediction], list[str]]:
    """``(predictions with a gold label, ids of those without)``; rows without gold are an error unless skipped."""
    scored, skipped = [], []
    for pr in preds:
        if pr.gold is not None:
            scored.append(pr)
        elif missing_gold == "skip":
            skipped.append(pr.id)
        else:
            raise NewsbiasError(f"{at(path, pr.line)}: no gold label; scoring needs labeled data (or skip and count "
                                "such rows: evaluate --skip-missing-gold, compare compare.metrics.missing_gold=skip)")
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


def _bootstrap_class_f1(gold: np.ndarray, preds: Sequence[np.ndarray], n_labels: int, n_boot: int, seed: int,
                        chunk: int = 100) -> np.ndarray:
    """Per-class F1 of each prediction array on the same resamples of rows: ``(len(preds), n_boot, n_labels)``.

    Vectorised: each resample is reduced to confusion counts with one ``bincount``, so 1000
    resamples of 10k rows take well under a second. Sharing the resamples makes differences paired.
    """
    gold = np.asarray(gold, dtype=np.int64)
    n = len(gold)
    width = n_labels + 1
    cells = [gold * width + np.where(np.asarray(p) < 0, n_labels, np.asarray(p, dtype=np.int64))
             for p in preds]  # column n_labels = invalid
    n_cells = n_labels * width
    rng = np.random.default_rng(seed)
    scores = np.empty((len(preds), n_boot, n_labels), dtype=float)
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(b, n))
        offset = (np.arange(b) * n_cells)[:, None]
        for j, c in enumerate(cells):
            cm = np.bincount((c[idx] + offset).ravel(), minlength=b * n_cells).reshape(b, n_labels, width)
            scores[j, start:start + b] = _f1_from_counts(cm)
    return scores


MIN_FOR_INTERVAL = 2  # articles a bootstrap interval needs


def _percentile_ci(scores: np.ndarray, confidence: float, seed: int) -> dict[str, Any]:
    """The percentile interval of bootstrap ``scores``, with how it was made."""
    n_boot = len(scores)
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(scores, [alpha, 1.0 - alpha]) if n_boot else (float("nan"), float("nan"))
    return {"low": float(lo), "high": float(hi), "confidence": confidence, "n_boot": n_boot, "seed": seed,
            "method": "percentile", "std": float(scores.std(ddof=1)) if n_boot > 1 else None}


def bootstrap_macro_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int = len(LABELS), n_boot: int = 1000,
                       confidence: float = 0.95, seed: int = 0, chunk: int = 100) -> dict[str, Any]:
    """Percentile bootstrap interval for macro-F1 (rows resampled with replacement); ``pred`` -1 = invalid."""
    scores = _bootstrap_class_f1(gold, [pred], n_labels, n_boot, seed, chunk)[0].mean(axis=-1)
    return _percentile_ci(scores, confidence, seed)


def bootstrap_f1(gold: np.ndarray, pred: np.ndarray, labels: Sequence[str] = LABELS, n_boot: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``(macro-F1 interval, {label: F1 interval})`` from one set of resamples.

    The macro interval is the one :func:`bootstrap_macro_f1` gives for the same seed.
    """
    scores = _bootstrap_class_f1(gold, [pred], len(labels), n_boot, seed)[0]
    return (_percentile_ci(scores.mean(axis=-1), confidence, seed),
            {lab: _percentile_ci(scores[:, i], confidence, seed) for i, lab in enumerate(labels)})


def paired_macro_f1_difference(gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                               n_labels: int = len(LABELS), n_boot: int = 1000, confidence: float = 0.95,
                               seed: int = 0) -> dict[str, Any]:
    """macro-F1(a) - macro-F1(b) on the same articles, with a paired percentile bootstrap interval.

    Both runs are scored on the same resamples, so the interval reflects how much they disagree,
    not how noisy each is alone; ``ci`` is None when ``n_boot`` is 0 or there is a single article.
    """
    gold = np.asarray(gold, dtype=np.int64)
    diff = macro_f1(gold, np.asarray(pred_a), range(n_labels)) - macro_f1(gold, np.asarray(pred_b), range(n_labels))
    ci = None
    if n_boot and len(gold) >= MIN_FOR_INTERVAL:
        scores = _bootstrap_class_f1(gold, [pred_a, pred_b], n_labels, n_boot, seed).mean(axis=-1)
        ci = _percentile_ci(scores[0] - scores[1], confidence, seed)
    return {"diff": float(diff), "ci": ci}


def paired_outcome(test: Mapping[str, Any], run: Optional[str] = None) -> dict[str, Any]:
    """compare's paired test of runs ``a`` and ``b`` read from ``run``'s side (default ``a``): the one rule by which
    the report and the model cards say "beats", "is worse than" or neither.

    The interval over outlets is the one that counts when there is one (articles of one outlet are not independent
    draws), else the one over articles; ``outcome`` is "better" when it lies above zero (with no interval at all, a
    positive difference), "worse" when below, else "tie". ``macro_f1_only`` flags a win (loss) while being right on
    fewer (more) of the articles only one of the two gets right.
    """
    if run not in (None, test["a"], test["b"]):
        raise ValueError(f"run {run!r} is not in the paired test of {test['a']} and {test['b']}")
    sign = -1 if run == test["b"] and run != test["a"] else 1
    ci = test.get("ci_outlets") or test.get("ci")
    diff = sign * test["diff"]
    low, high = sorted((sign * ci["low"], sign * ci["high"])) if ci else (None, None)
    if ci:
        outcome = "better" if low > 0 else "worse" if high < 0 else "tie"
    else:
        outcome = "better" if diff > 0 else "tie"
    mc = test.get("mcnemar") or {}
    mine, theirs = mc.get("only_a_right"), mc.get("only_b_right")
    if sign < 0:
        mine, theirs = theirs, mine
    counted = isinstance(mine, int) and isinstance(theirs, int)
    caveat = counted and ((outcome == "better" and mine < theirs) or (outcome == "worse" and mine > theirs))
    return {"other": test["b"] if sign > 0 else test["a"], "outcome": outcome, "diff": diff, "low": low, "high": high,
            "confidence": (ci or {}).get("confidence", 0.95), "over": "outlets" if test.get("ci_outlets") else "articles",
            "only_mine_right": mine, "only_theirs_right": theirs, "macro_f1_only": caveat}


def mcnemar_test(gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict[str, Any]:
    """McNemar's test (statsmodels) of whether a and b are right on different articles more often one way.

    ``table`` is ``[[both right, only a right], [only b right, both wrong]]`` (invalid = wrong). The
    exact binomial test is used below 25 discordant articles, else chi-square with continuity correction.
    """
    from statsmodels.stats.contingency_tables import mcnemar  # slow to import; only compare needs it

    gold = np.asarray(gold)
    a, b = np.asarray(pred_a) == gold, np.asarray(pred_b) == gold
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    exact = table[0][1] + table[1][0] < 25
    res = mcnemar(np.array(table), exact=exact, correction=True)
    return {"table": table, "only_a_right": table[0][1], "only_b_right": table[1][0],
            "accuracy_a": float(a.mean()) if len(a) else None, "accuracy_b": float(b.mean()) if len(b) else None,
            "statistic": float(res.statistic), "p_value": float(res.pvalue),
            "method": "exact binomial" if exact else "chi-square, continuity-corrected"}


def chance_standing(m: Mapping[str, Any]) -> str:
    """Where a run's metrics (``compute_metrics``) stand against a uniform random guess on its articles
    (:func:`chance_f1`): ``below`` (its macro-F1 is no higher), ``clear`` (its interval, over outlets when known,
    lies above), ``unclear`` (its interval includes it) or ``no_interval`` (above it, with no interval to say how
    surely). The one rule by which the report and the model card say "no better than chance"."""
    chance = chance_f1(m["gold_counts"])["macro"]
    if m["macro_f1"] <= chance:
        return "below"
    ci = m.get("macro_f1_ci_outlets") or m.get("macro_f1_ci")
    if not ci:
        return "no_interval"
    return "clear" if ci["low"] > chance else "unclear"


def confidence_auroc(probs: np.ndarray, right: np.ndarray) -> Optional[float]:
    """How well a run's confidence (its highest probability) tells its ``right`` answers from its wrong ones: the area
    under the ROC curve (scikit-learn), 0.5 for confidence that carries no information. A low ECE can come from
    probabilities near uniform on every article; this says whether they rank answers. None without probabilities,
    or when every answer is right or every one wrong."""
    from sklearn.metrics import roc_auc_score

    probs = np.asarray(probs, dtype=float)
    has = ~np.isnan(probs).any(axis=1)
    right = np.asarray(right, dtype=bool)[has]
    if not has.any() or right.all() or not right.any():
        return None
    return float(roc_auc_score(right, probs[has].max(axis=1)))


def chance_f1(gold_counts: dict[str, int]) -> dict[str, Any]:
    """Per-class and macro F1 of a uniform random guess, from its expected precision (the class's share)
    and recall (1 / number of labels): the floor a chart of F1 should show."""
    n = sum(gold_counts.values())
    recall = 1.0 / len(gold_counts)
    per_class = {lab: (2 * (c / n) * recall / (c / n + recall) if c else 0.0) for lab, c in gold_counts.items()}
    return {"per_class": per_class, "macro": float(np.mean(list(per_class.values())))}


def bootstrap_macro_f1_by_group(gold: np.ndarray, pred: np.ndarray, groups: Sequence[Any], n_labels: int = len(LABELS),
                                n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> Optional[dict[str, Any]]:
    """Cluster bootstrap for macro-F1: whole groups (outlets) are resampled with replacement.

    Articles of one outlet share its label and style, so they are not independent draws; when a
    few outlets dominate a test set, the article-level interval is too narrow. None with < 2 groups.
    """
    found = _group_macro_f1(gold, [pred], groups, n_labels, n_boot, seed)
    return None if found is None else _group_ci(found[0][0], confidence, n_boot, seed, found[1])


def _group_ci(scores: np.ndarray, confidence: float, n_boot: int, seed: int, n_groups: int) -> dict[str, Any]:
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(scores, [alpha, 1.0 - alpha])
    return {"low": float(lo), "high": float(hi), "confidence": confidence, "n_boot": n_boot, "seed": seed,
            "method": "percentile, outlets resampled", "n_groups": int(n_groups)}


def _group_macro_f1(gold: np.ndarray, preds: Sequence[np.ndarray], groups: Sequence[Any], n_labels: int,
                    n_boot: int, seed: int) -> Optional[tuple[np.ndarray, int]]:
    """Macro-F1 of each prediction array on the same resamples of whole groups, ``(len(preds), n_boot)``, and the
    number of groups; None with fewer than 2 groups."""
    gold = np.asarray(gold, dtype=np.int64)
    codes, uniq = pd.factorize(pd.Series(list(groups), dtype=object).fillna("(none)"))
    g = len(uniq)
    if g < 2 or n_boot == 0:
        return None
    width = n_labels + 1
    idx = np.random.default_rng(seed).integers(0, g, size=(n_boot, g))
    out = np.empty((len(preds), n_boot))
    for j, pred in enumerate(preds):
        pred = np.asarray(pred, dtype=np.int64)
        cells = gold * width + np.where(pred < 0, n_labels, pred)
        per_group = np.zeros((g, n_labels * width), dtype=np.int64)
        np.add.at(per_group, (codes, cells), 1)
        cm = per_group[idx].sum(axis=1).reshape(n_boot, n_labels, width)
        out[j] = _f1_from_counts(cm).mean(axis=-1)
    return out, g


def paired_macro_f1_difference_by_group(gold: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray,
                                        groups: Sequence[Any], n_labels: int = len(LABELS), n_boot: int = 1000,
                                        confidence: float = 0.95, seed: int = 0) -> Optional[dict[str, Any]]:
    """The interval of macro-F1(a) - macro-F1(b) when whole outlets are resampled, both runs on the same
    resamples: the paired test that holds when a few outlets make most of the articles (None with < 2)."""
    found = _group_macro_f1(gold, [pred_a, pred_b], groups, n_labels, n_boot, seed)
    if found is None:
        return None
    scores, g = found
    return _group_ci(scores[0] - scores[1], confidence, n_boot, seed, g)


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


def fit_temperature(logits: np.ndarray, gold: Sequence[int], n_bins: int = 15) -> dict[str, Any]:
    """Temperature scaling (Guo et al., ICML 2017): the ``T`` that minimises the mean negative
    log-likelihood of ``softmax(logits / T)`` on held-out rows, with NLL and ECE before and after.

    ``logits`` may be log-probabilities (softmax ignores a per-row constant), so a fitted scikit-learn
    model's ``log(predict_proba)`` works as well as a network's raw scores. One division leaves every
    argmax, so every label and macro-F1, unchanged. Written here rather than taken from scikit-learn's
    ``CalibratedClassifierCV(method="temperature")`` because that wraps scikit-learn estimators, and
    the torch models' logits are not one: every run's temperature is fitted by this one function.
    When every row is classified correctly, no temperature minimises the log-loss (it falls as T -> 0):
    the record then says ``method: none`` and ``temperature`` is 1.
    """
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    z = np.asarray(logits, dtype=np.float64)
    gold = np.asarray(gold, dtype=np.int64)
    if len(z) == 0:
        raise NewsbiasError("temperature scaling needs at least one scored row with a gold label")
    if z.ndim != 2 or gold.shape != (len(z),):
        raise NewsbiasError(f"temperature scaling needs one gold label per row of scores: got {z.shape[0]} rows "
                            f"and {gold.size} labels")
    if not np.isfinite(z).all():
        raise NewsbiasError("temperature scaling got non-finite scores: the model's weights are broken (a training "
                            "run that diverged?), or log-probabilities of 0 were passed (clip them above 0)")
    rows = np.arange(len(z))

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / np.exp(log_t), axis=1)[rows, gold].mean())

    def ece(t: float) -> float:
        return expected_calibration_error(apply_temperature(z, t), gold, n_bins)["ece"]

    base = {"n": int(len(z)), "nll": nll(0.0), "ece": ece(1.0)}
    if (z.argmax(1) == gold).all():
        # log-loss then falls without end as T -> 0: no temperature fits, and sharpening until every
        # probability is 1 would promise test articles a certainty that val cannot back
        log.warning("every one of the %d val rows is classified correctly: no temperature can be fitted on them; "
                    "probabilities stay as the model gives them", len(z))
        return {"method": "none", "temperature": 1.0, **base, "reason": "every val row classified correctly"}
    lo, hi = TEMPERATURE_BOUNDS
    log_t = float(minimize_scalar(nll, bounds=(np.log(lo), np.log(hi)), method="bounded").x)
    t = float(np.exp(log_t))
    at_bound = bool(np.isclose(t, lo, rtol=1e-3) or np.isclose(t, hi, rtol=1e-3))
    if at_bound:
        log.warning("temperature %.3g is at the bound of %s: the best fit on %d val rows lies beyond it",
                    t, TEMPERATURE_BOUNDS, len(z))
    return {"method": "temperature", "temperature": t, **base, "at_bound": at_bound, "nll_calibrated": nll(log_t),
            "ece_calibrated": ece(t)}


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` row by row; ``logits`` may be log-probabilities."""
    from scipy.special import softmax

    return softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=1)


def macro_f1(gold: Sequence[Any], pred: Sequence[Any], labels: Sequence[Any] = LABELS) -> float:
    """Macro-F1 over every label in ``labels`` — the project's one definition, used by every stage.

    ``gold`` and ``pred`` hold label names by default; pass ``labels=range(n)`` for class ids. A
    label that is neither gold nor predicted still counts, as 0, so a run that never predicts
    *center* is not scored on two classes only.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(f1_score(gold, pred, labels=list(labels), average="macro", zero_division=0))


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
    # resampling one article gives it back every time: a zero-width interval that would claim certainty
    f1_ci = bootstrap_f1(gold, pred, labels, n_boot, confidence, seed) if n_boot and n >= MIN_FOR_INTERVAL else None
    cm = confusion_matrix(gold, pred, labels=ids + [INVALID])[:k]  # gold is never invalid
    out: dict[str, Any] = {
        "n": n,
        "n_invalid": n_invalid,
        "invalid_rate": n_invalid / n,
        "accuracy": float((gold == pred).mean()),
        "macro_f1": macro,
        "macro_f1_ci": f1_ci[0] if f1_ci else None,
        "per_class_f1_ci": f1_ci[1] if f1_ci else None,
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
        ece = expected_calibration_error(probs[has], gold[has], ece_bins) if has.any() else None
    out["calibration"] = ece
    out["ece"] = ece["ece"] if ece else None
    out["confidence_auroc"] = confidence_auroc(probs, pred == gold) if probs is not None else None
    out["log_loss"] = log_loss(probs, gold) if probs is not None else None
    if outlets is not None:
        out["by_outlet"] = per_outlet(gold, pred, outlets, labels)
        out["macro_f1_ci_outlets"] = bootstrap_macro_f1_by_group(gold, pred, outlets, k, n_boot, confidence, seed)
    out["notes"] = NOTES
    return out


def per_outlet(gold: np.ndarray, pred: np.ndarray, outlets: Sequence[Any], labels: Sequence[str] = LABELS
               ) -> list[dict[str, Any]]:
    """n, gold label, accuracy and invalid answers per outlet, largest first (missing outlets grouped as null).

    ``label`` is the outlet's most common gold label: AllSides-style labels are per outlet, so
    usually its only one, which is why there is no per-outlet macro-F1 (over one gold label a
    perfect outlet would score 1/3): accuracy is the measure.
    """
    df = pd.DataFrame({"gold": gold, "pred": pred, "outlet": list(outlets)})
    rows = []
    for outlet, g in df.groupby("outlet", dropna=False, sort=False):
        rows.append({"outlet": None if pd.isna(outlet) else outlet, "n": len(g),
                     "label": labels[int(g["gold"].value_counts().idxmax())],
                     "accuracy": float((g["gold"] == g["pred"]).mean()),
                     "invalid": int((g["pred"] == INVALID).sum())})
    rows.sort(key=lambda r: (-r["n"], str(r["outlet"])))
    return rows


_SAID: set[tuple[Any, ...]] = set()


def _warn_once(key: tuple[Any, ...], message: str, *args: Any) -> None:
    """``log.warning`` once per process for ``key`` (compare scores many runs of the same articles)."""
    if key not in _SAID:
        _SAID.add(key)
        log.warning(message, *args)


def metrics_for_frame(frame: pd.DataFrame, opts: MetricsConfig, labels: Sequence[str] = LABELS) -> dict[str, Any]:
    """``compute_metrics`` on a frame from :func:`prediction_frame`."""
    absent = [lab for i, lab in enumerate(labels) if not (frame["gold"] == i).any()]  # gold holds label indices
    if absent:
        _warn_once(("absent", tuple(absent), len(frame)),
                   "the %d articles scored have no %s article: macro-F1 counts %s F1 as 0, so it cannot reach 1; "
                   "compare it only with runs on the same articles", len(frame),
                   " or ".join(repr(a) for a in absent), "that label's" if len(absent) == 1 else "those labels'")
    probs = None
    if frame["probs"].notna().any():
        probs = np.array([p if p is not None else [np.nan] * len(labels) for p in frame["probs"]], dtype=float)
    outlets = frame["outlet"].tolist() if opts.by_outlet else None
    if outlets is not None and not any(o is not None and o == o for o in outlets):  # o == o: not NaN
        _warn_once(("by_outlet", len(frame)),
                   "by_outlet: no article names its outlet (no outlet or source field), so there is no per-outlet "
                   "table or outlet-resampled interval; the article-level interval is all there is")
        outlets = None
    return compute_metrics(frame["gold"].to_numpy(), frame["pred"].to_numpy(), probs, outlets, labels,
                           opts.n_boot, opts.confidence, opts.seed, opts.ece_bins)


def default_metrics_path(preds: str | Path) -> Path:
    p = Path(preds)
    return p.with_name(f"{prediction_stem(p)}.metrics.json")


def _check_metrics_out(out: Path, preds: Path) -> None:
    """Refuse to write metrics over the predictions, a directory, or a file that an earlier evaluate did not write."""
    if out.exists() and preds.exists() and out.resolve() == preds.resolve():
        raise NewsbiasError(f"evaluate.out {out} is the predictions file; write the metrics to another path")
    if out.is_dir():
        raise NewsbiasError(f"evaluate.out {out} is a directory; give a file path such as {out / 'metrics.json'}")
    if out.exists() and (read_json(out, strict=False) or {}).get("stage") != "evaluate":
        raise NewsbiasError(f"{out} exists and was not written by newsbias evaluate; give another --out (or remove it)")


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Read ``cfg.preds``, compute metrics, write them to ``cfg.out``; returns the metrics dict."""
    if not cfg.preds:
        raise NewsbiasError("no predictions file given: pass --preds FILE (= evaluate.preds)")
    if "-" in (cfg.preds, cfg.out):  # predict's stdin/stdout name: here it would be a file called "-"
        raise NewsbiasError("evaluate reads a predictions file and writes a metrics file, not stdin/stdout: save "
                            "predict's output with --out FILE, pass it as --preds FILE, and leave out --out or give "
                            "a path (the summary line is printed either way)")
    out = Path(cfg.out) if cfg.out else default_metrics_path(cfg.preds)
    _check_metrics_out(out, Path(cfg.preds))
    frame, info = prediction_frame(cfg.preds, missing_gold=cfg.missing_gold)
    metrics = metrics_for_frame(frame, cfg)
    models = sorted({str(m) for m in frame["model"].dropna()})
    adapters = sorted({str(a) for a in frame["adapter"].dropna()})
    result = {"stage": "evaluate", "preds": info, "model": models[0] if len(models) == 1 else models or None,
              "adapter": adapters[0] if len(adapters) == 1 else adapters or None, **metrics,
              "config": cfg.model_dump(mode="json")}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, result)
    result["out"] = str(out)
    return result


def format_summary(m: dict[str, Any]) -> str:
    """One line for the terminal."""
    ci = m.get("macro_f1_ci")
    ci_s = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else (" (no interval for one article)" if m["n"] == 1 else "")
    by_outlet = m.get("macro_f1_ci_outlets")
    if by_outlet:
        ci_s += f", outlets resampled [{by_outlet['low']:.3f}, {by_outlet['high']:.3f}] ({by_outlet['n_groups']} outlets)"
    ece = f", ECE {m['ece']:.3f}" if m.get("ece") is not None else ""
    return (f"n {m['n']}, macro-F1 {m['macro_f1']:.3f}{ci_s}, micro-F1 {m['micro_f1']:.3f}, "
            f"accuracy {m['accuracy']:.3f}, invalid {m['n_invalid']} ({m['invalid_rate']:.1%}){ece}")
