"""Side-by-side comparison of prediction files and a readable report (``newsbias compare``).

``run_compare(cfg)`` reads several prediction files for the same split (base, tuned, baselines),
joins them on id, and writes into ``cfg.out_dir``:

* ``eval_compare.csv`` — ``id, preview`` (first 50 words of the article), ``gold``, then one
  column per run with its predicted label (``invalid`` for unparseable outputs);
* ``metrics.json`` — :func:`newsbias.metrics.compute_metrics` per run, the join summary, which runs
  the verdict compares (``roles``), their paired tests (``paired``) and how each run was selected
  (``selection``, see below);
* PNGs: ``confusion_<run>.png`` (row-normalised, with a colour bar), ``per_class_f1.png`` (bootstrap
  error bars, chance line), ``reliability.png`` (runs with probabilities), ``per_outlet.png`` (with
  ``metrics.by_outlet``) and ``learning_curve_<run>.png`` for runs whose training log is found;
* ``report.md`` and a self-contained ``report.html`` (figures inlined as base64 data URIs), both
  rendered by the Jinja2 templates ``report.md`` / ``report.html`` from one report model
  (:func:`report_model`), so they carry the same verdict, warnings and numbers.

Runs are named ``NAME=PATH`` on the command line, else by the file's stem. The verdict compares the
run named ``compare.tuned`` (else the best macro-F1) with ``compare.base`` (else the first run) and
with ``compare.baseline`` (tfidf-lr): the macro-F1 difference with a paired bootstrap interval, and
McNemar's test on per-article correctness. The fixes / breaks section needs both ``base`` and
``tuned`` named.

Labels are outlet ratings, so a checkpoint or C chosen on a split that shares outlets with the test
articles rewards recognising outlets. For each run the report finds the split it was selected on (a
trained run's training ``manifest.json``, a tfidf-lr baseline's data directory), compares that
split's outlets with the compared articles' outlets, and warns about every run whose selection split
shares outlets with them (:func:`selection_report`); a run without a manifest is "selection split
unknown" in its row.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from .config import CompareConfig, MetricsConfig
from .errors import NewsbiasError, counted
from .figures import plot_confusion, plot_learning_curve, plot_outlets, plot_per_class_f1, plot_reliability
from .io import read_json, sha256_file, staged_files, writable_dir, write_json
from .labels import LABELS
from .metrics import (INVALID, chance_f1, chance_standing, mcnemar_test, metrics_for_frame, paired_macro_f1_difference,
                      paired_macro_f1_difference_by_group, paired_outcome, prediction_frame)
from .records import (PREP_META, TRAIN_LOG, TRAIN_MANIFEST, iter_articles, locate, prediction_stem, read_articles,
                      read_manifest, resolve_split, split_file)
from .templates import num, render

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def parse_pred_specs(specs: list[str]) -> list[tuple[str, Path]]:
    """``["base=runs/base.jsonl", "runs/preds/majority.jsonl"]`` -> ``[(name, path), ...]``."""
    if not specs:
        raise NewsbiasError("no prediction files given: pass --preds FILE [FILE ...] (NAME=FILE to name a run)")
    out: list[tuple[str, Path]] = []
    for spec in specs:
        given, sep, given_path = spec.partition("=")
        name, path = given, given_path
        if not sep or not _NAME.match(name):
            name, path = Path(spec).name, spec
            name = prediction_stem(name)
        p = Path(path)
        if not p.is_file() and sep and Path(given_path).is_file():
            raise NewsbiasError(f"run name {given!r} in {spec!r} is not a valid name: use letters, "
                                f"digits, '.', '_' and '-' (it names files and the report's columns)")
        if not p.is_file():
            raise NewsbiasError(f"prediction file not found: {p}")
        if any(n == name for n, _ in out):
            raise NewsbiasError(f"two prediction files are both named {name!r}; name them as NAME=PATH")
        out.append((name, p))
    return out


def parse_ensemble(spec: str, runs: Sequence[str]) -> tuple[str, list[str]]:
    """``"ensemble=lm-tuned+tfidf-lr"`` -> ``("ensemble", ["lm-tuned", "tfidf-lr"])``, members checked."""
    name, sep, rhs = spec.partition("=")
    members = [m.strip() for m in rhs.split("+") if m.strip()]
    if not sep or not _NAME.match(name) or len(members) < 2:
        raise NewsbiasError(f"ensemble {spec!r} must read NAME=RUN+RUN[+RUN...] with two or more runs")
    unknown = [m for m in members if m not in runs]
    if unknown:
        raise NewsbiasError(f"ensemble {name!r} names {', '.join(unknown)}, not among the runs {', '.join(runs)}")
    if name in runs:
        raise NewsbiasError(f"ensemble name {name!r} is already a run's name; pick another")
    repeated = sorted({m for m in members if members.count(m) > 1})
    if repeated:
        raise NewsbiasError(f"ensemble {name!r} names {', '.join(repeated)} more than once; an equal-weight ensemble "
                            f"takes each run once")
    return name, members


def ensemble_frame(frames: dict[str, pd.DataFrame], members: Sequence[str], name: str) -> pd.DataFrame:
    """The equal-weight mean of the members' probabilities, on the articles every member scored.

    Equal weights on purpose: a tuned weight could quietly make the ensemble one of its members.
    """
    for m in members:
        if frames[m]["probs"].isna().any():
            raise NewsbiasError(f"ensemble {name!r}: run {m!r} has rows without probabilities (generate mode?); "
                                "ensembles average probabilities, so use score-mode runs")
    first = frames[members[0]].assign(key=lambda f: f["id"].astype(str))
    common = set.intersection(*(set(frames[m]["id"].astype(str)) for m in members))
    first = first[first["key"].isin(common)]
    probs = np.mean([np.stack(frames[m].assign(key=frames[m]["id"].astype(str)).set_index("key")
                              .loc[first["key"], "probs"].to_list()) for m in members], axis=0)
    return first.drop(columns="key").assign(
        probs=list(probs.tolist()), pred=probs.argmax(1), valid=True, model=name, adapter=None).reset_index(drop=True)


def read_appendix(path: Optional[str]) -> Optional[str]:
    """The Markdown of ``compare.appendix`` (e.g. the demo's timing table), or None."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise NewsbiasError(f"compare.appendix {p} not found; pass an existing Markdown file or drop it")
    return p.read_text(encoding="utf-8")


def resolve_data(data: Optional[str], split: str) -> tuple[Optional[Path], Optional[Path]]:
    """``(split_file, prep_meta.json)`` for ``--data`` (a split file, or a prep directory + split)."""
    if not data:
        return None, None
    f = resolve_split(data, split, "compare.data (--data)", "compare.split")
    meta = f.parent / PREP_META
    return f, meta if meta.is_file() else None


def read_meta(path: Optional[Path]) -> Optional[dict[str, Any]]:
    """prep_meta.json (for the split mode and the sha256 of the split), or None."""
    return read_json(path) if path else None


def data_texts(path: Path) -> pd.DataFrame:
    """``key`` (the article id), ``text``, ``gold_data`` and ``outlet`` of a split file, indexed by ``key``."""
    frame = pd.DataFrame([a.row() for a in read_articles(path, require_text=False)],
                         columns=["id", "text", "gold", "outlet"]).rename(columns={"id": "key", "gold": "gold_data"})
    if frame.empty:
        raise NewsbiasError(f"split file {path} is empty")
    dup = frame["key"].duplicated()
    if dup.any():
        raise NewsbiasError(f"split file {path} repeats id {frame['key'][dup].iloc[0]!r}; ids must be unique")
    return frame.set_index("key", drop=False)


def check_data(texts: pd.DataFrame, joined: pd.DataFrame, path: Path) -> None:
    """The predicted articles must all be in the split file, with the same gold labels."""
    missing = set(joined["key"]) - set(texts["key"])
    if missing:
        raise NewsbiasError(f"{len(missing)} predicted ids are not in {path} (e.g. {sorted(missing)[0]}); "
                            "is --data the split that was predicted?")
    gold_data = texts.loc[joined["key"], "gold_data"].to_numpy()
    disagree = [k for k, g, d in zip(joined["key"], joined["gold"], gold_data) if d is not None and LABELS[g] != d]
    if disagree:
        raise NewsbiasError(f"gold labels in the predictions disagree with {path} for {len(disagree)} "
                            f"articles (first: id {disagree[0]}); is --data the split that was predicted?")


def preview(text: str, words: int = 50) -> str:
    return " ".join(str(text).split()[:words])


def join_predictions(frames: dict[str, pd.DataFrame], on_mismatch: str = "error") -> tuple[pd.DataFrame, dict[str, Any]]:
    """Join runs on id (compared as strings) into one frame: ``key, gold, <run>...`` (class indices).

    Different id sets are an error that reports the counts, unless ``on_mismatch`` is
    "intersect". Gold labels that disagree between runs are always an error.
    """
    keysets = {name: set(f["id"].astype(str)) for name, f in frames.items()}
    common = set.intersection(*keysets.values())
    union = set.union(*keysets.values())
    info = {"union": len(union), "common": len(common),
            "only_in": {name: len(ks - common) for name, ks in keysets.items()}}
    if common != union:
        detail = ", ".join(f"{n}: {len(ks)} ids, {len(ks - common)} not in every file" for n, ks in keysets.items())
        if on_mismatch != "intersect":
            raise NewsbiasError(f"prediction files cover different articles ({detail}; {len(common)} common); "
                                "predict the same split with every model, or pass --intersect "
                                "(compare.on_mismatch=intersect) to compare on the common ids")
        if not common:
            raise NewsbiasError(f"prediction files share no ids ({detail})")
        log.warning("compare: using the %d ids common to all files (%s)", len(common), detail)
    joined: Optional[pd.DataFrame] = None
    for name, f in frames.items():
        part = f.assign(key=f["id"].astype(str))
        part = part[part["key"].isin(common)][["key", "gold", "pred", "line"]]
        part = part.rename(columns={"gold": f"gold:{name}", "pred": name, "line": f"line:{name}"})
        joined = part if joined is None else joined.merge(part, on="key", how="inner")
    assert joined is not None
    golds = joined[[c for c in joined.columns if c.startswith("gold:")]].to_numpy()
    bad = (golds != golds[:, :1]).any(axis=1)
    if bad.any():
        row = joined[bad].iloc[0]
        raise NewsbiasError(f"prediction files disagree on the gold label of {counted(int(bad.sum()), 'article')} "
                            f"(first: id {row['key']}); were they made from the same split?")
    first = next(iter(frames))
    joined["gold"] = joined[f"gold:{first}"]
    joined = joined.sort_values(f"line:{first}", kind="stable").reset_index(drop=True)
    return joined[["key", "gold", *frames]], info


def _trained_candidates(frame: pd.DataFrame, manifest: Optional[dict[str, Any]]) -> list[str]:
    """Directories that may hold the training run behind a prediction file, most specific first."""
    candidates = list(frame["adapter"].dropna().astype(str).unique()[:1]) if "adapter" in frame else []
    if manifest:
        config = manifest.get("config") or {}
        candidates += [manifest.get("adapter"), config.get("adapter"), config.get("model")]
    return [c for c in candidates if isinstance(c, str) and c]


def trained_dir(frame: pd.DataFrame, manifest: Optional[dict[str, Any]], marker: str) -> Optional[Path]:
    """The directory of the training run behind a prediction file that holds the file ``marker``, or None.

    ``newsbias predict --adapter DIR`` writes DIR into every record and the manifest; a fully
    fine-tuned model is predicted with ``--model DIR`` or ``--adapter DIR`` (the manifest's
    ``config.model`` / ``config.adapter``). Base models and baselines have no such directory.
    """
    dirs = (locate(c, manifest) for c in _trained_candidates(frame, manifest))
    return next((d for d in dirs if (d / marker).is_file()), None)


def training_size(frame: pd.DataFrame, manifest: Optional[dict[str, Any]]) -> Optional[str]:
    """How many articles a run was fitted on, from its training manifest (a baseline's own), or None (a base
    model used zero-shot, an ensemble, a run without manifests)."""
    if manifest and manifest.get("stage") == "baseline":
        rows = ((manifest.get("data") or {}).get("train") or {}).get("rows")
        return f"fitted on {rows} articles" if rows else None
    d = trained_dir(frame, manifest, TRAIN_MANIFEST)
    trained = read_json(d / TRAIN_MANIFEST, strict=False) if d else None
    if not trained:
        return None
    summary, data = trained.get("summary") or {}, (trained.get("config") or {}).get("data") or {}
    if summary.get("train_articles"):
        return f"trained on {summary['train_articles']} articles, checkpoint and temperature on {summary['val_articles']} val"
    if data.get("train_limit"):
        val = f", val at most {data['val_limit']}" if data.get("val_limit") else ""
        return f"trained on at most {data['train_limit']} articles (train_limit){val}"
    return "trained on its whole training split"


def train_log_path(frame: pd.DataFrame, manifest: Optional[dict[str, Any]]) -> Optional[Path]:
    """``DIR/train_log.jsonl`` of the training run behind a prediction file (:func:`trained_dir`), or None."""
    d = trained_dir(frame, manifest, TRAIN_LOG)
    return d / TRAIN_LOG if d else None


def read_train_log(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The ``train`` (loss per step) and ``eval`` (val loss / macro-F1) records of a train_log.jsonl."""
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("compare: %s line %d is not JSON; left out of the learning curve", path, i)
            continue
        if isinstance(rec, dict) and rec.get("type") in rows and isinstance(rec.get("step"), (int, float)):
            rows[rec["type"]].append(rec)
    return rows


def selection_source(frame: pd.DataFrame, manifest: Optional[dict[str, Any]]) -> dict[str, Any]:
    """Where a run's checkpoint or hyper-parameters were chosen, from its manifests.

    ``{"status": "val", "what": "checkpoint" | "C", "split": the split file, "prep_meta": its
    prep_meta.json or None}`` for a trained run (its training ``manifest.json``, found like the
    training log, also without a prediction manifest) and a tfidf-lr baseline that chose C on
    val.jsonl; ``{"status": "none", "note"}`` when nothing was chosen on a split; ``{"status":
    "unknown", "note"}`` when no manifest says.
    """
    if manifest and manifest.get("stage") == "baseline":
        return _baseline_source(manifest)
    d = trained_dir(frame, manifest, TRAIN_MANIFEST)
    if d is not None:
        trained = {**(read_json(d / TRAIN_MANIFEST, strict=False) or {}), "manifest_path": str((d / TRAIN_MANIFEST).resolve())}
        config = trained.get("config") or {}
        if (config.get("eval") or {}).get("keep") == "last" and not config.get("wise_alphas"):
            return {"status": "none", "note": "nothing chosen on a split (the last step's weights were kept, "
                                              "eval.keep: last; val fitted the temperature only)"}
        data = trained.get("data") or {}
        val = (data.get("val") or {}).get("path")
        if not val:
            return {"status": "unknown", "note": f"{d / TRAIN_MANIFEST} names no val file"}
        prep_meta = (data.get("prep_meta") or {}).get("path")
        return {"status": "val", "what": "checkpoint", "split": str(locate(val, trained)),
                "prep_meta": str(locate(prep_meta, trained)) if prep_meta else None}
    manifest = manifest or {}
    adapter = "adapter" in frame and frame["adapter"].notna().any()
    if adapter or manifest.get("adapter") or manifest.get("adapter_best_val"):
        return {"status": "unknown", "note": f"no training {TRAIN_MANIFEST} found beside the model"}
    if manifest.get("stage") == "predict":
        return {"status": "none", "note": "nothing chosen on a split (untuned model)"}
    return {"status": "unknown", "note": None}


def _baseline_source(manifest: dict[str, Any]) -> dict[str, Any]:
    """A baseline's selection: tfidf-lr with a C grid chose C on the val.jsonl of its data directory."""
    name = manifest.get("model", "baseline")
    chosen = manifest.get("C")
    if not (isinstance(chosen, dict) and chosen.get("grid")):
        return {"status": "none", "note": f"nothing chosen on a split ({name} baseline)"}
    data = (manifest.get("config") or {}).get("data")
    if not data:
        return {"status": "unknown", "note": "the baseline manifest names no data directory"}
    data = locate(data, manifest)
    return {"status": "val", "what": "C", "split": str(split_file(data, "val")),
            "prep_meta": str(data / PREP_META)}


def outlet_overlap(selection: Sequence[Optional[str]], test: Sequence[Optional[str]]) -> Optional[dict[str, Any]]:
    """Outlets of a selection split's articles shared with the test articles' outlets, with article counts.

    None when either side records no outlet (the overlap cannot be told).
    """
    sel_known, test_known = [o for o in selection if o], [o for o in test if o]
    if not sel_known or not test_known:
        return None
    shared = sorted(set(sel_known) & set(test_known))
    s = set(shared)
    return {"shared_outlets": len(shared), "shared_outlet_examples": shared[:10],
            "split_articles": len(selection), "split_articles_shared": sum(o in s for o in sel_known),
            "test_articles": len(test), "test_articles_shared": sum(o in s for o in test_known)}


def _split_outlets(path: Path) -> list[Optional[str]]:
    outlets = (a.outlet_or_source for a in iter_articles(path, require_text=False, bad_label="keep"))
    return [None if o is None else str(o) for o in outlets]


def run_selection(name: str, source: dict[str, Any], test: Sequence[Optional[str]],
                  cache: dict[Path, list[Optional[str]]]) -> dict[str, Any]:
    """One run's selection record: :func:`selection_source` + :func:`outlet_overlap` against the test
    articles, ``flagged`` when they share outlets, a ``note`` for its row and the ``warning`` text."""
    if source["status"] != "val":
        note = source["note"] if source["status"] == "none" else (
            "selection split unknown" + (f" ({source['note']})" if source["note"] else ""))
        return {**source, "flagged": False, "note": note, "warning": None}
    split = Path(source["split"])
    if not split.is_file():
        return {**source, "status": "unknown", "flagged": False, "warning": None,
                "note": f"selection split unknown ({split} not found)"}
    if split not in cache:
        try:
            cache[split] = _split_outlets(split)
        except NewsbiasError as exc:  # a broken selection split qualifies one run; it must not stop the report
            return {**source, "status": "unknown", "flagged": False, "warning": None,
                    "note": f"selection split unknown ({exc})"}
    meta = read_json(Path(source["prep_meta"]), strict=False) if source["prep_meta"] else None
    overlap = outlet_overlap(cache[split], test)
    chose = f"{source['what']} chosen on {split.name}"
    rec = {**source, "split_mode": ((meta or {}).get("splits") or {}).get("mode"), **(overlap or {}),
           "flagged": bool(overlap and overlap["shared_outlets"]), "warning": None}
    if overlap is None:
        return {**rec, "status": "no_outlets",
                "note": f"{chose}; outlets not recorded, so its overlap with the test articles is unknown"}
    if not rec["flagged"]:
        return {**rec, "status": "disjoint", "note": f"{chose}, which shares no outlet (web domain) with the test articles"}
    k = overlap["shared_outlets"]
    shares = f"shares {k} outlet{'s' if k != 1 else ''}"
    pct = round(100 * overlap["split_articles_shared"] / overlap["split_articles"])
    return {**rec, "status": "shared", "note": f"{chose}, which {shares} with the test articles",
            "warning": f"{name}: {chose}, which {shares} ({pct} % of its articles) with the test articles — its "
                       "score rewards recognising outlets; select on an outlet-disjoint split "
                       "(prep.split.mode=by_source)."}


def training_split(frame: pd.DataFrame, manifest: Optional[dict[str, Any]]) -> Optional[Path]:
    """The split file a run was fitted on: a trained run's ``data.train`` (its training manifest), a baseline's
    ``train.jsonl``; None for an untrained model or when no manifest says."""
    if manifest and manifest.get("stage") == "baseline":
        data = (manifest.get("config") or {}).get("data")
        return split_file(locate(data, manifest), "train") if data else None
    d = trained_dir(frame, manifest, TRAIN_MANIFEST)
    trained = ({**(read_json(d / TRAIN_MANIFEST, strict=False) or {}), "manifest_path": str(d / TRAIN_MANIFEST)}
               if d else {})
    path = ((trained.get("data") or {}).get("train") or {}).get("path")
    return locate(path, trained) if path else None


def training_overlap(name: str, train: Optional[Path], test_ids: Sequence[str], test: Sequence[Optional[str]],
                     cache: dict[Path, list[tuple[str, Optional[str], str]]],
                     test_texts: Optional[Sequence[str]] = None) -> Optional[dict[str, Any]]:
    """Test articles and outlets that a run's own training split holds, with the ``warning`` it earns; None when
    they share none (or the training split is not found). An article is the same by its text when the compared
    articles' texts are known (files without ids number their lines, so ids of two files can meet by chance),
    else by its id."""
    if train is None or not train.is_file():
        return None
    if train not in cache:
        try:
            cache[train] = [(a.id, a.outlet_or_source, a.text) for a in iter_articles(train, require_text=False,
                                                                                     bad_label="keep")]
        except NewsbiasError:
            return None
    outlets = sorted({str(o) for _, o, _ in cache[train] if o} & {o for o in test if o})
    if test_texts is not None:
        seen, by = {t for _, _, t in cache[train]}, ""
        articles = sum(t in seen for t in test_texts)
    else:
        seen, by = {i for i, _, _ in cache[train]}, " (by id: give compare.data to match them by text)"
        articles = sum(i in seen for i in test_ids)
    if not articles and not outlets:
        return None
    on_outlets = sum(o in set(outlets) for o in test if o)
    return {"train_split": str(train), "test_articles_trained_on": articles, "shared_outlets": len(outlets),
            "shared_outlet_examples": outlets[:10], "test_articles_from_shared_outlets": on_outlets,
            "warning": f"{name} was fitted on {train}, which holds {articles} of these test articles{by} and "
                       f"{len(outlets)} of their outlets ({on_outlets} test articles come from them"
                       f"{': ' + ', '.join(outlets[:5]) if outlets else ''}) — its score here is not a score on "
                       f"unseen articles and outlets; test it on data it was not trained on."}


def selection_report(specs: list[tuple[str, Path]], frames: dict[str, pd.DataFrame],
                     manifests: dict[str, Optional[dict[str, Any]]], infos: dict[str, Any],
                     test: Sequence[Optional[str]], test_ids: Sequence[str] = (),
                     test_texts: Optional[Sequence[str]] = None) -> dict[str, dict[str, Any]]:
    """``{run: selection record}`` (:func:`run_selection`) with ``trained_on`` (:func:`training_overlap`); an
    ensemble is selected, and trained, as its members."""
    cache: dict[Path, list[Optional[str]]] = {}
    train_cache: dict[Path, list[tuple[str, Optional[str], str]]] = {}
    out = {name: {**run_selection(name, selection_source(frames[name], manifests[name]), test, cache),
                  "trained_on": training_overlap(name, training_split(frames[name], manifests[name]), test_ids,
                                                 test, train_cache, test_texts)}
           for name, _ in specs}
    for name, info in infos.items():
        members = info.get("ensemble_of")
        if members:
            flagged = [m for m in members if out[m]["flagged"]]
            trained = [m for m in members if out[m].get("trained_on")]
            out[name] = {"status": "ensemble", "members": members, "flagged": bool(flagged), "warning": None,
                         "trained_on": {"members": trained, "warning": (
                             f"{name} averages {' and '.join(trained)}, fitted on these test articles or their "
                             f"outlets (above): its score is not a score on unseen outlets either.")}
                         if trained else None,
                         "note": "selected as its members" + (f" ({', '.join(flagged)} on outlets shared with the "
                                                              "test articles)" if flagged else "")}
    return out


def compared_outlets(joined: pd.DataFrame, texts: Optional[pd.DataFrame],
                     frames: dict[str, pd.DataFrame]) -> list[Optional[str]]:
    """The outlet of every compared article: from the split file (--data) when it records them, else the predictions."""
    sources = [texts["outlet"]] if texts is not None else []
    sources += [f.assign(key=f["id"].astype(str)).set_index("key")["outlet"] for f in frames.values()]
    for by_key in sources:
        outlets = by_key.reindex(joined["key"])
        if outlets.notna().any():
            return [None if pd.isna(o) else str(o) for o in outlets]
    return []


def split_note(meta: Optional[dict[str, Any]]) -> dict[str, Optional[str]]:
    """What the split mode means for the numbers: ``{"warning": a short title or None, "text": ...}``.

    A warning when the numbers may be optimistic (random split, outlets shared, mode unknown).
    """
    if meta is None:
        return {"warning": "split mode unknown",
                "text": "No prep_meta.json next to the data. If train and test share outlets, these numbers "
                        "are an upper bound."}
    mode = (meta.get("splits") or {}).get("mode") or ((meta.get("config") or {}).get("split") or {}).get("mode")
    shared = ((meta.get("leakage") or {}).get("shared_outlets") or {}).get("count")
    if mode == "random" and shared:
        return {"warning": "random split",
                "text": f"Train and test share outlets ({shared} are shared between splits), and AllSides-style "
                        f"labels are per outlet, so a model can score by recognising the outlet: treat these numbers "
                        f"as an upper bound."}
    if mode == "random":
        per_split = (meta.get("splits") or {}).get("outlets")
        if (shared is None or per_split is None or not any(per_split.values())):
            return {"warning": "random split",
                    "text": "A random split whose articles name no outlet: whether train and test share outlets is "
                            "unknown, and with per-outlet labels these numbers are an upper bound if they do."}
        return {"warning": None,
                "text": "A random split grouped so that no outlet is in two splits: a run fitted on its train split "
                        "is measured on outlets it has not seen."}
    if mode == "by_source":
        names = ((meta.get("leakage") or {}).get("shared_source_names") or {}).get("count")
        return {"warning": None,
                "text": "Outlet-disjoint split (by_source): no outlet (registrable domain) appears in more than one "
                        "split, so a run fitted on its train split is measured on outlets it has not seen — the "
                        "honest yardstick"
                        + (f"; {names} source names span splits (one organisation under several domains, or a "
                           f"name shared by different outlets: prep_meta.json, leakage)." if names else ".")}
    if shared:
        return {"warning": f"split mode {mode}",
                "text": f"{counted(shared, 'outlet')} {'is' if shared == 1 else 'are'} shared between splits (train, "
                        f"val or test), so numbers may be optimistic."}
    return {"warning": None, "text": f"Split mode: {mode}."}


def read_runs(specs: list[tuple[str, Path]], cfg: CompareConfig) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """``({run: prediction frame}, {run: read info})`` for the files and then the ensembles."""
    frames: dict[str, pd.DataFrame] = {}
    infos: dict[str, Any] = {}
    for name, path in specs:
        frames[name], infos[name] = prediction_frame(path, missing_gold=cfg.metrics.missing_gold)
    for spec in cfg.ensembles:
        name, members = parse_ensemble(spec, list(frames))
        frames[name] = ensemble_frame(frames, members, name)
        infos[name] = {"ensemble_of": members, "skipped_no_gold": 0}
    return frames, infos


def compare_csv(joined: pd.DataFrame, texts: Optional[pd.DataFrame], names: Sequence[str],
                preview_words: int) -> pd.DataFrame:
    """``eval_compare.csv``: id, preview, gold, then each run's predicted label (``invalid`` if unparseable)."""
    csv = pd.DataFrame({"id": joined["key"]})
    csv["preview"] = ([preview(t, preview_words) for t in texts.loc[joined["key"], "text"]]
                      if texts is not None else "")
    csv["gold"] = [LABELS[g] for g in joined["gold"]]
    for name in names:
        csv[name] = ["invalid" if p == INVALID else LABELS[p] for p in joined[name]]
    return csv


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with a quote before every text cell that a spreadsheet would run as a formula (one starting with
    ``= + - @``, a tab or a carriage return): an article or id can start with anything."""
    return frame.map(lambda v: "'" + v if isinstance(v, str) and v.startswith(("=", "+", "-", "@", "\t", "\r"))
                     else v)


def base_tuned_changes(joined: pd.DataFrame, csv: pd.DataFrame, names: Sequence[str],
                       cfg: CompareConfig) -> Optional[dict[str, Any]]:
    """Where ``cfg.tuned`` fixes or breaks ``cfg.base`` (counts and first examples), when both are runs."""
    if cfg.base not in names or cfg.tuned not in names:
        return None
    g, b, t = joined["gold"], joined[cfg.base], joined[cfg.tuned]
    fixed = joined[(b != g) & (t == g)].index
    broke = joined[(b == g) & (t != g)].index
    return {"fixed": len(fixed), "broken": len(broke),
            "both_right": int(((b == g) & (t == g)).sum()), "both_wrong": int(((b != g) & (t != g)).sum()),
            "fixed_examples": csv.loc[fixed[:cfg.n_examples]].to_dict("records"),
            "broken_examples": csv.loc[broke[:cfg.n_examples]].to_dict("records")}


def pick_roles(names: Sequence[str], all_metrics: dict[str, dict[str, Any]],
               cfg: CompareConfig) -> dict[str, Any]:
    """The runs the verdict compares: ``tuned`` (``cfg.tuned``, else the best macro-F1), ``base``
    (``cfg.base``, else the first run) and ``baseline`` (``cfg.baseline``); None when absent or the same run;
    ``tuned_named`` says whether a run carries ``cfg.tuned``'s name (else the best run stands in)."""
    named = cfg.tuned in names
    tuned = cfg.tuned if named else max(names, key=lambda n: all_metrics[n]["macro_f1"])
    if not named:
        log.warning("compare: no run is named %r (compare.tuned); the verdict takes the best run, %s, as the tuned "
                    "one: name your model's run %s=PREDS or set compare.tuned", cfg.tuned, tuned, cfg.tuned)
    baseline = cfg.baseline if cfg.baseline in names and cfg.baseline != tuned else None
    base = cfg.base if cfg.base in names else names[0]
    return {"tuned": tuned, "base": None if base in (tuned, baseline) else base, "baseline": baseline,
            "tuned_named": named, "tuned_name": cfg.tuned}


def paired_test(joined: pd.DataFrame, a: str, b: str, opts: MetricsConfig,
                outlets: Sequence[Optional[str]] = ()) -> dict[str, Any]:
    """Run ``a`` against run ``b`` on the joined articles: the macro-F1 difference with a paired bootstrap interval
    over articles and, when the articles' outlets are known, over outlets (``ci_outlets``: the one verdicts go
    by), and McNemar's test on per-article correctness."""
    gold, pa, pb = joined["gold"].to_numpy(), joined[a].to_numpy(), joined[b].to_numpy()
    known = len(outlets) == len(joined) and any(o is not None for o in outlets)
    args = (len(LABELS), opts.n_boot, opts.confidence, opts.seed)
    return {"a": a, "b": b, **paired_macro_f1_difference(gold, pa, pb, *args),
            "ci_outlets": paired_macro_f1_difference_by_group(gold, pa, pb, outlets, *args) if known else None,
            "mcnemar": mcnemar_test(gold, pa, pb)}


def paired_tests(joined: pd.DataFrame, roles: dict[str, Any], opts: MetricsConfig,
                 outlets: Sequence[Optional[str]] = ()) -> dict[str, Any]:
    """Tuned against base and against the baseline (:func:`paired_test`): what the verdict says."""
    return {role: paired_test(joined, roles["tuned"], roles[role], opts, outlets)
            for role in ("base", "baseline") if roles[role] and roles["tuned"]}


def all_pairs(joined: pd.DataFrame, names: Sequence[str], opts: MetricsConfig,
              outlets: Sequence[Optional[str]] = ()) -> dict[str, Any]:
    """Every run against every later one (:func:`paired_test`), keyed ``"A vs B"``: what a model card of any of
    the runs reads, so none of its comparisons rests on one run's own interval."""
    return {f"{a} vs {b}": paired_test(joined, a, b, opts, outlets)
            for i, a in enumerate(names) for b in names[i + 1:]}


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _diff_ci(test: dict[str, Any]) -> str:
    ci, by_outlet = test["ci"], test.get("ci_outlets")
    parts = []
    if by_outlet:
        parts.append(f"{by_outlet['confidence']:.0%} CI over outlets {by_outlet['low']:+.3f}, {by_outlet['high']:+.3f}")
    if ci:
        over = "over articles" if by_outlet else f"{ci['confidence']:.0%} CI"
        parts.append(f"{over} {ci['low']:+.3f}, {ci['high']:+.3f}")
    interval = "; ".join(parts) if parts else "no interval"
    mc = test["mcnemar"]
    acc = (f"accuracy {mc['accuracy_a']:.3f} against {mc['accuracy_b']:.3f}, "
           if mc.get("accuracy_a") is not None and mc.get("accuracy_b") is not None else "")
    return f"{test['diff']:+.3f} macro-F1 [{interval}; {acc}McNemar {_p(mc['p_value'])}]"


def verdict(paired: dict[str, Any], roles: dict[str, Any], baseline: str) -> Optional[str]:
    """One sentence: "T beats B by X [CI]; is worse than / does not beat TF-IDF (tfidf-lr) ...", or None.

    "Beats" means the paired interval lies above zero (without an interval, a positive difference), "is worse
    than" that it lies below zero; "does not beat" is everything between.
    """
    clauses = []
    for test in paired.values():
        other = f"TF-IDF ({test['b']})" if test["b"] == "tfidf-lr" else test["b"]
        outcome = paired_outcome(test)
        if outcome["outcome"] == "better":
            clauses.append(f"beats {other} by {_diff_ci(test)}" + _right_caveat(outcome))
        elif outcome["outcome"] == "worse":
            clauses.append(f"is worse than {other} by {_diff_ci(test)}" + _right_caveat(outcome))
        else:
            clauses.append(f"does not beat {other} ({_diff_ci(test)})")
    if not clauses:
        return None
    if roles["baseline"] is None and baseline != roles["tuned"]:
        clauses.append(f"no baseline run named {baseline} to test against")
    who = roles["tuned"] if roles.get("tuned_named", True) else \
        f"No run is named {roles.get('tuned_name') or 'tuned'} (compare.tuned), so the best run stands in: {roles['tuned']}"
    return f"{who} " + "; ".join(clauses) + "."


def _right_caveat(outcome: dict[str, Any]) -> str:
    """The caveat when a run beats another on macro-F1 while being right on fewer articles (a base that answers one
    class everywhere is right on many articles and scores a low macro-F1), or loses while being right on more."""
    if not outcome["macro_f1_only"]:
        return ""
    fewer = "fewer" if outcome["outcome"] == "better" else "more"
    return (f", on macro-F1 only: it is right on {fewer} articles ({outcome['only_mine_right']} it alone gets "
            f"right, {outcome['only_theirs_right']} {outcome['other']} alone)")


@dataclass
class Comparison:
    """What ``run_compare`` computed, from which the figures and the report model are made."""

    cfg: CompareConfig
    specs: list[tuple[str, Path]]
    infos: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    join: dict[str, Any]
    n: int
    meta: Optional[dict[str, Any]]
    data: Optional[dict[str, Any]]
    manifests: dict[str, Optional[dict[str, Any]]]
    logs: dict[str, Path]
    roles: dict[str, Any]
    paired: dict[str, Any]
    changes: Optional[dict[str, Any]]
    appendix: Optional[str]
    selection: dict[str, dict[str, Any]]
    sizes: dict[str, Optional[str]] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.metrics)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_figures(c: Comparison, out: Path) -> dict[str, Any]:
    """Every PNG of the report; returns ``{kind: file or None, or [{"file", "alt"}...]}``."""
    figs: dict[str, Any] = {"confusion": [], "learning": []}
    for i, name in enumerate(c.names):
        fname = f"confusion_{_slug(name)}.png"
        if any(f["file"] == fname for f in figs["confusion"]):
            fname = f"confusion_{i}_{_slug(name)}.png"
        plot_confusion(c.metrics[name], name, out / fname)
        figs["confusion"].append({"file": fname, "alt": f"confusion matrix: {name}"})
    plot_per_class_f1(c.metrics, out / "per_class_f1.png")
    figs["per_class"] = {"file": "per_class_f1.png", "alt": "per-class F1"}
    figs["reliability"] = ({"file": "reliability.png", "alt": "reliability diagrams"}
                           if plot_reliability(c.metrics, out / "reliability.png") else None)
    figs["outlets"] = ({"file": "per_outlet.png", "alt": "accuracy per outlet"}
                       if plot_outlets(c.metrics, out / "per_outlet.png") else None)
    by_log: dict[Path, list[str]] = {}
    for name, path in c.logs.items():
        by_log.setdefault(path, []).append(name)
    for path, runs in by_log.items():
        fname = f"learning_curve_{_slug(runs[0])}.png"
        if plot_learning_curve(read_train_log(path), f"Training: {', '.join(runs)} ({path.parent.name})", out / fname):
            figs["learning"].append({"file": fname, "alt": f"learning curve: {', '.join(runs)}", "log": str(path)})
    return figs


def figure_files(figs: dict[str, Any]) -> list[str]:
    """The PNG names in a :func:`write_figures` result, in report order."""
    out = []
    for value in figs.values():
        for f in value if isinstance(value, list) else [value]:
            if f:
                out.append(f["file"])
    return out


def data_summary(path: Optional[Path], texts: Optional[pd.DataFrame], meta: Optional[dict[str, Any]],
                 keys: Sequence[str] = ()) -> Optional[dict[str, Any]]:
    """Path, sha256 and rows of the split file, whether prep_meta.json records that sha256, and whether the compared
    articles (``keys``) are the file's first ones (``first_rows``: how predict's and baseline's limits take them)."""
    if path is None or texts is None:
        return None
    info: dict[str, Any] = {"path": str(path), "sha256": sha256_file(path), "rows": len(texts),
                            "first_rows": set(map(str, texts["key"][:len(keys)])) == set(map(str, keys))}
    if meta:
        expected = (meta.get("outputs") or {}).get(path.name, {}).get("sha256")
        info["matches_prep_meta"] = None if expected is None else expected == info["sha256"]
    return info


def run_compare(cfg: CompareConfig) -> dict[str, Any]:
    """Join the prediction files, compute metrics and paired tests, and write the CSV, figures and report."""
    appendix = read_appendix(cfg.appendix)
    specs = parse_pred_specs(cfg.preds)
    frames, infos = read_runs(specs, cfg)
    names = list(frames)
    joined, join_info = join_predictions(frames, cfg.on_mismatch)
    data_path, meta_path = resolve_data(cfg.data, cfg.split)
    texts = data_texts(data_path) if data_path is not None else None
    if texts is not None:
        check_data(texts, joined, data_path)
    out = writable_dir(cfg.out_dir, "compare")
    earlier = _earlier_report(out)
    csv = compare_csv(joined, texts, names, cfg.preview_words)
    keys = set(joined["key"])  # metrics on the joined rows, so every run is scored on the same articles
    all_metrics = {name: metrics_for_frame(f[f["id"].astype(str).isin(keys)], cfg.metrics) for name, f in frames.items()}
    manifests = {name: read_manifest(path) for name, path in specs}
    logs = {name: p for name, _ in specs if (p := train_log_path(frames[name], manifests[name])) is not None}
    roles = pick_roles(names, all_metrics, cfg)
    meta = read_meta(meta_path)
    outlets = compared_outlets(joined, texts, frames)
    selection = selection_report(specs, frames, manifests, infos, outlets, list(joined["key"].astype(str)),
                                 list(texts.loc[joined["key"], "text"]) if texts is not None else None)
    c = Comparison(cfg=cfg, specs=specs, infos=infos, metrics=all_metrics, join=join_info, n=len(joined), meta=meta,
                   data=data_summary(data_path, texts, meta, list(joined["key"])), manifests=manifests, logs=logs, roles=roles,
                   paired=paired_tests(joined, roles, cfg.metrics, outlets),
                   changes=base_tuned_changes(joined, csv, names, cfg), appendix=appendix, selection=selection,
                   sizes={n: training_size(frames[n], manifests[n]) for n, _ in specs})
    with staged_files(out, last=["metrics.json"]) as tmp:
        spreadsheet_safe(csv).to_csv(tmp / "eval_compare.csv", index=False)
        c.figures = write_figures(c, tmp)
        model = report_model(c)
        (tmp / "report.md").write_text(render_markdown(model), encoding="utf-8")
        written = ["eval_compare.csv", "metrics.json", *figure_files(c.figures), "report.md"]
        if cfg.html:
            (tmp / "report.html").write_text(render_html(model, tmp), encoding="utf-8")
            written.append("report.html")
        write_json(tmp / "metrics.json", {"stage": "compare", "runs": {n: str(p) for n, p in specs},
                                          "join": join_info, "skipped": {n: infos[n]["skipped_no_gold"] for n in names},
                                          "metrics": all_metrics, "roles": roles, "paired": c.paired,
                                          "pairs": all_pairs(joined, names, cfg.metrics, outlets),
                                          "train_logs": {n: str(p) for n, p in logs.items()}, "selection": selection,
                                          "config": cfg.model_dump(mode="json"), "files": written})
    for stale in set(earlier) - set(written):  # an earlier report's figures of runs not compared now
        if isinstance(stale, str) and Path(stale).name == stale:
            (out / stale).unlink(missing_ok=True)
    return {"out_dir": str(out), "files": written, "n": len(joined), "join": join_info, "metrics": all_metrics,
            "verdict": model["verdict"], "paired": c.paired, "selection": selection,
            "changes": {k: v for k, v in c.changes.items() if not k.endswith("examples")} if c.changes else None}


_REPORT_FILES = ("eval_compare.csv", "metrics.json", "report.md", "report.html")


def _earlier_report(out: Path) -> list[str]:
    """The files an earlier compare wrote into ``out`` (from its metrics.json); a file of the report's names that
    compare did not write (a user's own report.md) is an error, never overwritten."""
    previous = read_json(out / "metrics.json", strict=False) or {}
    if previous.get("stage") == "compare":
        return previous.get("files") or []
    theirs = [name for name in _REPORT_FILES if (out / name).exists()]
    if theirs:
        raise NewsbiasError(f"{out} holds {', '.join(theirs)} not written by newsbias compare, which the report would "
                            f"overwrite; move them out or choose another compare.out_dir")
    return []


def _table(header: list[str], rows: list[list[Any]]) -> dict[str, Any]:
    return {"header": header, "rows": [[str(v) for v in r] for r in rows]}


def _results_table(c: Comparison) -> dict[str, Any]:
    by_outlet = any(c.metrics[n].get("macro_f1_ci_outlets") for n in c.names)
    ci = f"{c.cfg.metrics.confidence:.0%} CI"
    header = ["model", "macro-F1", ci, *([f"{ci} (outlets)"] if by_outlet else []), "micro-F1", "accuracy",
              "invalid rate", "ordinal MAE", "log-loss", "ECE", "n"]
    rows = []
    fmt_ci = lambda ci: f"[{num(ci['low'])}, {num(ci['high'])}]" if ci else "–"  # noqa: E731
    for name in c.names:
        m = c.metrics[name]
        seen = (c.selection.get(name) or {}).get("trained_on")
        rows.append([f"{name} (trained on the test outlets)" if seen else name, num(m["macro_f1"]),
                     fmt_ci(m.get("macro_f1_ci")),
                     *([fmt_ci(m.get("macro_f1_ci_outlets"))] if by_outlet else []),
                     num(m["micro_f1"]), num(m["accuracy"]), f"{m['invalid_rate']:.1%}", num(m["ordinal_mae"]),
                     num(m.get("log_loss")), num(m["ece"]), m["n"]])
    first = c.metrics[c.names[0]]
    chance = chance_f1(first["gold_counts"])["macro"]
    rows.append(["*uniform guess (expected)*", num(chance), "–", *(["–"] if by_outlet else []), "–",
                 num(1 / len(LABELS)), "–", "–", num(float(np.log(len(LABELS)))), "–", first["n"]])
    return _table(header, rows)


def chance_note(c: Comparison) -> str:
    """Each run against a uniform random guess on these articles (the table's last row), by
    :func:`~newsbias.metrics.chance_standing`: clear of it only when the run's interval is."""
    chance = chance_f1(c.metrics[c.names[0]]["gold_counts"])["macro"]
    said = [f"A uniform random guess scores {chance:.3f} macro-F1 in expectation on this label mix (log-loss "
            f"{np.log(len(LABELS)):.3f})."]
    for standing, (one, many) in _CHANCE_WORDS.items():
        names = [n for n in c.names if chance_standing(c.metrics[n]) == standing]
        if names:
            said.append(f"{_names(names)} {one if len(names) == 1 else many}")
    return " ".join(said)


_CHANCE_WORDS = {  # (one run, several runs)
    "below": ("scores no better than that: it tells these articles' leanings apart no better than chance.",
              "score no better than that: they tell these articles' leanings apart no better than chance."),
    "unclear": ("scores above it on these articles, but its interval includes it: on other outlets it may do no "
                "better than chance.",
                "score above it on these articles, but their intervals include it: on other outlets they may do "
                "no better than chance."),
    "no_interval": ("scores above it on these articles, with no interval to say how surely.",
                    "score above it on these articles, with no interval to say how surely."),
    "clear": ("scores above it with its whole interval.", "score above it with their whole interval."),
}


def _names(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _paired_table(c: Comparison) -> Optional[dict[str, Any]]:
    if not c.paired:
        return None
    rows = []
    for test in c.paired.values():
        ci, by_outlet, mc = test["ci"], test.get("ci_outlets"), test["mcnemar"]
        rows.append([f"{test['a']} vs {test['b']}", f"{test['diff']:+.3f}",
                     f"[{by_outlet['low']:+.3f}, {by_outlet['high']:+.3f}]" if by_outlet else "–",
                     f"[{ci['low']:+.3f}, {ci['high']:+.3f}]" if ci else "–", mc["only_a_right"], mc["only_b_right"],
                     f"{mc['p_value']:.3g}", mc["method"]])
    conf = f"{c.cfg.metrics.confidence:.0%}"
    return _table(["A vs B", "macro-F1 A − B", f"{conf} CI, outlets resampled (paired)",
                   f"{conf} CI, articles resampled (paired)", "A right, B wrong", "B right, A wrong",
                   "McNemar p (articles)", "test"], rows)


def _per_class_table(c: Comparison) -> dict[str, Any]:
    header = ["model", *[f"{lab} F1" for lab in LABELS], *[f"{lab} P / R" for lab in LABELS]]
    rows = []
    for name in c.names:
        pc = c.metrics[name]["per_class"]
        rows.append([name, *[num(pc[lab]["f1"]) for lab in LABELS],
                     *[f"{num(pc[lab]['precision'])} / {num(pc[lab]['recall'])}" for lab in LABELS]])
    return _table(header, rows)


def _outlet_table(c: Comparison, top: int = 20) -> Optional[dict[str, Any]]:
    """Accuracy per outlet (largest outlets first) for every run, when metrics.by_outlet is on."""
    first = c.metrics[c.names[0]].get("by_outlet")
    if not first:
        return None
    per_run = {n: {r["outlet"]: r for r in c.metrics[n]["by_outlet"]} for n in c.names}
    rows = [[r["outlet"], r["label"], r["n"], *[num(per_run[n].get(r["outlet"], {}).get("accuracy")) for n in c.names]]
            for r in first[:top]]
    shown = (f"All {len(first)} outlets of these articles." if len(first) <= top else
             f"The {top} largest of the {len(first)} outlets of these articles (every outlet: metrics.json, by_outlet).")
    sizes = sorted((r["n"] for r in first), reverse=True)
    share = sum(sizes[:3]) / sum(sizes)
    if len(sizes) > 3 and share >= 0.5:
        shown += (f" The 3 largest hold {share:.0%} of the articles: a run's score leans on how it does on them"
                  + (", which is why the outlet-resampled interval is wide." if any(
                      c.metrics[n].get("macro_f1_ci_outlets") for n in c.names) else "."))
    shown += (" Each outlet's articles carry its rating (the label column, the most common where a few differ); a "
              "run's accuracy on an outlet is the share of its articles whose own label the run answers.")
    return {**_table(["outlet", "label", "n", *[f"{n} accuracy" for n in c.names]], rows), "note": shown}


def _changes(c: Comparison) -> Optional[dict[str, Any]]:
    ch, cfg = c.changes, c.cfg
    if not ch:
        return None
    examples = []
    for kind in ("fixed", "broken"):
        ex = ch[f"{kind}_examples"]
        if ex:
            examples.append({"title": f"{kind.capitalize()} (first {len(ex)})", "table": _table(
                ["id", "gold", cfg.base, cfg.tuned, "preview"],
                [[e["id"], e["gold"], e[cfg.base], e[cfg.tuned], e["preview"]] for e in ex])})
    return {"base": cfg.base, "tuned": cfg.tuned, "examples": examples,
            **{k: ch[k] for k in ("fixed", "broken", "both_right", "both_wrong")}}


def _warnings(c: Comparison) -> list[dict[str, str]]:
    """Everything that qualifies the numbers: the split, runs selected on outlets shared with the test
    articles, a changed split file, ids left out, rows skipped."""
    out = []
    split = split_note(c.meta)
    if split["warning"]:
        out.append({"title": split["warning"], "text": split["text"]})
    out += [{"title": "selection split shares outlets", "text": s["warning"]}
            for s in c.selection.values() if s["warning"]]
    out += [{"title": "trained on the test outlets", "text": s["trained_on"]["warning"]}
            for s in c.selection.values() if s.get("trained_on")]
    if c.data and c.data.get("matches_prep_meta") is False:
        out.append({"title": "split file changed",
                    "text": "The split file's sha256 differs from the one in prep_meta.json."})
    j = c.join
    if j["common"] != j["union"]:
        missing = ", ".join(f"{n}: {k}" for n, k in j["only_in"].items())
        out.append({"title": "not every article",
                    "text": f"Compared on the {j['common']} ids common to all files (of {j['union']}; ids not in "
                            f"every file, per file: {missing})."})
    skipped = {n: i["skipped_no_gold"] for n, i in c.infos.items() if i["skipped_no_gold"]}
    if skipped:
        out.append({"title": "rows without gold skipped",
                    "text": "Rows without a gold label were skipped: " + ", ".join(f"{n}: {k}" for n, k in skipped.items())
                            + "."})
    return out


def _runs(c: Comparison) -> list[dict[str, Any]]:
    runs = [{"name": n, "path": str(p), "manifest": c.manifests[n] is not None,
             "train_log": str(c.logs[n]) if n in c.logs else None, "ensemble_of": None,
             "size": c.sizes.get(n), "reads": _reads(c.manifests[n]), "selection": c.selection[n]["note"]}
            for n, p in c.specs]
    return runs + [{"name": n, "path": None, "manifest": False, "train_log": None,
                    "ensemble_of": " + ".join(i["ensemble_of"]), "selection": c.selection[n]["note"]}
                   for n, i in c.infos.items() if i.get("ensemble_of")]


def _reads(manifest: Optional[dict[str, Any]]) -> Optional[str]:
    """How much of each article a model run read: its prompt's token budget (predict's manifest), or None."""
    prompt = (manifest or {}).get("prompt") or {}
    if not prompt.get("max_length"):
        return None
    cfg = (manifest or {}).get("config") or {}
    windows = cfg.get("windows") or 1
    if windows > 1:
        pooled = "the most confident one's answer" if cfg.get("pool") == "max" else "their mean probabilities"
        return (f"reads up to {windows} stretches of each article (start, end and evenly between), each within "
                f"{prompt['max_length']} prompt tokens, and takes {pooled}")
    how = "the start and end" if prompt.get("truncation") == "head_tail" else "the start"
    return f"reads {how} of each article, within {prompt['max_length']} prompt tokens"


def _probabilities_note(c: Comparison, name: str) -> Optional[str]:
    """Whether run ``name``'s probabilities were calibrated, from its manifest (None when it does not say)."""
    info = c.infos.get(name) or {}
    if info.get("ensemble_of"):
        return "its probabilities are the mean of its members'"
    m = c.manifests.get(name) or {}
    cal = m.get("calibration") or {}
    if "temperature" in m:  # predict's manifest
        t = m["temperature"]
    elif "calibration" in m:  # the TF-IDF baseline's
        t = cal.get("temperature", 1.0)
    else:
        return None
    if t == 1.0:
        return "raw softmax"
    fitted = m.get("calibration_data") or {}
    on_test = bool(fitted.get("sha256")) and fitted["sha256"] == (c.data or {}).get("sha256")
    where = ("the compared articles' own file: its calibration is not held out" if on_test else
             PureWindowsPath(fitted["path"]).name if fitted.get("path") else "val")  # reads / and \ alike
    note = f"temperature {t:.2f}, fitted on {where}"
    if cal.get("at_bound"):
        shape = "nearly flat: in an ensemble it barely votes" if t > 1 else "nearly all on one label"
        note += f", at the bound of the fit (val too small or too easy to fit it): its probabilities are {shape}"
    return note


def report_model(c: Comparison) -> dict[str, Any]:
    """The report as plain data (strings, tables of strings, figure names) that both templates render."""
    m = c.cfg.metrics
    gold = c.metrics[c.names[0]]["gold_counts"]
    split = split_note(c.meta)
    return {
        "title": "newsbias: model comparison",
        "verdict": verdict(c.paired, c.roles, c.cfg.baseline),
        "data_path": c.data["path"] if c.data else None,
        "support": f"{counted(c.n, 'article')} (gold: {', '.join(f'{lab} {k}' for lab, k in gold.items())})"
                   + (f" of the {c.data['rows']} in the split file"
                      + (f" (its first {c.n}, in file order)." if c.data.get("first_rows") else ".")
                      if c.data and c.data["rows"] > c.n else "."),
        "warnings": _warnings(c),
        "notes": [] if split["warning"] else [split["text"]],
        "results": _results_table(c),
        "interval_note": ("Invalid outputs count as wrong. The interval is a percentile bootstrap over articles "
                          f"({m.n_boot} resamples, seed {m.seed})"
                          + ("; \"CI (outlets)\" resamples whole outlets, the honest interval when a few outlets "
                             "dominate the test set (articles of one outlet are not independent)."
                             if any(c.metrics[n].get("macro_f1_ci_outlets") for n in c.names)
                             else ".")
                          + " Micro-F1 is F1 over all answers (an invalid answer is no label's false positive, so "
                            "it exceeds accuracy when answers are invalid); ordinal MAE is the mean distance between "
                            "gold and answer on left = 0, center = 1, right = 2, over valid answers; ECE (expected "
                            "calibration error) is the gap between confidence and accuracy over bins of the highest "
                            "probability; log-loss is the mean -ln p(gold label): lower is better, and unlike ECE "
                            "it rewards probabilities that tell right answers from wrong ones. " + chance_note(c)),
        "paired": _paired_table(c),
        "per_class": _per_class_table(c),
        "ece": [{"name": n, "ece": num(c.metrics[n]["ece"]), "how": _probabilities_note(c, n)}
                for n in c.names if c.metrics[n]["ece"] is not None],
        "auroc": [{"name": n, "auroc": num(c.metrics[n]["confidence_auroc"])}
                  for n in c.names if c.metrics[n].get("confidence_auroc") is not None],
        "figures": c.figures,
        "changes": _changes(c),
        "outlets": _outlet_table(c),
        "runs": _runs(c),
        "selection": c.selection,
        "appendix": c.appendix.rstrip() if c.appendix else None,
        "manifests": [{"name": n, "json": json.dumps(man, indent=2, ensure_ascii=False)}
                      for n, man in c.manifests.items() if man],
    }


def render_markdown(model: dict[str, Any]) -> str:
    """report.md from the report model."""
    return render("report.md", **model)


def render_html(model: dict[str, Any], out: Path) -> str:
    """A self-contained report.html from the report model: the PNGs in ``out`` inlined as data URIs."""
    from markdown_it import MarkdownIt
    from markupsafe import Markup

    images = {f: "data:image/png;base64," + base64.b64encode((out / f).read_bytes()).decode("ascii")
              for f in figure_files(model["figures"])}
    # the appendix is Markdown (the demo's tables); raw HTML in it is escaped, not passed through
    appendix = Markup(MarkdownIt("commonmark", {"html": False}).enable("table").render(model["appendix"])) \
        if model["appendix"] else None
    return render("report.html", images=images, **{**model, "appendix": appendix})
