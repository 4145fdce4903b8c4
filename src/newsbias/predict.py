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

import csv
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch
from tqdm.auto import tqdm

from .config import DEFAULT_INSTRUCTION, PredictConfig, dump_config
from .errors import NewsbiasError
from .io import dumps_line, git_commit, package_versions, sha256_file, write_json
from .classifier import Classifier
from .labels import LabelNormalizer, parse_generation  # noqa: F401  (parse_generation: re-exported for users)
from .prompt import PromptSettings

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ input


@dataclass
class Article:
    id: str
    text: str
    gold: Optional[str]
    outlet: Optional[str]
    line: int
    skip: Optional[str] = None  # why it is not predicted (empty text, bad gold label)


def resolve_input(inp: str, split: str) -> str:
    """A prep output directory + split name -> the split file; a file or '-' as given."""
    if inp == "-":
        return inp
    p = Path(inp)
    if p.is_dir():
        f = p / f"{split}.jsonl"
        if not f.is_file():
            have = ", ".join(sorted(x.name for x in p.glob("*.jsonl"))) or "no .jsonl files"
            raise NewsbiasError(f"{p} has no {split}.jsonl ({have}); set predict.split")
        return str(f)
    if not p.is_file():
        raise NewsbiasError(f"input not found: {p} (predict.input)")
    return str(p)


def _raw_records(path: str, text_field: Optional[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    if path == "-":
        for lineno, line in enumerate(sys.stdin, start=1):
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                yield lineno, _json_line(line, "<stdin>", lineno)
            else:  # plain text: one article per line
                yield lineno, {"text": line.rstrip("\n")}
        return
    if path.lower().endswith((".csv", ".tsv")):
        csv.field_size_limit(sys.maxsize)
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if path.lower().endswith(".tsv") else ",")
            for row in reader:
                yield reader.line_num, row
        return
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, _json_line(line, path, lineno)


def _json_line(line: str, path: str, lineno: int) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise NewsbiasError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise NewsbiasError(f"{path}:{lineno}: expected a JSON object, found {type(obj).__name__}")
    return obj


def iter_articles(path: str, labels: Sequence[str], text_field: Optional[str] = None,
                  on_bad_gold: str = "error") -> Iterator[Article]:
    """Stream articles from prep JSONL (``input``/``output``), ``text``/``label`` JSONL or CSV, or stdin."""
    norm = LabelNormalizer(labels=tuple(labels))
    for lineno, obj in _raw_records(path, text_field):
        field = text_field or ("input" if "input" in obj else "text")
        if field not in obj:
            raise NewsbiasError(f"{path}:{lineno}: no article field {field!r}; found {', '.join(obj) or 'nothing'} — "
                                f"set predict.text_field")
        text = obj.get(field)
        text = text if isinstance(text, str) else ("" if text is None else str(text))
        raw_gold = next((obj[k] for k in ("output", "label", "gold") if obj.get(k) not in (None, "")), None)
        gold, skip = None, None
        if raw_gold is not None:
            gold = norm(raw_gold)
            if gold is None:
                if on_bad_gold == "error":
                    raise NewsbiasError(f"{path}:{lineno}: gold label {raw_gold!r} is not in the label set "
                                        f"{list(labels)}; fix the data or set predict.on_bad_gold=skip")
                skip = f"gold label {raw_gold!r} not in the label set"
        if not text.strip():
            skip = "empty text"
        # ids default to the 1-based line number, as train, baseline and compare number them
        yield Article(id=str(obj.get("id") or lineno), text=text, gold=gold,
                      outlet=obj.get("outlet"), line=lineno, skip=skip)


# ------------------------------------------------------------------------------ model


def load_classifier(cfg: PredictConfig, instruction: Optional[str] = None) -> Classifier:
    """The model ``cfg`` names: base + adapter, a trained model directory, or a base model zero-shot."""
    if not cfg.model and not cfg.adapter:
        raise NewsbiasError("nothing to predict with: set predict.model (a base model) and/or predict.adapter")
    p = cfg.prompt
    prompt = PromptSettings(instruction=p.instruction or instruction or DEFAULT_INSTRUCTION, max_length=p.max_length,
                            truncation=p.truncation, chat_template=p.chat_template)
    try:
        clf = Classifier.from_options(cfg.model, cfg.adapter, cfg.gguf_file, head=cfg.head, pooling=cfg.pooling,
                                      prompt=prompt, device=cfg.device, dtype=cfg.dtype)
    except NewsbiasError as exc:
        raise NewsbiasError(f"{exc} (predict.model / predict.adapter)") from None
    if cfg.mode == "generate" and clf.settings.head != "lm":
        raise NewsbiasError("predict.mode=generate needs a causal LM (head: lm); this adapter has a cls head — use mode=score")
    return clf


# ------------------------------------------------------------------------------ output + resume


def _parts_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.parts"


def _signature(cfg: PredictConfig, input_path: str, world: int) -> dict[str, Any]:
    """What must match for a run to resume another's part files."""
    keep = ("model", "adapter", "mode", "max_new_tokens", "prompt", "include_text", "limit", "text_field", "name")
    d = dump_config(cfg)
    return {"input": os.path.abspath(input_path) if input_path != "-" else "-", "world_size": world,
            **{k: d[k] for k in keep}}


def _done_ids(path: Path) -> list[str]:
    """Ids already written to a part file; a torn last line (killed mid-write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    return [json.loads(l)["id"] for l in data.decode("utf-8").splitlines() if l.strip()]


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend=backend)
    if world > 1:
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _count_lines(path: str) -> Optional[int]:
    if path == "-":
        return None
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip()) - (1 if path.lower().endswith((".csv", ".tsv")) else 0)


def run_predict(cfg: PredictConfig, progress: bool = True) -> dict[str, Any]:
    """Predict every article of ``cfg.input`` into ``cfg.out`` (resumable); returns the manifest."""
    input_path = resolve_input(cfg.input, cfg.split)
    out = Path(cfg.out)
    parts = _parts_dir(out)
    rank, world = _dist()
    first_instruction = None
    if input_path != "-":
        for _, obj in _raw_records(input_path, cfg.text_field):
            first_instruction = obj.get("instruction") if isinstance(obj.get("instruction"), str) else None
            break
    # the model loads (and fails) before anything is written, so a bad adapter leaves no trace
    clf = load_classifier(cfg, first_instruction)
    settings = clf.settings
    name = cfg.name or (Path(cfg.adapter).name if cfg.adapter else "base")
    adapter = str(cfg.adapter) if cfg.adapter else None
    if rank == 0:
        if out.exists() and not parts.exists():
            if not cfg.overwrite:
                raise NewsbiasError(f"{out} already exists; pass --overwrite (predict.overwrite=true) to replace it")
        sig = _signature(cfg, input_path, world)
        if parts.exists():
            old = json.loads((parts / "run.json").read_text()) if (parts / "run.json").exists() else None
            if old != sig:
                if not cfg.overwrite:
                    raise NewsbiasError(f"{parts} holds an unfinished run with other settings; pass --overwrite to "
                                        f"start over")
                shutil.rmtree(parts)
        parts.mkdir(parents=True, exist_ok=True)
        write_json(parts / "run.json", sig)
    if world > 1:
        torch.distributed.barrier()

    part = parts / f"rank{rank}.jsonl"
    done = set(_done_ids(part))
    total = _count_lines(input_path)
    if cfg.limit and total:
        total = min(total, cfg.limit)
    bar = tqdm(total=total, desc=f"predict {name}", unit="article", disable=not progress or rank != 0,
               dynamic_ncols=True, smoothing=0.1)
    counts = {"rows": 0, "predicted": 0, "skipped": 0, "resumed": len(done), "invalid": 0}
    t0 = time.perf_counter()
    n_new = 0

    def flush(chunk: list[Article], fh) -> None:
        nonlocal n_new
        todo = [a for a in chunk if not a.skip]
        results = clf.classify([a.text for a in todo], cfg.mode, cfg.batch_size, cfg.max_new_tokens) if todo else []
        it = iter(results)
        lines = []
        for a in chunk:
            if a.skip:
                lines.append(dumps_line({"id": a.id, "skipped": a.skip, "line": a.line}))
                continue
            r = next(it)
            rec = {"id": a.id, "pred": r["pred"], "probs": r["probs"], "gold": a.gold, "valid": r["valid"]}
            if "raw" in r:
                rec["raw"] = r["raw"]
            rec.update({"outlet": a.outlet, "model": name, "adapter": adapter})
            if cfg.include_text:
                rec["input"] = a.text
            lines.append(dumps_line(rec))
        fh.write("".join(lines))
        fh.flush()
        os.fsync(fh.fileno())
        n_new += len(todo)
        bar.update(len(chunk) * world)
        bar.set_postfix(articles_per_s=f"{n_new / max(time.perf_counter() - t0, 1e-9):.2f}")

    with open(part, "a", encoding="utf-8") as fh:
        chunk: list[Article] = []
        seen = 0
        for i, a in enumerate(iter_articles(input_path, settings.labels, cfg.text_field, cfg.on_bad_gold)):
            if cfg.limit and i >= cfg.limit:
                break
            seen += 1
            if i % world != rank:
                continue
            if a.id in done:
                bar.update(world)
                continue
            chunk.append(a)
            if len(chunk) >= cfg.chunk_size:
                flush(chunk, fh)
                chunk = []
        if chunk:
            flush(chunk, fh)
    bar.close()
    if seen == 0:
        raise NewsbiasError(f"{input_path}: no articles to predict (empty input)")
    elapsed = time.perf_counter() - t0
    if world > 1:
        torch.distributed.barrier()
    manifest: dict[str, Any] = {}
    if rank == 0:
        manifest = _merge(parts, out, world, counts)
        manifest.update({
            "stage": "predict", "model": name, "base_model": settings.base_model or cfg.model, "adapter": adapter,
            "head": settings.head, "mode": cfg.mode, "input": {"path": input_path,
                                                              "sha256": sha256_file(input_path) if input_path != "-" else None},
            "prompt": settings.prompt.to_dict(), "adapter_best_val": settings.best_val,
            "elapsed_s": round(elapsed, 3), "articles_per_s_this_run": round(n_new * world / elapsed, 3) if elapsed else None,
            "world_size": world, "device": str(clf.device), "config": dump_config(cfg),
            "versions": package_versions(), "git_commit": git_commit(),
            "outputs": {out.name: {"sha256": sha256_file(out), "rows": manifest["counts"]["predicted"]}},
        })
        write_json(out.parent / f"{out.stem}.manifest.json", manifest)
        shutil.rmtree(parts)
        log.info("predict: %d articles -> %s (%d skipped, %d invalid)", manifest["counts"]["predicted"], out,
                 manifest["counts"]["skipped"], manifest["counts"]["invalid"])
    if world > 1:
        torch.distributed.barrier()
    return manifest


def _merge(parts: Path, out: Path, world: int, counts: dict[str, int]) -> dict[str, Any]:
    """Interleave the ranks' part files back into input order; skip records become counts."""
    files = [open(parts / f"rank{r}.jsonl", encoding="utf-8") for r in range(world)]
    skipped: dict[str, int] = {}
    tmp = out.parent / f".{out.name}.tmp"
    n = invalid = 0
    try:
        with open(tmp, "w", encoding="utf-8") as fo:
            k = 0
            while True:
                line = files[k % world].readline()
                if not line:
                    break
                k += 1
                rec = json.loads(line)
                if "skipped" in rec:
                    reason = rec["skipped"].split(" '")[0]
                    skipped[reason] = skipped.get(reason, 0) + 1
                    continue
                n += 1
                invalid += 0 if rec["valid"] else 1
                fo.write(line)
    finally:
        for f in files:
            f.close()
    os.replace(tmp, out)
    counts = {"rows": n + sum(skipped.values()), "predicted": n, "skipped": sum(skipped.values()),
              "skipped_by_reason": skipped, "invalid": invalid, "resumed_rows": counts["resumed"]}
    return {"counts": counts}
