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

import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from .adversary import IGNORE, OutletAdversary, outlet_vocabulary, ramp
from .classifier import Classifier
from .config import DEFAULT_INSTRUCTION, TRAIN_NOT_IN_RUN, CleanConfig, TrainConfig, dump_config
from .errors import NewsbiasError, SettingError
from .io import (OWNER_FILE, claim, holds, honour_umask, read_json, sha256_file, stage_manifest, write_json,
                 write_jsonl)
from .labels import LABELS
from .metrics import FEW_FOR_TEMPERATURE, fit_temperature
from .modeling import (SETTINGS_FILE, Dist, LabelLossModule, MeanPoolingClassifier,
                       ModelSettings, _check_model_path, _hf_model, add_lora,
                       count_parameters, init_distributed, join_gguf, load_model_and_tokenizer, pad_batch,
                       keeps_threads, resolve_device_dtype)
from .prompt import Encoded, PromptBuilder
from .records import (CHECKPOINTS, PREP_META, SPLIT_FILES, TRAIN_LOG, TRAIN_MANIFEST, Article, read_articles,
                      resolve_split)

log = logging.getLogger(__name__)

ADVERSARY_FILE = "adversary.safetensors"

Example = Article  # a training example is a prep article with its label


def resolve_data_paths(path: str | Path, val_path: Optional[str | Path] = None) -> tuple[Path, Path, Optional[Path]]:
    """(train file, val file, prep directory or None) from a prep directory or a train-file path."""
    train = resolve_split(path, "train", "train.data.path", "train.data.path")
    if val_path is not None and str(val_path) in SPLIT_FILES and not Path(val_path).exists():
        val = resolve_split(train.parent, str(val_path), "train.data.path", "train.data.val_path")  # a split's name
    else:
        val = resolve_split(val_path or train.parent, "val", "train.data.val_path", "train.data.val_path")
    return train, val, train.parent if (train.parent / PREP_META).is_file() else None


def data_hashes(train: Path, val: Path, prep_dir: Optional[Path]) -> dict[str, Any]:
    """sha256 of the files used, plus prep_meta.json's record of its outputs when present."""
    out: dict[str, Any] = {"train": {"path": str(train), "sha256": sha256_file(train)},
                           "val": {"path": str(val), "sha256": sha256_file(val)}}
    if prep_dir is not None:
        meta = read_json(prep_dir / PREP_META, strict=False)
        clean = ((meta or {}).get("config") or {}).get("clean") or {}
        defaults = CleanConfig()
        out["prep_meta"] = ({"path": str(prep_dir / PREP_META), "outputs": meta.get("outputs", {}),
                             "prepend_title": bool(clean.get("prepend_title", defaults.prepend_title)),
                             "fix_text": bool(clean.get("fix_text", defaults.fix_text))}
                            if meta is not None else {"error": "unreadable prep_meta.json"})
    return out


def load_training_data(cfg: TrainConfig) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Validated (train, val, data hashes); every data problem is a NewsbiasError before training."""
    if not cfg.data.path:
        raise NewsbiasError("train.data.path is not set; point it at the prep output directory")
    train_p, val_p, prep_dir = resolve_data_paths(cfg.data.path, cfg.data.val_path)
    train = read_articles(train_p, cfg.data.train_limit, need_label=True)
    val = read_articles(val_p, cfg.data.val_limit, need_label=True)
    if not train:
        raise NewsbiasError(f"the training set {train_p} is empty; check the prep output or train.data.train_limit")
    if not val:
        raise NewsbiasError(f"the validation set {val_p} is empty; evaluation and early stopping need val rows")
    warn_about_data(train, val)
    return train, val, data_hashes(train_p, val_p, prep_dir)


def warn_about_data(train: Sequence[Example], val: Sequence[Example]) -> None:
    """What trains without error but not as meant: a label no training article has, val articles also in train."""
    missing = [lab for lab in LABELS if lab not in {e.label for e in train}]
    if missing:
        log.warning("the training set has no %s article: the model cannot learn to answer %s",
                    " or ".join(repr(m) for m in missing), "them" if len(missing) > 1 else "it")
    absent = [lab for lab in LABELS if lab not in {e.label for e in val}]
    if absent and val:
        log.warning("the val set has no %s article: its macro-F1, which picks the checkpoint, counts that class as 0",
                    " or ".join(repr(m) for m in absent))
    texts = {e.text for e in train}  # by text: files without ids number their lines, so their ids meet by chance
    shared = sum(e.text in texts for e in val)
    if shared:
        log.warning("%d of the %d val articles are also in the training set (the same text): checkpoint choice and "
                    "the temperature are then fitted on training articles; use a val split of other articles",
                    shared, len(val))


def pick_instruction(cfg: TrainConfig, train: Sequence[Example]) -> str:
    """The configured instruction, else the data's most common one, else the default."""
    if cfg.prompt.instruction:
        return cfg.prompt.instruction
    seen = Counter(e.instruction for e in train if e.instruction)
    return seen.most_common(1)[0][0] if seen else DEFAULT_INSTRUCTION


def encode_examples(builder: PromptBuilder, examples: Sequence[Example], head: str) -> list[dict[str, Any]]:
    """Token ids per example. lm: prompt + label token, labels -100 except that token; cls: prompt only."""
    feats = []
    for e in examples:
        cid = builder.labels.index(e.label)
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
        if "outlet_id" in features[0]:
            batch["outlet_ids"] = torch.tensor([f["outlet_id"] for f in features], dtype=torch.long)
        return batch


def epoch_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool = True,
                  world_size: int = 1, weights: Optional[np.ndarray] = None) -> list[list[int]]:
    """All micro-batches of one epoch (indices), a pure function of (seed, epoch).

    Length grouping: shuffle, cut into mega-batches of 50 batches, sort each by length, split
    into batches, shuffle the batch order. The count is trimmed to a multiple of ``world_size``;
    rank r takes batches r, r + world, ... With ``weights`` the epoch draws ``len(lengths)``
    examples with replacement in proportion to them instead of a permutation.
    """
    g = np.random.default_rng([seed, epoch])
    n = len(lengths)
    perm = (g.choice(n, size=n, replace=True, p=weights / weights.sum()).tolist() if weights is not None
            else g.permutation(n).tolist())
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




def _gather(rows: list[Any], d: Dist) -> list[Any]:
    """Every rank's ``(index, ...)`` rows, sorted by index, on every rank."""
    if d.world > 1:
        gathered: list[Any] = [None] * d.world
        dist.all_gather_object(gathered, rows)
        rows = [r for part in gathered for r in part]
    return sorted(rows, key=lambda r: r[0])


def evaluate(clf: Classifier, feats: Sequence[dict[str, Any]], batch_size: int = 8, d: Dist = Dist()
             ) -> tuple[dict[str, float], np.ndarray]:
    """val loss (the training loss, unweighted), macro-F1 and accuracy, scored through ``clf``, and the label
    scores ``[len(feats), labels]`` in ``feats``' order (what :func:`calibrate` fits the temperature on).

    Each rank scores a shard; results are gathered so every rank takes the same decisions.
    """
    from sklearn.metrics import accuracy_score

    from .metrics import macro_f1

    lm = clf.settings.head == "lm"
    mine = list(range(d.rank, len(feats), d.world))
    encs = [Encoded(feats[i]["input_ids"], feats[i]["answer_pos"], False) for i in mine]
    gold_ids = torch.tensor([feats[i]["class_id"] for i in mine])
    lt = torch.tensor(list(clf.builder.label_token_ids), dtype=torch.long)
    results: list[tuple[int, float, list[float]]] = []
    for idx, logits in clf.iter_logits(encs, batch_size, full_vocab=lm):
        logits = logits.float().cpu()  # bf16 under autocast
        target = lt[gold_ids[idx]] if lm else gold_ids[idx]
        losses = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        scores = logits[:, lt] if lm else logits
        results.extend(zip([mine[i] for i in idx], losses.tolist(), scores.tolist()))
    results = _gather(results, d)
    label_scores = np.zeros((len(feats), len(LABELS)))
    for i, _, row in results:
        label_scores[i] = row
    gold, pred = [f["class_id"] for f in feats], label_scores.argmax(axis=1)
    return ({"val_loss": float(np.mean([l for _, l, _ in results])),
             "val_macro_f1": macro_f1(gold, pred, range(len(LABELS))),
             "val_accuracy": float(accuracy_score(gold, pred)), "val_n": len(results)}, label_scores)


def _better(metric: str, new: float, best: Optional[float]) -> bool:
    if best is None:
        return True
    return new < best if metric == "val_loss" else new > best


def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def _load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise NewsbiasError(f"checkpoint does not match the model (e.g. {missing[0]}); was the config changed?")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].device))


def _rng_state() -> dict[str, Any]:
    """Every RNG as JSON-able lists, so checkpoints need no pickle."""
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    st = {"python": [py[0], list(py[1]), py[2]], "numpy": [name, keys.tolist(), pos, has_gauss, gauss],
          "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        st["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return st


def _set_rng_state(st: dict[str, Any]) -> None:
    random.setstate((st["python"][0], tuple(st["python"][1]), st["python"][2]))
    name, keys, pos, has_gauss, gauss = st["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(st["torch"], dtype=torch.uint8))
    if "cuda" in st and torch.cuda.is_available():  # as many GPUs as both machines have (a resume may see fewer)
        for i, state in enumerate(st["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(torch.tensor(state, dtype=torch.uint8), i)


def _checkpoints(out_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (``trainer_state.json`` is written last, so a torn one is skipped)."""
    d = Path(out_dir) / CHECKPOINTS
    found = [p.parent for p in d.glob("checkpoint-*/trainer_state.json")] if d.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def latest_checkpoint(out_dir: str | Path) -> Optional[Path]:
    found = _checkpoints(out_dir)
    return found[-1] if found else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _lr_scheduler(name: str, optimizer: torch.optim.Optimizer, warmup: int, total: int):
    from transformers import get_scheduler

    sched = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[name]
    return get_scheduler(sched, optimizer, num_warmup_steps=warmup, num_training_steps=total)


def run_identity(cfg: TrainConfig, hashes: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides the trained weights: the config (less where and how the run is saved or
    logged) and the data's sha256. Checkpoints store it, so a refused ``--resume`` can name what changed."""
    conf = {k: v for k, v in dump_config(cfg).items() if k not in TRAIN_NOT_IN_RUN}
    data = {k: v.get("sha256") for k, v in hashes.items() if isinstance(v, dict) and "sha256" in v}
    # each process's place in the data is its own: a run resumes with as many processes as it had
    return {"config": conf, "data": data, "world_size": int(os.environ.get("WORLD_SIZE", "1"))}


def run_fingerprint(identity: dict[str, Any]) -> str:
    """A short digest of a :func:`run_identity`."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


_MISSING = object()


def _shown(value: Any, digest: bool = False) -> str:
    if value is _MISSING:
        return "unset"
    return f"sha256 {str(value)[:8]}" if digest else json.dumps(value)


# settings that do not change the weights a run reaches: a crashed run may resume on another device or scoring
# val in other batches
RESUMES_ANYWHERE = ("config.model.device", "config.eval.batch_size")


def _same_dtype(old: Any, new: Any, device: str) -> bool:
    """Whether two dtype settings resolve to the same dtype on ``device`` (``auto`` is fp32 on a CPU)."""
    try:
        return resolve_device_dtype(device, old)[1] == resolve_device_dtype(device, new)[1]
    except (SettingError, TypeError, ValueError):
        return False


def run_differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's :func:`run_identity` and this run's, one phrase per setting.

    A setting the checkpoint does not record (added by a later newsbias) counts as unchanged while
    it keeps its default, the value that reproduces what the older version did.
    """
    a, b = _flat(theirs), _flat(ours)
    defaults = _flat({"config": dump_config(TrainConfig())})
    out = []
    for key in sorted(a.keys() | b.keys()):
        old, new = a.get(key, _MISSING), b.get(key, _MISSING)
        if old == new or (old is _MISSING and key.startswith("config.") and defaults.get(key, _MISSING) == new):
            continue
        if old is _MISSING and key == "world_size" and new == 1:  # recorded since 2026-12-07; one process before
            continue
        if key in RESUMES_ANYWHERE or (key == "config.model.dtype" and
                                       _same_dtype(old, new, b.get("config.model.device", "auto"))):
            continue
        kind, name = key.split(".", 1) if "." in key else (key, key)
        what = (f"the {name} data" if kind == "data" else "the number of processes (WORLD_SIZE)" if kind == "world_size"
                else f"train.{name}")
        digest = kind == "data"
        out.append(f"{what} ({_shown(old, digest)} in the checkpoint, {_shown(new, digest)} now)")
    return out


# files that mark a directory as a model (a base model, an export): training writes files of these names
_MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "adapter_model.safetensors",
                "tokenizer.json", "tokenizer_config.json")


def check_out_dir(cfg: TrainConfig, source: str) -> None:
    """Refuse a ``train.out_dir`` that training would write over: the run's model or data (or a directory
    holding them), or another model's directory. Files of the user's beside a run's are left alone."""
    out = Path(cfg.out_dir).expanduser().resolve()
    for what, inp in (("model", source), ("data", cfg.data.path), ("val data", cfg.data.val_path)):
        ip = Path(inp).expanduser().resolve() if inp else None
        if ip is not None and holds(out, ip):
            raise NewsbiasError(f"train.out_dir {out} is, or holds, the run's {what} ({inp}), which training would "
                                f"overwrite; choose another --out")
    manifest = read_json(out / TRAIN_MANIFEST, strict=False) or {}
    ours = manifest.get("stage") == "train" or (out / CHECKPOINTS).is_dir() or (out / TRAIN_LOG).is_file()
    clash = [] if ours or not out.is_dir() else [n for n in _MODEL_FILES if (out / n).exists()]
    if clash:
        raise NewsbiasError(f"{out} holds another model's files ({', '.join(clash[:3])}) that newsbias train did not "
                            f"write and would overwrite; choose a new or empty --out")


def clear_finished_run(out_dir: Path, overwrite: bool) -> None:
    """A new run into the directory of a finished one: refused without ``overwrite``; with it, that run's model
    files go first, so a run killed before it finishes leaves no model behind to be taken for its own."""
    finished = (out_dir / SETTINGS_FILE).is_file() or (read_json(out_dir / TRAIN_MANIFEST, strict=False) or {}).get(
        "stage") == "train"
    if not finished:
        return
    if not overwrite:
        raise NewsbiasError(f"{out_dir} holds a finished training run (newsbias.json); pass --overwrite to replace it "
                            f"or choose another train.out_dir")
    # the tokenizer's chat template and a mean-pooling head too: a new run that writes neither would inherit them
    for name in (SETTINGS_FILE, TRAIN_MANIFEST, TRAIN_LOG, "adapter_config.json", "chat_template.jinja",
                 MeanPoolingClassifier.HEAD_FILE, *_MODEL_FILES):
        (out_dir / name).unlink(missing_ok=True)
    for shard in (*out_dir.glob("model-*-of-*.safetensors"), out_dir / "model.safetensors.index.json"):
        shard.unlink(missing_ok=True)  # a sharded full fine-tune; any other file there is the user's


def check_checkpoints(out_dir: Path, identity: dict[str, Any], resume: bool, overwrite: bool,
                      remove: bool = True) -> Optional[Path]:
    """The checkpoint to resume from (or None), refusing to mix runs.

    ``resume`` needs the latest checkpoint to belong to this run (same fingerprint, or a recorded
    identity with no :func:`run_differences`); a new run into a directory holding another run's
    checkpoints is refused unless ``overwrite`` (which removes them, when ``remove``: one process of a group).
    """
    ckpt_root = out_dir / CHECKPOINTS
    for unfinished in ckpt_root.glob(".checkpoint-*.tmp") if remove else ():  # a killed save: never a checkpoint
        shutil.rmtree(unfinished, ignore_errors=True)
    latest = latest_checkpoint(out_dir)
    if resume:
        if latest is None:
            raise NewsbiasError(f"--resume: no checkpoint under {ckpt_root}; run without --resume")
        _check_same_run(latest, identity)
        return latest
    if latest is not None or (ckpt_root.is_dir() and any(ckpt_root.iterdir())):
        if not overwrite:
            raise NewsbiasError(f"{ckpt_root} holds checkpoints of an earlier run; pass --resume to continue it or "
                                f"--overwrite to start over (or choose another train.out_dir)")
        if remove:
            shutil.rmtree(ckpt_root)
    return None


def _check_same_run(ckpt: Path, identity: dict[str, Any]) -> None:
    state = read_json(ckpt / "trainer_state.json", strict=False) or {}
    fingerprint = run_fingerprint(identity)
    if state.get("fingerprint") == fingerprint:
        return
    if "run" not in state:  # written before checkpoints recorded their run's settings
        raise NewsbiasError(f"--resume: the checkpoint {ckpt} belongs to another run (config or data differ: "
                            f"fingerprint {state.get('fingerprint')} vs {fingerprint}); rerun with the same config "
                            f"and data, or start over with --overwrite")
    changed = run_differences(state["run"], identity)
    if changed:
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise NewsbiasError(f"--resume: the checkpoint {ckpt} belongs to another run: {'; '.join(changed[:3])}{more}; "
                            f"rerun with the checkpoint's settings and data, or start over with --overwrite")


@dataclass
class TrainState:
    """Where the loop is and what it has selected so far; a checkpoint stores it as JSON."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best: Optional[float] = None
    best_step: Optional[int] = None
    best_metrics: dict[str, Any] = field(default_factory=dict)
    bad_evals: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class Recipe:
    """Everything :func:`setup` builds once; the step functions read it and advance ``state``."""

    cfg: TrainConfig
    d: Dist
    source: str
    identity: dict[str, Any]
    hashes: dict[str, Any]
    model: torch.nn.Module
    tok: Any
    builder: PromptBuilder
    runner: torch.nn.Module
    train_feats: list[dict[str, Any]]
    val_feats: list[dict[str, Any]]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total_steps: int
    n_batches: int
    show: bool
    state: TrainState = field(default_factory=TrainState)
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    init_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # train.wise_alphas: where training started
    calibration: dict[str, Any] = field(default_factory=dict)  # train.calibrate: the kept weights' temperature fit
    # val's label scores of best_weights and of the last evaluation, when this process scored them (not after a
    # resume): calibrate fits on them instead of scoring val once more
    best_val_scores: Optional[np.ndarray] = None
    last_val_scores: Optional[np.ndarray] = None
    resumed_from: Optional[Path] = None
    bar: Any = None
    trackers: list[Any] = field(default_factory=list)
    draw_weights: Optional[np.ndarray] = None  # train.data.sampling=outlet_balanced
    adversary: Optional[OutletAdversary] = None  # train.outlet_adversary
    half: Optional[torch.dtype] = None  # bf16/fp16 model: forward passes run under autocast to it

    def amp(self) -> contextlib.AbstractContextManager:
        """Autocast for forward passes of a half-precision model whose trainable weights are fp32."""
        return torch.autocast(self.device.type, dtype=self.half) if self.half else contextlib.nullcontext()

    @property
    def out_dir(self) -> Path:
        return Path(self.cfg.out_dir)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @functools.cached_property
    def classifier(self) -> Classifier:
        """The model being trained as the inference object (built once): validation scores through it."""
        return Classifier(self.model, self.tok, model_settings(self), source=self.source, eval_mode=False)

    @property
    def lengths(self) -> list[int]:
        return [len(f["input_ids"]) for f in self.train_feats]

    def log(self, rec: dict[str, Any]) -> None:
        """Append a record to the history (kept in checkpoints), ``train_log.jsonl`` and any tracker."""
        self.state.history.append(rec)
        if self.d.main:
            with (self.out_dir / TRAIN_LOG).open("a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
            for tracker in self.trackers:
                tracker(rec)


@contextlib.contextmanager
def _train_keys() -> Iterator[None]:
    """A shared setting's error (:class:`~newsbias.errors.SettingError`) named by its key under ``train.model``."""
    try:
        yield
    except SettingError as exc:
        raise exc.named("train.model." + ("name_or_path" if exc.key == "model" else exc.key)) from None


def _setup_device(cfg: TrainConfig) -> tuple[Dist, str]:
    """This process's place in the group and the device it trains on (on CPU, with the tuned allocator)."""
    from .modeling import rank_device, resolve_device_dtype, set_threads, tune_cpu_allocator

    with _train_keys():
        dev, _ = resolve_device_dtype(cfg.model.device, cfg.model.dtype)
    if dev.type == "cpu":
        tune_cpu_allocator()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun leaves each process one thread (OMP_NUM_THREADS=1)
            set_threads()
    d = init_distributed(dev.type)
    device = rank_device(cfg.model.device, dev.type, d)
    if not d.main:
        logging.getLogger("transformers").setLevel(logging.ERROR)
    return d, device


def _setup_model(cfg: TrainConfig, source: str, device: str, train_ex: Sequence[Example]
                 ) -> tuple[torch.nn.Module, Any, PromptBuilder]:
    """The base model with LoRA (or all weights) trainable, its tokenizer and the prompt builder."""
    m = cfg.model
    seed_everything(cfg.seed)
    with _train_keys():
        model, tok = load_model_and_tokenizer(
            source, head=m.head, device=device, dtype=m.dtype, attn_implementation=m.attn_implementation,
            gradient_checkpointing=m.gradient_checkpointing, trust_remote_code=m.trust_remote_code, pooling=m.pooling)
    builder = PromptBuilder(tok, cfg.prompt.with_instruction(pick_instruction(cfg, train_ex)), m.head)
    return model, tok, builder


def _make_trainable(cfg: TrainConfig, model: torch.nn.Module) -> torch.nn.Module:
    """LoRA adapters on ``model`` (the cls head trained alongside), or ``model`` itself for a full fine-tune."""
    seed_everything(cfg.seed)
    if cfg.finetune == "lora":
        m = cfg.model
        model = add_lora(model, m.head, r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                         target_modules=cfg.lora.target_modules, bias=cfg.lora.bias,
                         gradient_checkpointing=m.gradient_checkpointing)
    return model


def keep_trainable_fp32(model: torch.nn.Module) -> Optional[torch.dtype]:
    """Cast the trainable weights of a bf16/fp16 model to fp32; return that half dtype (None for fp32 models).

    AdamW on bf16 weights rounds away every update below half the weight's last bit (bf16 keeps 8
    significant bits): at lr 5e-5 three steps of the demo's encoder recipe moved 12 % of MiniLM's
    weights where fp32 moved 99 % (``benchmarks/half_precision.py``). The frozen weights stay in the
    half dtype, so most of the memory saving remains; forward passes autocast (``Recipe.amp``). fp16
    runs without loss scaling, as before.
    """
    floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
    half = next((dt for dt in (torch.bfloat16, torch.float16) if dt in floats), None)
    if half is not None:
        for p in model.parameters():
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
    return half


def head_inputs(model: torch.nn.Module, feats: Sequence[dict[str, Any]], pad_id: int, batch_size: int,
                show: bool = False) -> np.ndarray:
    """What the cls head reads for each of ``feats`` (captured by a hook, in eval mode), in the order of ``feats``."""
    from tqdm.auto import tqdm

    from .modeling import classifier_module_name, iter_logits

    head = getattr(model, classifier_module_name(model))
    seen: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().float().cpu()))
    encs = [Encoded(f["input_ids"], f["answer_pos"], False) for f in feats]
    batches = iter_logits(model, "cls", encs, batch_size, pad_id, ())
    order: list[int] = []
    try:
        for idx, _ in tqdm(batches, total=math.ceil(len(encs) / batch_size), desc="probe: pooled features",
                           disable=not show, unit="batch"):
            order.extend(idx)
    finally:
        hook.remove()
    x = torch.cat(seen)
    if x.dim() != 2:
        raise NewsbiasError(f"head_init=probe needs a head over one pooled vector per article; "
                            f"{type(model).__name__} applies it per token: set model.pooling=mean or head_init=random")
    return x[np.argsort(order)].numpy()  # batches come length-sorted


def fit_probe(x: np.ndarray, y: np.ndarray, balanced: bool) -> Any:
    """The linear probe of ``head_init=probe``: logistic regression, C = 1, optionally balanced class weights."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=1.0, class_weight="balanced" if balanced else None, max_iter=2000).fit(x, y)


def probe_head(model: torch.nn.Module, feats: Sequence[dict[str, Any]], pad_id: int, batch_size: int,
               balanced: bool, show: bool = False) -> dict[str, Any]:
    """Set the cls head to a logistic regression fitted on the frozen model's pooled features of ``feats``.

    Linear probing before fine-tuning (LP-FT, Kumar et al., ICLR 2022): gradients from a random
    head distort the pretrained features while the head is still wrong, which costs most on data
    unlike the training set (here: outlets never seen). The features are the head's own inputs,
    so the probe fits exactly the layer it replaces.
    """
    from .metrics import macro_f1
    from .modeling import classifier_module_name

    head = getattr(model, classifier_module_name(model))
    if not isinstance(head, torch.nn.Linear):
        raise NewsbiasError(f"head_init=probe needs a linear head; {type(model).__name__}'s head is "
                            f"{type(head).__name__}: set head_init=random or model.pooling=mean")
    y = np.array([f["class_id"] for f in feats])
    if len(set(y.tolist())) < head.out_features:
        raise NewsbiasError(f"head_init=probe needs training articles of every label; found only "
                            f"{sorted({LABELS[i] for i in y.tolist()})}")
    x = head_inputs(model, feats, pad_id, batch_size, show)
    lr = fit_probe(x, y, balanced)
    with torch.no_grad():
        head.weight.copy_(torch.as_tensor(lr.coef_, dtype=head.weight.dtype))
        head.bias.copy_(torch.as_tensor(lr.intercept_, dtype=head.bias.dtype))
    return {"type": "probe", "n": len(y), "train_macro_f1": macro_f1(y, lr.predict(x), range(head.out_features))}


def setup_adversary(cfg: TrainConfig, model: torch.nn.Module, train_ex: Sequence[Example],
                    feats: Sequence[dict[str, Any]]) -> tuple[Optional[OutletAdversary], Optional[dict[str, Any]]]:
    """``train.outlet_adversary``: the outlet head (None when off) and its log record; sets each feature's
    ``outlet_id`` (:data:`newsbias.adversary.IGNORE` for an outlet below ``min_articles``)."""
    a = cfg.outlet_adversary
    if a.weight == 0:
        return None, None
    outlets = [e.outlet_or_source for e in train_ex]
    names, labels = outlet_vocabulary(outlets, [f["class_id"] for f in feats], a.min_articles)
    index = {n: k for k, n in enumerate(names)}
    for f, o in zip(feats, outlets):
        f["outlet_id"] = index.get(o, IGNORE)
    hidden = _hf_model(model).config.hidden_size
    adversary = OutletAdversary(hidden, labels, a.scope == "within_label", a.method).to(next(model.parameters()).device)
    covered = sum(f["outlet_id"] != IGNORE for f in feats)
    return adversary, {"type": "adversary", "outlets": len(names), "articles": covered, "scope": a.scope, "method": a.method,
                       "weight": a.weight, "min_articles": a.min_articles}


def check_adversary_data(cfg: TrainConfig, train_ex: Sequence[Example]) -> None:
    """``train.outlet_adversary`` needs outlets to tell apart (within a label, for scope within_label): a one-line
    error before any model is loaded, and a warning for each label whose articles it cannot push."""
    a = cfg.outlet_adversary
    if a.weight == 0:
        return
    outlets = [e.outlet_or_source for e in train_ex]
    distinct = len({o for o in outlets if o})
    if distinct < 2:
        raise NewsbiasError(f"train.outlet_adversary needs the training articles' outlets (the outlet or source field, "
                            f"as newsbias prep writes it) and two or more of them; found {distinct}: set its weight "
                            f"to 0")
    names, labels = outlet_vocabulary(outlets, [LABELS.index(e.label) for e in train_ex], a.min_articles)
    if len(names) < 2:
        raise NewsbiasError(f"train.outlet_adversary: {len(names)} of the {distinct} training outlets have "
                            f"{a.min_articles} or more articles (train.outlet_adversary.min_articles); lower it or "
                            f"set the weight to 0")
    if a.scope != "within_label":
        return
    per_label = Counter(labels)
    alone = [LABELS[k] for k in sorted(set(labels)) if per_label[k] == 1]
    if len(alone) == len(per_label):
        raise NewsbiasError("train.outlet_adversary (scope within_label) needs two outlets of one label to tell "
                            "apart; every label has one: use train.outlet_adversary.scope=all or set its weight to 0")
    if alone:
        log.warning("train.outlet_adversary: %s %s one outlet with %d or more articles, so the adversary leaves "
                    "its articles alone (within_label)", ", ".join(alone), "has" if len(alone) == 1 else "each have",
                    a.min_articles)


def _setup_loss(cfg: TrainConfig, model: torch.nn.Module, builder: PromptBuilder, class_ids: Sequence[int],
                d: Dist, adversary: Optional[OutletAdversary] = None) -> torch.nn.Module:
    """The label-only loss around the model, with the outlet adversary if any (wrapped in DDP when distributed)."""
    mdev = next(model.parameters()).device
    class_w = (balanced_class_weights(class_ids, len(LABELS)).to(mdev)
               if cfg.optim.class_weights == "balanced" else None)
    loss_mod = LabelLossModule(model, cfg.model.head, builder.label_token_ids, class_w, adversary).to(mdev)
    if d.world == 1:
        return loss_mod
    return torch.nn.parallel.DistributedDataParallel(loss_mod, device_ids=[d.local_rank] if mdev.type == "cuda" else None)


def _setup_optimizer(cfg: TrainConfig, model: torch.nn.Module, lengths: Sequence[int], d: Dist,
                     adversary: Optional[OutletAdversary] = None) -> tuple[torch.optim.Optimizer, Any, int, int]:
    """(optimizer, scheduler, total optimizer steps, micro-batches per rank per epoch).

    The outlet adversary's head, new and small, learns at its own rate: at a pretrained model's rate it
    would not learn the outlets within the run, and pushing the model against it would carry nothing."""
    o = cfg.optim
    n_batches = len(epoch_batches(lengths, o.batch_size, cfg.seed, 0, o.group_by_length, d.world)) // d.world
    steps_per_epoch = max(1, math.ceil(n_batches / o.grad_accum))
    total_steps = o.max_steps or max(1, math.ceil(o.epochs * steps_per_epoch))
    trainable = [p for p in model.parameters() if p.requires_grad]
    # no decay on biases and norm scales (the vectors), as transformers' Trainer and nanoGPT leave them
    groups = [g for g in ({"params": [p for p in trainable if p.ndim >= 2]},
                          {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0}) if g["params"]]
    if adversary is not None:
        groups.append({"params": list(adversary.parameters()), "lr": cfg.outlet_adversary.lr, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=o.lr, weight_decay=o.weight_decay)
    # rounded up, as transformers does: a warmup_ratio above 0 always warms up for at least one step
    scheduler = _lr_scheduler(o.scheduler, optimizer, math.ceil(o.warmup_ratio * total_steps), total_steps)
    return optimizer, scheduler, total_steps, n_batches


def setup(cfg: TrainConfig, resume: bool = False, progress: Optional[bool] = None) -> Recipe:
    """Check the input, load data and model, build loss/optimizer, restore a checkpoint if resuming.

    Everything that can be wrong with the input fails before any model is loaded.
    """
    if resume and cfg.overwrite:
        raise NewsbiasError("--resume continues the run in train.out_dir and --overwrite starts it over; pass one")
    source = join_gguf(cfg.model.name_or_path, cfg.model.gguf_file)
    check_out_dir(cfg, source)
    train_ex, val_ex, hashes = load_training_data(cfg)
    check_adversary_data(cfg, train_ex)
    with _train_keys():
        _check_model_path(source)
    identity = run_identity(cfg, hashes)
    out, main = Path(cfg.out_dir), int(os.environ.get("RANK", "0")) == 0
    if main:  # one process of a group claims the directory and clears what --overwrite replaces
        out.mkdir(parents=True, exist_ok=True)
        claim(out, f"train.out_dir {out}")
    ckpt = check_checkpoints(out, identity, resume, cfg.overwrite, remove=main)
    if not resume and main:
        clear_finished_run(out, cfg.overwrite)
    d, device = _setup_device(cfg)
    d.barrier()  # the others start once rank 0 has cleared the run --overwrite replaces
    model, tok, builder = _setup_model(cfg, source, device, train_ex)
    train_feats = encode_examples(builder, train_ex, cfg.model.head)
    show = bool(cfg.progress if progress is None else progress) and d.main
    probe = None
    if cfg.head_init == "probe" and ckpt is None:  # a resumed run restores its head from the checkpoint
        probe = probe_head(model, train_feats, tok.pad_token_id, cfg.eval.batch_size,
                           cfg.optim.class_weights == "balanced", show)
    model = _make_trainable(cfg, model)
    half = keep_trainable_fp32(model)
    n_train, n_total = count_parameters(model)
    if d.main:
        log.info("trainable params: %s / %s (%.3f%%)", f"{n_train:,}", f"{n_total:,}", 100 * n_train / n_total)
    adversary, adversary_rec = setup_adversary(cfg, model, train_ex, train_feats)
    runner = _setup_loss(cfg, model, builder, [f["class_id"] for f in train_feats], d, adversary)
    optimizer, scheduler, total_steps, n_batches = _setup_optimizer(cfg, model, [len(f["input_ids"]) for f in train_feats], d,
                                                                    adversary)
    r = Recipe(cfg=cfg, d=d, source=source, identity=identity, hashes=hashes, model=model, tok=tok,
               builder=builder, runner=runner, train_feats=train_feats,
               val_feats=encode_examples(builder, val_ex, cfg.model.head), optimizer=optimizer, scheduler=scheduler,
               total_steps=total_steps, n_batches=n_batches, show=show, half=half, adversary=adversary)
    if cfg.data.sampling == "outlet_balanced":
        from .baseline import outlet_weights

        r.draw_weights = outlet_weights(pd.Series([a.outlet_or_source for a in train_ex]), cfg.data.outlet_power)
    if ckpt is not None:
        load_checkpoint(r, ckpt)
    else:
        r.best_weights = _trainable_state(model)
        if cfg.wise_alphas:
            r.init_weights = r.best_weights
    for rec in (probe, adversary_rec):
        if rec is not None and ckpt is None:
            r.state.history.append(rec)
    if d.main:
        r.out_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(r.out_dir / TRAIN_LOG, r.state.history)
    return r


def train_step(r: Recipe, group: Sequence[Sequence[int]]) -> dict[str, Any]:
    """One optimizer step over ``group`` (grad_accum micro-batches); returns its loss, lr and grad norm."""
    collate = LabelOnlyCollator(r.tok.pad_token_id)
    loss_sum = 0.0
    parts: dict[str, list[float]] = {}
    if r.adversary is not None:
        r.adversary.scale = r.cfg.outlet_adversary.weight * ramp(r.state.step / max(1, r.total_steps))
    # each micro-batch's loss is a (class-weighted) mean over its own rows; scaled by its share of the window's
    # weight, the step is the mean over the whole window, as one batch of all its rows would take it
    mass = [_weight_of(r, idx) for idx in group]
    total = sum(mass)
    for k, idx in enumerate(group):
        b = {kk: v.to(r.device) for kk, v in collate([r.train_feats[i] for i in idx]).items()}
        # DDP syncs gradients only on the last micro-batch of the accumulation group
        last = k == len(group) - 1 or r.d.world == 1
        with (r.runner.no_sync() if not last and hasattr(r.runner, "no_sync") else contextlib.nullcontext()):
            with r.amp():
                loss, _ = r.runner(**b)
            (loss * (mass[k] / total)).backward()
        loss_sum += float(loss.detach()) * mass[k] / total
        if r.adversary is not None:
            for k, v in _loss_module(r.runner).parts.items():
                parts.setdefault(k, []).append(v)
    # the norm is taken without clipping too: a non-finite gradient must stop the run before it reaches the weights
    params = [p for p in r.model.parameters() if p.requires_grad]
    gnorm = float(torch.nn.utils.clip_grad_norm_(params, r.cfg.optim.max_grad_norm or float("inf")))
    lr = r.scheduler.get_last_lr()[0]  # the rate this step is taken at: the scheduler moves on below
    stats = _across_ranks(r, {"loss": loss_sum, **{k: sum(v) / len(v) for k, v in parts.items()}})
    check_finite(r, stats["loss"], gnorm, lr)
    r.optimizer.step()
    r.scheduler.step()
    r.optimizer.zero_grad(set_to_none=True)
    out = {"loss": stats.pop("loss"), "lr": lr, "grad_norm": gnorm}
    if r.adversary is not None:
        out.update(stats, adversary_scale=r.adversary.scale)
    return out


def _across_ranks(r: Recipe, stats: dict[str, float]) -> dict[str, float]:
    """The step's logged figures averaged over the processes of a group (each saw its own share of the batch), so
    the log holds the whole batch's and every process stops alike on a non-finite loss."""
    if r.d.world == 1:
        return stats
    t = torch.tensor(list(stats.values()), dtype=torch.float64, device=r.device)
    dist.all_reduce(t)
    return dict(zip(stats, (t / r.d.world).tolist()))


def check_finite(r: Recipe, loss: float, gnorm: Optional[float], lr: float) -> None:
    """Stop before a non-finite loss or gradient reaches the weights (a diverged run would otherwise be saved as a
    model that answers NaN); the error says what to change."""
    if math.isfinite(loss) and (gnorm is None or math.isfinite(gnorm)):
        return
    fixes = [f"a lower train.optim.lr (now {lr:g})"]
    if not r.cfg.optim.max_grad_norm:
        fixes.append("train.optim.max_grad_norm=1.0")
    if r.half is not None:
        fixes.append("train.model.dtype=float32")
    raise NewsbiasError(f"training diverged at step {r.state.step + 1}: loss {loss:.4g}, gradient norm {gnorm}; no "
                        f"model was written — rerun with --overwrite and {' or '.join(fixes)}")


def _weight_of(r: Recipe, idx: Sequence[int]) -> float:
    """The rows' total weight in the loss: their class weights' sum, or their number without class weights."""
    weights = _loss_module(r.runner).class_weights
    if weights is None:
        return float(len(idx))
    per_class = weights.tolist()  # one copy off the device per micro-batch, not one per row
    return float(sum(per_class[r.train_feats[i]["class_id"]] for i in idx))


def _loss_module(runner: torch.nn.Module) -> LabelLossModule:
    return runner.module if isinstance(runner, torch.nn.parallel.DistributedDataParallel) else runner


def validate(r: Recipe) -> bool:
    """Score val, keep the best weights; True when early stopping says stop."""
    st, ev = r.state, r.cfg.eval
    with r.amp():
        m, r.last_val_scores = evaluate(r.classifier, r.val_feats, ev.batch_size, r.d)
    r.log({"type": "eval", "step": st.step, "epoch": round(st.epoch + st.batch / max(1, r.n_batches), 4), **m})
    if r.show and r.bar is not None:
        r.bar.write(f"step {st.step}: val_loss {m['val_loss']:.4f} val_macro_f1 {m['val_macro_f1']:.4f}")
    if _better(ev.metric, m[ev.metric], st.best):
        st.best, st.best_step, st.best_metrics, st.bad_evals = m[ev.metric], st.step, m, 0
        r.best_weights, r.best_val_scores = _trainable_state(r.model), r.last_val_scores
    else:
        st.bad_evals += 1
    return bool(ev.patience and st.bad_evals >= ev.patience)


def keep_last(r: Recipe) -> None:
    """``eval.keep: last``: the last step's weights and evaluation become the kept ones (it always evaluates)."""
    st = r.state
    last = next(rec for rec in reversed(st.history) if rec["type"] == "eval")
    st.best, st.best_step = last[r.cfg.eval.metric], last["step"]
    st.best_metrics = {k: v for k, v in last.items() if k.startswith("val_")}
    r.best_weights = _trainable_state(r.model)
    r.best_val_scores = r.last_val_scores  # validate logs every eval record: the last one's scores, if ours


def interpolate_weights(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], alpha: float
                        ) -> dict[str, torch.Tensor]:
    """WiSE-FT's weights ``start + alpha * (end - start)``.

    LoRA's A matrices stay at ``end``: B starts at zero, so the adapter's update B·A is then
    exactly ``alpha`` times the trained one (interpolating A too would scale it by about alpha²).
    """
    return {n: t if ".lora_A." in n else torch.lerp(start[n], t, alpha) for n, t in end.items()}


def select_wise(r: Recipe) -> None:
    """Score val on the line from the starting to the last weights (``train.wise_alphas``); keep the best of all.

    The line ends at the last weights, as in WiSE-FT, not at the best checkpoint: when val kept the
    starting point (step 0 of a probed head), a line ending there would have no length.
    """
    st, ev = r.state, r.cfg.eval
    tuned, alpha = _trainable_state(r.model), None
    for a in r.cfg.wise_alphas:
        weights = interpolate_weights(r.init_weights, tuned, a)
        _load_trainable_state(r.model, weights)
        with r.amp():
            m, scores = evaluate(r.classifier, r.val_feats, ev.batch_size, r.d)
        r.log({"type": "wise", "step": st.step, "alpha": a, **m})
        if r.show and r.bar is not None:
            r.bar.write(f"wise alpha {a}: val_loss {m['val_loss']:.4f} val_macro_f1 {m['val_macro_f1']:.4f}")
        if _better(ev.metric, m[ev.metric], st.best):
            st.best, st.best_metrics, st.best_step, r.best_weights, alpha = m[ev.metric], m, st.step, weights, a
            r.best_val_scores = scores
    # null: val kept a checkpoint of the run itself (step best_step), none of the points in between
    st.best_metrics = {**st.best_metrics, "wise_alpha": alpha}


def calibrate(r: Recipe) -> None:
    """``train.calibrate: temperature``: fit the temperature of the kept weights on val (their label
    scores, as scoring reads them), for :func:`finish` to write into ``newsbias.json``."""
    _load_trainable_state(r.model, r.best_weights)
    logits = r.best_val_scores
    if logits is None:  # a resumed run: checkpoints do not keep the val scores of the kept weights
        with r.amp():
            logits = evaluate(r.classifier, r.val_feats, r.cfg.eval.batch_size, r.d)[1]
    if len(r.val_feats) < FEW_FOR_TEMPERATURE:
        log.warning("the temperature is fitted on %d val articles: so few give a noisy one, which can make the "
                    "probabilities worse on other articles (a few hundred give a stable one)", len(r.val_feats))
    r.calibration = fit_temperature(logits, np.array([f["class_id"] for f in r.val_feats]))
    r.log({"type": "calibration", "step": r.state.best_step, **r.calibration})
    c = r.calibration
    if r.show and r.bar is not None and c["method"] == "temperature":
        r.bar.write(f"temperature {c['temperature']:.3f}: val log-loss {c['nll']:.4f} -> {c['nll_calibrated']:.4f}, "
                    f"ECE {c['ece']:.4f} -> {c['ece_calibrated']:.4f}")


def _optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = opt.state_dict()
    tensors = {f"{pid}.{k}": v.detach().cpu().contiguous() for pid, s in sd["state"].items() for k, v in s.items()}
    return tensors, sd["param_groups"]


def _optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = t
    opt.load_state_dict({"state": state, "param_groups": groups})


def save_weights(model: torch.nn.Module, out: Path) -> None:
    """``save_pretrained``, without the empty model-card template peft writes (``newsbias export`` writes the card)."""
    model.save_pretrained(str(out))
    honour_umask(out)
    card = out / "README.md"
    if card.is_file() and "[More Information Needed]" in card.read_text(encoding="utf-8", errors="replace"):
        card.unlink()


def save_checkpoint(r: Recipe) -> None:
    """Write ``checkpoints/checkpoint-N/`` (safetensors + JSON, no pickle); keep the newest ``checkpoint.keep``.

    With LoRA the directory is also a peft adapter (``adapter_config.json``, ``adapter_model.safetensors``).
    """
    from safetensors.torch import save_file

    rng: Any = _rng_state()
    if r.d.world > 1:
        rng = [None] * r.d.world
        dist.all_gather_object(rng, _rng_state())
    if r.d.main:
        root = r.out_dir / CHECKPOINTS
        final, tmp = root / f"checkpoint-{r.state.step}", root / f".checkpoint-{r.state.step}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(_trainable_state(r.model), str(tmp / "trainable.safetensors"))
        save_file(r.best_weights, str(tmp / "best.safetensors"))
        if r.init_weights:
            save_file(r.init_weights, str(tmp / "init.safetensors"))
        if r.adversary is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in r.adversary.state_dict().items()},
                      str(tmp / ADVERSARY_FILE))
        opt_tensors, groups = _optimizer_to_files(r.optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        if r.cfg.finetune == "lora":
            save_weights(r.model, tmp)
        honour_umask(tmp)
        write_json(tmp / "trainer_state.json", {
            "fingerprint": run_fingerprint(r.identity), "run": r.identity, "state": asdict(r.state), "optimizer_param_groups": groups,
            "scheduler": r.scheduler.state_dict(), "rng": rng})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in _checkpoints(r.out_dir)[:-r.cfg.checkpoint.keep]:
            shutil.rmtree(old, ignore_errors=True)
    r.d.barrier()


def load_checkpoint(r: Recipe, ckpt: Path) -> None:
    """Restore weights, optimizer, scheduler, loop state and this rank's RNG from ``ckpt``."""
    from safetensors.torch import load_file

    meta = read_json(ckpt / "trainer_state.json")
    _load_trainable_state(r.model, load_file(str(ckpt / "trainable.safetensors")))
    _optimizer_from_files(r.optimizer, load_file(str(ckpt / "optimizer.safetensors")), meta["optimizer_param_groups"])
    r.scheduler.load_state_dict(meta["scheduler"])
    r.state = TrainState(**meta["state"])
    r.best_weights = load_file(str(ckpt / "best.safetensors"))
    if r.cfg.wise_alphas:  # the fingerprint covers wise_alphas, so this run's checkpoints wrote it
        r.init_weights = load_file(str(ckpt / "init.safetensors"))
    if r.adversary is not None:  # the fingerprint covers outlet_adversary too
        r.adversary.load_state_dict(load_file(str(ckpt / ADVERSARY_FILE), device=str(r.device)))
    rng = meta["rng"]
    _set_rng_state(rng[r.d.rank] if isinstance(rng, list) else rng)
    r.resumed_from = ckpt
    if r.d.main:
        log.info("resumed from %s (step %d)", ckpt, r.state.step)


def run_epoch(r: Recipe, interrupt_after: Optional[int] = None) -> bool:
    """Train through the rest of the current epoch (validating and checkpointing on schedule); True = stop."""
    st, o = r.state, r.cfg.optim
    eval_every = r.cfg.eval.every_steps or max(1, math.ceil(r.n_batches / o.grad_accum))
    ckpt_every = r.cfg.checkpoint.every_steps or eval_every
    mine = epoch_batches(r.lengths, o.batch_size, r.cfg.seed, st.epoch, o.group_by_length, r.d.world,
                         r.draw_weights)[r.d.rank::r.d.world]
    stop = False
    while st.batch < len(mine) and not stop:
        group = mine[st.batch:st.batch + o.grad_accum]
        out = train_step(r, group)
        st.batch += len(group)
        st.step += 1
        rec = {"type": "train", "step": st.step, "epoch": round(st.epoch + st.batch / len(mine), 4), **out}
        r.log(rec)
        r.bar.update(1)
        r.bar.set_postfix(loss=f"{rec['loss']:.4f}")
        stop = st.step >= r.total_steps
        end_of_epoch = st.batch >= len(mine)
        if st.step % eval_every == 0 or stop or (r.cfg.eval.every_steps is None and end_of_epoch):
            if validate(r) and not stop:  # patience ran out before the planned last step
                st.stopped_early = stop = True
        if end_of_epoch:
            st.epoch, st.batch = st.epoch + 1, 0
        if st.step % ckpt_every == 0 or stop:
            save_checkpoint(r)
        if interrupt_after is not None and st.step >= interrupt_after:
            raise KeyboardInterrupt(f"interrupted after step {st.step} (test hook)")
        if end_of_epoch:
            break
    return stop


def model_settings(r: Recipe, best_val: Optional[dict[str, Any]] = None) -> ModelSettings:
    """What ``newsbias.json`` records about the model being trained (validation scores with the same)."""
    cfg, prep = r.cfg, r.hashes.get("prep_meta") or {}
    return ModelSettings(head=cfg.model.head, base_model=r.source, prompt=r.builder.settings,
                         pooling=cfg.model.pooling, labels=LABELS, label_token_ids=list(r.builder.label_token_ids),
                         uses_chat_template=r.builder.uses_chat_template, best_val=best_val or {},
                         calibration=dict(r.calibration),
                         prepend_title=bool(prep.get("prepend_title", False)), text_cleaning=text_cleaning(prep),
                         extra={"finetune": cfg.finetune})


def text_cleaning(prep_meta: dict[str, Any]) -> str:
    """How the training texts were cleaned, from :func:`data_hashes`' record of their prep (none without one)."""
    if "outputs" not in prep_meta:
        return "none"
    return "prep" if prep_meta.get("fix_text", True) else "prep-without-repair"


def finish(r: Recipe, t_start: float) -> dict[str, Any]:
    """Load the best weights and write the adapter, tokenizer, ``newsbias.json`` and the manifest."""
    st, cfg = r.state, r.cfg
    _load_trainable_state(r.model, r.best_weights)
    n_train, _ = count_parameters(r.model)
    summary = {"out_dir": str(r.out_dir), "steps": st.step, "total_steps": r.total_steps,
               "stopped_early": st.stopped_early, "best_step": st.best_step, "best_val": st.best_metrics,
               "calibration": r.calibration or None, "trainable_params": n_train, "world_size": r.d.world,
               "train_articles": len(r.train_feats), "val_articles": len(r.val_feats)}
    if r.d.main:
        settings = model_settings(r, best_val={"metric": cfg.eval.metric, "step": st.best_step, **st.best_metrics})
        save_weights(r.model, r.out_dir)
        r.tok.save_pretrained(str(r.out_dir))
        settings.save(r.out_dir)
        manifest = stage_manifest("train", cfg, t_start, data=r.hashes, summary=summary, device=str(r.device),
                                  dtype=str(r.half or next(r.model.parameters()).dtype),
                                  resumed_from=str(r.resumed_from) if r.resumed_from else None)
        write_json(r.out_dir / TRAIN_MANIFEST, manifest)
        (r.out_dir / OWNER_FILE).unlink(missing_ok=True)  # the run is done: its directory is free
    r.d.close()
    return summary


def _to_tensorboard(writer: Any, rec: dict[str, Any]) -> None:
    for k, v in rec.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "type"):
            writer.add_scalar(f"{rec['type']}/{k}", v, rec["step"])


def open_trackers(cfg: TrainConfig) -> tuple[list[Any], list[Any]]:
    """(log functions, closers) for ``train.report_to``: TensorBoard under ``out_dir/runs``, Weights & Biases."""
    log_fns: list[Any] = []
    closers: list[Any] = []
    for name in cfg.report_to:
        try:
            if name == "tensorboard":
                from torch.utils.tensorboard import SummaryWriter

                writer = SummaryWriter(log_dir=str(Path(cfg.out_dir) / "runs"))
                log_fns.append(lambda rec, w=writer: _to_tensorboard(w, rec))
                closers.append(writer.close)
            else:
                import wandb

                run = wandb.init(project="newsbias", dir=cfg.out_dir, config=dump_config(cfg))
                log_fns.append(lambda rec, r=run: r.log({f"{rec['type']}/{k}": v for k, v in rec.items()
                                                         if k != "type"}, step=rec["step"]))
                closers.append(run.finish)
        except ImportError:
            raise NewsbiasError(f"train.report_to={name} needs the {name} package: pip install 'newsbias[{name}]'") from None
    return log_fns, closers


@keeps_threads
def train(cfg: TrainConfig, resume: bool = False, progress: Optional[bool] = None,
          _interrupt_after_step: Optional[int] = None) -> dict[str, Any]:
    """Run LoRA training as configured; returns a summary (out_dir, steps, best val metrics).

    ``resume``: continue from the latest checkpoint in ``cfg.out_dir/checkpoints``.
    ``_interrupt_after_step`` (tests): raise KeyboardInterrupt after that optimizer step, as a crash would.
    """
    from tqdm.auto import tqdm

    t_start = time.time()
    r = setup(cfg, resume, progress)
    closers: list[Any] = []
    if r.d.main:
        r.trackers, closers = open_trackers(cfg)
    r.bar = tqdm(total=r.total_steps, initial=r.state.step, disable=not r.show, desc="train", unit="step",
                 dynamic_ncols=True)
    r.runner.train()
    stop = r.state.stopped_early or r.state.step >= r.total_steps
    try:
        if cfg.head_init == "probe" and r.state.step == 0 and r.state.best is None:
            validate(r)  # the probed head before any step: kept if fine-tuning never beats it on val
        while not stop:
            stop = run_epoch(r, _interrupt_after_step)
        if r.state.best is None:
            validate(r)
        if cfg.eval.keep == "last":
            keep_last(r)
        if cfg.wise_alphas:
            select_wise(r)
        if cfg.calibrate == "temperature":
            calibrate(r)
    finally:
        r.bar.close()
        for close in closers:
            close()
    return finish(r, t_start)


__all__ = ["train", "setup", "train_step", "validate", "keep_last", "select_wise", "interpolate_weights", "calibrate",
           "save_checkpoint", "load_checkpoint", "run_epoch", "finish", "Recipe", "TrainState", "Example",
           "load_training_data", "resolve_data_paths",
           "encode_examples", "LabelOnlyCollator", "epoch_batches", "evaluate", "balanced_class_weights",
           "latest_checkpoint", "pick_instruction"]
