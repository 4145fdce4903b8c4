"""The ONNX form of a model: :func:`export_onnx` writes it, :class:`OnnxScorer` scores with it.

The exported graph is newsbias's scoring function, not the transformers model:
``(input_ids, attention_mask, answer_pos) -> class logits [batch, n_labels]``, traced from
:func:`newsbias.modeling.score_ids`. For ``head: lm`` that is the decoder body plus the label rows
of the LM head at the answer position, so the graph never computes ``[sequence x vocab]`` logits,
and it takes the prompt's leading tokens that every row of a batch shares (system message,
instruction) as a separate ``prefix_ids`` input, run once per batch as eager scoring does
(:func:`newsbias.modeling.answer_hidden`); :class:`OnnxScorer` splits each batch. For ``head: cls``
it is the encoder and its head (``answer_pos`` is accepted and unused). Batch size and sequence
lengths are dynamic.

``quantize="int8"`` applies ONNX Runtime's dynamic quantisation to the weight matrix products
(int8 weights per output channel, each activation tensor quantised with one scale at run time).
``quantize="int8-block"`` uses ONNX Runtime's ``MatMulNBits`` instead: int8 weights with one scale
per block of 128 inputs, and activations quantised per block too (accuracy level 4), so an outlier
coarsens 128 values instead of a whole tensor — closer to fp32, but slower. Layers matched by
``keep_fp32`` stay in fp32 either way: by default the MLP output projections, whose inputs (after
GELU/SiLU gating) carry the outliers that int8 rounds worst (docs/benchmarks.md has the measurement).
So does the shared prefix's pass of an ``lm`` graph: it runs once per batch, and every article reads it.

An export directory holds ``model.onnx`` (+ ``model.onnx.data`` for large fp32 graphs), the
tokenizer and ``newsbias.json``; ``Classifier.load(DIR)`` scores with it like any other source.
ONNX Runtime is an optional dependency (``pip install 'newsbias[onnx]'``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .config import INT8_KEEP_FP32
from .errors import NewsbiasError
from .modeling import head_logits, pad_batch, peft_quiet, prefixed_hidden, score_encoded, score_ids, shared_prefix_len
from .smoothing import smooth_for_int8

ONNX_FILE = "model.onnx"
log = logging.getLogger(__name__)


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise NewsbiasError(f"ONNX export and scoring need the `{module}` package: pip install 'newsbias[onnx]'"
                            ) from None


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantiser's per-tensor INFO lines and generic advice."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            # one Dim shared by several inputs is how dynamic batch/sequence sizes are declared
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
            warnings.filterwarnings("ignore", message=".*LeafSpec", category=FutureWarning)  # torch-internal
            with peft_quiet():
                yield
    finally:
        logging.disable(logging.NOTSET)


class ScoringGraph(nn.Module):
    """:func:`newsbias.modeling.score_ids` as a module with tensor inputs only: what is exported."""

    def __init__(self, model: nn.Module, head: str, label_token_ids: Sequence[int]):
        super().__init__()
        self.model, self.head, self.label_token_ids = model, head, list(label_token_ids)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_pos: torch.Tensor) -> torch.Tensor:
        return score_ids(self.model, self.head, input_ids, attention_mask, answer_pos,  # type: ignore[arg-type]
                         self.label_token_ids, share_prefix=False)


class PrefixScoringGraph(nn.Module):
    """``head: lm``'s scoring with the batch's shared prompt prefix as an input of its own:
    ``(prefix_ids [1, p], input_ids [batch, len], attention_mask [batch, len], answer_pos [batch]) ->
    class logits``; ``input_ids`` are each row's tokens after the prefix, ``answer_pos`` counts from there."""

    def __init__(self, model: nn.Module, label_token_ids: Sequence[int]):
        super().__init__()
        self.model, self.label_token_ids = model, list(label_token_ids)

    def forward(self, prefix_ids: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                answer_pos: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(input_ids.shape[0])
        mask = torch.cat([torch.ones_like(prefix_ids).expand(input_ids.shape[0], -1), attention_mask], 1)
        hidden = prefixed_hidden(self.model, prefix_ids, input_ids, mask)[rows, answer_pos]
        return head_logits(self.model, hidden, torch.tensor(self.label_token_ids)).float()


def split_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor, answer_pos: torch.Tensor
                 ) -> Optional[dict[str, torch.Tensor]]:
    """A padded batch as :class:`PrefixScoringGraph`'s inputs: its rows' common leading tokens (for one
    row, every token before the answer position) and the rest; None when the rows share no first token."""
    # any shared token counts here: the graph takes the prefix as an input either way
    n = (shared_prefix_len(input_ids, attention_mask, answer_pos, minimum=1) if len(input_ids) > 1
         else int(answer_pos[0]))
    if n == 0:
        return None
    return {"prefix_ids": input_ids[:1, :n], "input_ids": input_ids[:, n:], "attention_mask": attention_mask[:, n:],
            "answer_pos": answer_pos - n}


class OnnxScorer:
    """An ONNX Runtime session with the scoring signature of :func:`newsbias.modeling.score_ids` (CPU)."""

    def __init__(self, path: str | Path, threads: Optional[int] = None):
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            raise NewsbiasError(f"cannot load the ONNX graph {path} ({str(exc).splitlines()[0][:160]}); "
                                f"export it again with `newsbias export --format onnx`") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.path = str(path)
        self.device = torch.device("cpu")

    def label_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     answer_pos: torch.Tensor) -> torch.Tensor:
        """Class logits ``[batch, n_labels]``, as :func:`newsbias.modeling.score_ids` returns them."""
        feed: Optional[dict[str, torch.Tensor]] = {"input_ids": input_ids, "attention_mask": attention_mask,
                                                   "answer_pos": answer_pos}
        if "prefix_ids" in self.inputs:
            feed = split_prefix(input_ids, attention_mask, answer_pos)
            if feed is None and len(input_ids) == 1:
                raise NewsbiasError("cannot score an empty prompt: its answer position is its first token")
            if feed is None:  # rows with nothing in common are scored one by one, each its own prefix
                lengths = attention_mask.sum(1).tolist()
                return torch.cat([self.label_logits(input_ids[i:i + 1, :n], attention_mask[i:i + 1, :n],
                                                    answer_pos[i:i + 1]) for i, n in enumerate(lengths)])
        out = self.session.run(None, {k: feed[k].cpu().numpy().astype(np.int64) for k in self.inputs})
        return torch.from_numpy(out[0]).float()


EXAMPLES = ("The senate passed the bill on Tuesday after a long debate.", "Markets fell.")


def example_batch(builder: Any, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two prompts of different lengths, padded: the inputs the graph is traced with."""
    encs = [builder.encode(t) for t in EXAMPLES]
    b = pad_batch([e.input_ids for e in encs], pad_id)
    return b["input_ids"], b["attention_mask"], torch.tensor([e.answer_pos for e in encs])


def scoring_graph(clf: Any) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The graph to export for ``clf`` and the inputs to trace it with. ``head: lm`` gets
    :class:`PrefixScoringGraph` when the example prompts share at least two leading tokens and differ
    in at least two after them (a traced size of 1 would be fixed into the graph); else :class:`ScoringGraph`."""
    example = example_batch(clf.builder, clf.tokenizer.pad_token_id)
    if clf.settings.head == "lm":
        split = split_prefix(*example)
        if split and split["prefix_ids"].shape[1] >= 2 and split["input_ids"].shape[1] >= 2:
            return (PrefixScoringGraph(clf.model, clf.builder.label_token_ids),
                    tuple(split[k] for k in ("prefix_ids", "input_ids", "attention_mask", "answer_pos")))
    return ScoringGraph(clf.model, clf.settings.head, clf.builder.label_token_ids), example


def compare(clf: Any, scorer: "OnnxScorer", texts: Sequence[str], batch_size: int = 16) -> dict[str, Any]:
    """The graph against the torch model on ``texts``: share of identical labels, largest probability change."""
    encs = [clf.builder.encode(t) for t in texts]
    want = score_encoded(clf.model, clf.tokenizer, clf.settings, encs, batch_size, clf.builder)
    got = score_encoded(scorer, clf.tokenizer, clf.settings, encs, batch_size, clf.builder)
    return {"n": len(texts), "same_labels": round(float((want.argmax(1) == got.argmax(1)).mean()), 4),
            "max_abs_prob_diff": round(float(np.abs(want - got).max()), 6)}


def trace_to_onnx(graph: nn.Module, example: tuple[torch.Tensor, ...], path: Path) -> None:
    """``torch.onnx.export`` (the dynamo exporter) with dynamic batch and sequence dimensions."""
    _require("onnxscript")
    prefix = isinstance(graph, PrefixScoringGraph)
    # after a prefix, a row may be one token long (a single row's answer position alone)
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1 if prefix else 2)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}, "answer_pos": {0: batch}}
    if prefix:
        shapes = {"prefix_ids": {1: torch.export.Dim("prefix", min=1)}, **shapes}
    # external data keeps graphs over protobuf's 2 GB limit (Qwen3-0.6B in fp32) writable
    with _quiet():
        # the exporter's default optimiser takes ~10 minutes on a graph with two decoder passes (SmolLM2,
        # 2 cores) in its pattern rewrites; folding constants is the part int8 needs (weights as initializers)
        program = torch.onnx.export(graph.eval(), example, dynamo=True, output_names=["logits"],
                                    dynamic_shapes=shapes, verbose=False, optimize=not prefix)
        if prefix:
            fold_constants(program.model)
        program.save(str(path), external_data=True)


def fold_constants(model: Any) -> None:
    """onnxscript's constant folding and onnx_ir's clean-up passes on an ``onnx_ir`` model, in place,
    without the exporter's pattern rewrites: transposed weights become initializers, which int8 needs
    (hence no size limits: the defaults leave any tensor over 8,192 values unfolded, and deduplicate
    none over 1,024 — each pass over the decoder would keep its own transposed copy of every weight)."""
    from onnx_ir.passes import common
    from onnxscript.optimizer import fold_constants as fold

    common.InlinePass()(model)
    fold(model, onnx_shape_inference=True, input_size_limit=1 << 31, output_size_limit=1 << 31)
    for cleanup in (common.RemoveUnusedNodesPass(), common.LiftConstantsToInitializersPass(lift_all_constants=True,
                    size_limit=0), common.DeduplicateInitializersPass(size_limit=1 << 31),
                    common.CommonSubexpressionEliminationPass()):
        cleanup(model)


def load_graph(model_path: Path) -> Any:
    """The ``GraphProto`` of an ONNX file, without its external weight data."""
    return _require("onnx").load(str(model_path), load_external_data=False).graph


def node_scopes(graph: Any) -> dict[str, str]:
    """ONNX node name -> the torch module it came from (the dynamo exporter's ``name_scopes`` metadata)."""
    scopes: dict[str, str] = {}
    for node in graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        # [..., "model.model.layers.0.mlp", "model.model.layers.0.mlp.down_proj", "linear_6"]: the op comes last
        names = re.findall(r"'([^']*)'", meta.get("pkg.torch.onnx.name_scopes", ""))
        if len(names) >= 2:
            scopes[node.name] = names[-2]
    return scopes


def prefix_only_nodes(graph: Any) -> set[str]:
    """The nodes of a :class:`PrefixScoringGraph` export that compute the shared prefix alone: those that
    depend on ``prefix_ids`` and on none of the rows' inputs (empty for a graph without ``prefix_ids``)."""
    from_prefix, from_rows = {"prefix_ids"}, {"input_ids", "attention_mask", "answer_pos"}
    nodes: set[str] = set()
    for node in graph.node:  # stored in topological order
        prefix, rows = bool(from_prefix.intersection(node.input)), bool(from_rows.intersection(node.input))
        if prefix:
            from_prefix.update(node.output)
        if rows:
            from_rows.update(node.output)
        if prefix and not rows:
            nodes.add(node.name)
    return nodes


def quantize_int8(src: Path, dst: Path, keep_fp32: Sequence[str], scheme: str = "int8") -> list[str]:
    """int8 quantisation of ``src``'s weight matrix products into ``dst`` (``scheme``: ``int8``,
    per tensor, or ``int8-block``: :func:`quantize_blocks`); returns the modules kept in fp32. The shared
    prompt prefix's pass (:func:`prefix_only_nodes`) stays fp32 whole: it runs once per batch, so it costs
    little, and every article of the batch attends to it."""
    graph = load_graph(src)
    scopes = node_scopes(graph)
    kept = {node: scope for node, scope in scopes.items() if any(re.search(p, scope) for p in keep_fp32)}
    if keep_fp32 and not kept:
        log.warning("export.keep_fp32 %s matches no layer of this model: every weight matrix is int8",
                    list(keep_fp32))
    exclude = sorted(set(kept) | prefix_only_nodes(graph))
    big = sum(f.stat().st_size for f in src.parent.iterdir()) > 1_900_000_000
    with _quiet():
        if scheme == "int8-block":
            quantize_blocks(src, dst, exclude, big)
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Gemm"], nodes_to_exclude=exclude,
                             # activation x activation products (attention) stay in fp32: only weights are int8
                             extra_options={"MatMulConstBOnly": True}, use_external_data_format=big)
    return sorted(set(kept.values()))


def quantize_blocks(src: Path, dst: Path, exclude: Sequence[str], big: bool, block: int = 128) -> None:
    """``MatMulNBits`` int8: weights and activations with one scale per ``block`` inputs (accuracy level 4:
    int8 products), for every weight matrix product except the nodes in ``exclude``."""
    onnx = _require("onnx")
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    cfg = DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=True, accuracy_level=4, bits=8,
                                       op_types_to_quantize=("MatMul",))
    quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), block_size=block, is_symmetric=True, accuracy_level=4,
                                     nodes_to_exclude=list(exclude), algo_config=cfg, op_types_to_quantize=("MatMul",))
    quantizer.process()
    quantizer.model.save_model_to_file(str(dst), use_external_data_format=big)


def export_onnx(clf: Any, out_dir: str | Path, quantize: str = "none", keep_fp32: Sequence[str] = INT8_KEEP_FP32,
                check_texts: Optional[Sequence[str]] = None, smooth: Optional[float] = None,
                calibration_texts: Sequence[str] = ()) -> dict[str, Any]:
    """Write ``clf`` (a torch :class:`~newsbias.classifier.Classifier`) as ``out_dir/model.onnx``.

    Returns what :meth:`Classifier.save` records about the graph: ``format``, ``quantize``,
    ``kept_fp32``, ``check`` (:func:`compare` on ``check_texts``, default two example prompts) and,
    with ``smooth`` (an alpha; int8 or int8-block), ``smooth``: :func:`newsbias.smoothing.smooth_for_int8`
    calibrated on ``calibration_texts``, which rescales ``clf``'s weights in place first. The
    tokenizer and ``newsbias.json`` are the caller's.
    """
    if isinstance(clf.model, OnnxScorer):
        raise NewsbiasError(f"{clf.source} is already an ONNX export; export the training output instead")
    if next(clf.model.parameters()).dtype != torch.float32:
        raise NewsbiasError("ONNX export traces the fp32 model; load it with dtype=fp32 (export.dtype)")
    if smooth is not None and quantize == "none":
        raise NewsbiasError("export.smooth prepares the weights for int8; add --quantize int8 or drop --smooth")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clf.model.cpu()
    smoothed = smooth_for_int8(clf, calibration_texts, smooth) if smooth is not None else None
    graph, example = scoring_graph(clf)
    kept: list[str] = []
    if quantize in ("int8", "int8-block"):
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            trace_to_onnx(graph, example, Path(tmp) / ONNX_FILE)
            kept = quantize_int8(Path(tmp) / ONNX_FILE, out / ONNX_FILE, keep_fp32, quantize)
    elif quantize == "none":
        trace_to_onnx(graph, example, out / ONNX_FILE)
    else:
        raise NewsbiasError(f"quantize must be 'none', 'int8' or 'int8-block', got {quantize!r}")
    check = compare(clf, OnnxScorer(out / ONNX_FILE), list(check_texts or EXAMPLES))
    return {"format": "onnx", "quantize": quantize, "kept_fp32": kept, "check": check,
            "shared_prefix": isinstance(graph, PrefixScoringGraph),
            **({"smooth": smoothed} if smoothed else {})}


__all__ = ["ONNX_FILE", "OnnxScorer", "PrefixScoringGraph", "ScoringGraph", "export_onnx", "quantize_blocks",
           "quantize_int8", "split_prefix"]
