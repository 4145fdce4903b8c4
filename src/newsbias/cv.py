"""``newsbias cv``: outlet-grouped cross-validation, the yardstick for unseen outlets.

Every labelled article of a prep output (train, val and test pooled) goes into one of K folds by
scikit-learn's ``StratifiedGroupKFold``: no outlet in two folds, each fold's label shares close to
the whole's, the same folds for the same seed. Each fold is the test set once; the next fold
(cyclically) is the validation set (TF-IDF picks C there, as ``newsbias baseline`` does on
val.jsonl); the remaining folds train. The report gives macro-F1 per fold, the mean and a 95 %
t-interval over folds, and the same recipe on ungrouped stratified folds beside it: the
"memorisation" reference, which shares outlets between train and test.

The ``model`` recipe trains the run's ``train:`` section on each round (its val picks the
checkpoint) and scores the test fold with the ``predict:`` section's settings, through the real
``newsbias train`` and ``newsbias predict`` code. Its rounds are kept under ``cv.work_dir`` (data,
model, predictions; one directory per setting and round), so an interrupted cv resumes and a
changed setting starts new rounds.

A fold-level interval is wider than an article-level bootstrap on one split, and honest about
the question users ask: how well would this recipe do on outlets it has never seen?
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from . import LOG_FORMAT
from .baseline import count_ngrams, fit_majority, fit_tfidf_lr_on_counts, prediction_rows
from .config import TRAIN_NOT_IN_RUN, BaselineConfig, CvConfig, PredictConfig, TrainConfig
from .errors import NewsbiasError, counted
from .io import atomic_dir, check_output_dir, command_line, stage_manifest, write_json
from .labels import LABELS
from .metrics import chance_f1, macro_f1
from .records import (CHECKPOINTS, SPLITS, manifest_path, read_articles, read_predictions, split_file,
                      write_predictions)
from .templates import render

log = logging.getLogger(__name__)


def pooled_articles(data_dir: str | Path, prepend_title: bool = False) -> pd.DataFrame:
    """Every labelled article of a prep output (``id, text, gold, outlet, split``), train/val/test pooled.

    ``prepend_title`` builds ``text`` as ``newsbias baseline`` does with ``baseline.prepend_title``.
    """
    rows = []
    for split in SPLITS:
        path = split_file(data_dir, split)
        if not path.is_file():
            raise NewsbiasError(f"cv.data: {path} not found; point cv.data at a `newsbias prep` output directory")
        rows += [{**a.row(prepend_title), "outlet": a.outlet_or_source or f"?{a.id}", "split": split}
                 for a in read_articles(path)]
    frame = pd.DataFrame(rows)
    if frame["id"].duplicated().any():
        dup = frame.loc[frame["id"].duplicated(), "id"].iloc[0]
        raise NewsbiasError(f"cv.data: id {dup!r} appears in two splits; rerun `newsbias prep` on the raw data")
    check_outlets_named(frame)
    return frame


def check_outlets_named(frame: pd.DataFrame) -> None:
    """Folds can keep outlets apart only where articles name theirs; an article without one is a group alone."""
    unnamed = int(frame["outlet"].str.startswith("?").sum())
    if unnamed * 2 > len(frame):
        raise NewsbiasError(f"cv.data: {unnamed} of {len(frame)} articles name no outlet (no url, source or outlet "
                            f"field), so folds cannot keep outlets apart and would measure seen outlets; prep data "
                            f"with a url or source column (prep.input.columns.url / .source)")
    if unnamed:
        log.warning("cv: %d of %d articles name no outlet; each is a group of its own, which may share an outlet "
                    "with another fold", unnamed, len(frame))


def make_folds(frame: pd.DataFrame, k: int, seed: int, grouped: bool = True) -> np.ndarray:
    """The fold (0..k-1) of each row: outlet-grouped and label-stratified, or only stratified."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    n_outlets = frame["outlet"].nunique()
    if grouped and n_outlets < k:
        raise NewsbiasError(f"cv.folds={k} needs at least {k} outlets; the data has {n_outlets}: lower cv.folds")
    splitter = (StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed) if grouped
                else StratifiedKFold(n_splits=k, shuffle=True, random_state=seed))
    fold = np.full(len(frame), -1)
    groups = frame["outlet"] if grouped else None
    for i, (_, test_idx) in enumerate(splitter.split(frame["text"], frame["gold"], groups)):
        fold[test_idx] = i
    return fold


def fold_roles(fold: np.ndarray, i: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (train, val, test) for round ``i``: fold i tests, fold i+1 validates, the rest train."""
    test, val = fold == i, fold == (i + 1) % k
    return ~(test | val), val, test


@dataclass
class ModelRecipe:
    """The ``model`` recipe: the run's ``train:`` and ``predict:`` sections, and where its rounds are kept."""

    train: TrainConfig
    predict: PredictConfig
    work: Path
    lines: dict[str, str]  # every row of the prep output by id, as prep wrote it
    progress: bool = True


def prep_lines(data_dir: str | Path) -> dict[str, str]:
    """Every row of a prep output's splits by id, as written (what a round's data files are cut from)."""
    lines = {}
    for split in SPLITS:
        # split on "\n" only: prep writes U+2028 and other Unicode line breaks inside strings as they are
        for line in split_file(data_dir, split).read_text(encoding="utf-8").split("\n"):
            if line.strip():
                lines[json.loads(line)["id"]] = line
    return lines


def run_recipe(recipe: str, frame: pd.DataFrame, roles: tuple[np.ndarray, np.ndarray, np.ndarray],
               cfg: BaselineConfig, counts: Any = None, model: Optional[ModelRecipe] = None,
               tag: str = "round") -> np.ndarray:
    """``(n_test, 3)`` probabilities of one recipe trained on the ``roles`` masks' train rows (val picks C or
    the checkpoint).

    ``counts`` (:func:`~newsbias.baseline.count_ngrams` of ``frame``) spares TF-IDF a tokenisation per round;
    ``model`` is needed by the ``model`` recipe, whose round is kept under ``model.work`` / ``tag``.
    """
    tr, va, te = roles
    if recipe == "model":
        if model is None:
            raise NewsbiasError("the model recipe needs a ModelRecipe (the run's train: and predict: sections)")
        return model_round(model, frame, roles, tag)
    if recipe == "majority":
        dist = fit_majority(frame["gold"][tr])
        return np.tile([dist[lab] for lab in LABELS], (int(te.sum()), 1))
    if counts is None:
        counts = count_ngrams(frame["text"], cfg)
    return fit_tfidf_lr_on_counts(counts, tr, frame[tr], cfg, va, frame[va])(te)


def fold_interval(scores: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float, float]:
    """Mean and 95 % t-interval over folds (folds are the unit: outlets differ between them), cut to ``bounds``
    (a macro-F1 lies in [0, 1]; a difference of two in [-1, 1])."""
    from scipy import stats

    a = np.asarray(scores, dtype=float)
    if len(a) < 2:
        return float(a.mean()), float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return float(a.mean()), float(max(a.mean() - half, bounds[0])), float(min(a.mean() + half, bounds[1]))


def _round_key(m: ModelRecipe, ids: dict[str, list[str]]) -> str:
    """What decides a round's result: the training and scoring settings and the round's articles."""
    train = m.train.model_dump(mode="json", exclude=set(TRAIN_NOT_IN_RUN))
    for where in ("path", "val_path"):  # the round's own files, named after the key
        train["data"].pop(where, None)
    score = m.predict.model_dump(mode="json", include={"mode", "windows", "pool", "prompt", "max_new_tokens",
                                                       "dtype", "text_field"})
    blob = json.dumps({"train": train, "predict": score, "ids": ids}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def model_round(m: ModelRecipe, frame: pd.DataFrame, roles: tuple[np.ndarray, np.ndarray, np.ndarray],
                tag: str) -> np.ndarray:
    """Train on one round (``newsbias train``: val picks the checkpoint) and score its test rows (``newsbias
    predict``); ``(n_test, 3)`` probabilities in the test rows' order. Each finished step is reused on a rerun.
    """
    from .train import latest_checkpoint, train
    from .predict import run_predict

    tr, va, te = roles
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "little"))
    # shuffled, so train.data.train_limit / val_limit draw a sample of every outlet, not the file's first ones
    ids = {"train": rng.permutation(frame["id"][tr].to_numpy()).tolist(),
           "val": rng.permutation(frame["id"][va].to_numpy()).tolist(), "test": frame["id"][te].tolist()}
    rdir = m.work / f"{tag}-{_round_key(m, ids)}"
    data, model_dir, preds = rdir / "data", rdir / "model", rdir / "preds.jsonl"
    if not (rdir / "trained.json").is_file():
        data.mkdir(parents=True, exist_ok=True)
        for role, role_ids in ids.items():
            (data / f"{role}.jsonl").write_text("".join(m.lines[i] + "\n" for i in role_ids), encoding="utf-8")
        cfg = m.train.model_copy(update={"data": m.train.data.model_copy(update={"path": str(data), "val_path": None}),
                                         "out_dir": str(model_dir)})
        summary = train(cfg, resume=latest_checkpoint(model_dir) is not None, progress=m.progress)
        (rdir / "trained.json").write_text(json.dumps(summary, default=str), encoding="utf-8")
        shutil.rmtree(model_dir / CHECKPOINTS, ignore_errors=True)  # only a resume needs them: hundreds of MB
    if not manifest_path(preds).is_file():
        run_predict(m.predict.model_copy(update={"input": str(data), "split": "test", "out": str(preds),
                                                 "adapter": str(model_dir), "model": None, "gguf_file": None,
                                                 "limit": None, "name": tag}), progress=m.progress)
    return round_probs(preds, ids["test"], tag)


def round_probs(preds: Path, test_ids: list[str], tag: str) -> np.ndarray:
    """``(n_test, 3)`` probabilities of a round's prediction file, in ``test_ids`` order; an article predict
    skipped (an empty text) is a one-line error, not a gap in the fold's score."""
    by_id = {r.id: r.probs for r in read_predictions(preds)}
    missing = [i for i in test_ids if i not in by_id]
    if missing:
        raise NewsbiasError(f"cv {tag}: predict skipped {len(missing)} test article(s), first {missing[0]!r} (see "
                            f"{manifest_path(preds)}); rerun `newsbias prep` with "
                            "prep.clean.min_chars of 1 or more so every article has text")
    return np.array([[by_id[i][lab] for lab in LABELS] for i in test_ids])


def sample_test_rows(te: np.ndarray, limit: Optional[int], seed: int) -> np.ndarray:
    """The test mask, or a seeded sample of ``limit`` of its rows (``cv.test_limit``: the same for every recipe)."""
    if limit is None or te.sum() <= limit:
        return te
    keep = np.random.default_rng(seed).choice(np.flatnonzero(te), size=limit, replace=False)
    capped = np.zeros_like(te)
    capped[keep] = True
    return capped


def warn_folds_missing_labels(frame: pd.DataFrame, fold: np.ndarray) -> None:
    """Say which folds hold no article of a label (outlets carry one label each, so with few outlets a fold can
    miss one): their macro-F1 counts it as 0, and the folds are less alike than the fold interval assumes."""
    labels = set(frame["gold"])
    lacking = {i: sorted(labels - set(frame["gold"][fold == i])) for i in range(int(fold.max()) + 1)}
    said = [f"fold {i} ({', '.join(missing)})" for i, missing in lacking.items() if missing]
    if said:
        log.warning("cv: %s %s no article of a label: %s; its macro-F1 counts it as 0 (data with more outlets, or "
                    "fewer cv.folds, gives every fold each label)", counted(len(said), "fold"),
                    "has" if len(said) == 1 else "have", "; ".join(said))


def _score_round(recipe: str, frame: pd.DataFrame, fold: np.ndarray, i: int, k: int, cfg: BaselineConfig,
                 counts: Any, run: dict[str, Any]) -> tuple[dict[str, Any], list]:
    tr, va, te = fold_roles(fold, i, k)
    te = sample_test_rows(te, run["test_limit"], run["seed"] + i)
    test = frame[te]
    if frame["gold"][tr].nunique() < 2:
        raise NewsbiasError(f"cv fold {i}: the training folds hold only the label {frame['gold'][tr].iloc[0]!r} "
                            f"(outlets carry one label each); use fewer cv.folds or data with more outlets")
    probs = run_recipe(recipe, frame, (tr, va, te), cfg, counts, run.get("model"), f"{run['kind']}-fold{i}")
    pred = [LABELS[j] for j in probs.argmax(1)]
    score = macro_f1(test["gold"], pred)
    row = {"fold": i, "n_train": int(tr.sum()), "n_test": len(test), "test_outlets": int(test["outlet"].nunique()),
           "top_outlet_share": round(float(test["outlet"].value_counts(normalize=True).iloc[0]), 3),
           "chance": round(chance_f1({lab: int((test["gold"] == lab).sum()) for lab in LABELS})["macro"], 4),
           "macro_f1": round(score, 4)}
    return row, prediction_rows(test, probs, f"{recipe}-fold{i}")


def _timed_round(recipe: str, frame: pd.DataFrame, fold: np.ndarray, i: int, k: int, cfg: BaselineConfig,
                 counts: Any, run: dict[str, Any]) -> tuple[dict[str, Any], list]:
    if os.getpid() != run["pid"]:  # a worker starts with no log handler: Python would print its warnings bare
        logging.basicConfig(level=run["log_level"], format=LOG_FORMAT)
    t0 = time.time()
    row, preds = _score_round(recipe, frame, fold, i, k, cfg, counts, run)
    row["seconds"] = round(time.time() - t0, 1)
    return row, preds


def cross_validate(recipe: str, frame: pd.DataFrame, fold: np.ndarray, cfg: BaselineConfig,
                   preds_dir: Path | None = None, jobs: int = 1, counts: Any = None,
                   run: Optional[dict[str, Any]] = None, kept: Optional[dict[str, list]] = None) -> dict[str, Any]:
    """Run ``recipe`` on every round (``jobs`` rounds at a time; the model recipe one at a time, since training
    uses every core); per-fold rows plus mean and interval.

    ``counts``: :func:`~newsbias.baseline.count_ngrams` of ``frame``, shared by every round (else counted per
    round). ``run``: ``test_limit``, ``seed``, ``kind`` (grouped / random), ``progress`` (a bar over rounds) and,
    for the model recipe, ``model``.
    ``kept`` receives each fold's prediction records under the recipe's name (for :func:`ensemble_folds`).
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    run = {"test_limit": None, "seed": 0, "kind": "grouped", "progress": False,
           "log_level": logging.getLogger().getEffectiveLevel(), "pid": os.getpid(), **(run or {})}
    k = int(fold.max()) + 1
    rows, results = [], []
    rounds = Parallel(n_jobs=1 if recipe == "model" else min(jobs, k), return_as="generator")(
        delayed(_timed_round)(recipe, frame, fold, i, k, cfg, counts, run) for i in range(k))
    for i, (row, preds) in enumerate(tqdm(rounds, total=k, desc=f"cv {recipe} ({run['kind']} folds)", unit="fold",
                                          disable=not run["progress"])):
        rows.append(row)
        results.append(preds)
        log.info("cv %s fold %d: macro-F1 %.4f (%d test articles)", recipe, i, row["macro_f1"], row["n_test"])
        if preds_dir is not None:
            write_predictions(preds_dir / f"{recipe}-fold{i}.jsonl", preds)
    if kept is not None:
        kept[recipe] = results
    mean, lo, hi = fold_interval([r["macro_f1"] for r in rows])
    return {"recipe": recipe, "folds": rows, "mean": round(mean, 4), "ci95": [round(lo, 4), round(hi, 4)]}


def ensemble_folds(spec: str, results: list[dict[str, Any]], kept: dict[str, list],
                   preds_dir: Path | None = None) -> dict[str, Any]:
    """``NAME=A+B[+C]``: the equal-weight mean of the recipes' probabilities, fold by fold (as ``compare``'s
    ensembles; no weight is tuned, so it cannot quietly become one of its members)."""
    from .report import ensemble_frame, parse_ensemble

    name, members = parse_ensemble(spec, [r["recipe"] for r in results])
    rows = []
    for i, base in enumerate(next(r for r in results if r["recipe"] == members[0])["folds"]):
        frames = {m: pd.DataFrame({"id": [p.id for p in kept[m][i]], "gold": [p.gold for p in kept[m][i]],
                                   "outlet": [p.outlet for p in kept[m][i]],
                                   "probs": [[p.probs[lab] for lab in LABELS] for p in kept[m][i]]})
                  for m in members}
        test = ensemble_frame(frames, members, name)
        probs = np.stack(test["probs"].to_list())
        score = macro_f1(test["gold"], [LABELS[j] for j in probs.argmax(1)])
        rows.append({k: v for k, v in base.items() if k != "seconds"} | {"macro_f1": round(score, 4)})
        if preds_dir is not None:
            write_predictions(preds_dir / f"{name}-fold{i}.jsonl", prediction_rows(test, probs, f"{name}-fold{i}"))
    mean, lo, hi = fold_interval([r["macro_f1"] for r in rows])
    return {"recipe": name, "members": members, "folds": rows, "mean": round(mean, 4),
            "ci95": [round(lo, 4), round(hi, 4)]}


def render_markdown(summary: dict[str, Any]) -> str:
    """The cv report (``templates/cv.md``): one table per recipe (folds), then the summary with the random-fold
    reference."""
    folds = summary["grouped"][0]["folds"] if summary.get("grouped") else []
    chance = float(np.mean([r["chance"] for r in folds])) if folds and all("chance" in r for r in folds) else None
    return render("cv.md", **summary, reference={r["recipe"]: r for r in summary.get("random", [])}, chance=chance)


def paired_by_fold(results: list[dict[str, Any]]) -> None:
    """Add to each recipe after the first its change against the first, paired by fold (mean and 95 % interval
    of the per-fold differences: the folds' own difficulty cancels out)."""
    base = np.array([r["macro_f1"] for r in results[0]["folds"]])
    for res in results[1:]:
        mean, lo, hi = fold_interval((np.array([r["macro_f1"] for r in res["folds"]]) - base).tolist(), (-1.0, 1.0))
        res["vs_first"] = {"recipe": results[0]["recipe"], "mean": round(mean, 4), "ci95": [round(lo, 4), round(hi, 4)]}


def _model_recipe(cfg: CvConfig, train: Optional[TrainConfig], predict: Optional[PredictConfig],
                  progress: bool) -> Optional[ModelRecipe]:
    if "model" not in cfg.recipes:
        return None
    if train is None:
        raise NewsbiasError("cv.recipes has model but the config has no train: section; add one (it is the recipe)")
    work = Path(cfg.work_dir or f"{str(cfg.out_dir).rstrip('/')}-rounds")
    return ModelRecipe(train=train, predict=predict or PredictConfig(out=str(work / "unused.jsonl")), work=work,
                       lines=prep_lines(cfg.data), progress=progress)


def every_recipe(cfg: CvConfig, frame: pd.DataFrame, fold: np.ndarray, baseline: BaselineConfig, counts: Any,
                 run: dict[str, Any], preds_dir: Path | None = None) -> list[dict[str, Any]]:
    """:func:`cross_validate` of each of ``cfg.recipes`` on ``fold``, then ``cfg.ensembles`` of them."""
    kept: dict[str, list] = {}
    results = [cross_validate(r, frame, fold, baseline, preds_dir, cfg.jobs, counts, run, kept) for r in cfg.recipes]
    return results + [ensemble_folds(e, results, kept, preds_dir) for e in cfg.ensembles]


def run_cv(cfg: CvConfig, baseline: BaselineConfig, train: Optional[TrainConfig] = None,
           predict: Optional[PredictConfig] = None, progress: bool = True) -> dict[str, Any]:
    """``newsbias cv``: grouped (and random-fold reference) CV of each recipe; writes cv.json + cv.md.

    ``train`` / ``predict`` (the run's sections) define the ``model`` recipe.
    """
    from .report import parse_ensemble

    t0 = time.time()
    for spec in cfg.ensembles:  # a misspelt ensemble fails now, not after an hour of training rounds
        parse_ensemble(spec, list(cfg.recipes))
    if "model" in cfg.recipes and predict is not None and predict.mode != "score":
        raise NewsbiasError("cv's model recipe needs probabilities: set predict.mode=score (generate mode gives "
                            "only labels)")
    out = check_output_dir(cfg.out_dir, "cv", "cv.json", inputs=[cfg.data])
    frame = pooled_articles(cfg.data, prepend_title=baseline.prepend_title)
    model = _model_recipe(cfg, train, predict, progress)
    summary: dict[str, Any] = {"stage": "cv", "command": command_line("cv"), "data": str(cfg.data), "folds": cfg.folds,
                               "seed": cfg.seed, "n_articles": len(frame), "n_outlets": int(frame["outlet"].nunique()),
                               "test_limit": cfg.test_limit, "work_dir": str(model.work) if model else None}
    run = {"test_limit": cfg.test_limit, "seed": cfg.seed, "model": model, "progress": progress}
    with atomic_dir(out, "cv.json") as tmp:
        grouped = make_folds(frame, cfg.folds, cfg.seed, grouped=True)
        warn_folds_missing_labels(frame, grouped)
        preds_dir = tmp / "preds" if cfg.save_predictions else None
        if preds_dir is not None:
            preds_dir.mkdir()
        counts = None
        if "tfidf-lr" in cfg.recipes:  # once for all rounds
            log.info("cv: counting the n-grams of %d articles (%d processes)", len(frame), cfg.jobs)
            counts = count_ngrams(frame["text"], baseline, jobs=cfg.jobs)
        summary["grouped"] = every_recipe(cfg, frame, grouped, baseline, counts, {**run, "kind": "grouped"}, preds_dir)
        paired_by_fold(summary["grouped"])
        if cfg.random_reference:
            shared = make_folds(frame, cfg.folds, cfg.seed, grouped=False)
            summary["random"] = every_recipe(cfg, frame, shared, baseline, counts, {**run, "kind": "random"})
        sections = {"cv": cfg, "baseline": baseline, **({"train": train, "predict": model.predict} if model else {})}
        summary.update(stage_manifest("cv", sections, t0))
        write_json(tmp / "cv.json", summary)
        (tmp / "cv.md").write_text(render_markdown(summary), encoding="utf-8")
    return summary
