"""The one model object: :class:`Classifier` loads any model source and labels articles.

``Classifier.load(source)`` takes

* a ``newsbias train`` output with a LoRA adapter (``adapter_config.json`` + ``newsbias.json``):
  base + adapter, scored exactly as trained;
* a directory with ``newsbias.json`` and its own weights (``newsbias export --merge``, or a
  ``train.finetune: full`` run): scored as trained;
* a directory with ``newsbias.json`` and ``model.onnx`` (``newsbias export --format onnx``):
  scored by ONNX Runtime on the CPU (:mod:`newsbias.onnx_model`), same records;
* anything else — a hub id, a transformers directory, a ``.gguf`` file — as a base model used
  zero-shot with the given head and prompt settings.

``predict``, ``serve``, ``export`` and training's validation all go through it; scoring is one
forward pass per article (:func:`newsbias.modeling.score_batch`).
"""

from __future__ import annotations

import functools
import logging
import operator
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from .data.clean import clean_text
from .errors import NewsbiasError, SettingError
from .io import honour_umask, sha256_file
from .labels import LABELS, parse_generation
from .metrics import fit_temperature
from .modeling import (SETTINGS_FILE, ModelSettings, Pooling, is_gguf, iter_logits, join_gguf,
                       load_adapter, load_model_and_tokenizer, looks_local, load_tokenizer, model_device, pad_batch, prefix_cache,
                       prompt_builder, resolve_device_dtype, score_batch, score_encoded, shared_prefix_len)
from .config import INT8_KEEP_FP32, MAX_WINDOWS, PromptConfig
from .onnx_model import ONNX_FILE, OnnxScorer
from .records import CHECKPOINTS, TRAIN_LOG, has_words, join_title, scored

log = logging.getLogger(__name__)


def require_texts(texts: Any) -> list[str]:
    """``texts`` as a list of non-empty strings (a generator is read once), or a one-line error naming the first
    item that is not one."""
    if isinstance(texts, (str, bytes)):
        raise NewsbiasError("pass a list of texts, not one string (a string would be scored character by character)")
    try:
        texts = list(texts)
    except TypeError:
        raise NewsbiasError(f"pass a list of texts, not {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise NewsbiasError(f"text {i} is not a string ({type(t).__name__})")
        if not has_words(t):
            raise NewsbiasError(f"text {i} is empty" if not t.strip() else f"text {i} has no letter or digit to read")
    return texts


def require_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int (numpy integers too), or a one-line error."""
    return _whole("batch_size", batch_size, 1)


def require_windows(windows: Any, pool: Any) -> int:
    """``windows`` (1 to :data:`~newsbias.config.MAX_WINDOWS`) as an int and ``pool`` one of mean / max, or a
    one-line error: the limits ``predict.windows`` and ``predict.pool`` have in a config."""
    if pool not in ("mean", "max"):
        raise NewsbiasError(f"pool must be 'mean' or 'max', got {pool!r}")
    n = _whole("windows", windows, 1)
    if n > MAX_WINDOWS:
        raise NewsbiasError(f"windows must be at most {MAX_WINDOWS}, got {n}")
    return n


def _whole(name: str, value: Any, least: int) -> int:
    try:
        n = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        n = None
    if n is None or n < least:
        raise NewsbiasError(f"{name} must be a whole number of at least {least}, got {value!r}")
    return int(n)


def weights_sha256(model_dir: str | Path) -> Optional[str]:
    """The sha256 of a model directory's trained weights (an adapter's, a trained directory's or an ONNX graph's);
    None for anything else (a hub id, a GGUF file): what tells two copies of one model from two models."""
    where = Path(model_dir)
    weights = next((where / name for name in ("adapter_model.safetensors", "model.safetensors", ONNX_FILE)
                    if (where / name).is_file()), None) if where.is_dir() else None
    return sha256_file(weights) if weights else None


def _resolved(where: Optional[str]) -> Optional[str]:
    """A local path made absolute (symlinks and ``..`` resolved); a hub id, or nothing, as it is."""
    if not where:
        return where
    path = Path(where).expanduser()
    return str(path.resolve()) if path.exists() else where


class Classifier:
    """A loaded model with the settings it was trained with: ``predict``, ``predict_proba``, ``generate``, ``save``."""

    def __init__(self, model: torch.nn.Module | OnnxScorer, tokenizer: Any, settings: ModelSettings, source: str = "",
                 adapter: Optional[str] = None, eval_mode: bool = True):
        """``eval_mode=False`` leaves a model being trained in its mode (scoring switches it per call)."""
        self.model = model.eval() if eval_mode and isinstance(model, torch.nn.Module) else model
        self.tokenizer = tokenizer
        self.settings = settings
        self.source = source
        self.adapter = adapter
        self.builder = prompt_builder(tokenizer, settings)  # fails early on bad verbalizers / max_length

    @classmethod
    def load(cls, source: str, base_model: Optional[str] = None, head: str = "lm", pooling: Pooling = "cls",
             prompt: Optional[PromptConfig] = None, device: str = "auto", dtype: str = "auto") -> "Classifier":
        """Load ``source`` (see the module docstring).

        ``base_model`` replaces the base recorded with an adapter (same architecture, other
        location); ``head``, ``pooling`` and ``prompt`` only apply to a base model used zero-shot.
        """
        if not isinstance(source, (str, Path)) or not str(source):
            raise NewsbiasError(f"pass a model to load (a path, a hub id or a .gguf file), not {source!r}")
        if head not in ("lm", "cls") or pooling not in ("cls", "mean"):
            raise NewsbiasError(f"head must be 'lm' or 'cls' and pooling 'cls' or 'mean', got head={head!r}, "
                                f"pooling={pooling!r}")
        source = str(source)
        p = Path(source).expanduser()
        if p.is_file() and not is_gguf(source):
            raise NewsbiasError(f"{source} is a file, not a model: pass a model directory, a hub id or a .gguf file")
        if p.is_dir():
            _refuse_unfinished_training(p)
        if p.is_dir() and (p / "adapter_config.json").is_file():
            return cls._load_adapter(p, base_model, device, dtype)
        if base_model:
            raise NewsbiasError(f"{source} is not an adapter directory, so there is no base model to replace; "
                                f"drop the base model (base_model=, --model) or load a `newsbias train` output")
        if p.is_dir() and (p / SETTINGS_FILE).is_file() and (p / ONNX_FILE).is_file():
            _onnx_runs_on_cpu(device, dtype)
            return cls(OnnxScorer(p / ONNX_FILE), load_tokenizer(str(p)), _checked_settings(p), source=str(p))
        if p.is_dir() and (p / SETTINGS_FILE).is_file():
            settings = _checked_settings(p)
            try:
                model, tok = load_model_and_tokenizer(str(p), head=settings.head, device=device, dtype=dtype,
                                                      pooling=settings.pooling)
            except (NewsbiasError, MemoryError, ImportError, torch.cuda.OutOfMemoryError):
                raise
            except Exception as exc:  # truncated or corrupt weights: safetensors / torch raise many types
                raise _damaged(p, exc) from None
            return cls(model, tok, settings, source=str(p))
        if p.is_dir() and any(p.glob("adapter_model.*")):
            raise NewsbiasError(f"{p} holds adapter weights but no adapter_config.json; it is not a complete adapter")
        settings = ModelSettings(head=head, base_model=source,  # type: ignore[arg-type]
                                 prompt=(prompt or PromptConfig()).with_instruction(), pooling=pooling)
        # an encoder has no zero-shot answer: its untrained head is seeded so the reference is reproducible,
        # in a forked generator so the caller's random stream is left as it was
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
            torch.manual_seed(0)
            model, tok = load_model_and_tokenizer(source, head=head, device=device, dtype=dtype,  # type: ignore[arg-type]
                                                  pooling=pooling)
        return cls(model, tok, settings, source=source)

    @classmethod
    def from_options(cls, model: Optional[str] = None, adapter: Optional[str] = None, gguf_file: Optional[str] = None,
                     **kwargs: Any) -> "Classifier":
        """Load what a stage's ``model`` / ``adapter`` / ``gguf_file`` options name (``predict``, ``serve``).

        ``adapter`` (a training output) with ``model`` as an optional replacement base, or
        ``model`` alone; a full fine-tune's output (or an export) is accepted as the adapter too,
        since it is what ``newsbias train`` wrote. Other keyword arguments go to :meth:`load`.
        """
        if adapter:
            a = Path(adapter)
            if not a.is_dir():
                raise NewsbiasError(f"adapter not found: {a}; pass a `newsbias train` output directory")
            _refuse_unfinished_training(a)
            if not (a / "adapter_config.json").is_file():
                if (a / SETTINGS_FILE).is_file() and not model:  # a full fine-tune's out_dir, or an export
                    return cls.load(str(a), **kwargs)
                if (a / SETTINGS_FILE).is_file():
                    raise NewsbiasError(f"{a} is a trained model (a full fine-tune or an export), not an adapter: "
                                        f"it has no base model to replace; drop the base model (--model)")
                raise NewsbiasError(f"{a} is not an adapter directory (no adapter_config.json); pass a "
                                    f"`newsbias train` output as the adapter, or a trained model directory as the model")
        elif not model:
            raise SettingError("model", "is not set: pass --model (a base model or a trained model directory) "
                                        "and/or --adapter (a `newsbias train` output)")
        source = join_gguf(model, gguf_file) if model else None
        return cls.load(adapter or source, base_model=source if adapter else None, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def _load_adapter(cls, adir: Path, base_model: Optional[str], device: str, dtype: str) -> "Classifier":
        settings = _checked_settings(adir)
        base = base_model or settings.base_model
        if base_model and settings.base_model and _model_name(base_model) != _model_name(settings.base_model):
            raise NewsbiasError(f"the adapter was trained on {settings.base_model!r}, not {base_model!r}; "
                                f"drop the base model (base_model=, --model) to use the adapter's own")
        recorded = settings.base_model
        if not base_model and recorded and looks_local(recorded) and not Path(recorded).expanduser().exists():
            raise NewsbiasError(f"the base model this adapter was trained on, {settings.base_model} (recorded in "
                                f"{adir / SETTINGS_FILE}), is not on this machine; pass the same model where it is now "
                                f"(--model PATH on the command line, base_model= in Python)")
        dev, dt = resolve_device_dtype(device, dtype)
        # the LoRA weights are folded in before any cast to bf16/fp16: one rounding of the merged
        # weights, and no extra matmuls per adapted layer (the demo's LM in bf16: 2.55x fp32 merged
        # first, 1.45x unmerged); so a half-precision base is read as fp32 on CPU, then moved
        half = dt != torch.float32
        model, _ = load_model_and_tokenizer(base, head=settings.head, device="cpu" if half else device,
                                            dtype="float32" if half else dtype, pooling=settings.pooling)
        tok = load_tokenizer(str(adir))
        if settings.head == "cls" and hasattr(model.config, "pad_token_id"):
            model.config.pad_token_id = tok.pad_token_id
        try:
            model = load_adapter(model, adir)
        except (NewsbiasError, MemoryError, ImportError, torch.cuda.OutOfMemoryError):
            raise
        except Exception as exc:  # truncated or corrupt weights: safetensors / peft raise many types
            raise _damaged(adir, exc, "adapter weights") from None
        model = model.merge_and_unload()
        if half:
            model = model.to(device=dev, dtype=dt)
        return cls(model, tok, settings, source=base, adapter=str(adir))

    def __repr__(self) -> str:
        where = f"adapter={self.adapter!r}, base={self.source!r}" if self.adapter else f"source={self.source!r}"
        return (f"Classifier({where}, head={self.settings.head!r}, labels={self.labels}, device={str(self.device)!r}, "
                f"dtype={self.precision!r})")

    @property
    def labels(self) -> list[str]:
        return list(self.settings.labels)

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def precision(self) -> str:
        """What the weights compute in: ``float32``, ``bfloat16`` ... (PyTorch), or ``onnx`` (ONNX Runtime graph)."""
        if isinstance(self.model, torch.nn.Module):
            return str(next(self.model.parameters()).dtype).removeprefix("torch.")
        return "onnx"

    def identity(self) -> dict[str, Any]:
        """What decides this model's scores, for a resumed run to compare: where it was loaded from (a local path
        resolved, so two spellings of one directory are one model), the sha256 of its trained weights (an adapter's,
        a trained directory's or an ONNX graph's; None for a hub base) and, under an adapter, of a local base
        directory's (same path, other weights: other scores), its settings and precision."""
        trained, base = self._weight_hashes
        return {"model": _resolved(self.source), "adapter": _resolved(self.adapter), "weights_sha256": trained,
                "base_weights_sha256": base, "settings": self.settings.to_dict(), "dtype": self.precision}

    @functools.cached_property
    def _weight_hashes(self) -> tuple[Optional[str], Optional[str]]:
        # hashed once per loaded model: a base can be gigabytes, and a run asks for its identity more than once
        return (weights_sha256(self.adapter or self.source),
                weights_sha256(self.source) if self.adapter else None)

    def predict_proba(self, texts: Sequence[str], batch_size: int = 8, windows: int = 1,
                      pool: str = "mean", length_sorted: bool = True) -> np.ndarray:
        """Label probabilities ``[len(texts), n_labels]``, columns in :attr:`labels` order.

        ``windows > 1`` scores up to that many stretches of each article longer than the prompt
        budget (head, tail, evenly spaced between) and pools them: ``mean`` of the probabilities,
        or ``max`` (the most confident window's). Batches group prompts of similar length
        (``length_sorted=False``: input order); rows are always returned in input order.
        """
        texts = self.cleaned(require_texts(texts))
        batch_size, windows = require_batch_size(batch_size), require_windows(windows, pool)
        if windows == 1:
            return score_batch(self.model, self.tokenizer, self.settings, texts, batch_size, builder=self.builder,
                               length_sorted=length_sorted)
        groups = [self.builder.encode_windows(t, windows) for t in texts]
        probs = self.score_encoded([e for g in groups for e in g], batch_size, length_sorted)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        start = 0
        for k, g in enumerate(groups):
            p = probs[start:start + len(g)]
            start += len(g)
            out[k] = p.mean(0) if pool == "mean" else p[p.max(1).argmax()]
        return out

    def predict(self, texts: Sequence[str], batch_size: int = 8, windows: int = 1, pool: str = "mean") -> list[str]:
        """The label of each text (the most probable in :meth:`predict_proba`; ties go to the first label)."""
        probs = self.predict_proba(texts, batch_size, windows, pool)
        return [self.labels[i] for i in probs.argmax(axis=1)]

    def score_encoded(self, encs: Sequence[Any], batch_size: int = 8, length_sorted: bool = True) -> np.ndarray:
        """Label probabilities for prompts already encoded by :attr:`builder` (e.g. with words left out)."""
        return score_encoded(self.model, self.tokenizer, self.settings, encs, batch_size, self.builder, length_sorted)

    def iter_logits(self, encs: Sequence[Any], batch_size: int = 8, full_vocab: bool = False,
                    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """``(indices, logits)`` batch by batch for prompts encoded by :attr:`builder`: the raw scores
        behind :meth:`predict_proba`. ``full_vocab`` (``head: lm``): the whole vocabulary at the answer
        position, which training's validation loss reads (:func:`newsbias.modeling.iter_logits`)."""
        if full_vocab and isinstance(self.model, OnnxScorer):
            raise NewsbiasError(f"{self.source} is an ONNX export of the label rows only; it has no full-vocabulary "
                                f"logits")
        return iter_logits(self.model, self.settings.head, encs, batch_size, self.tokenizer.pad_token_id,
                           self.builder.label_token_ids, full_vocab=full_vocab)

    def label_logits(self, encs: Sequence[Any], batch_size: int = 8) -> np.ndarray:
        """The raw label scores ``[len(encs), n_labels]`` of encoded prompts, in input order: what
        :meth:`predict_proba` divides by the temperature before its softmax."""
        out = np.zeros((len(encs), len(self.labels)), dtype=np.float64)
        for idx, logits in self.iter_logits(encs, batch_size):
            out[idx] = logits.float().cpu().numpy()
        return out

    def calibrate(self, texts: Sequence[str], labels: Sequence[str], batch_size: int = 8) -> dict[str, Any]:
        """Fit the temperature on labelled held-out ``texts`` (:func:`newsbias.metrics.fit_temperature`)
        and score with it from now on (``settings.calibration``; :meth:`save` writes it). Returns the fit."""
        texts, labels = require_texts(texts), list(labels)
        if len(texts) != len(labels):
            raise NewsbiasError(f"calibration needs one label per text: got {len(texts)} texts and {len(labels)} labels")
        unknown = sorted(set(labels) - set(self.labels))
        if unknown:
            raise NewsbiasError(f"calibration labels {unknown} are not this model's labels {self.labels}")
        logits = self.label_logits([self.builder.encode(t) for t in self.cleaned(texts)], require_batch_size(batch_size))
        fit = fit_temperature(logits, [self.labels.index(l) for l in labels])
        self.settings.calibration = fit
        return fit

    @torch.no_grad()
    def generate(self, texts: Sequence[str], max_new_tokens: int = 6, batch_size: int = 8,
                 share_prefix: bool = True) -> list[str]:
        """Greedy continuations of each prompt (new tokens only, special tokens kept): the lm head only.

        ``share_prefix``: a batch's common leading tokens (the system message and instruction, when
        :data:`~newsbias.modeling.SHARED_PREFIX_MIN` or more) run once, as in scoring; each row's padding then
        sits between that prefix and its own tokens, and positions follow the attention mask, so every row
        is computed as if alone."""
        texts = require_texts(texts)
        require_batch_size(batch_size)
        if self.settings.head != "lm":
            raise NewsbiasError("generation needs a causal LM (head: lm); this model has a cls head — use mode=score")
        if isinstance(self.model, OnnxScorer):
            raise NewsbiasError(f"{self.source} is an ONNX export, which scores labels only; use mode=score, or "
                                f"generate with the training output (--adapter)")
        tok = self.tokenizer
        encs = [self.builder.encode(t) for t in self.cleaned(texts)]
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        order = sorted(range(len(encs)), key=lambda i: -len(encs[i].input_ids))
        out = [""] * len(texts)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            ids, mask, kw = self._generation_batch([encs[i].input_ids[: encs[i].answer_pos + 1] for i in idx],
                                                   pad_id, share_prefix)
            gen = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      do_sample=False, pad_token_id=pad_id, **kw)
            for r, i in enumerate(idx):
                out[i] = tok.decode(gen[r, ids.shape[1]:].tolist(), skip_special_tokens=False)
        return out

    def _generation_batch(self, prompts: list[list[int]], pad_id: int, share_prefix: bool
                          ) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        """``(input_ids, attention_mask, generate's cache argument)`` for prompts that must all end at the last
        column: padding goes before each row's own tokens — after their shared prefix, whose cache is built here."""
        width = max(len(p) for p in prompts)
        lead = 0
        if share_prefix:
            right = pad_batch(prompts, pad_id)  # every row's last token is read: each keeps at least that one
            last = torch.tensor([len(p) - 1 for p in prompts])
            lead = shared_prefix_len(right["input_ids"], right["attention_mask"], last)
        ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, :lead], ids[r, lead + width - len(p):] = torch.tensor(p[:lead]), torch.tensor(p[lead:])
            mask[r, :lead], mask[r, lead + width - len(p):] = 1, 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        return ids, mask, prefix_cache(self.model, ids[:1, :lead], len(prompts)) if lead else {}

    def classify(self, texts: Sequence[str], mode: str = "score", batch_size: int = 8,
                 max_new_tokens: int = 6, windows: int = 1, pool: str = "mean") -> list[dict[str, Any]]:
        """``{"pred", "probs", "valid", "raw"?}`` per text: the record core that predict and serve share."""
        if mode not in ("score", "generate"):
            raise NewsbiasError(f"mode must be 'score' or 'generate', got {mode!r}")
        labels = self.labels
        if mode == "score":
            probs = self.predict_proba(texts, batch_size, windows, pool)
            return [{**scored(labels, p), "valid": True} for p in probs]
        out = []
        for raw in self.generate(texts, max_new_tokens, batch_size):
            pred = parse_generation(raw, labels)
            out.append({"pred": pred, "probs": None, "valid": pred is not None, "raw": raw})
        return out

    def cleaned(self, texts: Sequence[str]) -> list[str]:
        """``texts`` cleaned as this model's training texts were (``settings.text_cleaning``): what every scoring
        call reads, so a raw article and its prep output score alike (prep's texts are left as they are)."""
        mode = self.settings.text_cleaning
        return list(texts) if mode == "none" else [clean_text(t, fix=mode == "prep") for t in texts]

    def article_text(self, title: Optional[str], text: str) -> str:
        """What this model scores for an article: ``title`` joined to ``text`` as its training texts were
        (``settings.prepend_title``, from the prep that made them), else ``text`` alone — in predict and serve
        alike; both cleaned first, as prep cleans them (:meth:`cleaned`)."""
        if not self.settings.prepend_title:
            return self.cleaned([text])[0]
        title = self.cleaned([title])[0] if isinstance(title, str) and title.strip() else None
        return join_title(title, self.cleaned([text])[0])

    def reading(self, texts: Sequence[str], windows: int = 1) -> list[dict[str, Any]]:
        """``{"tokens_read", "truncated"}`` per text: the article tokens the prompt keeps (with ``windows > 1``, those
        its windows cover together, as :meth:`predict_proba` reads them), and whether any were left unread."""
        b, texts = self.builder, self.cleaned(require_texts(texts))
        if require_windows(windows, "mean") == 1:
            fixed = len(b.lead_ids) + len(b.prefix_ids) + len(b.suffix_ids) + len(b.trail_ids)
            return [{"tokens_read": len(enc.input_ids) - fixed, "truncated": enc.truncated}
                    for enc in map(b.encode, texts)]
        out = []
        for text in texts:
            n = len(b.ids(text))
            read = reached = 0
            for start in b.window_starts(n, windows):  # windows may overlap: count each token once
                end = min(start + b.article_budget, n)
                read += max(0, end - max(start, reached))
                reached = max(reached, end)
            out.append({"tokens_read": read, "truncated": read < n})
        return out

    def save(self, out_dir: str | Path, extra: Optional[dict[str, Any]] = None, format: str = "safetensors",
             quantize: str = "none", keep_fp32: Sequence[str] = INT8_KEEP_FP32,
             check_texts: Optional[Sequence[str]] = None, smooth: Optional[float] = None,
             calibration_texts: Sequence[str] = (), overwrite: bool = False) -> ModelSettings:
        """A self-contained model directory (weights with any adapter merged in, tokenizer, ``newsbias.json``).

        It loads back with ``Classifier.load(out_dir)`` and scores as this object does. Weights are
        safetensors (also for a model read from a GGUF file), or with ``format="onnx"`` the scoring
        graph (:func:`newsbias.onnx_model.export_onnx`; ``quantize="int8"`` or ``"int8-block"``
        keeps the layers matched by ``keep_fp32`` in fp32), whose labels on ``check_texts`` are
        compared with this model's and recorded as ``onnx.check``. ``smooth`` (int8, int8-block) first
        migrates activation outliers into this model's weights, calibrated on ``calibration_texts``
        (:mod:`newsbias.smoothing`; the fp32 model computes the same function afterwards).
        ``out_dir`` must be new or empty (``overwrite=True``: write into it anyway), and never the directory
        this model was loaded from.
        """
        out = Path(out_dir).expanduser()
        if isinstance(self.model, OnnxScorer):
            raise NewsbiasError(f"{self.source} is an ONNX export, which cannot be saved again: copy its directory "
                                f"(settings.save(copy) writes a refitted temperature there) or export the training "
                                f"output")
        if format not in ("safetensors", "onnx") or (format == "safetensors" and quantize != "none"):
            raise NewsbiasError(f"cannot save format={format!r} quantize={quantize!r}: formats are safetensors and "
                                f"onnx, and only onnx is quantised")
        if any(p and Path(p).expanduser().resolve() == out.resolve() for p in (self.source, self.adapter)):
            raise NewsbiasError(f"{out} is the directory this model was loaded from; save it to another directory")
        if out.exists() and not out.is_dir():
            raise NewsbiasError(f"{out} is a file; save to a new or empty directory")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise NewsbiasError(f"{out} is not empty; save to a new or empty directory (or pass overwrite=True)")
        out.mkdir(parents=True, exist_ok=True)
        extra = dict(extra or {})
        if format == "onnx":
            from .onnx_model import export_onnx

            extra["onnx"] = export_onnx(self, out, quantize, keep_fp32, check_texts, smooth, calibration_texts)
        else:
            model = self.model.merge_and_unload() if hasattr(self.model, "merge_and_unload") else self.model
            model.save_pretrained(str(out), safe_serialization=True)
        self.tokenizer.save_pretrained(str(out))
        honour_umask(out)
        settings = ModelSettings.from_dict(self.settings.to_dict())
        settings.extra = {**settings.extra, **extra}
        settings.save(out)
        return settings


def _refuse_unfinished_training(d: Path) -> None:
    """A training run's directory without its ``newsbias.json`` is a run that has not finished (killed, or still
    running): its files are no model yet."""
    started = (d / TRAIN_LOG).is_file() or any(d.glob(f"{CHECKPOINTS}/checkpoint-*/trainer_state.json"))
    if started and not (d / SETTINGS_FILE).is_file():
        raise NewsbiasError(f"{d} holds a training run that has not finished (no {SETTINGS_FILE} yet); finish it with "
                            f"`newsbias train ... --resume` (the same command and --resume), or wait for it")


def _damaged(where: Path, exc: Exception, what: str = "model weights") -> NewsbiasError:
    first = str(exc).splitlines()[0][:160] if str(exc) else "unreadable"
    return NewsbiasError(f"cannot load the {what} in {where} ({type(exc).__name__}: {first}); the files are damaged "
                         f"or from another model: copy them again or retrain")


def _onnx_runs_on_cpu(device: str, dtype: str) -> None:
    """An ONNX export runs where and in what it was exported for; a request for anything else is refused, not
    ignored."""
    if device not in ("auto", "cpu"):
        raise SettingError("device", f"{device!r}: an ONNX export runs on the CPU (ONNX Runtime); use auto or cpu, or "
                                     f"score the training output on the GPU")
    if dtype not in ("auto", "float32"):
        raise SettingError("dtype", f"{dtype!r}: an ONNX export computes in the precision it was exported in; use "
                                    f"auto")


def _checked_settings(d: Path) -> ModelSettings:
    settings = ModelSettings.load(d)
    if tuple(settings.labels) != tuple(LABELS):
        raise NewsbiasError(f"{d} was trained for labels {list(settings.labels)}, this newsbias scores {list(LABELS)}; "
                            f"retrain it with this version (`newsbias train`)")
    return settings


def _model_name(source: str) -> str:
    """The comparable name of a model source: its directory's name, or a GGUF file's name without ``.gguf``."""
    p = Path(source)
    return p.name if not is_gguf(source) else p.stem


__all__ = ["Classifier"]
