"""Prep records and prediction records: their format, readers, writers and shared rules.

A split file written by ``newsbias prep`` (``train.jsonl``, ``val.jsonl``, ``test.jsonl``,
``eval_small.jsonl``) holds one :class:`Article` per line; a predictions file written by predict
or baseline holds one :class:`Prediction` per line. Every stage reads and writes them here, so
these rules hold everywhere:

* ids (:func:`record_id`): the record's ``id`` as a string; a missing or null id is the 1-based
  line number. Falsy ids (``0``, ``""``, ``false``) are ids.
* gold labels go through :func:`normalize_label` (the aliases of :mod:`newsbias.labels`);
  predicted labels must be exact.
* a title joins its text through :func:`join_title` (one newline, as prep writes it).
* split names are :data:`SPLITS` (+ :data:`EVAL_SMALL`); :func:`resolve_split` finds a split file.
* an error about one line starts ``path: line N:`` (:func:`at`) and says what to change.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, Optional, Sequence

from .data.clean import drop_unsafe, normalize_whitespace
from .errors import NewsbiasError, shorten
from .io import dumps_line, open_bytes, read_json, sha256_file, write_jsonl
from .labels import LABELS, LabelNormalizer

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
EVAL_SMALL = "eval_small"  # a few unlabeled test articles for qualitative checks
SPLIT_FILES: tuple[str, ...] = SPLITS + (EVAL_SMALL,)
TITLE_SEPARATOR = "\n"
LABEL_KEYS = ("output", "label", "gold")  # where an article's gold label may be, first present wins


def at(path: str | Path, line: int) -> str:
    """``path: line N``, the start of every error about one line of a file."""
    return f"{path}: line {line}"


def record_id(raw: Any, line: int) -> str:
    """A record's id: ``raw`` as a string, or the 1-based ``line`` number when it is missing (None)."""
    return str(line) if raw is None else drop_unsafe(str(raw))


@lru_cache(maxsize=8)
def _normalizer(labels: tuple[str, ...]) -> LabelNormalizer:
    return LabelNormalizer(labels=labels)


def normalize_label(raw: Any, labels: Sequence[str] = LABELS) -> Optional[str]:
    """The label ``raw`` names ("Lean Left" -> "left"), or None when it is missing or unknown."""
    return _normalizer(tuple(labels))(raw)


_ALNUM = re.compile(r"[^\W_]")


def has_words(text: str) -> bool:
    """Whether ``text`` holds a letter or a digit: whitespace, zero-width characters, punctuation, symbols and
    replacement characters (what a failed decode leaves) alone give a model nothing to read."""
    return _ALNUM.search(text) is not None


def join_title(title: Optional[str], text: str) -> str:
    """``title`` + :data:`TITLE_SEPARATOR` + ``text``; just ``text`` without a title or when it starts with it.

    AllSides bodies often begin with their headline already, so it is never doubled.
    """
    if not isinstance(title, str) or not title or not text:
        return text
    title = normalize_whitespace(title)
    if text[: len(title) + 5].lower().startswith(title.lower()):
        return text
    return f"{title}{TITLE_SEPARATOR}{text}"


PREP_META = "prep_meta.json"  # prep's report, beside its split files
TRAIN_MANIFEST = "manifest.json"  # a training run's manifest, in its output (adapter) directory
TRAIN_LOG = "train_log.jsonl"  # its per-step log, beside it
CHECKPOINTS = "checkpoints"  # its resumable checkpoints, under it


def split_file(data_dir: str | Path, split: str) -> Path:
    """Where prep writes ``split`` in ``data_dir`` (whether or not it exists)."""
    return Path(data_dir) / f"{split}.jsonl"


def resolve_split(data: str | Path, split: str, data_key: str = "data", split_key: str = "split") -> Path:
    """The split file: ``data`` itself when it is a file, else split ``split`` of the prep directory ``data``.

    ``split`` is a name in :data:`SPLIT_FILES` or a path to a JSONL file. ``data_key`` and
    ``split_key`` are the settings the error message tells the user to change.
    """
    p = Path(data)
    if p.is_file():
        return p
    if not p.is_dir():
        raise NewsbiasError(f"{data_key} not found: {p} does not exist; point it at a prep output directory "
                            "(run `newsbias prep` first) or at a split file")
    f = split_file(p, split) if split in SPLIT_FILES else Path(split)
    if not f.is_file():
        have = sorted(x.name for x in p.glob("*.jsonl"))
        if not have and not (p / PREP_META).is_file():
            raise NewsbiasError(f"{data_key} {p} is not a prep output (no prep_meta.json, no .jsonl files); point it "
                                f"at the directory `newsbias prep` wrote, or at a split file")
        raise NewsbiasError(f"split file not found: {f} ({p} holds {', '.join(have) or 'no .jsonl files'}); set "
                            f"{split_key} to one of {', '.join(SPLIT_FILES)} or a JSONL file")
    return f


def parse_line(line: str, path: str | Path, lineno: int) -> dict[str, Any]:
    """One JSONL line as a dict; anything else is a line-numbered :class:`NewsbiasError`."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise NewsbiasError(f"{at(path, lineno)}: not valid JSON ({reason}); each line must be one JSON object"
                            ) from None
    except RecursionError:
        raise NewsbiasError(f"{at(path, lineno)}: JSON nested too deeply; each line must be one flat record") from None
    if not isinstance(obj, dict):
        raise NewsbiasError(f"{at(path, lineno)}: expected a JSON object, found {type(obj).__name__}")
    return obj


def _read_lines(f: Any, path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Numbered lines of an open file; a damaged gzip stream is a one-line error."""
    try:
        yield from enumerate(f, start=1)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise NewsbiasError(f"cannot read {path}: {exc}") from None


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a UTF-8 JSONL file (a leading BOM is ignored)."""
    try:
        f = open_bytes(path)
    except OSError as exc:
        raise NewsbiasError(f"cannot read {path}: {exc.strerror or exc}") from None
    with f:
        for lineno, raw in _read_lines(f, path):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise NewsbiasError(f"{at(path, lineno)}: bytes that are not UTF-8 ({raw[exc.start:exc.start + 4]!r}); "
                                    "re-encode the file as UTF-8") from None
            if lineno == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                yield lineno, parse_line(line, path, lineno)


def _text_of(obj: Mapping[str, Any], text_field: Optional[str], where: str, require_text: bool) -> str:
    key = text_field or ("text" if "text" in obj and "input" not in obj else "input")
    text = obj.get(key)
    if text is None and key in obj:
        text = ""  # null text is empty text
    if not isinstance(text, str):
        found = ", ".join(shorten(k, 40) for k in list(obj)[:12]) or "nothing"
        if "pred" in obj:  # a predictions file given where articles belong
            raise NewsbiasError(f"{where}: a prediction record (it has `pred`), not an article; pass the articles "
                                f"(a prep output or its split file), and predictions only to evaluate / compare --preds")
        raise NewsbiasError(f"{where}: missing or non-string {key!r} (the article text); found {found} — run the file "
                            f"through `newsbias prep`, or name its text column where the stage offers it "
                            f"(predict.text_field / explain.text_field, e.g. predict.text_field=body)")
    if require_text and not text.strip():
        raise NewsbiasError(f"{where}: no article text in {key!r} (it is empty); fix or drop the row")
    return drop_unsafe(text)


def _label_of(obj: Mapping[str, Any], labels: Sequence[str], where: str, need_label: bool,
              bad_label: str, label_hint: str) -> tuple[Optional[str], Any]:
    """``(label, raw label that is not in the label set)``."""
    key = next((k for k in LABEL_KEYS if obj.get(k) not in (None, "")), None)
    if key is None:
        if need_label:
            raise NewsbiasError(f"{where}: missing or empty 'output' (the label); every row of a labeled split "
                                "needs one")
        return None, None
    label = normalize_label(obj[key], labels)
    if label is not None:
        return label, None
    if bad_label == "error":
        raise NewsbiasError(f"{where}: label {shorten(obj[key])} is not in the label set {list(labels)}; {label_hint}")
    return None, obj[key]


@dataclass
class Article:
    """One article of a prep split file; its JSON keys are the field names but ``input`` (text), ``output`` (label)."""

    id: str
    text: str
    label: Optional[str] = None  # None on unlabeled splits (eval_small.jsonl)
    instruction: Optional[str] = None
    title: Optional[str] = None
    source: Optional[str] = None
    outlet: Optional[str] = None
    date: Optional[str] = None
    url: Optional[str] = None
    line: int = field(default=0, compare=False)  # 1-based line in the file it was read from; not written
    bad_label: Any = field(default=None, compare=False)  # a gold label outside the set, kept by bad_label="keep"

    @property
    def outlet_or_source(self) -> Optional[str]:
        """The outlet that prediction records carry: ``outlet``, else ``source`` (files not made by prep)."""
        return self.outlet if self.outlet is not None else self.source

    def row(self, prepend_title: bool = False) -> dict[str, Any]:
        """``id, text, gold, outlet``: the article as the baselines, cv and reports tabulate it (``text`` begins
        with the title when ``prepend_title``, as :func:`join_title` joins them)."""
        return {"id": self.id, "text": join_title(self.title, self.text) if prepend_title else self.text,
                "gold": self.label, "outlet": self.outlet_or_source}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], line: int, path: str | Path = "<input>", *,
                  labels: Sequence[str] = LABELS, text_field: Optional[str] = None, need_label: bool = False,
                  require_text: bool = True, bad_label: Literal["error", "keep"] = "error",
                  label_hint: str = "fix the data (newsbias prep normalises labels) or drop the row") -> "Article":
        """Validate one record (prep's ``input``/``output``, or ``text``/``label``/``gold``).

        Text comes from ``text_field`` (default ``input``, else ``text``); with ``require_text`` an
        empty one is an error. A missing label is an error with ``need_label``; a label outside
        ``labels`` is an error ending in ``label_hint``, or with ``bad_label="keep"`` is kept in
        :attr:`bad_label` (and ``label`` is None).
        """
        where = at(path, line)
        text = _text_of(obj, text_field, where, require_text)
        label, bad = _label_of(obj, labels, where, need_label, bad_label, label_hint)
        instruction = obj.get("instruction")
        return cls(id=record_id(obj.get("id"), line), text=text, label=label,
                   instruction=instruction if isinstance(instruction, str) else None, title=obj.get("title"),
                   source=obj.get("source"), outlet=obj.get("outlet"), date=obj.get("date"), url=obj.get("url"),
                   line=line, bad_label=bad)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object prep writes (``output`` left out without a label, as in eval_small.jsonl)."""
        d: dict[str, Any] = {"id": self.id, "instruction": self.instruction, "input": self.text}
        if self.label is not None:
            d["output"] = self.label
        d.update(title=self.title, source=self.source, outlet=self.outlet, date=self.date, url=self.url)
        return d


def iter_articles(path: str | Path, **options: Any) -> Iterator[Article]:
    """Stream the articles of a split file; ``options`` are those of :meth:`Article.from_dict`."""
    for line, obj in iter_json_lines(path):
        yield Article.from_dict(obj, line, path, **options)


def read_articles(path: str | Path, limit: Optional[int] = None, **options: Any) -> list[Article]:
    """The (first ``limit``) articles of a split file, every line validated; see :meth:`Article.from_dict`."""
    return list(islice(iter_articles(path, **options), limit or None))


def write_articles(path: str | Path, articles: Iterable[Article]) -> int:
    """Write a split file (prep's format); returns the number of rows."""
    return write_jsonl(path, (a.to_dict() for a in articles))


def _gold_of(raw: Any, labels: Sequence[str], where: str) -> Optional[str]:
    if raw in (None, ""):
        return None
    gold = normalize_label(raw, labels)
    if gold is None:
        raise NewsbiasError(f"{where}: gold label {shorten(raw)} is not in the label set {list(labels)}; "
                            "fix the data the predictions were made from")
    return gold


def _probs_of(raw: Any, labels: Sequence[str], where: str) -> Optional[dict[str, float]]:
    if raw is None:
        return None
    problem = f"{where}: probs must map exactly the labels {', '.join(labels)} to numbers, got {shorten(raw)}"
    if not isinstance(raw, dict) or set(raw) != set(labels):
        raise NewsbiasError(problem)
    try:
        probs = {lab: float(raw[lab]) for lab in labels}
    except (TypeError, ValueError):
        raise NewsbiasError(problem) from None
    # 0.01: records round each probability to PROB_DECIMALS decimals, and half-precision scoring sums a little off 1
    if not all(0.0 <= p <= 1.0 for p in probs.values()) or abs(sum(probs.values()) - 1.0) > 0.01:
        raise NewsbiasError(f"{where}: probs {shorten(raw)} are not probabilities (each in [0, 1], summing to 1); "
                            f"write the softmax of the scores, not the scores themselves")
    return probs


PROB_DECIMALS = 6  # records keep this many decimals of each probability


def scored(labels: Sequence[str], probs: Sequence[float]) -> dict[str, Any]:
    """``{"pred", "probs"}`` of one article's probabilities (in ``labels`` order): the argmax and the rounded
    probabilities that every record carries (predict, serve, baseline, explain)."""
    values = [float(p) for p in probs]
    if not all(math.isfinite(v) for v in values):
        raise NewsbiasError(f"the model gave non-finite probabilities {values}: its weights are broken (a training "
                            f"run that diverged?); retrain it with a lower learning rate")
    return {"pred": labels[values.index(max(values))],  # the first of tied maxima, as numpy's argmax
            "probs": {lab: round(p, PROB_DECIMALS) for lab, p in zip(labels, values)}}


@dataclass
class Prediction:
    """One prediction record, as predict and baseline write it and evaluate / compare read it."""

    id: str
    pred: Optional[str]  # a label; None when ``valid`` is false (an unparseable generation)
    probs: Optional[dict[str, float]]  # over the labels in label order; None in generate mode
    gold: Optional[str] = None
    valid: bool = True
    outlet: Optional[str] = None
    model: Optional[str] = None
    adapter: Optional[str] = None
    raw: Optional[str] = None  # the generated text (generate mode); written only when set
    text: Optional[str] = None  # the article ("input"), written only when set (predict.include_text)
    line: int = field(default=0, compare=False)  # 1-based line in the file it was read from; not written

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any], line: int, path: str | Path = "<input>",
                  labels: Sequence[str] = LABELS) -> "Prediction":
        """Validate one record: gold normalised, ``pred`` exactly a label when valid, ``probs`` over the labels."""
        where = at(path, line)
        if "pred" not in obj:
            article = any(k in obj for k in ("output", "input", "text", "label"))
            raise NewsbiasError(f"{where}: not a prediction record (no `pred` field; keys: {shorten(sorted(obj))})"
                                + ("; this looks like an article file: score it with `newsbias predict` and pass "
                                   "the predictions it writes" if article else
                                   "; pass a file written by `newsbias predict` or `newsbias baseline`"))
        gold = _gold_of(obj.get("gold"), labels, where)
        pred = obj.get("pred")
        valid = obj.get("valid", pred is not None)
        if not isinstance(valid, bool):  # the string "false" would be read as true
            raise NewsbiasError(f"{where}: `valid` is {shorten(valid)}; write true or false (JSON booleans)")
        if valid and pred not in labels:
            raise NewsbiasError(f"{where}: predicted label {shorten(pred)} is not in the label set {list(labels)} "
                                "(mark unparseable outputs valid=false, pred=null)")
        return cls(id=record_id(obj.get("id"), line), pred=pred, probs=_probs_of(obj.get("probs"), labels, where),
                   gold=gold, valid=valid, outlet=obj.get("outlet"), model=obj.get("model"),
                   adapter=obj.get("adapter"), raw=obj.get("raw"), text=obj.get("input"), line=line)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of a predictions file (``raw`` and ``input`` only when set)."""
        d: dict[str, Any] = {"id": self.id, "pred": self.pred, "probs": self.probs, "gold": self.gold,
                             "valid": self.valid}
        if self.raw is not None:
            d["raw"] = self.raw
        d.update(outlet=self.outlet, model=self.model, adapter=self.adapter)
        if self.text is not None:
            d["input"] = self.text
        return d

    def to_line(self) -> str:
        """:meth:`to_dict` as one JSONL line."""
        return dumps_line(self.to_dict())


def read_predictions(path: str | Path, labels: Sequence[str] = LABELS) -> list[Prediction]:
    """Every record of a predictions file, validated; a missing or empty file or a repeated id is an error."""
    p = Path(path)
    if not p.is_file():
        raise NewsbiasError(f"predictions file not found: {p}")
    preds: list[Prediction] = []
    seen: dict[str, int] = {}
    for line, obj in iter_json_lines(p):
        pr = Prediction.from_dict(obj, line, p, labels)
        if pr.id in seen:
            raise NewsbiasError(f"{at(p, line)}: id {pr.id!r} already seen on line {seen[pr.id]}; "
                                "each article must be predicted once")
        seen[pr.id] = line
        preds.append(pr)
    if not preds:
        raise NewsbiasError(f"predictions file {p} is empty")
    return preds


def prediction_stem(path: str | Path) -> str:
    """A prediction file's name without ``.jsonl`` (else without its suffix): the run's default name."""
    name = Path(path).name
    return name[:-len(".jsonl")] if name.endswith(".jsonl") else Path(name).stem


def manifest_path(pred_path: str | Path) -> Path:
    """Where a prediction file's manifest lives: ``runs/preds/base.jsonl`` -> ``runs/preds/base.manifest.json``."""
    return Path(pred_path).with_name(f"{prediction_stem(pred_path)}.manifest.json")


def read_manifest(pred_path: str | Path) -> Optional[dict[str, Any]]:
    """The prediction file's manifest, with ``manifest_path`` (where it was read) added for :func:`locate`."""
    p = manifest_path(pred_path)
    if not p.is_file():
        return None
    data = read_json(p, strict=False)
    if data is None:
        log.warning("manifest %s is not a readable JSON object; left out", p)
        return None
    recorded = ((data.get("outputs") or {}).get(Path(pred_path).name) or {}).get("sha256")
    if recorded and Path(pred_path).is_file() and sha256_file(pred_path) != recorded:
        log.warning("%s was changed after %s was written (its sha256 differs): the settings that manifest records "
                    "may not be this file's; rerun the stage that wrote it", pred_path, p.name)
    return {**data, "manifest_path": str(p.resolve())}


def locate(recorded: str, manifest: Optional[dict[str, Any]]) -> Path:
    """A path a stage recorded as its user typed it: as is when absolute or found from here; else under the
    directory the stage ran in (its manifest's ``cwd``), else under a directory above the manifest (stages run
    from a project root that holds ``runs/``); as is when none holds it."""
    p = Path(recorded).expanduser()
    if p.is_absolute() or p.exists() or not manifest:
        return p
    roots = [Path(manifest["cwd"])] if manifest.get("cwd") else []
    roots += list(Path(manifest["manifest_path"]).parents) if manifest.get("manifest_path") else []
    return next((root / p for root in roots if (root / p).exists()), p)


def write_predictions(path: str | Path, preds: Iterable[Prediction]) -> int:
    """Write a predictions file; returns the number of rows."""
    return write_jsonl(path, (pr.to_dict() for pr in preds))
