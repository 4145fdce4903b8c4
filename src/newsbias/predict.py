"""The predict stage: run a base model (zero-shot) or base + adapter over articles.

Two modes:

* ``score`` (default): one forward pass per article; probabilities over the label set from the
  label tokens' logits at the answer position (``head: lm``) or from the classifier (``head:
  cls``). Always a valid label. Batched, length-sorted, dynamically padded
  (:func:`newsbias.modeling.score_batch`, the same code training's validation and the server use).
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
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import DEFAULT_INSTRUCTION, PredictConfig, dump_config
from .errors import NewsbiasError
from .io import dumps_line, git_commit, package_versions, sha256_file, write_json
from .labels import LABELS, LabelNormalizer
from .modeling import (ModelSettings, load_adapter, load_model_and_tokenizer, load_tokenizer, model_device,
                       prompt_builder, score_batch)
from .prompt import PromptSettings

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ parsing

_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>|\[/?[A-Z]+\]")
# Compounds first: "center-left" is a lean, and a lean maps to its side (as the 5->3 label mapping does).
_LABEL_WORD = re.compile(r"\b(?:(?:center|centre)[\s-]+(left|right)|(left|right)[\s-]+(?:of[\s-]+)?(?:center|centre)"
                         r"|(left|right|center|centre|centrist)(?:[\s-]*leaning)?)\b", re.I)


def parse_generation(raw: str, labels: Sequence[str] = LABELS) -> Optional[str]:
    """The first label word in a generated answer, or None when there is none.

    Strips Qwen3 ``<think>…</think>`` blocks (and an unclosed one) and special tokens first.
    "Center-left" / "left of center" count as left, "centre"/"centrist" as center.
    """
    text = _SPECIAL.sub(" ", _THINK.sub(" ", raw or ""))
    m = _LABEL_WORD.search(text)
    if not m:
        return None
    word = (m.group(1) or m.group(2) or m.group(3)).lower()
    word = {"centre": "center", "centrist": "center"}.get(word, word)
    return word if word in labels else None


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


def base_settings(cfg: PredictConfig, instruction: Optional[str]) -> ModelSettings:
    """Settings for zero-shot scoring of a base model (lm head): the training defaults."""
    p = cfg.prompt
    prompt = PromptSettings(instruction=p.instruction or instruction or DEFAULT_INSTRUCTION, max_length=p.max_length,
                            truncation=p.truncation, chat_template=p.chat_template)
    return ModelSettings(head=cfg.head, base_model=cfg.model or "", prompt=prompt)


def load_predictor(cfg: PredictConfig, instruction: Optional[str] = None) -> tuple[Any, Any, ModelSettings]:
    """(model, tokenizer, settings): base + adapter scored as trained, or a base model zero-shot."""
    if cfg.adapter:
        adir = Path(cfg.adapter)
        if not adir.is_dir():
            raise NewsbiasError(f"adapter not found: {adir} (predict.adapter); pass a `newsbias train` output dir")
        settings = ModelSettings.load(adir)
        if tuple(settings.labels) != tuple(LABELS):
            raise NewsbiasError(f"the adapter was trained for labels {list(settings.labels)}, this newsbias scores "
                                f"{list(LABELS)}")
        base = cfg.model or settings.base_model
        if cfg.model and settings.base_model and Path(cfg.model).name != Path(settings.base_model).name:
            raise NewsbiasError(f"the adapter was trained on {settings.base_model!r}, not {cfg.model!r}; "
                                f"drop predict.model to use the adapter's base")
        model, _ = load_model_and_tokenizer(base, head=settings.head, device=cfg.device, dtype=cfg.dtype)
        tok = load_tokenizer(str(adir))
        if settings.head == "cls":
            model.config.pad_token_id = tok.pad_token_id
        model = load_adapter(model, adir)
    elif cfg.model and (Path(cfg.model) / "newsbias.json").is_file():
        # a merged export (`newsbias export --merge`) brings its own settings: score it as trained
        settings = ModelSettings.load(cfg.model)
        model, tok = load_model_and_tokenizer(cfg.model, head=settings.head, device=cfg.device, dtype=cfg.dtype)
    else:
        if not cfg.model:
            raise NewsbiasError("nothing to predict with: set predict.model (a base model) and/or predict.adapter")
        settings = base_settings(cfg, instruction)
        # an encoder has no zero-shot answer: its untrained head is seeded so the reference is reproducible
        torch.manual_seed(0)
        model, tok = load_model_and_tokenizer(cfg.model, head=cfg.head, device=cfg.device, dtype=cfg.dtype)
    model.eval()
    if cfg.mode == "generate" and settings.head != "lm":
        raise NewsbiasError("predict.mode=generate needs a causal LM (head: lm); this adapter has a cls head — use mode=score")
    prompt_builder(tok, settings)  # fails early on bad verbalizers / max_length
    return model, tok, settings


@torch.no_grad()
def generate_batch(model: Any, tokenizer: Any, settings: ModelSettings, texts: Sequence[str],
                   max_new_tokens: int = 6, batch_size: int = 8) -> list[str]:
    """Greedy continuations of each prompt (the new tokens only, decoded with special tokens kept)."""
    builder = prompt_builder(tokenizer, settings)
    encs = [builder.encode(t) for t in texts]
    dev = model_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    order = sorted(range(len(encs)), key=lambda i: -len(encs[i].input_ids))
    out = [""] * len(texts)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        # left padding: every prompt must end at the last position for generation to continue it
        prompts = [encs[i].input_ids[: encs[i].answer_pos + 1] for i in idx]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p):] = torch.tensor(p)
            mask[r, width - len(p):] = 1
        gen = model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad_id)
        for r, i in enumerate(idx):
            out[i] = tokenizer.decode(gen[r, width:].tolist(), skip_special_tokens=False)
    return out


def predict_texts(model: Any, tokenizer: Any, settings: ModelSettings, texts: Sequence[str], mode: str = "score",
                  batch_size: int = 8, max_new_tokens: int = 6) -> list[dict[str, Any]]:
    """``{"pred", "probs", "valid", "raw"?}`` for each text — the core that CLI and API share."""
    labels = list(settings.labels)
    if mode == "score":
        probs = score_batch(model, tokenizer, settings, texts, batch_size=batch_size)
        return [{"pred": labels[int(np.argmax(p))], "probs": {l: round(float(v), 6) for l, v in zip(labels, p)},
                 "valid": True} for p in probs]
    raws = generate_batch(model, tokenizer, settings, texts, max_new_tokens, batch_size)
    out = []
    for raw in raws:
        pred = parse_generation(raw, labels)
        out.append({"pred": pred, "probs": None, "valid": pred is not None, "raw": raw})
    return out


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
    model, tok, settings = load_predictor(cfg, first_instruction)
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
        results = predict_texts(model, tok, settings, [a.text for a in todo], cfg.mode, cfg.batch_size,
                                cfg.max_new_tokens) if todo else []
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
            "world_size": world, "device": str(model_device(model)), "config": dump_config(cfg),
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
