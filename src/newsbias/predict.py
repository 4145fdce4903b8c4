"""The predict stage: run a base model (zero-shot) or base + adapter over articles.

Two modes:

* ``score`` (default): one forward pass per article; probabilities over the label set from the
  label tokens' logits at the answer position (``head: lm``) or from the classifier (``head:
  cls``). Always a valid label. Batched, length-sorted, dynamically padded
  (:meth:`newsbias.classifier.Classifier.classify`, which the server uses too).
* ``generate``: the original assignment's method: greedy decoding of a few tokens, parsed by
  :func:`parse_generation`; unparseable outputs are recorded as invalid, never silently mapped
  to a label.

Output: one prediction record per article (``id, pred, probs, gold, valid, raw?, outlet, model,
adapter``), flushed chunk by chunk, so a killed run resumes where it stopped with no row lost or
duplicated; plus ``<out>.manifest.json``. Under ``torchrun``/``accelerate launch`` each process
takes every WORLD_SIZE-th article and rank 0 merges the parts into one file in input order.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .classifier import Classifier
from .config import InferenceConfig, PredictConfig, dump_config
from .errors import NewsbiasError, SettingError, counted
from .io import atomic_file, claim, dumps_line, open_bytes, sha256_file, stage_manifest, trim_torn_tail, write_json
from .labels import parse_generation  # noqa: F401  (re-exported for users)
from .modeling import (SETTINGS_FILE, Dist, init_distributed, rank_device, resolve_device_dtype, set_threads,
                       keeps_threads, tune_cpu_allocator)
from .data.readers import iter_csv
from .records import Article, Prediction, has_words, iter_json_lines, manifest_path, parse_line, resolve_split

log = logging.getLogger(__name__)


def resolve_input(inp: str, split: str) -> str:
    """A prep output directory + split name -> the split file; a file or '-' as given."""
    return inp if inp == "-" else str(resolve_split(inp, split, "predict.input", "predict.split"))


_RECORD_FIELDS = ("id", "text", "input", "title", "label", "output", "gold", "source", "outlet", "date", "url")


def _record_names(keys: Iterable[str]) -> dict[str, str]:
    """A record's field names in another case ("ID", "Title") renamed to the ones predict reads, unless the
    exact lower-case name is there too."""
    keys = list(keys)
    return {k: k.lower() for k in keys if k.lower() in _RECORD_FIELDS and k.lower() not in keys}


def _json_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, obj in iter_json_lines(path):
        renamed = _record_names(obj)
        yield lineno, {renamed.get(k, k): v for k, v in obj.items()} if renamed else obj


def _csv_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    header, rows = iter_csv(Path(path), "utf-8", "error", [], setting=None)
    if len(header) == 1 and any(sep in header[0] for sep in ";\t,"):
        sep = next(name for ch, name in ((";", "semicolons"), ("\t", "tabs"), (",", "commas")) if ch in header[0])
        raise NewsbiasError(f"{path}: the header is one column holding {sep}: the delimiter is wrong; predict reads "
                            f"comma-separated .csv and tab-separated .tsv files (rename or convert the file)")
    renamed = _record_names(header)  # a spreadsheet's "ID" or "Title" is the record's id or title
    if not any(renamed.get(h, h) == "id" for h in header):
        log.warning("predict: %s has no id column; each article is named by the line it starts on", path)
    for lineno, row in rows:
        # CSV has no null: an empty cell is a missing value (an id "" would be one otherwise)
        yield lineno, {renamed.get(k, k): (None if v == "" else v) for k, v in row.items()}


def _line_rows(lines: Iterable[str], name: str, json_lines: Optional[bool] = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """One article per non-blank line: a JSON record (``json_lines``) or its text. ``None`` (stdin) decides by the
    first line, once for all: JSONL when it is a JSON object, else text (so "{Breaking} ..." is a headline)."""
    for lineno, line in enumerate(lines, start=1):
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # a byte-order mark, as editors on Windows write one
        if not line.strip():
            continue
        if json_lines is None:
            json_lines = _is_json_object(line)
        yield (lineno, parse_line(line, name, lineno)) if json_lines else (lineno, {"text": line.rstrip("\n")})


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _text_file_rows(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    with io.TextIOWrapper(open_bytes(path), encoding="utf-8") as f:
        try:
            yield from _line_rows(f, path, json_lines=False)
        except UnicodeDecodeError as exc:
            raise NewsbiasError(f"{path}: bytes that are not UTF-8 ({exc.object[exc.start:exc.start + 4]!r}); "
                                f"re-encode the file as UTF-8") from None


def _raw_records(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if path == "-":
        return _line_rows(sys.stdin, "<stdin>")
    kind = path.lower().removesuffix(".gz")  # each kind may come gzipped, as prep reads it
    if kind.endswith((".csv", ".tsv")):
        return _csv_rows(path)
    if kind.endswith(".txt"):
        return _text_file_rows(path)
    return _json_rows(path)


def input_articles(path: str, labels: Sequence[str], text_field: Optional[str] = None,
                   on_bad_gold: str = "error") -> Iterator[Article]:
    """Stream articles from prep JSONL (``input``/``output``), ``text``/``label`` JSONL or CSV, or stdin.

    Empty texts and (with ``on_bad_gold="skip"``) gold labels outside the label set are kept, to be
    counted as skipped (:func:`skip_reason`); every other problem is an error naming the line.
    """
    hint = "fix the data or set predict.on_bad_gold=skip"
    keep = "keep" if on_bad_gold == "skip" else "error"
    name = "<stdin>" if path == "-" else path
    for lineno, obj in _raw_records(path):
        yield Article.from_dict(obj, lineno, name, labels=labels, text_field=text_field, require_text=False,
                                bad_label=keep, label_hint=hint)


def skip_reason(a: Article) -> Optional[str]:
    """Why an article is not predicted (empty text, a gold label outside the set), or None."""
    kind = _skip_kind(a)
    return f"gold label {a.bad_label!r} not in the label set" if kind == "gold label" else kind


def _skip_kind(a: Article) -> Optional[str]:
    if not has_words(a.text):
        return "empty text"  # or only punctuation, symbols, invisible or replacement characters
    return "gold label" if a.bad_label is not None else None


MAX_LISTED_SKIPS = 20  # skipped articles the manifest names (the rest are counted)


def load_classifier(cfg: InferenceConfig, instruction: Optional[str] = None, stage: str = "predict") -> Classifier:
    """The model ``cfg`` (the ``stage:`` section) names: base + adapter, a trained model directory, or a base
    model zero-shot."""
    if not cfg.model and not cfg.adapter:
        raise NewsbiasError(f"nothing to {stage} with: pass --adapter DIR (a `newsbias train` output) and/or --model "
                            f"BASE ({stage}.adapter / {stage}.model)")
    set_threads(cfg.threads)
    try:
        clf = Classifier.from_options(**cfg.loader_options(instruction))
    except SettingError as exc:
        raise exc.named(f"{stage}.{exc.key}") from None
    except NewsbiasError as exc:
        if str(exc).startswith("prompt."):  # the prompt's settings, not the model, are what to change
            raise NewsbiasError(f"{stage}.{exc}".replace(" prompt.instruction", f" {stage}.prompt.instruction")) from None
        raise NewsbiasError(f"{exc} ({stage}.model / {stage}.adapter)") from None
    if getattr(cfg, "mode", "score") == "generate" and clf.settings.head != "lm":
        raise NewsbiasError("predict.mode=generate needs a causal LM (head: lm); this adapter has a cls head — use mode=score")
    ignored = [f"{stage}.prompt.{k}={getattr(cfg.prompt, k)!r}" for k in sorted(cfg.prompt.model_fields_set)
               if getattr(cfg.prompt, k) != getattr(clf.settings.prompt, k, None)]
    message = (f"{stage}: {', '.join(ignored)} not used: a trained model scores with the prompt it was trained with "
               f"(its {SETTINGS_FILE})")
    if ignored and message not in _WARNED:  # once per process: cv loads a model per round
        _WARNED.add(message)
        log.warning(message)
    return clf


_WARNED: set[str] = set()


def _parts_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.parts"


def _signature(cfg: PredictConfig, input_path: str, world: int, clf: Classifier) -> dict[str, Any]:
    """What must match for a run to resume another's part files: the input's content, the model, the settings."""
    keep = ("mode", "max_new_tokens", "include_text", "limit", "text_field", "name", "on_bad_gold", "windows", "pool")
    d = dump_config(cfg)
    return {"input": os.path.abspath(input_path) if input_path != "-" else "-",
            "input_sha256": sha256_file(input_path) if input_path != "-" else None,
            **clf.identity(), "world_size": world, **{k: d[k] for k in keep}}



def _check_out(out: Path, input_path: str) -> None:
    if input_path != "-" and out.resolve() == Path(input_path).resolve():
        raise NewsbiasError(f"predict.out {out} is the input file; write the predictions to another path")
    if out.is_dir():
        raise NewsbiasError(f"predict.out {out} is a directory; give a file path such as {out / 'preds.jsonl'}")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise NewsbiasError(f"cannot write {out}: {parent} is a file, not a directory")


def _open_parts(cfg: PredictConfig, out: Path, parts: Path, sig: dict[str, Any]) -> None:
    """Create (or keep, for a resume of the same run) the part-file directory; rank 0 only."""
    if out.exists() and not parts.exists() and not cfg.overwrite:
        raise NewsbiasError(f"{out} already exists; pass --overwrite (predict.overwrite=true) to replace it")
    if parts.exists():
        claim(parts, str(out))  # two runs into one --out would otherwise resume into each other's rows
        try:
            old = json.loads((parts / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        stdin = sig["input"] == "-"  # no way to tell that stdin brings the same articles again
        if old != sig or stdin:
            changed = sorted(k for k in set(sig) | set(old) if sig.get(k) != old.get(k))
            if stdin and not cfg.overwrite:
                raise NewsbiasError(f"{out} has an unfinished run, and a run that reads stdin cannot resume it (stdin "
                                    f"cannot be checked to be the same input); pass --overwrite to start over, or "
                                    f"save the input to a file and resume from that")
            if not cfg.overwrite:
                raise NewsbiasError(f"{out} has an unfinished run of a different {', '.join(changed)}; its rows cannot "
                                    f"be reused — pass --overwrite to start over")
            shutil.rmtree(parts)
    try:
        parts.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise NewsbiasError(f"cannot write next to {out}: {exc.strerror or exc}") from None
    claim(parts, str(out))
    write_json(parts / "run.json", sig)


def _rows_done(path: Path) -> int:
    """Complete lines already in a part file; a torn last line (killed mid-write) is cut off.

    A rank's part file holds one line per article it was given, in input order, so a resume
    skips exactly that many of its articles: repeated or missing ids cannot confuse it.
    """
    return trim_torn_tail(path) if path.exists() else 0


def _count_lines(path: str) -> Optional[int]:
    """The records in ``path`` (the progress bar's total): its non-blank lines, or a CSV's parsed rows (a quoted
    cell may hold line breaks); None for stdin."""
    if path == "-":
        return None
    if path.lower().removesuffix(".gz").endswith((".csv", ".tsv")):
        return sum(1 for _ in iter_csv(Path(path), "utf-8", "error", [], setting=None)[1])
    with open_bytes(path) as f:
        return sum(1 for line in f if line.strip())


def first_instruction(input_path: str) -> Optional[str]:
    """The first record's ``instruction`` (the data's own prompt for a base model used zero-shot), or None."""
    if input_path == "-":
        return None
    for _, obj in _raw_records(input_path):
        return obj.get("instruction") if isinstance(obj.get("instruction"), str) else None
    return None


def _records(chunk: list[Article], results: list[dict[str, Any]], cfg: PredictConfig, name: str,
             adapter: Optional[str]) -> str:
    """The prediction records (and skip markers) of one chunk, as JSONL."""
    it = iter(results)
    lines = []
    for a in chunk:
        reason = skip_reason(a)
        if reason:
            lines.append(dumps_line({"id": a.id, "skipped": reason, "kind": _skip_kind(a), "line": a.line}))
            continue
        r = next(it)
        lines.append(Prediction(id=a.id, pred=r["pred"], probs=r["probs"], gold=a.label, valid=r["valid"],
                                outlet=a.outlet_or_source, model=name, adapter=adapter, raw=r.get("raw"),
                                text=a.text if cfg.include_text else None).to_line())
    return "".join(lines)


def _predict_part(cfg: PredictConfig, clf: Classifier, input_path: str, part: Path, rank: int, world: int,
                  name: str, bar: Any) -> tuple[int, int, int]:
    """Score this rank's articles into its part file; returns (articles seen, rows resumed, rows scored)."""
    done = _rows_done(part)
    seen = mine = n_new = 0
    t0 = time.perf_counter()
    adapter = clf.adapter  # None for a trained model directory, even when it was passed as the adapter
    with open(part, "a", encoding="utf-8") as fh:
        chunk: list[Article] = []

        def flush() -> None:
            nonlocal n_new
            todo = [a for a in chunk if not skip_reason(a)]
            texts = [clf.article_text(a.title, a.text) for a in todo]
            results = clf.classify(texts, cfg.mode, cfg.batch_size, cfg.max_new_tokens, windows=cfg.windows,
                                   pool=cfg.pool) if todo else []
            fh.write(_records(chunk, results, cfg, name, adapter))
            fh.flush()
            os.fsync(fh.fileno())
            n_new += len(todo)
            bar.update(len(chunk) * world)
            bar.set_postfix(articles_per_s=f"{n_new / max(time.perf_counter() - t0, 1e-9):.2f}")
            chunk.clear()

        for i, a in enumerate(input_articles(input_path, clf.settings.labels, cfg.text_field, cfg.on_bad_gold)):
            if cfg.limit and i >= cfg.limit:
                break
            seen += 1
            if i % world != rank:
                continue
            mine += 1
            if mine <= done:
                bar.update(world)
                continue
            chunk.append(a)
            if len(chunk) >= cfg.chunk_size:
                flush()
        if chunk:
            flush()
    return seen, done, n_new


def _predict_to_stdout(cfg: PredictConfig, progress: bool) -> dict[str, Any]:
    """``out: -``: the records go to stdout once all are scored (nothing is kept, so nothing resumes)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="newsbias-predict-") as tmp:
        out = Path(tmp) / "preds.jsonl"
        manifest = run_predict(cfg.model_copy(update={"out": str(out)}), progress)
        with out.open("r", encoding="utf-8") as fh:
            shutil.copyfileobj(fh, sys.stdout)
        sys.stdout.flush()
    return manifest


@keeps_threads
def run_predict(cfg: PredictConfig, progress: bool = True) -> dict[str, Any]:
    """Predict every article of ``cfg.input`` into ``cfg.out`` (resumable; ``-`` writes the records to
    stdout instead); returns the manifest.

    A killed run resumes from its part files; a run that stops on bad input removes them, so the
    corrected input starts clean (a changed input never reuses rows: its sha256 is checked).
    """
    if not cfg.out:
        raise NewsbiasError("no output given: pass --out FILE (predict.out), or --out - for stdout")
    if cfg.out == "-":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise NewsbiasError("predict.out=- (stdout) cannot be split between torchrun processes; give a file")
        return _predict_to_stdout(cfg, progress)
    started = time.time()
    if cfg.input is None:
        raise NewsbiasError("predict.input is not set; pass --input (a JSONL/CSV file, a prep output directory, "
                            "or - for stdin)")
    input_path = resolve_input(cfg.input, cfg.split)
    out = Path(cfg.out)
    _check_out(out, input_path)
    parts = _parts_dir(out)
    try:
        device_type = resolve_device_dtype(cfg.device, cfg.dtype)[0].type
    except SettingError as exc:
        raise exc.named(f"predict.{exc.key}") from None
    d = init_distributed(device_type)
    cfg = cfg.model_copy(update={"device": rank_device(cfg.device, device_type, d)})  # each GPU process its own
    # the model loads (and fails) before anything is written, so a bad adapter leaves no trace
    clf = load_classifier(cfg, first_instruction(input_path))
    name = cfg.run_name()
    if d.main:
        _open_parts(cfg, out, parts, _signature(cfg, input_path, d.world, clf))
    d.barrier()
    total = _count_lines(input_path)
    total = min(total, cfg.limit) if cfg.limit and total else total
    bar = tqdm(total=total, desc=f"predict {name}", unit="article", disable=not progress or not d.main,
               dynamic_ncols=True, smoothing=0.1)
    t0 = time.perf_counter()
    try:
        seen, resumed, n_new = _predict_part(cfg, clf, input_path, parts / f"rank{d.rank}.jsonl", d.rank, d.world,
                                             name, bar)
        if seen == 0:
            raise NewsbiasError(f"{input_path}: no articles to predict (empty input)")
    except NewsbiasError:
        shutil.rmtree(parts, ignore_errors=True)  # bad input: nothing here is worth resuming
        raise
    finally:
        bar.close()
    scoring = time.perf_counter() - t0
    resumed, n_new = _summed(d, resumed, n_new)  # every process's rows, not rank 0's
    manifest: dict[str, Any] = {}
    if d.main:
        rate = round(n_new / scoring, 3) if scoring else None
        manifest = _finish(cfg, clf, parts, out, input_path, name, d, resumed, started, rate)
    d.close()
    return manifest


def _summed(d: Dist, *counts: int) -> tuple[int, ...]:
    """``counts`` summed over the processes of a group (a barrier too: every process has finished its part)."""
    if d.world == 1:
        return counts
    import torch.distributed as dist

    t = torch.tensor(counts, dtype=torch.long)  # predict's group may be gloo or nccl: gloo reduces CPU tensors
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return tuple(int(x) for x in t.tolist())


def _finish(cfg: PredictConfig, clf: Classifier, parts: Path, out: Path, input_path: str, name: str, d: Dist,
            resumed: int, started: float, rate: Optional[float]) -> dict[str, Any]:
    """Merge the part files into ``out`` and write its manifest; rank 0."""
    settings = clf.settings
    counts = _merge(parts, out, d.world, resumed)
    manifest = stage_manifest(
        "predict", cfg, started, model=name, base_model=settings.base_model or cfg.model, adapter=clf.adapter,
        weights_sha256=clf.identity()["weights_sha256"], head=settings.head, mode=cfg.mode,
        input={"path": input_path, "sha256": sha256_file(input_path) if input_path != "-" else None},
        prompt=settings.prompt.model_dump(mode="json"), adapter_best_val=settings.best_val,
        temperature=settings.temperature, calibration_data=(settings.calibration or {}).get("data"),
        articles_per_s_this_run=rate, threads=torch.get_num_threads(),
        allocator="tuned" if tune_cpu_allocator() else "as found", world_size=d.world, device=str(clf.device),
        dtype=clf.precision, counts=counts,
        outputs={out.name: {"sha256": sha256_file(out), "rows": counts["predicted"]}})
    write_json(manifest_path(out), manifest)
    shutil.rmtree(parts)
    log.debug("predict: %d articles -> %s (%d skipped, %d invalid)", counts["predicted"], out, counts["skipped"],
             counts["invalid"])
    return manifest


def _merge(parts: Path, out: Path, world: int, resumed: int) -> dict[str, Any]:
    """Interleave the ranks' part files back into input order; returns the counts (skip records become counts)."""
    files = [open(parts / f"rank{r}.jsonl", encoding="utf-8") for r in range(world)]
    skipped: dict[str, int] = {}
    listed: list[dict[str, Any]] = []
    seen: set[str] = set()
    repeated: list[str] = []
    n = invalid = 0
    try:
        with atomic_file(out) as tmp, open(tmp, "w", encoding="utf-8") as fo:
            k = 0
            while True:
                src = files[k % world]
                line = src.readline()
                if not line:
                    break
                rec = parse_line(line, src.name, k // world + 1)
                k += 1
                if "skipped" in rec:
                    skipped[rec["kind"]] = skipped.get(rec["kind"], 0) + 1
                    if len(listed) < MAX_LISTED_SKIPS:
                        listed.append({k: rec[k] for k in ("id", "line", "skipped")})
                    continue
                n += 1
                invalid += 0 if rec["valid"] else 1
                if rec["id"] in seen:
                    repeated.append(rec["id"])
                seen.add(rec["id"])
                fo.write(line)
    finally:
        for f in files:
            f.close()
    if repeated:  # evaluate and compare join runs by id, and refuse a file where one id means two articles
        log.warning("predict: %s repeated in %s (first %r): evaluate and compare will refuse it; give every article "
                    "an id of its own (an article without one is named by its line number)",
                    counted(len(repeated), "id"), out, repeated[0])
    return {"rows": n + sum(skipped.values()), "repeated_ids": len(repeated), "predicted": n, "skipped": sum(skipped.values()),
            "skipped_by_reason": skipped, "skipped_first": listed, "invalid": invalid, "resumed_rows": resumed}
