"""Baselines every report shows beside the LLM (``newsbias baseline``).

* ``majority``: always the most frequent train label; its probabilities are the train label
  distribution (ties go to the earlier label in :data:`LABELS`).
* ``tfidf-lr``: TF-IDF (word 1-2 grams by default; ``baseline.tfidf.*``) + logistic regression, with an
  optional choice of C by macro-F1 on val.jsonl.

Both train on the prep output's ``train.jsonl`` and predict one split, writing the shared
prediction record (``<out_dir>/majority.jsonl``, ``tfidf-lr.jsonl``) with a manifest beside each
(``<name>.manifest.json``) and the fitted TF-IDF + LR pipeline (``tfidf-lr.joblib``) for reuse.
"""

from __future__ import annotations

import logging
import time
from itertools import chain, groupby
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin

from .config import BaselineConfig
from .errors import NewsbiasError
from .io import atomic_file, sha256_file, stage_manifest, writable_dir, write_json
from .labels import LABELS
from .metrics import apply_temperature, fit_temperature, macro_f1
from .records import (Prediction, manifest_path, read_articles, resolve_split, scored, split_file,
                      write_predictions)

log = logging.getLogger(__name__)


def split_frame(path: str | Path, need_label: bool = True, prepend_title: bool = False) -> pd.DataFrame:
    """The articles of a split file as a frame with ``id, text, gold, outlet`` (see :mod:`newsbias.records`)."""
    articles = read_articles(path, need_label=need_label)
    if not articles:
        raise NewsbiasError(f"split file {path} is empty; run `newsbias prep` again or choose another split")
    return pd.DataFrame([a.row(prepend_title) for a in articles])


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
        ("tfidf", TfidfVectorizer(**t.terms(), min_df=t.min_df, max_df=t.max_df, max_features=t.max_features,
                                  sublinear_tf=t.sublinear_tf, dtype=np.float32)),
        ("lr", LogisticRegression(C=C, class_weight=None if cfg.lr.class_weight == "none" else "balanced",
                                  max_iter=cfg.lr.max_iter, tol=cfg.lr.tol, solver=cfg.lr.solver,
                                  random_state=cfg.seed)),
    ])


def outlet_weights(outlets: pd.Series, power: float) -> np.ndarray:
    """Sample weights ``1 / n_outlet ** power``, rescaled to mean 1 (so C keeps its meaning)."""
    counts = outlets.fillna("?").map(outlets.fillna("?").value_counts()).to_numpy(dtype=float)
    w = counts ** -power
    return w * len(w) / w.sum()


def fit_tfidf_lr(train: pd.DataFrame, cfg: BaselineConfig, val: pd.DataFrame | None = None
                 ) -> tuple[Any, dict[str, Any]]:
    """Fit on ``train``; with ``cfg.lr.C_grid`` and ``val``, pick C by val macro-F1 first.

    Returns ``(pipeline, selection)`` where ``selection`` records the C values tried and chosen.
    """
    if train["text"].nunique() < 2:
        raise NewsbiasError("tfidf-lr needs at least two distinct training articles")
    if train["gold"].nunique() < 2:
        raise NewsbiasError("tfidf-lr needs at least two labels in train.jsonl; only "
                            f"{train['gold'].iloc[0]!r} is present")
    if cfg.lr.C_grid and (val is None or val.empty):
        raise NewsbiasError("baseline.lr.C_grid needs val.jsonl next to train.jsonl to choose C; "
                            "or leave C_grid empty and set baseline.lr.C")
    pipe = build_tfidf_lr(cfg, cfg.lr.C)
    vec = pipe.named_steps["tfidf"]
    try:
        x_train = fit_vectorizer(vec, train["text"], cfg)
    except ValueError as exc:
        if any(m in str(exc) for m in ("no terms remain", "empty vocabulary", "max_df corresponds")):
            raise NewsbiasError(f"tfidf-lr: no terms left in the vocabulary ({exc}); lower baseline.tfidf.min_df "
                                "or raise baseline.tfidf.max_df") from None
        raise
    x_val = vec.transform(val["text"]) if val is not None and not val.empty else None
    lr, selection = fit_lr(pipe.named_steps["lr"], cfg, canonical(x_train), train,
                           canonical(x_val) if x_val is not None else None, val)
    pipe.set_params(lr=lr)
    return pipe, selection


def fit_vectorizer(vec: Any, texts: Sequence[str], cfg: BaselineConfig) -> Any:
    """Fit the pipeline's ``TfidfVectorizer`` on ``texts``; returns their TF-IDF matrix.

    With ``cfg.jobs`` > 1 the texts are counted on that many cores (:func:`count_terms`), the terms the
    vectoriser would keep are kept (:func:`kept_terms`), and the vectoriser receives that vocabulary and
    the idf fitted on those counts (scikit-learn's ``idf_`` setter): fitted as by ``fit``, the same
    matrix and the same transform of new texts (a test checks both).
    """
    if cfg.jobs <= 1 or len(texts) < _PARALLEL_COUNT_MIN:
        return vec.fit_transform(texts)
    counts, terms = count_terms(texts, cfg, cfg.jobs)
    cols, tfidf, x = tfidf_on_counts(counts, cfg)
    vec.vocabulary_ = {terms[c]: j for j, c in enumerate(cols)}
    vec.idf_ = tfidf.idf_
    return x


def canonical(x: Any) -> Any:
    """``x`` (CSR) with each row's columns in order, in place.

    The LR solver's sums then run in one order whichever way the matrix was built, so a
    cross-validation round fit on :func:`count_ngrams` equals :func:`fit_tfidf_lr` bit for bit in one process
    (unsorted layouts differ in float rounding, and a weakly regularised LR amplifies that).
    """
    x.sort_indices()
    return x


# below this many texts, starting worker processes costs more than counting in one
_PARALLEL_COUNT_MIN = 2000


def count_ngrams(texts: Sequence[str], cfg: BaselineConfig, jobs: int = 1) -> Any:
    """Every n-gram of ``texts`` (``baseline.tfidf``'s terms), counted once: a sparse ``(n_texts, n_terms)`` CSR
    matrix, columns alphabetical.

    Cross-validation refits TF-IDF on each round's training rows; :func:`fit_tfidf_lr_on_counts`
    restricts this matrix instead of tokenising the whole corpus again for every round. ``jobs`` > 1
    counts that many slices of ``texts`` in parallel (see :func:`count_terms`); the matrix is the same.
    """
    return count_terms(texts, cfg, jobs)[0]


def count_terms(texts: Sequence[str], cfg: BaselineConfig, jobs: int = 1) -> tuple[Any, list[str]]:
    """:func:`count_ngrams` and its terms in column order. Tokenising is one core's Python loop (the slowest
    step of TF-IDF on a large corpus), so ``jobs`` > 1 counts slices in parallel and joins their vocabularies."""
    from joblib import Parallel, delayed
    from scipy import sparse

    texts = list(texts)
    if jobs <= 1 or len(texts) < _PARALLEL_COUNT_MIN:
        x, names = _count_slice(texts, cfg)
        return x.tocsr(), names
    bounds = np.linspace(0, len(texts), jobs + 1).astype(int)
    parts = Parallel(n_jobs=jobs)(delayed(_count_slice)(texts[a:b], cfg) for a, b in zip(bounds, bounds[1:]))
    # each slice's terms are sorted (CountVectorizer's column order): merging the runs is faster than sorting a set
    terms = [term for term, _ in groupby(sorted(chain.from_iterable(names for _, names in parts)))]
    column = {term: j for j, term in enumerate(terms)}
    blocks = []
    for x, names in parts:
        remap = np.fromiter((column[t] for t in names), dtype=np.int64, count=len(names))
        x = x.tocsr()
        blocks.append(sparse.csr_matrix((x.data, remap[x.indices], x.indptr), shape=(x.shape[0], len(terms))))
    return sparse.vstack(blocks, format="csr"), terms


def _count_slice(texts: list[str], cfg: BaselineConfig) -> tuple[Any, list[str]]:
    """Counts of one slice of texts and its terms in column order (no terms: an empty matrix)."""
    from scipy import sparse
    from sklearn.feature_extraction.text import CountVectorizer

    vec = CountVectorizer(**cfg.tfidf.terms(), dtype=np.float32)
    try:
        x = vec.fit_transform(texts)
    except ValueError as exc:
        if "empty vocabulary" not in str(exc):
            raise
        return sparse.csr_matrix((len(texts), 0), dtype=np.float32), []
    return x, vec.get_feature_names_out().tolist()


def kept_terms(train_counts: Any, cfg: BaselineConfig) -> np.ndarray:
    """The columns ``TfidfVectorizer`` would keep if fit on these rows: min_df, max_df, then max_features.

    Written out (sklearn keeps this step private) with sklearn's own rules and tie order, so the
    vocabulary is the one :func:`fit_tfidf_lr` learns from the same articles; a test checks it.
    """
    t = cfg.tfidf
    dfs = np.bincount(train_counts.tocsr().indices, minlength=train_counts.shape[1])
    present = np.flatnonzero(dfs)  # sklearn's vocabulary: the terms of the training rows, alphabetical
    dfs = dfs[present]
    mask = (dfs <= t.max_df * train_counts.shape[0]) & (dfs >= t.min_df)
    if t.max_features is not None and mask.sum() > t.max_features:
        tfs = np.asarray(train_counts[:, present].sum(axis=0)).ravel()
        top = (-tfs[mask]).argsort()[:t.max_features]
        keep = np.zeros(len(dfs), dtype=bool)
        keep[np.flatnonzero(mask)[top]] = True
        mask = keep
    if not mask.any():
        raise NewsbiasError("tfidf-lr: no terms left in the vocabulary; lower baseline.tfidf.min_df or raise "
                            "baseline.tfidf.max_df")
    return present[mask]


def tfidf_on_counts(counts: Any, cfg: BaselineConfig) -> tuple[np.ndarray, Any, Any]:
    """TF-IDF fitted on :func:`count_ngrams` rows as ``TfidfVectorizer`` fits on their texts: the columns it keeps
    (:func:`kept_terms`), the fitted ``TfidfTransformer`` and the rows' TF-IDF matrix."""
    from sklearn.feature_extraction.text import TfidfTransformer

    cols = kept_terms(counts, cfg)
    tfidf = TfidfTransformer(sublinear_tf=cfg.tfidf.sublinear_tf)  # the vectoriser's other settings are defaults
    return cols, tfidf, tfidf.fit_transform(counts[:, cols])


def fit_tfidf_lr_on_counts(counts: Any, train_rows: np.ndarray, train: pd.DataFrame, cfg: BaselineConfig,
                           val_rows: Optional[np.ndarray] = None, val: Optional[pd.DataFrame] = None
                           ) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`fit_tfidf_lr` on rows of :func:`count_ngrams`; returns ``rows -> (n, 3)`` probabilities (LABELS order)."""
    cols, tfidf, x_train = tfidf_on_counts(counts[train_rows], cfg)
    x_train = canonical(x_train)

    def vectors(rows: np.ndarray) -> Any:
        return canonical(tfidf.transform(counts[rows][:, cols]))

    x_val = vectors(val_rows) if val_rows is not None and len(val_rows) else None
    lr, _ = fit_lr(build_tfidf_lr(cfg, cfg.lr.C).named_steps["lr"], cfg, x_train, train, x_val, val)
    return lambda rows: label_columns(lr.classes_, lr.predict_proba(vectors(rows)))


def fit_lr(lr: Any, cfg: BaselineConfig, x_train: Any, train: pd.DataFrame, x_val: Any = None,
           val: pd.DataFrame | None = None) -> tuple[Any, dict[str, Any]]:
    """The logistic regression on vectorised text (C picked on val when ``cfg.lr.C_grid``), with the
    sample weights of ``cfg.sampling``, then its temperature fitted on val (``cfg.calibrate``);
    returns ``(fitted estimator, selection)``, ``selection["calibration"]`` saying what was fitted."""
    weights = (outlet_weights(train["outlet"], cfg.outlet_power)
               if cfg.sampling == "outlet_balanced" and "outlet" in train else None)
    if not cfg.lr.C_grid:
        best = fit_path(lr, [cfg.lr.C], x_train, train["gold"], weights)[cfg.lr.C]
        selection: dict[str, Any] = {"C": cfg.lr.C, "grid": None}
    else:
        scores, fitted = {}, fit_path(lr, cfg.lr.C_grid, x_train, train["gold"], weights)
        for C in cfg.lr.C_grid:  # the winner is kept as fitted, never fitted twice
            scores[C] = macro_f1(val["gold"], fitted[C].predict(x_val))
            log.info("baseline: C=%g val macro-F1 %.4f", C, scores[C])
        C = max(cfg.lr.C_grid, key=lambda c: (scores[c], -c))  # ties: the stronger regularisation
        best, selection = fitted[C], {"C": C, "grid": [{"C": c, "val_macro_f1": s} for c, s in scores.items()]}
    if cfg.calibrate == "none":
        return best, {**selection, "calibration": None}
    if x_val is None:
        log.warning("baseline: no val.jsonl to fit a temperature on; tfidf-lr's probabilities stay as fitted")
        return best, {**selection, "calibration": None}
    scaled = TemperatureScaled(best).fit(x_val, val["gold"])
    fit = scaled.calibration_
    if fit["method"] == "temperature":
        log.info("baseline: temperature %.3f (val log-loss %.4f -> %.4f)", fit["temperature"], fit["nll"],
                 fit["nll_calibrated"])
    return scaled, {**selection, "calibration": fit}


def fit_path(lr: Any, Cs: Sequence[float], x: Any, y: Sequence[str], weights: Optional[np.ndarray] = None
             ) -> dict[float, Any]:
    """``lr`` fitted at each C, from the strongest regularisation up, each fit starting at the previous optimum.

    The solver stops on the same gradient tolerance as from zero, so each fit is as close to its optimum;
    it gets there in fewer Newton steps (about a quarter less time for C in 1, 3, 10 on the demo's data).
    """
    import copy

    from sklearn.base import clone

    path, fitted = clone(lr).set_params(warm_start=True), {}
    for C in sorted(set(Cs)):
        path.set_params(C=C).fit(x, y, sample_weight=weights)
        fitted[C] = copy.deepcopy(path).set_params(warm_start=False)
    return fitted


class TemperatureScaled(ClassifierMixin, BaseEstimator):
    """A fitted scikit-learn classifier whose probabilities become ``softmax(log p / temperature_)``.

    ``fit(x_val, y_val)`` leaves ``estimator`` as it is and fits only the temperature
    (:func:`newsbias.metrics.fit_temperature`, its record in ``calibration_``); labels stay the
    estimator's own. It pickles inside the pipeline (``tfidf-lr.joblib``), so a reloaded pipeline
    scores as the predictions file does.
    """

    def __init__(self, estimator: Any = None):
        self.estimator = estimator

    def fit(self, x: Any, y: Sequence[str]) -> "TemperatureScaled":
        classes = list(self.estimator.classes_)
        y = pd.Series(list(y))
        known = y.isin(classes).to_numpy()  # a val label training never saw has no column to score
        self.calibration_ = fit_temperature(self._log_proba(x)[known], [classes.index(g) for g in y[known]])
        self.temperature_ = self.calibration_["temperature"]
        self.classes_ = self.estimator.classes_
        return self

    def predict(self, x: Any) -> np.ndarray:
        return self.estimator.predict(x)

    def predict_proba(self, x: Any) -> np.ndarray:
        return apply_temperature(self._log_proba(x), self.temperature_)

    def _log_proba(self, x: Any) -> np.ndarray:
        return np.log(np.clip(self.estimator.predict_proba(x), np.finfo(np.float64).tiny, None))


def predict_proba_labels(pipe, texts: Sequence[str]) -> np.ndarray:
    """``(n, 3)`` probabilities in :data:`LABELS` order (0 for a label never seen in training)."""
    return label_columns(pipe.classes_, pipe.predict_proba(list(texts)))


def label_columns(classes: Sequence[str], raw: np.ndarray) -> np.ndarray:
    """A classifier's ``predict_proba`` columns (in ``classes`` order) rearranged to :data:`LABELS` order."""
    out = np.zeros((len(raw), len(LABELS)))
    classes = list(classes)
    for j, lab in enumerate(LABELS):
        if lab in classes:
            out[:, j] = raw[:, classes.index(lab)]
    return out


def prediction_rows(frame: pd.DataFrame, probs: np.ndarray, model: str) -> list[Prediction]:
    """Prediction records for ``frame`` given ``(n, 3)`` probabilities."""
    return [Prediction(id=rid, **scored(LABELS, p), gold=gold, valid=True, outlet=outlet, model=model, adapter=None)
            for rid, p, gold, outlet in zip(frame["id"], probs, frame["gold"], frame["outlet"])]


def _file_info(path: Path, rows: int) -> dict[str, Any]:
    return {"path": str(path), "sha256": sha256_file(path), "rows": rows}


def _load_data(cfg: BaselineConfig) -> tuple[dict[str, Path], pd.DataFrame, Optional[pd.DataFrame], pd.DataFrame]:
    """``(paths, train, val or None, target)`` from the prep directory ``cfg.data``."""
    if Path(cfg.data).is_file():
        raise NewsbiasError(f"baseline.data {cfg.data} is a file; give the prep output directory "
                            "(train.jsonl, val.jsonl, test.jsonl)")
    paths = {"train": resolve_split(cfg.data, "train", "baseline.data", "baseline.data"),
             "eval": resolve_split(cfg.data, cfg.split, "baseline.data", "baseline.split")}
    train = split_frame(paths["train"], prepend_title=cfg.prepend_title)
    val = None
    val_path = split_file(cfg.data, "val")
    if "tfidf-lr" in cfg.models and val_path.is_file() and (
            cfg.lr.C_grid or (cfg.calibrate != "none" and read_articles(val_path, 1))):  # calibration skips an empty val
        val = split_frame(val_path, prepend_title=cfg.prepend_title)
    target = split_frame(paths["eval"], need_label=False, prepend_title=cfg.prepend_title)
    return paths, train, val, target.head(cfg.limit) if cfg.limit else target


def _fit_predict(name: str, cfg: BaselineConfig, train: pd.DataFrame, val: Optional[pd.DataFrame],
                 target: pd.DataFrame, out_dir: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """``(probabilities for target, manifest entries)`` of the baseline ``name`` fitted on ``train``."""
    if name == "majority":
        prior = fit_majority(train["gold"])
        return np.tile([prior[lab] for lab in LABELS], (len(target), 1)), {"prior": prior}
    pipe, selection = fit_tfidf_lr(train, cfg, val)
    import joblib

    model_path = out_dir / "tfidf-lr.joblib"
    with atomic_file(model_path) as tmp:  # a kill mid-dump must not leave a truncated model to load
        joblib.dump(pipe, tmp)
    calibration = selection.pop("calibration")
    return predict_proba_labels(pipe, target["text"]), {
        "C": selection, "calibration": calibration, "vocabulary_size": len(pipe.named_steps["tfidf"].vocabulary_),
        "pipeline": {"path": str(model_path), "sha256": sha256_file(model_path)}}


def run_baseline(cfg: BaselineConfig) -> dict[str, Any]:
    """Train the configured baselines and write their predictions; returns ``{name: manifest}``."""
    t0 = time.time()
    paths, train, val, target = _load_data(cfg)
    out_dir = writable_dir(cfg.out_dir, "baseline")
    common = {
        "split": cfg.split,
        "data": {"train": _file_info(paths["train"], len(train)), "eval": _file_info(paths["eval"], len(target))},
        "train_label_counts": {lab: int((train["gold"] == lab).sum()) for lab in LABELS},
    }
    for name in cfg.models:  # an earlier run's outputs go first: a run killed half-way leaves no stale sibling
        for stale in (out_dir / f"{name}.jsonl", manifest_path(out_dir / f"{name}.jsonl"), out_dir / f"{name}.joblib"):
            stale.unlink(missing_ok=True)
    manifests: dict[str, Any] = {}
    for name in cfg.models:
        t1 = time.time()
        probs, extra = _fit_predict(name, cfg, train, val, target, out_dir)
        rows = prediction_rows(target, probs, name)
        pred_path = out_dir / f"{name}.jsonl"
        n = write_predictions(pred_path, rows)
        manifest = stage_manifest("baseline", cfg, t1, **common, model=name, **extra,
                                  counts={"rows": n, "valid": n, "invalid": 0,
                                          "pred_counts": {lab: sum(r.pred == lab for r in rows) for lab in LABELS}},
                                  output=_file_info(pred_path, n))
        write_json(manifest_path(pred_path), manifest)
        manifests[name] = manifest
        log.info("baseline: %s -> %s (%d rows, %.1fs)", name, pred_path, n, time.time() - t1)
    log.info("baseline: done in %.1fs", time.time() - t0)
    return manifests
