"""The explain stage: which words of an article moved the model's answer, and were they the outlet's?

Every word the model reads (the prompt's article window, after truncation) is left out in turn
and the article scored again; a word's effect on a label is how much that label's probability
drops without it (occlusion, "leave one out"). Words are left out in token space, so nothing from
beyond the window moves into it. It needs only the model's own scoring, so it works for both heads,
every model source (ONNX exports included) and any device, and an effect is what the model does,
not a gradient's estimate of it. Why by hand: attribution libraries (Captum, SHAP) work on
embeddings or on re-tokenized text, and neither knows our prompt's article window. The cost is one
forward pass per word (about 100 at 128 tokens); ``explain.span`` leaves out several words at once.

Each word is checked against the article's own outlet cues (:func:`newsbias.data.cues.cue_spans`:
the outlet's names and domain, links and handles, bylines, datelines), and every article with any is
scored once more without all of them. Labels in both corpora are the outlet's rating, so a model
that leans on these has learned the outlet, not the article.

``explain.out_dir`` gets ``explanations.jsonl`` (one record per article, every word's effects;
appended as it goes, so a killed run resumes), ``explain.md`` and ``explain.html`` (the summary,
then each article with its words marked) and ``manifest.json``.
"""

from __future__ import annotations

import logging
import re
import time
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from .classifier import Classifier
from .config import ExplainConfig
from .data.clean import domain_of
from .data.cues import cue_spans
from .errors import NewsbiasError
from .modeling import keeps_threads
from .io import OWNER_FILE, check_output_dir, claim, dumps_line, read_json, sha256_file, stage_manifest, trim_torn_tail, write_json
from .predict import first_instruction, input_articles, load_classifier, resolve_input, skip_reason
from .records import Article, iter_json_lines, scored
from .templates import render

log = logging.getLogger(__name__)

RECORDS = "explanations.jsonl"
MANIFEST = "manifest.json"
OUTPUTS = (RECORDS, "explain.md", "explain.html", MANIFEST)
CUE_ORDER = ("name", "link", "byline", "dateline")
_WORD = re.compile(r"\S+")
_EDGE = re.compile(r"^\W+|\W+$")


@dataclass
class Window:
    """The article tokens a prompt keeps: ``ids``, each one's word (an index into ``words``, -1 for
    whitespace) and the character spans of the words read."""

    ids: list[int]
    word_of: list[int]
    words: list[tuple[int, int]]
    truncated: bool


def read_window(clf: Classifier, article: str) -> Window:
    """The words of ``article`` that ``clf``'s prompt reads, with their tokens: the ids
    ``PromptBuilder.encode`` keeps."""
    tok = clf.tokenizer
    if not getattr(tok, "is_fast", False):
        raise NewsbiasError(f"explain needs a fast tokenizer (character offsets); {type(tok).__name__} is not one")
    enc = tok(article, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    kept, cut = clf.builder.truncate_article(range(len(enc["input_ids"])))
    spans = [m.span() for m in _WORD.finditer(article)]
    starts = [s for s, _ in spans]
    word_of = []
    for k in kept:
        a, b = enc["offset_mapping"][k]
        pos = next((i for i in range(a, b) if not article[i].isspace()), None)
        word_of.append(-1 if pos is None else bisect_right(starts, pos) - 1)
    # a token of spaces alone is the next word's leading space: it goes with the word (so leaving a
    # word out leaves single spaces, as if it had never been written); line breaks stay
    following = -1
    for j in range(len(kept) - 1, -1, -1):
        a, b = enc["offset_mapping"][kept[j]]
        if word_of[j] >= 0:
            following = word_of[j]
        elif article[a:b].strip(" \t") == "":
            word_of[j] = following
    used = sorted({w for w in word_of if w >= 0})
    index = {w: i for i, w in enumerate(used)}
    return Window([enc["input_ids"][k] for k in kept], [index.get(w, -1) for w in word_of],
                  [spans[w] for w in used], cut)


def unit_spans(window: Window, span: int) -> list[tuple[int, int]]:
    """Character spans of the units left out: ``span`` consecutive words each."""
    w = window.words
    return [(w[i][0], w[min(i + span, len(w)) - 1][1]) for i in range(0, len(w), span)]


def without(clf: Classifier, window: Window, drop: Iterable[int], span: int) -> Any:
    """The prompt of ``window`` with the units ``drop`` (indices into :func:`unit_spans`) left out."""
    gone = set(drop)
    ids = [t for t, w in zip(window.ids, window.word_of) if w < 0 or w // span not in gone]
    return clf.builder.wrap(ids, window.truncated)


def unit_cues(units: Sequence[tuple[int, int]], cues: Sequence[tuple[int, int, str]]) -> list[Optional[str]]:
    """Per unit, the kind of outlet cue it overlaps (the first of :data:`CUE_ORDER`), or None."""
    out = []
    for a, b in units:
        kinds = {k for s, e, k in cues if s < b and a < e}
        out.append(next((k for k in CUE_ORDER if k in kinds), None))
    return out


def explain_article(clf: Classifier, a: Article, span: int = 1, batch_size: int = 16) -> dict[str, Any]:
    """One article's explanation record: its scores with and without each unit (and without its outlet cues)."""
    labels = clf.labels
    text = clf.article_text(a.title, a.text)
    window = read_window(clf, text)
    units = unit_spans(window, span)
    # a file not made by prep may name the outlet by its url alone, as prep reads it
    cues = unit_cues(units, cue_spans(text, a.source, a.outlet or domain_of(a.url)))
    cue_units = [i for i, c in enumerate(cues) if c]
    encs = [clf.builder.wrap(window.ids, window.truncated)] + [without(clf, window, [i], span)
                                                                 for i in range(len(units))]
    if cue_units:
        encs.append(without(clf, window, cue_units, span))
    probs = clf.score_encoded(encs, batch_size)
    full = probs[0]
    effects = full[None, :] - probs[1:len(units) + 1]

    return {"id": a.id, "gold": a.label, "outlet": a.outlet_or_source, **scored(labels, full),
            "tokens_read": len(window.ids), "words_read": len(window.words), "truncated": window.truncated,
            "span": span,
            "without_cues": scored(labels, probs[-1]) if cue_units else None,
            "units": [{"start": s, "end": e, "text": text[s:e], "cue": c,
                       "effect": {l: round(float(v), 6) for l, v in zip(labels, eff)}}
                      for (s, e), c, eff in zip(units, cues, effects)]}


def normalize_word(text: str) -> str:
    """A unit's text as the summary counts it: lower case, edge punctuation stripped."""
    return _EDGE.sub("", text).lower()


def top_units(record: dict[str, Any], k: int, label: Optional[str] = None, against: bool = False
              ) -> list[dict[str, Any]]:
    """The ``k`` units that pushed hardest towards ``label`` (default: the predicted one), or with ``against``
    the ``k`` that pushed hardest away from it."""
    label = label or record["pred"]
    sign = -1 if against else 1
    ranked = sorted(record["units"], key=lambda u: -sign * u["effect"][label])
    return [u for u in ranked[:k] if sign * u["effect"][label] > 0]


def _top_is_cue(record: dict[str, Any]) -> bool:
    top = top_units(record, 1)
    return bool(top and top[0]["cue"])


def word_table(records: Sequence[dict[str, Any]], label: str, min_articles: int, k: int) -> list[dict[str, Any]]:
    """Words read in at least ``min_articles`` articles that support ``label`` on average, strongest first."""
    seen: dict[str, list[float]] = defaultdict(list)
    as_cue: dict[str, int] = defaultdict(int)
    for r in records:
        per: dict[str, list[tuple[float, bool]]] = defaultdict(list)
        for u in r["units"]:
            w = normalize_word(u["text"])
            if w:
                per[w].append((u["effect"][label], bool(u["cue"])))
        # a word counts once per article, at the mean of its occurrences: their maximum would rank a word
        # by how often it occurs (the largest of many noisy effects is large), not by what it does
        for w, hits in per.items():
            seen[w].append(float(np.mean([eff for eff, _ in hits])))
            as_cue[w] += any(cue for _, cue in hits)
    rows = [{"word": w, "articles": len(v), "mean_effect": float(np.mean(v)), "as_cue": as_cue[w]}
            for w, v in seen.items() if len(v) >= min_articles and np.mean(v) > 0]
    return sorted(rows, key=lambda r: (-r["mean_effect"], r["word"]))[:k]


def summarize(records: Sequence[dict[str, Any]], labels: Sequence[str], min_articles: int = 3,
              k: int = 10) -> dict[str, Any]:
    """What the explanations say together: how much rests on outlet cues, and the words behind each label."""
    n = len(records)
    with_cues = [r for r in records if r["without_cues"]]
    top_is_cue = sum(_top_is_cue(r) for r in records)
    pushed = [(u["effect"][r["pred"]], bool(u["cue"])) for r in records for u in r["units"]
              if u["effect"][r["pred"]] > 0]
    total = sum(e for e, _ in pushed)
    kinds: dict[str, int] = defaultdict(int)
    for r in records:
        for u in r["units"]:
            if u["cue"]:
                kinds[u["cue"]] += 1
    gold = [r for r in records if r["gold"]]
    return {"articles": n, "n_outlets": len({r["outlet"] for r in records if r["outlet"]}),
            "words_read_mean": float(np.mean([r["words_read"] for r in records])) if n else 0.0,
            "articles_with_cues": len(with_cues),
            "top_unit_is_cue": top_is_cue,
            "cue_share_of_support": (sum(e for e, c in pushed if c) / total) if total else 0.0,
            "flipped_without_cues": sum(1 for r in with_cues if r["without_cues"]["pred"] != r["pred"]),
            "cue_units": dict(sorted(kinds.items())),
            "accuracy": float(np.mean([r["pred"] == r["gold"] for r in gold])) if gold else None,
            "outlets": outlet_table(records),
            "words": {lab: word_table(records, lab, min_articles, k) for lab in labels}}


def outlet_table(records: Sequence[dict[str, Any]], top: int = 20) -> list[dict[str, Any]]:
    """Per outlet (most articles first, then those whose cues led or changed an answer; past ``top``, one row for
    the rest): articles, correct answers, articles whose strongest word was one of its cues, and answers that
    change without the cues."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by[r["outlet"] or "(unknown)"].append(r)
    rows = [{"outlet": o, "articles": len(rs), "correct": sum(r["pred"] == r["gold"] for r in rs if r["gold"]),
             "labelled": sum(1 for r in rs if r["gold"]),
             "top_unit_is_cue": sum(_top_is_cue(r) for r in rs),
             "flipped_without_cues": sum(1 for r in rs if r["without_cues"] and r["without_cues"]["pred"] != r["pred"])}
            for o, rs in by.items()]
    rows.sort(key=lambda r: (-r["articles"], -(r["top_unit_is_cue"] + r["flipped_without_cues"]), r["outlet"]))
    if len(rows) <= top:
        return rows
    rest = rows[top - 1:]
    return rows[:top - 1] + [{"outlet": f"{len(rest)} more outlets", **{k: sum(r[k] for r in rest) for k in rest[0]
                                                                         if k != "outlet"}}]


def _signature(cfg: ExplainConfig, input_path: str, clf: Classifier) -> dict[str, Any]:
    """What decides the records: a resumed run must match it."""
    path = Path(input_path)
    return {"input": "-" if input_path == "-" else str(path.resolve()),
            "input_sha256": sha256_file(path) if input_path != "-" and path.is_file() else None,
            **clf.identity(), "span": cfg.span, "limit": cfg.limit, "sample": cfg.sample, "text_field": cfg.text_field}


def _done_records(out: Path, sig: dict[str, Any], overwrite: bool) -> list[dict[str, Any]]:
    """Records of an earlier run into ``out`` with the same signature (a killed run resumes), else none."""
    old = read_json(out / MANIFEST, strict=False) or {}
    path = out / RECORDS
    stdin = sig["input"] == "-"  # no way to tell that stdin brings the same articles again
    if old.get("signature") == sig and not old.get("complete") and path.is_file() and not stdin:
        trim_torn_tail(path)  # a line cut by the kill is dropped
        return [obj for _, obj in iter_json_lines(path)]
    if path.exists() and not overwrite:
        if stdin and not old.get("complete"):
            raise NewsbiasError(f"{out} holds an unfinished run, and a run that reads stdin cannot resume it (stdin "
                                f"cannot be checked to be the same input); pass --overwrite to start over, or save "
                                f"the input to a file and resume from that")
        _refuse_earlier(out, bool(old.get("complete")))
    for name in OUTPUTS:
        (out / name).unlink(missing_ok=True)
    return []


def _refuse_earlier(out: Path, complete: bool) -> None:
    raise NewsbiasError(f"{out} holds the explanations of {'an earlier' if complete else 'another'} run; pass "
                        f"--overwrite to replace them, or choose another explain.out_dir")


def round_robin(articles: Iterable[Article], n: int) -> list[Article]:
    """Up to ``n`` articles, one of each outlet in turn (outlets in order of first appearance)."""
    by: dict[Optional[str], list[Article]] = defaultdict(list)
    for a in articles:
        by[a.outlet_or_source].append(a)
    queues = list(by.values())
    out: list[Article] = []
    for depth in range(max(map(len, queues), default=0)):
        out += [q[depth] for q in queues if depth < len(q)][: n - len(out)]
        if len(out) >= n:
            break
    return out


def _articles(cfg: ExplainConfig, input_path: str, labels: Sequence[str]) -> list[Article]:
    arts = (a for a in input_articles(input_path, labels, cfg.text_field, on_bad_gold="skip") if not skip_reason(a))
    out = list(islice(arts, cfg.limit)) if cfg.sample == "first" else round_robin(arts, cfg.limit)
    if not out:
        raise NewsbiasError(f"{input_path} has no article with text to explain; check explain.input / explain.split")
    return out


@keeps_threads
def run_explain(cfg: ExplainConfig, progress: bool = True) -> dict[str, Any]:
    """Explain the first ``cfg.limit`` articles of ``cfg.input`` into ``cfg.out_dir``; returns the manifest."""
    started = time.time()
    if not cfg.input:
        raise NewsbiasError("nothing to explain: set explain.input (a prep directory with explain.split, or a file)")
    input_path = resolve_input(cfg.input, cfg.split)
    out = check_output_dir(cfg.out_dir, "explain", MANIFEST, inputs=[input_path])
    out.mkdir(parents=True, exist_ok=True)
    claim(out, f"explain output {out}")  # two runs appending to one records file would interleave their rows
    if (read_json(out / MANIFEST, strict=False) or {}).get("complete") and not cfg.overwrite:
        _refuse_earlier(out, complete=True)  # found before the model loads: a finished run is never resumed
    clf = load_classifier(cfg, first_instruction(input_path), stage="explain")
    articles = _articles(cfg, input_path, clf.labels)
    sig = _signature(cfg, input_path, clf)
    records = _done_records(out, sig, cfg.overwrite)
    write_json(out / MANIFEST, {"stage": "explain", "signature": sig, "complete": False})
    resumed = len(records)  # records are written in input order: a resumed run goes on after them
    with open(out / RECORDS, "a", encoding="utf-8") as fh:
        for a in tqdm(articles[resumed:], desc="explain", unit="article", disable=not progress, initial=resumed,
                      total=len(articles)):
            r = explain_article(clf, a, cfg.span, cfg.batch_size)
            fh.write(dumps_line(r))
            fh.flush()
            records.append(r)
    summary = write_reports(out, records, clf.labels, cfg, model=cfg.name or clf.adapter or clf.source,
                            input_path=input_path)
    manifest = stage_manifest("explain", cfg, started, signature=sig, complete=True, input=input_path,
                              out_dir=str(out), resumed=resumed, summary={k: v for k, v in summary.items()
                                                                            if k != "words"})
    write_json(out / MANIFEST, manifest)
    (out / OWNER_FILE).unlink(missing_ok=True)  # the run is done: its directory is free
    return manifest


def write_reports(out: Path, records: Sequence[dict[str, Any]], labels: Sequence[str], cfg: ExplainConfig,
                  model: str, input_path: str) -> dict[str, Any]:
    """``explain.md`` and ``explain.html`` from the records (one template context); returns the summary."""
    summary = summarize(records, labels, cfg.min_articles, cfg.top_k)
    if records and not summary["n_outlets"]:
        log.warning("explain: no article names its outlet (no outlet, source or url field), so there are no outlet "
                    "cues to look for; the report shows the words behind each answer only")
    context = {"summary": summary, "records": records, "labels": labels, "model": model, "input": input_path,
               "top_k": cfg.top_k, "span": cfg.span, "min_articles": cfg.min_articles, "sample": cfg.sample,
               "marked": [marked_text(r) for r in records], "top_units": top_units}
    (out / "explain.md").write_text(render("explain.md", **context), encoding="utf-8")
    (out / "explain.html").write_text(render("explain.html", **context), encoding="utf-8")
    return summary


def marked_text(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The units of ``record`` in reading order with a shade in [-1, 1] (effect on the predicted label,
    scaled by the article's largest), for the HTML page."""
    label = record["pred"]
    effects = [u["effect"][label] for u in record["units"]]
    scale = max((abs(e) for e in effects), default=0.0) or 1.0
    return [{"text": u["text"], "shade": round(e / scale, 3), "effect": e, "cue": u["cue"]}
            for u, e in zip(record["units"], effects)]


__all__ = ["Window", "explain_article", "read_window", "run_explain", "summarize", "top_units", "word_table"]
