"""Model loading, LoRA, and label scoring for both heads.

``head: lm`` scores a causal LM by the logits of the label tokens at the answer position; the
LM head is applied only to the hidden states of the positions that carry a loss (or the answer
position), never to a full ``[sequence x vocab]`` tensor. ``head: cls`` uses
``AutoModelForSequenceClassification`` (decoders and encoders alike) with the classifier trained
and saved through ``modules_to_save``.

Public entry points: :func:`resolve_device_dtype`, :func:`load_model_and_tokenizer` (hub id,
directory or ``.gguf`` file), :func:`add_lora`, :func:`load_adapter`, :func:`score_batch`. Loading a
model for inference is :meth:`newsbias.classifier.Classifier.load`.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import logging
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Optional, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator
from torch import nn

from .config import Head, Pooling, PromptConfig, format_validation_error
from .errors import NewsbiasError, SettingError
from .io import read_json, remove_dead_leftovers, usable_cpus, write_json
from .labels import LABELS
from .prompt import PromptBuilder

_Fn = TypeVar("_Fn", bound=Callable[..., Any])

log = logging.getLogger(__name__)

SETTINGS_FILE = "newsbias.json"
SETTINGS_FORMAT = 2  # 1: labels, verbalizers and uses_chat_template were also written inside "prompt"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX-512 BF16), from ``/proc/cpuinfo`` (False elsewhere)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def resolve_device_dtype(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """Resolve ``auto`` settings: bf16 on a GPU that supports it, else fp32 (always fp32 on CPU).

    On CPU ``auto`` is always fp32, whatever dtype the checkpoint was saved in: without bf16 units
    (AMX, AVX-512 BF16) bf16 matmuls run 50-100x slower than fp32, and with them bf16 scoring is
    faster (2.55x / 2.78x for the demo's LM / encoder) but changes the label of close calls (6.5 % /
    0.6 % of their test articles).
    """
    if device == "auto":
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            dev = torch.device("mps")
        else:
            dev = torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise SettingError("device", f"{device!r} is not a torch device; use auto, cpu, cuda or cuda:1") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SettingError("device", f"{device!r} asks for a CUDA GPU and this machine has none; use auto or cpu")
    if dtype == "auto":
        # bf16 units from compute capability 8 (Ampere) on; is_bf16_supported() also says yes to emulated bf16,
        # which is far slower than fp32, and asks about the current GPU rather than this one
        if dev.type == "cuda" and torch.cuda.get_device_capability(dev)[0] >= 8:
            dt = torch.bfloat16
        else:
            dt = torch.float32
    else:
        if dtype not in _DTYPES:
            raise SettingError("dtype", f"{dtype!r} is unknown; use auto, float32, bfloat16 or float16")
        dt = _DTYPES[dtype]
        if dev.type == "cpu" and dt != torch.float32 and not cpu_has_bf16_units():
            log.warning("dtype %s on a CPU without bf16 units (AMX, AVX-512 BF16) is much slower than float32", dtype)
    return dev, dt


def physical_cores() -> int:
    """Physical CPU cores this process may run on (hyper-threads share a core's matmul units)."""
    import psutil

    return max(1, min(psutil.cpu_count(logical=False) or os.cpu_count() or 1, usable_cpus()))


def set_threads(threads: Optional[int] = None) -> int:
    """Set torch's intra-op threads (process-wide) to ``threads``, and :func:`tune_cpu_allocator`; returns the count.

    The default is the user's ``OMP_NUM_THREADS`` for a single process (a machine shared on purpose), else
    :func:`physical_cores` shared out among the processes ``torchrun`` started on this machine (torchrun sets
    ``OMP_NUM_THREADS=1`` for them itself).
    """
    omp = os.environ.get("OMP_NUM_THREADS", "")
    single = int(os.environ.get("WORLD_SIZE", "1")) <= 1
    n = threads or (int(omp) if single and omp.isdigit() and int(omp) > 0 else
                    max(1, physical_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    torch.set_num_threads(n)
    tune_cpu_allocator()
    return n


def keeps_threads(fn: _Fn) -> _Fn:
    """Decorate a stage function that calls :func:`set_threads`: torch's thread count is put back when it returns,
    so a notebook that runs a stage keeps its own (the allocator tuning stays: it is once per process)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = torch.get_num_threads()
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper  # type: ignore[return-value]


_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
_MALLOPT = {_M_TRIM_THRESHOLD: 16 << 30, _M_TOP_PAD: 1 << 30, _M_MMAP_THRESHOLD: 1 << 30}
_allocator_tuned: Optional[bool] = None


def tune_cpu_allocator() -> bool:
    """Have glibc's malloc keep freed memory for the next tensor (process-wide, once); True when applied.

    PyTorch's CPU tensors come from malloc, and glibc by default hands a large block back to the OS
    when it is freed, so every layer's activations fault their pages in again: on a 2-core VM an
    element-wise op over a 32 MB tensor ran 4-6x slower that way (docs/benchmarks.md). The cost is
    that the process keeps its peak memory instead of shrinking after it. Skipped with
    ``NEWSBIAS_MALLOC=glibc`` (glibc's defaults), off glibc, with jemalloc or tcmalloc preloaded,
    and when the user tunes glibc already (any ``MALLOC_*`` variable or ``GLIBC_TUNABLES``).
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = _apply_mallopt()
    return _allocator_tuned


def _apply_mallopt() -> bool:
    import ctypes
    import platform

    env = os.environ
    if (env.get("NEWSBIAS_MALLOC") == "glibc" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc"
            or "GLIBC_TUNABLES" in env
            or any(k.startswith("MALLOC_") for k in env)
            or any(a in env.get("LD_PRELOAD", "") for a in ("jemalloc", "tcmalloc"))):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return all(mallopt(param, value) == 1 for param, value in _MALLOPT.items())


@dataclass
class Dist:
    """This process's place in a ``torchrun`` / ``accelerate launch`` group (one process: rank 0 of 1)."""

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

    def close(self) -> None:
        """Wait for every process, then leave the group this process made: a rank that exits with its gloo
        connections open can abort its peer (SIGABRT) as that one tears down."""
        self.barrier()
        if self.world > 1 and self.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device_type: str) -> Dist:
    """Join the process group when launched with several processes (WORLD_SIZE > 1): nccl on CUDA, else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), owns)


def rank_device(device: str, device_type: str, d: Dist) -> str:
    """The device this process works on: its own GPU (``cuda:LOCAL_RANK``, made current) when several processes
    share a machine's GPUs, else ``device`` as set."""
    if d.world > 1 and device_type == "cuda":
        torch.cuda.set_device(d.local_rank)
        return f"cuda:{d.local_rank}"
    return device


def looks_local(name_or_path: str) -> bool:
    """A filesystem path rather than a hub id (``owner/name``): absolute, relative, under ``~``, deeper, or a .gguf."""
    return (name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1 or "\\" in name_or_path
            or is_gguf(name_or_path))


def _check_model_path(name_or_path: str, need_config: bool = True) -> None:
    p = Path(os.path.expanduser(name_or_path))
    if is_gguf(name_or_path):
        if not p.is_file():
            raise SettingError("model", f"{name_or_path}: no such GGUF file; give the path of an existing .gguf file")
        return
    if p.exists():
        if need_config and p.is_dir() and not (p / "config.json").is_file():
            raise SettingError("model", f"{name_or_path} has no config.json; give a Hugging Face model directory or "
                                        f"a .gguf file")
        return
    if looks_local(name_or_path):
        raise SettingError("model", f"{name_or_path} does not exist; give an existing directory, a .gguf file or a "
                                    f"Hugging Face hub id")


def is_gguf(name_or_path: str) -> bool:
    """True for a model source that is a GGUF file (``path/to/model.gguf``)."""
    return str(name_or_path).lower().endswith(".gguf")


def join_gguf(name_or_path: str, gguf_file: Optional[str]) -> str:
    """One source string for "directory + ``model.gguf_file``": ``dir/file.gguf`` (unchanged when no file)."""
    if not gguf_file:
        return name_or_path
    return str(Path(os.path.expanduser(name_or_path)) / gguf_file)


GGUF_CACHE_ENV = "NEWSBIAS_GGUF_CACHE"


def gguf_cache_root() -> Optional[Path]:
    """Where GGUF files are kept as dequantised model directories; ``None`` when the cache is off.

    ``$NEWSBIAS_GGUF_CACHE`` (a directory, or ``off``), else ``$XDG_CACHE_HOME/newsbias/gguf``
    (``~/.cache/newsbias/gguf``). Each entry holds the weights in fp32: about 4 bytes per parameter.
    """
    value = os.environ.get(GGUF_CACHE_ENV, "")
    if value.lower() == "off":
        return None
    if value:
        return Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "newsbias" / "gguf"


def _gguf_cache_key(path: Path) -> str:
    """The file's content and the transformers version that converts it (a new one may convert differently)."""
    stat = path.stat()
    return _content_key(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _content_key(path: Path, size: int, mtime_ns: int) -> str:
    """Hashed once per process and file version: the tokenizer and the model of one load both ask for it."""
    import transformers

    digest = hashlib.sha256(transformers.__version__.encode())
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _convert_gguf(path: Path, out: Path) -> None:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": path.name}
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), **extra)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), dtype=torch.float32, **extra)
    except (OSError, ValueError, AttributeError) as exc:  # AttributeError: transformers 5.17, a GGUF without bos id
        raise NewsbiasError(f"cannot read the GGUF file {path} with transformers {transformers.__version__}: "
                            f"{str(exc).splitlines()[0]}") from None
    _drop_gguf_marks(model)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def dequantised_gguf(name_or_path: str) -> Optional[Path]:
    """The GGUF file as a plain Hugging Face directory, converted on first use and reused after.

    transformers parses a GGUF file's metadata three times per load (config, tokenizer, weights):
    22 s for SmolLM2-135M on 2 cores, against 0.6 s for the same weights as safetensors,
    and the demo loads that file seven times. ``None`` when the cache is off or cannot be written
    (the caller then reads the GGUF file directly).
    """
    root = gguf_cache_root()
    if root is None:
        return None
    path = Path(os.path.expanduser(name_or_path)).resolve()
    out = root / f"{path.stem}-{_gguf_cache_key(path)}"
    if (out / "config.json").is_file():
        return out
    tmp = root / f".{out.name}.tmp-{os.getpid()}"  # named by its pid: a killed conversion's is removed next time
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_dead_leftovers(out)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    except OSError as exc:
        log.warning("GGUF cache %s is not writable (%s); reading %s directly", root, exc, path)
        return None
    try:
        log.info("converting %s to a model directory in %s (once; set %s=off to skip)", path, out, GGUF_CACHE_ENV)
        _convert_gguf(path, tmp)
        os.rename(tmp, out)  # atomic: a reader sees the whole directory or none of it
    except OSError as exc:
        if not (out / "config.json").is_file():  # else another process finished the same conversion first
            log.warning("cannot write the GGUF cache %s (%s); reading %s directly", out, exc, path)
            return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _pretrained_args(name_or_path: str) -> tuple[str, dict[str, Any]]:
    """``from_pretrained`` location and extra kwargs; a ``.gguf`` file goes through transformers' GGUF reader
    once and is then read from its dequantised copy (:func:`dequantised_gguf`)."""
    if not is_gguf(name_or_path):
        return name_or_path, {}
    try:
        import gguf  # noqa: F401  (transformers needs it to read the file)
    except ImportError:
        raise NewsbiasError(f"{name_or_path} is a GGUF file and reading it needs the gguf package: "
                            f"pip install 'newsbias[gguf]'") from None
    cached = dequantised_gguf(name_or_path)
    if cached is not None:
        return str(cached), {}
    p = Path(os.path.expanduser(name_or_path))
    return str(p.parent), {"gguf_file": p.name}


def _drop_gguf_marks(model: nn.Module) -> None:
    """Make a GGUF-loaded model a plain transformers model.

    transformers dequantises GGUF weights into ordinary tensors but still flags the model as
    quantised, which makes ``save_pretrained`` (merged export) refuse; the weights are plain
    floats, so the flags are dropped.
    """
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    for attr, value in (("hf_quantizer", None), ("is_quantized", False), ("quantization_method", None)):
        if hasattr(model, attr):
            setattr(model, attr, value)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> Any:
    """Tokenizer with an explicit pad token and right padding."""
    from transformers import AutoTokenizer

    _check_model_path(name_or_path, need_config=False)
    where, extra = _pretrained_args(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code, **extra)
    except (OSError, ValueError) as exc:
        raise NewsbiasError(f"cannot load the tokenizer of {name_or_path!r}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token_id is None:
        fallback = tok.eos_token or tok.unk_token
        if fallback is None:
            raise NewsbiasError(f"tokenizer of {name_or_path} has no pad, eos or unk token to pad with; add a pad token "
                                f"to its tokenizer_config.json (pad_token) or use another model")
        tok.pad_token = fallback
    tok.padding_side = "right"
    _refuse_empty_vocabulary(tok, name_or_path)
    return tok


def _refuse_empty_vocabulary(tok: Any, name_or_path: str) -> None:
    """A directory whose vocabulary files are missing still gives transformers a tokenizer, one that reads every
    word as unknown (the scores then mean nothing, silently): refused, by what it makes of plain English."""
    probe = tok("the court said the news", add_special_tokens=False)["input_ids"]
    if probe and tok.unk_token_id is not None and all(i == tok.unk_token_id for i in probe):
        raise SettingError("model", f"{name_or_path}: its tokenizer reads every word as unknown "
                                    f"({tok.unk_token}); its vocabulary files are missing or damaged: copy the model "
                                    f"directory again, with its tokenizer")


def load_model_and_tokenizer(name_or_path: str, head: Head = "lm", device: str = "auto", dtype: str = "auto",
                             attn_implementation: Optional[str] = None, gradient_checkpointing: bool = False,
                             trust_remote_code: bool = False, pooling: Pooling = "cls") -> tuple[nn.Module, Any]:
    """Load a causal LM (``head='lm'``) or a sequence classifier (``head='cls'``) and its tokenizer.

    ``pooling='mean'`` (``cls`` head only) puts the head on the mean of the last hidden states
    (:class:`MeanPoolingClassifier`) instead of transformers' own sequence classifier.

    Goes through the real ``from_pretrained`` (hub id, local directory or ``.gguf`` file), with an explicit
    ``dtype`` so a bf16 checkpoint still runs in fp32 on CPU. The model is moved to the device.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    _check_model_path(name_or_path)
    tok = load_tokenizer(name_or_path, trust_remote_code)
    dev, dt = resolve_device_dtype(device, dtype)
    where, extra = _pretrained_args(name_or_path)
    kwargs: dict[str, Any] = {"dtype": dt, "trust_remote_code": trust_remote_code, **extra}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        if head == "lm":
            model = AutoModelForCausalLM.from_pretrained(where, **kwargs)
        elif head == "cls" and pooling == "mean":
            model = MeanPoolingClassifier.from_pretrained(where, num_labels=len(LABELS), **kwargs)
        elif head == "cls":
            model = AutoModelForSequenceClassification.from_pretrained(
                where, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
                label2id={l: i for i, l in enumerate(LABELS)}, **kwargs)
            model.config.pad_token_id = tok.pad_token_id
        else:
            raise NewsbiasError(f"model.head must be 'lm' or 'cls', got {head!r}")
    except (OSError, ValueError) as exc:
        raise NewsbiasError(f"cannot load model {name_or_path!r} (head={head}): {str(exc).splitlines()[0]}") from None
    if extra:  # read from the GGUF file itself (the cache is off)
        _drop_gguf_marks(model)
    if is_gguf(name_or_path) and hasattr(model, "config"):
        # what peft writes as the adapter's base: the GGUF's directory (with gguf_file), never the cache's copy
        model.config.name_or_path = model.name_or_path = str(Path(os.path.expanduser(name_or_path)).parent)
    if gradient_checkpointing:
        enable_checkpointing(model)
    model.to(dev)
    return model, tok


class MeanPoolingClassifier(nn.Module):
    """An encoder with a linear head over the attention-masked mean of its last hidden states.

    Sentence-embedding encoders such as all-MiniLM-L6-v2 were trained for mean pooling, while
    transformers' sequence classifiers read the [CLS] position through BERT's pooler, which LoRA
    on the attention barely moves. Saved as the encoder's own files plus :attr:`HEAD_FILE`.
    """

    HEAD_FILE = "classifier.safetensors"

    def __init__(self, encoder: nn.Module, num_labels: int = len(LABELS)):
        super().__init__()
        self.encoder = encoder
        self.config = encoder.config
        self.dropout = nn.Dropout(getattr(encoder.config, "hidden_dropout_prob", 0.1))
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        pooler = getattr(encoder, "pooler", None)
        if isinstance(pooler, nn.Module):  # never read by mean pooling: trainable, it would stall DDP with no gradient
            pooler.requires_grad_(False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        return SequenceClassifierOutput(logits=self.classifier(self.dropout(pooled).to(self.classifier.weight.dtype)))

    @classmethod
    def from_pretrained(cls, where: str, num_labels: int = len(LABELS), **kwargs: Any) -> "MeanPoolingClassifier":
        """The encoder from ``where``; the head from its :attr:`HEAD_FILE` when there is one (else new)."""
        from transformers import AutoModel

        model = cls(AutoModel.from_pretrained(where, **kwargs), num_labels)
        head = Path(os.path.expanduser(where)) / cls.HEAD_FILE
        if head.is_file():
            from safetensors.torch import load_file

            model.classifier.load_state_dict(load_file(str(head)))
        return model.to(kwargs.get("dtype") or torch.float32)

    def enable_input_require_grads(self) -> None:
        """What peft calls for checkpointing under LoRA (frozen embeddings), passed to the encoder."""
        self.encoder.enable_input_require_grads()

    def save_pretrained(self, out_dir: str, **kwargs: Any) -> None:
        from safetensors.torch import save_file

        self.encoder.save_pretrained(out_dir, **kwargs)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.classifier.state_dict().items()},
                  str(Path(out_dir) / self.HEAD_FILE))


def enable_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing on a transformers model, or on the encoder a mean-pooling head wraps."""
    hf = model.encoder if isinstance(model, MeanPoolingClassifier) else model
    if hasattr(hf, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns there
        hf.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hf.config.use_cache = False


def _module_names(model: nn.Module) -> set[str]:
    return {n.split(".")[-1] for n, _ in model.named_modules()}


def resolve_target_modules(model: nn.Module, target_modules: Sequence[str] | str) -> list[str]:
    """``auto`` -> the attention projections of the architecture (q/k/v/o for LLMs, query/key/value for BERT,
    q_lin/k_lin/v_lin for DistilBERT, c_attn/c_proj for GPT-2); a given list must name modules that exist."""
    names = _module_names(model)
    if isinstance(target_modules, str) and target_modules != "auto":
        target_modules = [target_modules]
    if target_modules == "auto":
        for cand in (["q_proj", "k_proj", "v_proj", "o_proj"], ["query", "key", "value"], ["q_lin", "k_lin", "v_lin"],
                     ["c_attn", "c_proj"]):
            if all(c in names for c in cand):
                return cand
        raise NewsbiasError("cannot guess lora.target_modules for this architecture; list them explicitly")
    mods = list(target_modules)
    missing = [m for m in mods if m not in names]
    if missing:  # a misspelt one beside right ones would otherwise train without it, silently
        linear = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise NewsbiasError(f"lora.target_modules {missing} name no module of this model; its linear layers are "
                            f"{linear[:16]}")
    return mods


def classifier_module_name(model: nn.Module) -> str:
    """Name of the classification head module (``score`` for decoders, ``classifier`` for BERT)."""
    for name in ("score", "classifier", "classification_head", "cls_head"):
        if hasattr(model, name):
            return name
    raise NewsbiasError(f"cannot find the classification head of {type(model).__name__} (no score / classifier "
                        f"module); use head=lm, or a model whose sequence-classification head transformers knows")


@contextlib.contextmanager
def peft_quiet() -> Iterator[None]:
    """peft reads a property that transformers 5 deprecated: a FutureWarning on every load, not actionable for users."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def add_lora(model: nn.Module, head: Head, r: int = 16, alpha: int = 32, dropout: float = 0.05,
             target_modules: Sequence[str] | str = "auto", bias: str = "none",
             gradient_checkpointing: bool = False) -> nn.Module:
    """Wrap ``model`` in a peft LoRA model; for ``cls`` the head is trained and saved (modules_to_save)."""
    from peft import LoraConfig, TaskType, get_peft_model

    targets = resolve_target_modules(model, target_modules)
    if head == "lm":
        task: Optional[TaskType] = TaskType.CAUSAL_LM
    else:  # peft's SEQ_CLS wrapper assumes a transformers classifier; the mean-pooling one is a plain module
        task = None if isinstance(model, MeanPoolingClassifier) else TaskType.SEQ_CLS
    cfg = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias=bias, task_type=task,
        modules_to_save=[classifier_module_name(model)] if head == "cls" else None)
    with peft_quiet():
        pm = get_peft_model(model, cfg)
    if gradient_checkpointing:  # frozen embeddings: checkpointed blocks need inputs that require grad
        pm.enable_input_require_grads()
    return pm


def load_adapter(base_model: nn.Module, adapter_dir: str | Path, trainable: bool = False) -> nn.Module:
    """Attach a saved adapter (``adapter_config.json`` + ``adapter_model.safetensors``) to a base model."""
    from peft import PeftModel

    d = Path(adapter_dir)
    if not (d / "adapter_config.json").is_file():
        raise NewsbiasError(f"{d} is not an adapter directory (no adapter_config.json); pass the training out_dir")
    with peft_quiet():
        return PeftModel.from_pretrained(base_model, str(d), is_trainable=trainable)


class ModelSettings(BaseModel):
    """What inference needs to score exactly as trained (``newsbias.json`` next to the weights).

    ``prompt`` is the :class:`~newsbias.config.PromptConfig` training used, written as it is; ``extra`` holds the
    file's other keys (``finetune``, ``merged``, ``onnx``, ...), written back at the top level.
    """

    model_config = ConfigDict(extra="forbid")

    head: Head = "lm"
    base_model: str = ""
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    pooling: Pooling = "cls"
    labels: tuple[str, ...] = LABELS
    label_token_ids: list[StrictInt] = []
    uses_chat_template: bool = False
    best_val: dict[str, Any] = {}
    calibration: dict[str, Any] = {}
    prepend_title: bool = False
    """The training texts began with their article's title (``prep.clean.prepend_title``): inference joins a
    given title to its text the same way (:meth:`newsbias.classifier.Classifier.article_text`)."""
    text_cleaning: Literal["prep", "prep-without-repair", "none"] = "prep"
    """How the training texts were cleaned, so that inference reads a raw article the same way: ``prep`` (by
    ``newsbias prep``: whitespace normalised, mojibake repaired), ``prep-without-repair`` (``prep.clean.fix_text:
    false``) or ``none`` (training data not written by prep, read as it was)."""
    extra: dict[str, Any] = {}

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(v) < 2 or not all(v) or len(set(v)) != len(v):
            raise ValueError("must be two or more distinct names")
        return v

    @property
    def temperature(self) -> float:
        """What scoring divides the label logits by (``calibration.temperature``; 1 when not calibrated)."""
        return float(self.calibration.get("temperature", 1.0))

    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude={"extra"})
        return {"format": SETTINGS_FORMAT, **d, **self.extra}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = SETTINGS_FILE) -> "ModelSettings":
        """Settings from a ``newsbias.json`` (``where``, for errors) of this format or of format 1."""
        d = dict(d)
        d.pop("format", None)
        prompt = dict(d.get("prompt") or {})
        chat = prompt.pop("uses_chat_template", False)  # format 1 kept these three inside "prompt"
        prompt.pop("labels", None)
        if "verbalizers" in d:
            prompt.setdefault("verbalizers", d.pop("verbalizers"))
        d.setdefault("uses_chat_template", chat)
        d["calibration"] = d.get("calibration") or {}
        own = {k: d.pop(k) for k in list(d) if k in cls.model_fields and k != "extra"}
        try:
            return cls.model_validate({**own, "prompt": prompt, "extra": d})
        except ValidationError as err:
            raise NewsbiasError(format_validation_error(err, where, cls).removeprefix("invalid ")
                                + "; restore the file `newsbias train` wrote") from None

    def save(self, directory: str | Path) -> None:
        """Write ``newsbias.json`` whole or not at all (``newsbias calibrate`` rewrites an existing one)."""
        write_json(Path(directory, SETTINGS_FILE), self.to_dict())

    @classmethod
    def load(cls, directory: str | Path) -> "ModelSettings":
        p = Path(directory, SETTINGS_FILE)
        if not p.is_file():
            raise NewsbiasError(f"{directory} has no {SETTINGS_FILE}; it was not written by `newsbias train`")
        return cls.from_dict(read_json(p), str(p))


def prompt_builder(tokenizer: Any, settings: ModelSettings) -> PromptBuilder:
    """The prompt builder for a tokenizer + settings; fails when the tokenizer is not the one trained with."""
    b = PromptBuilder(tokenizer, settings.prompt, settings.head, settings.labels)
    if settings.label_token_ids and list(b.label_token_ids) != list(settings.label_token_ids):
        raise NewsbiasError(f"the tokenizer gives label tokens {b.label_token_ids}, the adapter was trained "
                            f"with {settings.label_token_ids}: wrong tokenizer for this adapter")
    return b


def _hf_model(model: nn.Module) -> nn.Module:
    """The transformers model inside (peft / DDP wrappers removed)."""
    while True:
        if hasattr(model, "module") and isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model


SHARED_PREFIX_MIN = 16
"""Rows of a batch that begin with at least this many identical tokens compute them once."""


def shared_prefix_len(input_ids: torch.Tensor, attention_mask: torch.Tensor, cols: torch.Tensor,
                      minimum: Optional[int] = None) -> int:
    """Leading positions that every row of the batch has in common (same token, unmasked), up to the
    first position read (``cols.min()``); 0 for a single row, or when fewer than ``minimum`` (default
    :data:`SHARED_PREFIX_MIN`: below it, a second pass costs more than the positions it saves)."""
    if input_ids.shape[0] < 2 or cols.numel() == 0:
        return 0
    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)
    n = min(int(same.long().cumprod(0).sum()), int(cols.min()))
    return n if n >= (SHARED_PREFIX_MIN if minimum is None else minimum) else 0


def _body_hidden(body: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: Any) -> torch.Tensor:
    out = body(input_ids=input_ids, attention_mask=attention_mask, **kw)
    return out[0] if isinstance(out, tuple) else out.last_hidden_state


def answer_hidden(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  rows: torch.Tensor, cols: torch.Tensor, share_prefix: bool = True) -> torch.Tensor:
    """Final hidden states at (rows, cols) of a causal LM's body: ``[len(rows), hidden]``.

    ``share_prefix``: when the rows begin with :data:`SHARED_PREFIX_MIN` or more identical tokens (the
    prompt's system message and instruction), those are run once, for one row, and every row attends to
    their key/value cache. Causal attention makes this exact: a prefix's states do not depend on what
    follows it. Gradients flow through the cache, so training uses it too, but only when its forward
    pass is deterministic (``lora.dropout: 0``): a shared prefix would give every row one dropout mask.
    """
    hf = _hf_model(model)
    n = shared_prefix_len(input_ids, attention_mask, cols) if share_prefix else 0
    if not n or _checkpointing(hf) or (model.training and _drops_out(model, hf)):
        return _body_hidden(hf.base_model, input_ids, attention_mask, use_cache=False)[rows, cols]
    return prefixed_hidden(model, input_ids[:1, :n], input_ids[:, n:], attention_mask)[rows, cols - n]


def prefixed_hidden(model: nn.Module, prefix_ids: torch.Tensor, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor) -> torch.Tensor:
    """Final hidden states ``[batch, len, hidden]`` of a causal LM's body for rows that all begin with
    ``prefix_ids`` (``[1, p]``, unpadded) followed by their own ``input_ids`` (``[batch, len]``): the
    prefix runs once and every row attends to its key/value cache. ``attention_mask`` covers prefix and
    rows (``[batch, p + len]``)."""
    body = _hf_model(model).base_model  # transformers' property: the decoder stack without the LM head
    return _body_hidden(body, input_ids, attention_mask, use_cache=True,
                        **prefix_cache(model, prefix_ids, input_ids.shape[0]))


def prefix_cache(model: nn.Module, prefix_ids: torch.Tensor, rows: int) -> dict[str, Any]:
    """``prefix_ids`` (``[1, p]``) run once through a causal LM's body: its key/value cache repeated for ``rows``
    rows, as the keyword argument (``cache=`` or ``past_key_values=``) that this transformers' forward and
    ``generate`` take."""
    body = _hf_model(model).base_model
    out = body(input_ids=prefix_ids, attention_mask=torch.ones_like(prefix_ids), use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    cache.batch_repeat_interleave(rows)
    # transformers 5.x names the argument ``cache``; 4.x ``past_key_values``
    return {"cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values": cache}


def _drops_out(model: nn.Module, hf: nn.Module) -> bool:
    """True when a training-mode forward of ``model`` is random: a dropout layer or attention dropout above 0."""
    if float(getattr(hf.config, "attention_dropout", 0) or 0) > 0:
        return True
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def _checkpointing(hf: nn.Module) -> bool:
    # a checkpointed block is re-run in backward and would meet a cache it already extended
    if hasattr(type(hf), "is_activation_checkpointing"):  # transformers >= 5.x; the old name warns there
        return bool(hf.is_activation_checkpointing)
    return bool(getattr(hf, "is_gradient_checkpointing", False))


def lm_logits_at(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 rows: torch.Tensor, cols: torch.Tensor, vocab_rows: Optional[torch.Tensor] = None,
                 share_prefix: bool = True) -> torch.Tensor:
    """LM-head logits at (rows, cols) only; restricted to ``vocab_rows`` (e.g. the label tokens) if given.
    ``share_prefix``: see :func:`answer_hidden`."""
    return head_logits(model, answer_hidden(model, input_ids, attention_mask, rows, cols, share_prefix), vocab_rows)


def head_logits(model: nn.Module, hidden: torch.Tensor, vocab_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The LM head on final hidden states ``[n, hidden]``; only the rows ``vocab_rows`` of it if given."""
    head = _hf_model(model).get_output_embeddings()
    if vocab_rows is None:
        return head(hidden)
    w = head.weight[vocab_rows]
    b = head.bias[vocab_rows] if getattr(head, "bias", None) is not None else None
    return F.linear(hidden.to(w.dtype), w, b)


def label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, cols, targets) of every label token; ``cols`` is the position that predicts it (t-1)."""
    rows, t = (labels != -100).nonzero(as_tuple=True)
    if (t == 0).any():
        raise ValueError("a label at position 0 has no preceding token to predict it")
    return rows, t - 1, labels[rows, t]


def lm_label_loss(model: nn.Module, batch: dict[str, torch.Tensor], sample_weight: Optional[torch.Tensor] = None,
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cross-entropy on the label tokens only: ``(loss, full-vocab logits at those positions, rows, hidden
    states there)``.

    The labels tensor is the single source of truth: every position that is not -100 carries
    loss, predicted from the previous position as in a causal LM; nothing else is computed by
    the LM head. ``sample_weight`` (per row) gives a weighted mean (class weights).
    """
    rows, cols, targets = label_positions(batch["labels"])
    h = answer_hidden(model, batch["input_ids"], batch["attention_mask"], rows, cols)
    logits = _hf_model(model).get_output_embeddings()(h).float()
    ce = F.cross_entropy(logits, targets, reduction="none")
    if sample_weight is None:
        return ce.mean(), logits, rows, h
    w = sample_weight[rows].to(ce.dtype)
    return (ce * w).sum() / w.sum(), logits, rows, h


class LabelLossModule(nn.Module):
    """``forward(batch) -> (loss, class logits [n, n_labels])`` for either head.

    Training wraps this (not the peft model) in DDP so gradient sync sees the forward that
    really runs (the body + the LM head at label positions only). With an ``adversary``
    (:class:`newsbias.adversary.OutletAdversary`) the loss adds its outlet loss on the vector the
    label head reads (lm: the answer position's hidden state; cls: the head's input), and
    :attr:`parts` holds the step's label loss and the adversary's statistics.
    """

    def __init__(self, model: nn.Module, head: Head, label_token_ids: Sequence[int],
                 class_weights: Optional[torch.Tensor] = None, adversary: Optional[nn.Module] = None):
        super().__init__()
        self.model = model
        self.head = head
        self.register_buffer("label_token_ids", torch.tensor(list(label_token_ids), dtype=torch.long), persistent=False)
        self.class_weights = class_weights
        self.adversary = adversary
        self.parts: dict[str, float] = {}
        self._head_input: list[torch.Tensor] = []
        if adversary is not None and head == "cls":
            hf = _hf_model(model)
            getattr(hf, classifier_module_name(hf)).register_forward_pre_hook(self._keep_head_input)

    def _keep_head_input(self, _module: nn.Module, args: tuple) -> None:
        self._head_input[:] = [args[0]]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                class_ids: torch.Tensor, outlet_ids: Optional[torch.Tensor] = None, **_: Any
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.head == "lm":
            sw = self.class_weights[class_ids] if self.class_weights is not None else None
            loss, logits, rows, feats = lm_label_loss(
                self.model, {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}, sw)
            # one label token per row (the verbalizer's first token), so rows == arange(n)
            logits = logits[:, self.label_token_ids]
        else:
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            logits = out.logits.float()
            w = self.class_weights.to(logits.device) if self.class_weights is not None else None
            loss = F.cross_entropy(logits, class_ids, weight=w)
            feats = self._head_input.pop() if self._head_input else None
        if self.adversary is None or outlet_ids is None:
            return loss, logits
        if feats is None or feats.dim() != 2:
            raise NewsbiasError("train.outlet_adversary reads one vector per article, and this model's head reads "
                                "every position; use model.pooling: mean or model.head: lm")
        adv_loss, stats = self.adversary(feats, outlet_ids)
        self.parts = {"label_loss": float(loss.detach()), **stats}
        return loss + adv_loss, logits


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int, pad_value_labels: Optional[Sequence[Sequence[int]]] = None,
              ) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence in the batch (dynamic padding)."""
    n, t = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((n, t), pad_id, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if pad_value_labels is not None:
        lab = torch.full((n, t), -100, dtype=torch.long)
        for i, s in enumerate(pad_value_labels):
            lab[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        out["labels"] = lab
    return out


def score_ids(model: nn.Module, head: Head, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              answer_pos: torch.Tensor, label_token_ids: Sequence[int], full_vocab: bool = False,
              share_prefix: bool = True) -> torch.Tensor:
    """Class logits ``[n, n_labels]`` for an already padded batch (call it under ``torch.no_grad()``).

    ``full_vocab`` (``head: lm``): the whole vocabulary's logits at the answer position instead,
    ``[n, vocab]`` (training's validation loss). ``share_prefix``: see :func:`answer_hidden` (off for
    graph export: it branches on the batch's contents). Not decorated with ``no_grad`` itself: the ONNX
    exporter traces it, and a grad-mode switch inside the traced function hides which module each
    operation belongs to.
    """
    if head == "lm":
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        vocab_rows = None if full_vocab else torch.tensor(list(label_token_ids), device=input_ids.device)
        return lm_logits_at(model, input_ids, attention_mask, rows, answer_pos.to(input_ids.device), vocab_rows,
                            share_prefix).float()
    return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()


def model_device(model: Any) -> torch.device:
    """Where a model's weights are (an ONNX Runtime scorer says so itself)."""
    return model.device if not isinstance(model, nn.Module) else next(model.parameters()).device


@torch.no_grad()
def score_batch(model: nn.Module, tokenizer: Any, settings: ModelSettings, texts: Sequence[str],
                batch_size: int = 8, builder: Optional[PromptBuilder] = None, length_sorted: bool = True) -> np.ndarray:
    """Label probabilities ``[len(texts), n_labels]`` (columns in ``settings.labels`` order).

    ``lm``: softmax over the label tokens' logits at the answer position; ``cls``: the
    classifier's softmax. Texts are batched by length with dynamic padding (``length_sorted=False``:
    in input order, for comparison); rows come back in input order either way.
    """
    builder = builder or prompt_builder(tokenizer, settings)
    return score_encoded(model, tokenizer, settings, [builder.encode(t) for t in texts], batch_size, builder,
                         length_sorted)


@torch.no_grad()
def score_encoded(model: nn.Module, tokenizer: Any, settings: ModelSettings, encs: Sequence[Any], batch_size: int,
                  builder: PromptBuilder, length_sorted: bool = True) -> np.ndarray:
    """:func:`score_batch` on prompts already encoded by ``builder`` (e.g. several windows per article)."""
    out = np.zeros((len(encs), len(settings.labels)), dtype=np.float32)
    for idx, logits in iter_logits(model, settings.head, encs, batch_size, tokenizer.pad_token_id,
                                   builder.label_token_ids, length_sorted):
        out[idx] = torch.softmax(logits.float() / settings.temperature, -1).cpu().numpy()
    return out


@torch.no_grad()
def iter_logits(model: Any, head: Head, encs: Sequence[Any], batch_size: int, pad_id: int,
                label_token_ids: Sequence[int], length_sorted: bool = True, full_vocab: bool = False,
                ) -> Iterator[tuple[list[int], torch.Tensor]]:
    """``(indices, logits)`` batch by batch for encoded prompts (``.input_ids``, ``.answer_pos``).

    Batches group prompts of similar length (``length_sorted=False``: input order) with dynamic
    padding; the model is in eval mode meanwhile and gets its mode back after. ``model`` is a torch
    model, or any object with ``label_logits(input_ids, attention_mask, answer_pos)``
    (:class:`newsbias.onnx_model.OnnxScorer`); ``full_vocab``: see :func:`score_ids`.
    """
    torch_model = isinstance(model, nn.Module)
    was_training = torch_model and model.training
    if torch_model:
        model.eval()
    dev = model_device(model)
    order = list(range(len(encs)))
    if length_sorted:  # similar lengths share a batch: less padding computed
        order.sort(key=lambda i: -len(encs[i].input_ids))
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            b = pad_batch([encs[i].input_ids for i in idx], pad_id)
            ids, mask = b["input_ids"].to(dev), b["attention_mask"].to(dev)
            pos = torch.tensor([encs[i].answer_pos for i in idx])
            yield idx, (score_ids(model, head, ids, mask, pos, label_token_ids, full_vocab) if torch_model
                        else model.label_logits(ids, mask, pos))
    finally:
        if was_training:
            model.train()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


__all__ = [
    "Dist", "init_distributed", "resolve_device_dtype", "load_tokenizer", "load_model_and_tokenizer", "add_lora",
    "load_adapter",
    "ModelSettings", "prompt_builder", "score_batch", "score_encoded", "iter_logits", "score_ids", "lm_label_loss",
    "lm_logits_at", "head_logits", "prefixed_hidden", "label_positions", "LabelLossModule", "pad_batch",
    "count_parameters", "SETTINGS_FILE",
]
