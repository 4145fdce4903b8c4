"""``newsbias train``: LoRA fine-tuning with a loss on the label tokens only.

A hand-written loop (plain ``torch.distributed`` when launched by ``torchrun`` / ``accelerate
launch``; gloo on CPU) so that resuming is exact: the data order of every epoch is a pure function
of (seed, epoch), and a checkpoint holds the trainable weights, optimizer, scheduler, RNG states,
the position in the epoch and the best weights so far.

Pipeline: :func:`load_training_data` (validated JSONL) -> :class:`PromptBuilder` ->
:func:`encode_examples` -> :func:`epoch_batches` (length-grouped) -> :class:`LabelOnlyCollator`
(dynamic padding, labels -100 everywhere but the label token) -> :class:`LabelLossModule`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from .config import DEFAULT_INSTRUCTION, TrainConfig, dump_config
from .errors import NewsbiasError
from .io import git_commit, package_versions, sha256_file, write_json
from .labels import LABELS
from .modeling import (LabelLossModule, ModelSettings, _check_model_path, add_lora, count_parameters, join_gguf,
                       lm_logits_at, load_model_and_tokenizer, pad_batch)
from .prompt import PromptBuilder, PromptSettings

log = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
MANIFEST_FILE = "manifest.json"
CHECKPOINT_DIR = "checkpoints"


# --------------------------------------------------------------------------------------- data


@dataclass
class Example:
    id: str
    text: str
    label: str
    instruction: Optional[str] = None


def read_jsonl_examples(path: str | Path, labels: Sequence[str] = LABELS, need_label: bool = True,
                        limit: Optional[int] = None) -> list[Example]:
    """Read a prep-format JSONL (``input``, ``output``; ``id`` optional = line number), validating every line."""
    p = Path(path)
    if not p.is_file():
        raise NewsbiasError(f"data file not found: {p}; run `newsbias prep` first or set train.data.path")
    out: list[Example] = []
    unknown: Counter[str] = Counter()
    with p.open("r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise NewsbiasError(f"{p}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object") from None
            if not isinstance(obj, dict):
                raise NewsbiasError(f"{p}:{lineno}: expected a JSON object, found {type(obj).__name__}")
            text = obj.get("input")
            if not isinstance(text, str):
                raise NewsbiasError(f"{p}:{lineno}: missing or non-string 'input' (the article text)")
            lab = obj.get("output")
            if need_label:
                if not isinstance(lab, str):
                    raise NewsbiasError(f"{p}:{lineno}: missing or non-string 'output' (the label)")
                lab = lab.strip().lower()
                if lab not in labels:
                    unknown[lab] += 1
            out.append(Example(id=str(obj.get("id", lineno)), text=text, label=lab or "",
                               instruction=obj.get("instruction")))
            if limit and len(out) >= limit:
                break
    if unknown:
        shown = ", ".join(f"{k!r} ({v}x)" for k, v in unknown.most_common(5))
        raise NewsbiasError(f"{p}: labels {shown} are not in the label set {list(labels)}; fix the data "
                            f"(newsbias prep normalises labels) or drop those rows")
    return out


def resolve_data_paths(path: str | Path, val_path: Optional[str | Path] = None) -> tuple[Path, Path, Optional[Path]]:
    """(train file, val file, prep directory or None) from a directory or a train-file path."""
    p = Path(path)
    if p.is_dir():
        train, val, d = p / "train.jsonl", p / "val.jsonl", p
    elif p.is_file():
        train, d = p, p.parent
        val = p.parent / "val.jsonl"
    else:
        raise NewsbiasError(f"train.data.path {p} does not exist; point it at the prep output directory "
                            f"(train.jsonl, val.jsonl) or run `newsbias prep`")
    if val_path:
        val = Path(val_path)
    if not train.is_file():
        raise NewsbiasError(f"no train.jsonl in {p}; run `newsbias prep` or set train.data.path to a JSONL file")
    if not val.is_file():
        raise NewsbiasError(f"validation file {val} not found; set train.data.val_path")
    return train, val, d if d and (d / "prep_meta.json").is_file() else None


def data_hashes(train: Path, val: Path, prep_dir: Optional[Path]) -> dict[str, Any]:
    """sha256 of the files used, plus prep_meta.json's record of its outputs when present."""
    out: dict[str, Any] = {"train": {"path": str(train), "sha256": sha256_file(train)},
                           "val": {"path": str(val), "sha256": sha256_file(val)}}
    if prep_dir is not None:
        try:
            meta = json.loads((prep_dir / "prep_meta.json").read_text(encoding="utf-8"))
            out["prep_meta"] = {"path": str(prep_dir / "prep_meta.json"), "outputs": meta.get("outputs", {})}
        except (OSError, json.JSONDecodeError) as exc:
            out["prep_meta"] = {"error": str(exc)}
    return out


def load_training_data(cfg: TrainConfig) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Validated (train, val, data hashes); every data problem is a NewsbiasError before training."""
    if not cfg.data.path:
        raise NewsbiasError("train.data.path is not set; point it at the prep output directory")
    train_p, val_p, prep_dir = resolve_data_paths(cfg.data.path, cfg.data.val_path)
    train = read_jsonl_examples(train_p, LABELS, limit=cfg.data.train_limit)
    val = read_jsonl_examples(val_p, LABELS, limit=cfg.data.val_limit)
    if not train:
        raise NewsbiasError(f"the training set {train_p} is empty; check the prep output or train.data.train_limit")
    if not val:
        raise NewsbiasError(f"the validation set {val_p} is empty; evaluation and early stopping need val rows")
    return train, val, data_hashes(train_p, val_p, prep_dir)


def pick_instruction(cfg: TrainConfig, train: Sequence[Example]) -> str:
    """The configured instruction, else the data's most common one, else the default."""
    if cfg.prompt.instruction:
        return cfg.prompt.instruction
    seen = Counter(e.instruction for e in train if e.instruction)
    return seen.most_common(1)[0][0] if seen else DEFAULT_INSTRUCTION


def prompt_settings(cfg: TrainConfig, instruction: str) -> PromptSettings:
    p = cfg.prompt
    return PromptSettings(instruction=instruction, max_length=p.max_length, truncation=p.truncation,
                          head_fraction=p.head_fraction, chat_template=p.chat_template, answer_cue=p.answer_cue,
                          verbalizers=dict(p.verbalizers), labels=LABELS)


# -------------------------------------------------------------------------- encoding / batches


def encode_examples(builder: PromptBuilder, examples: Sequence[Example], head: str) -> list[dict[str, Any]]:
    """Token ids per example. lm: prompt + label token, labels -100 except that token; cls: prompt only."""
    feats = []
    for e in examples:
        cid = builder.settings.labels.index(e.label)
        if head == "lm":
            ids, labels, pos = builder.encode_for_training(e.text, e.label)
        else:
            enc = builder.encode(e.text)
            ids, labels, pos = enc.input_ids, [-100] * len(enc.input_ids), enc.answer_pos
        feats.append({"input_ids": ids, "labels": labels, "answer_pos": pos, "class_id": cid})
    return feats


class LabelOnlyCollator:
    """Dynamic right padding; ``labels`` are passed through untouched (-100 on padding).

    Unlike ``DataCollatorForLanguageModeling`` it never rebuilds labels from ``input_ids``, so
    only the label token carries loss.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad_batch([f["input_ids"] for f in features], self.pad_token_id, [f["labels"] for f in features])
        batch["answer_pos"] = torch.tensor([f["answer_pos"] for f in features], dtype=torch.long)
        batch["class_ids"] = torch.tensor([f["class_id"] for f in features], dtype=torch.long)
        return batch


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True,
                  world_size: int = 1) -> list[list[int]]:
    """All micro-batches of one epoch (indices), a pure function of (seed, epoch).

    Length grouping: shuffle, cut into mega-batches of 50 batches, sort each by length, split
    into batches, shuffle the batch order. The count is trimmed to a multiple of ``world_size``;
    rank r takes batches r, r + world, ...
    """
    g = np.random.default_rng([seed, epoch])
    perm = g.permutation(len(lengths)).tolist()
    if group_by_length:
        mega = batch_size * 50
        perm = [i for s in range(0, len(perm), mega)
                for i in sorted(perm[s:s + mega], key=lambda j: -lengths[j])]
    batches = [perm[s:s + batch_size] for s in range(0, len(perm), batch_size)]
    if group_by_length:
        order = g.permutation(len(batches)).tolist()
        batches = [batches[i] for i in order]
    if world_size > 1:
        if len(batches) < world_size:
            raise NewsbiasError(f"only {len(batches)} batches for {world_size} processes; use fewer processes "
                                f"or a smaller optim.batch_size")
        batches = batches[:len(batches) - len(batches) % world_size]
    return batches


def balanced_class_weights(class_ids: Sequence[int], n_classes: int) -> torch.Tensor:
    """n / (k * count_c) per class (sklearn's 'balanced'); absent classes get weight 1."""
    counts = np.bincount(np.asarray(class_ids), minlength=n_classes)
    w = np.where(counts > 0, len(class_ids) / (n_classes * np.maximum(counts, 1)), 1.0)
    return torch.tensor(w, dtype=torch.float32)


# ----------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def init_distributed(device_type: str) -> Dist:
    """Join the process group when launched by torchrun / accelerate launch (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


# ------------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: torch.nn.Module, head: str, feats: Sequence[dict[str, Any]], pad_id: int,
             label_token_ids: Sequence[int], batch_size: int = 8, d: Dist = Dist()) -> dict[str, float]:
    """val loss (the training loss, unweighted), macro-F1 and accuracy from label scoring.

    Each rank scores a shard; results are gathered so every rank takes the same decisions.
    """
    from sklearn.metrics import accuracy_score, f1_score

    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    mine = list(range(d.rank, len(feats), d.world))
    mine.sort(key=lambda i: -len(feats[i]["input_ids"]))
    coll = LabelOnlyCollator(pad_id)
    results: list[tuple[int, int, float]] = []
    lt = torch.tensor(list(label_token_ids), dtype=torch.long, device=dev)
    for s in range(0, len(mine), batch_size):
        idx = mine[s:s + batch_size]
        b = coll([feats[i] for i in idx])
        ids, mask = b["input_ids"].to(dev), b["attention_mask"].to(dev)
        if head == "lm":
            rows = torch.arange(len(idx), device=dev)
            full = lm_logits_at(model, ids, mask, rows, b["answer_pos"].to(dev)).float()
            losses = torch.nn.functional.cross_entropy(full, lt[b["class_ids"].to(dev)], reduction="none")
            cls_logits = full[:, lt]
        else:
            cls_logits = model(input_ids=ids, attention_mask=mask).logits.float()
            losses = torch.nn.functional.cross_entropy(cls_logits, b["class_ids"].to(dev), reduction="none")
        preds = cls_logits.argmax(-1).cpu().tolist()
        results.extend(zip(idx, preds, losses.cpu().tolist()))
    if d.world > 1:
        gathered: list[Any] = [None] * d.world
        dist.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    results.sort()
    gold = [feats[i]["class_id"] for i, _, _ in results]
    pred = [p for _, p, _ in results]
    if was_training:
        model.train()
    return {"val_loss": float(np.mean([l for _, _, l in results])),
            "val_macro_f1": float(f1_score(gold, pred, average="macro", labels=list(range(len(LABELS))),
                                           zero_division=0)),
            "val_accuracy": float(accuracy_score(gold, pred)), "val_n": len(results)}


def _better(metric: str, new: float, best: Optional[float]) -> bool:
    if best is None:
        return True
    return new < best if metric == "val_loss" else new > best


# ------------------------------------------------------------------------------ checkpoints


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise NewsbiasError(f"checkpoint does not match the model (e.g. {missing[0]}); was the config changed?")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device))


def _rng_state() -> dict[str, Any]:
    st = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def latest_checkpoint(out_dir: str | Path) -> Optional[Path]:
    d = Path(out_dir) / CHECKPOINT_DIR
    cands = sorted(d.glob("step-*/state.pt"), key=lambda p: int(p.parent.name.split("-")[1])) if d.is_dir() else []
    return cands[-1].parent if cands else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# -------------------------------------------------------------------------------- manifest


# ------------------------------------------------------------------------------------ train


def _lr_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int):
    from transformers import get_scheduler

    sched = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[name]
    return get_scheduler(sched, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def run_fingerprint(cfg: TrainConfig, hashes: dict[str, Any]) -> str:
    """A digest of everything that decides the trained weights: the config and the data's sha256."""
    conf = {k: v for k, v in dump_config(cfg).items() if k not in ("progress", "out_dir", "checkpoint", "overwrite")}
    data = {k: v.get("sha256") for k, v in hashes.items() if isinstance(v, dict) and "sha256" in v}
    blob = json.dumps({"config": conf, "data": data}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_checkpoints(out_dir: Path, fingerprint: str, resume: bool, overwrite: bool) -> Optional[Path]:
    """The checkpoint to resume from (or None), refusing to mix runs.

    ``resume`` needs the latest checkpoint to carry this run's fingerprint; a new run into a
    directory holding another run's checkpoints is refused unless ``overwrite`` (which removes them).
    """
    ckpt_root = out_dir / CHECKPOINT_DIR
    latest = latest_checkpoint(out_dir)
    if resume:
        if latest is None:
            raise NewsbiasError(f"--resume: no checkpoint under {ckpt_root}; run without --resume")
        theirs = _read_fingerprint(latest)
        if theirs != fingerprint:
            raise NewsbiasError(f"--resume: the checkpoint {latest} belongs to another run (config or data differ: "
                                f"fingerprint {theirs} vs {fingerprint}); rerun with the same config and data, or "
                                f"start over with --overwrite")
        return latest
    if latest is not None:
        if not overwrite:
            raise NewsbiasError(f"{ckpt_root} holds checkpoints of an earlier run; pass --resume to continue it or "
                                f"--overwrite to start over (or choose another train.out_dir)")
        shutil.rmtree(ckpt_root)
    return None


def _read_fingerprint(ckpt: Path) -> Optional[str]:
    try:
        return json.loads((ckpt / "fingerprint.json").read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def train(cfg: TrainConfig, resume: bool = False, progress: Optional[bool] = None,
          _interrupt_after_step: Optional[int] = None) -> dict[str, Any]:
    """Run LoRA training as configured; returns a summary (out_dir, steps, best val metrics).

    ``resume``: continue from the latest checkpoint in ``cfg.out_dir/checkpoints``.
    ``_interrupt_after_step`` (tests): raise KeyboardInterrupt after that optimizer step, as a crash would.
    """
    t_start = time.time()
    head = cfg.model.head
    out_dir = Path(cfg.out_dir)
    # ---- everything that can be wrong with the input fails here, before any model is loaded
    train_ex, val_ex, hashes = load_training_data(cfg)
    source = join_gguf(cfg.model.name_or_path, cfg.model.gguf_file)
    _check_model_path(source)
    fingerprint = run_fingerprint(cfg, hashes)
    ckpt_dir = check_checkpoints(out_dir, fingerprint, resume, cfg.overwrite)

    from .modeling import resolve_device_dtype

    dev, _ = resolve_device_dtype(cfg.model.device, cfg.model.dtype)
    d = init_distributed(dev.type)
    device = cfg.model.device
    if d.world > 1 and dev.type == "cuda":
        device = f"cuda:{d.local_rank}"
        torch.cuda.set_device(d.local_rank)
    if not d.main:
        logging.getLogger("transformers").setLevel(logging.ERROR)
    show = (cfg.progress if progress is None else progress) and d.main

    seed_everything(cfg.seed)
    model, tok = load_model_and_tokenizer(
        source, head=head, device=device, dtype=cfg.model.dtype,
        attn_implementation=cfg.model.attn_implementation, gradient_checkpointing=cfg.model.gradient_checkpointing,
        trust_remote_code=cfg.model.trust_remote_code, pooling=cfg.model.pooling)
    builder = PromptBuilder(tok, prompt_settings(cfg, pick_instruction(cfg, train_ex)), head)
    seed_everything(cfg.seed)
    if cfg.finetune == "lora":
        model = add_lora(model, head, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                         target_modules=cfg.lora.target_modules, bias=cfg.lora.bias,
                         gradient_checkpointing=cfg.model.gradient_checkpointing)
    n_train, n_total = count_parameters(model)
    if d.main:
        log.info("trainable params: %s / %s (%.3f%%)", f"{n_train:,}", f"{n_total:,}", 100 * n_train / n_total)

    train_feats = encode_examples(builder, train_ex, head)
    val_feats = encode_examples(builder, val_ex, head)
    lengths = [len(f["input_ids"]) for f in train_feats]
    class_w = (balanced_class_weights([f["class_id"] for f in train_feats], len(LABELS))
               if cfg.optim.class_weights == "balanced" else None)
    mdev = next(model.parameters()).device
    loss_mod = LabelLossModule(model, head, builder.label_token_ids,
                               class_w.to(mdev) if class_w is not None else None).to(mdev)
    runner: torch.nn.Module = loss_mod
    if d.world > 1:
        runner = torch.nn.parallel.DistributedDataParallel(
            loss_mod, device_ids=[d.local_rank] if mdev.type == "cuda" else None)
    collate = LabelOnlyCollator(tok.pad_token_id)

    o = cfg.optim
    n_batches = len(epoch_batches(lengths, o.batch_size, cfg.seed, 0, o.group_by_length, d.world)) // d.world
    steps_per_epoch = max(1, math.ceil(n_batches / o.grad_accum))
    total_steps = o.max_steps or max(1, math.ceil(o.epochs * steps_per_epoch))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    scheduler = _lr_scheduler(o.scheduler, optimizer, int(round(o.warmup_ratio * total_steps)), total_steps)
    eval_every = cfg.eval.every_steps or steps_per_epoch
    ckpt_every = cfg.checkpoint.every_steps or eval_every

    st: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "best": None, "best_step": None,
                          "best_metrics": {}, "bad_evals": 0, "history": [], "stopped_early": False}
    best_state = _trainable_state(model)
    if ckpt_dir is not None:
        ck = torch.load(ckpt_dir / "state.pt", map_location="cpu", weights_only=False)
        _load_trainable_state(model, ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        st = ck["train_state"]
        best_state = ck["best_state"]
        _set_rng_state(ck["rng"][d.rank] if isinstance(ck["rng"], list) else ck["rng"])
        if d.main:
            log.info("resumed from %s (step %d)", ckpt_dir, st["step"])

    if d.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        with (out_dir / LOG_FILE).open("w", encoding="utf-8") as f:
            for rec in st["history"]:
                f.write(json.dumps(rec) + "\n")

    def log_rec(rec: dict[str, Any]) -> None:
        st["history"].append(rec)
        if d.main:
            with (out_dir / LOG_FILE).open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def save_checkpoint() -> None:
        rng = _rng_state()
        if d.world > 1:
            all_rng: list[Any] = [None] * d.world
            dist.all_gather_object(all_rng, rng)
            rng = all_rng
        if d.main:
            cdir = out_dir / CHECKPOINT_DIR / f"step-{st['step']}"
            cdir.mkdir(parents=True, exist_ok=True)
            tmp = cdir / "state.pt.tmp"
            torch.save({"model": _trainable_state(model), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "train_state": st, "best_state": best_state,
                        "rng": rng}, tmp)
            os.replace(tmp, cdir / "state.pt")
            write_json(cdir / "fingerprint.json", {"fingerprint": fingerprint, "step": st["step"]})
            old = sorted((out_dir / CHECKPOINT_DIR).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
            for p in old[:-cfg.checkpoint.keep]:
                shutil.rmtree(p, ignore_errors=True)
        d.barrier()

    def run_eval() -> bool:
        """Evaluate, track the best weights; True when early stopping says stop."""
        nonlocal best_state
        m = evaluate(model, head, val_feats, tok.pad_token_id, builder.label_token_ids, cfg.eval.batch_size, d)
        rec = {"type": "eval", "step": st["step"], "epoch": round(st["epoch"] + st["batch"] / max(1, n_batches), 4), **m}
        log_rec(rec)
        if show:
            bar.write(f"step {st['step']}: val_loss {m['val_loss']:.4f} val_macro_f1 {m['val_macro_f1']:.4f}")
        if _better(cfg.eval.metric, m[cfg.eval.metric], st["best"]):
            st.update(best=m[cfg.eval.metric], best_step=st["step"], best_metrics=m, bad_evals=0)
            best_state = _trainable_state(model)
        else:
            st["bad_evals"] += 1
        return bool(cfg.eval.patience and st["bad_evals"] >= cfg.eval.patience)

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=st["step"], disable=not show, desc="train", unit="step", dynamic_ncols=True)
    runner.train()
    last_eval_step = st["history"][-1]["step"] if st["history"] and st["history"][-1]["type"] == "eval" else -1
    stop = st["stopped_early"] or st["step"] >= total_steps
    while not stop:
        batches = epoch_batches(lengths, o.batch_size, cfg.seed, st["epoch"], o.group_by_length, d.world)
        mine = batches[d.rank::d.world]
        while st["batch"] < len(mine) and not stop:
            group = mine[st["batch"]:st["batch"] + o.grad_accum]
            loss_sum = 0.0
            for k, idx in enumerate(group):
                b = {kk: v.to(mdev) for kk, v in collate([train_feats[i] for i in idx]).items()}
                sync = k == len(group) - 1 or d.world == 1
                ctx = runner.no_sync() if not sync and hasattr(runner, "no_sync") else _nullctx()
                with ctx:
                    loss, _ = runner(**b)
                    (loss / len(group)).backward()
                loss_sum += float(loss.detach())
            gnorm = None
            if o.max_grad_norm:
                gnorm = float(torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            st["batch"] += len(group)
            st["step"] += 1
            rec = {"type": "train", "step": st["step"], "epoch": round(st["epoch"] + st["batch"] / len(mine), 4),
                   "loss": loss_sum / len(group), "lr": scheduler.get_last_lr()[0], "grad_norm": gnorm}
            log_rec(rec)
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            if st["step"] >= total_steps:
                stop = True
            end_of_epoch = st["batch"] >= len(mine)
            if st["step"] % eval_every == 0 or stop or (cfg.eval.every_steps is None and end_of_epoch):
                last_eval_step = st["step"]
                if run_eval() and not stop:  # patience ran out before the planned last step
                    st["stopped_early"] = True
                    stop = True
            if end_of_epoch:
                st["epoch"] += 1
                st["batch"] = 0
            if st["step"] % ckpt_every == 0 or stop:
                save_checkpoint()
            if _interrupt_after_step is not None and st["step"] >= _interrupt_after_step:
                bar.close()
                raise KeyboardInterrupt(f"interrupted after step {st['step']} (test hook)")
            if end_of_epoch:
                break
    bar.close()
    if last_eval_step != st["step"] and st["best"] is None:
        run_eval()

    _load_trainable_state(model, best_state)
    settings = ModelSettings(head=head, base_model=source, prompt=builder.settings, pooling=cfg.model.pooling,
                             labels=LABELS, label_token_ids=list(builder.label_token_ids),
                             uses_chat_template=builder.uses_chat_template,
                             best_val={"metric": cfg.eval.metric, "step": st["best_step"], **st["best_metrics"]},
                             extra={"finetune": cfg.finetune})
    summary = {"out_dir": str(out_dir), "steps": st["step"], "total_steps": total_steps,
               "stopped_early": st["stopped_early"], "best_step": st["best_step"], "best_val": st["best_metrics"],
               "trainable_params": n_train, "world_size": d.world}
    if d.main:
        model.save_pretrained(str(out_dir))
        tok.save_pretrained(str(out_dir))
        settings.save(out_dir)
        manifest = {"command": "newsbias train", "config": dump_config(cfg), "packages": package_versions(),
                    "git_commit": git_commit(), "data": hashes, "summary": summary,
                    "device": str(mdev), "dtype": str(next(model.parameters()).dtype),
                    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
                    "seconds": round(time.time() - t_start, 2), "resumed_from": str(ckpt_dir) if ckpt_dir else None}
        (out_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    d.barrier()
    if d.world > 1 and d.owns_group:
        dist.destroy_process_group()
    return summary


class _nullctx:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


__all__ = ["train", "Example", "read_jsonl_examples", "load_training_data", "resolve_data_paths", "encode_examples",
           "LabelOnlyCollator", "epoch_batches", "evaluate", "balanced_class_weights", "latest_checkpoint",
           "prompt_settings", "pick_instruction"]
