"""SmoothQuant scale migration for a decoder LM before int8 (``newsbias export --smooth ALPHA``).

Per-tensor int8 gives every activation tensor one scale, so a few channels with large values (a
decoder's normalised hidden states and its gated MLP activations have them) coarsen all the
others. SmoothQuant (Xiao et al., ICML 2023) divides each input channel ``j`` of a weight matrix
product by ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` and multiplies the weight's column
``j`` by the same ``s_j``: the product is unchanged, and the activation's range is flatter. The
division is folded into whatever computes ``X`` (the model's function does not change; only what
int8 rounds does):

* q/k/v projections: into the attention's RMSNorm weight;
* gate/up projections: into the MLP's RMSNorm weight;
* the MLP's down projection: into the rows of the up projection (its input is ``silu(gate) * up``);
* the attention's output projection: into the rows of the value projection, one scale per value
  channel (grouped-query heads share a value channel, so its query heads share the scale).

Written here rather than taken from ONNX Runtime, which runs SmoothQuant only through Intel Neural
Compressor: the transform is a few exact weight rescalings of the torch model before tracing.
It needs the Llama / Qwen layer layout (``input_layernorm``, ``post_attention_layernorm``,
``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``) with plain ``x * weight`` norms; the
result is checked on the calibration articles and refused if the model's probabilities moved.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from .errors import NewsbiasError
from .modeling import _hf_model

CHECK_TOLERANCE = 1e-3  # fp32 rescaling moves probabilities by ~1e-6; more means the layout is not the one assumed


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's decoder layers if every one has the Llama / Qwen layout, else an empty list."""
    body = getattr(_hf_model(model), "model", None)
    layers = list(getattr(body, "layers", []) or [])
    names = ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
             "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")

    def has_layout(layer: nn.Module) -> bool:
        mods = dict(layer.named_modules())
        return all(n in mods for n in names) and all(type(mods[n]) is nn.Linear for n in names[2:])

    return layers if layers and all(has_layout(layer) for layer in layers) else []


def activation_ranges(clf: Any, layers: list[nn.Module], texts: Sequence[str], batch_size: int = 16
                      ) -> tuple[list[dict[str, torch.Tensor]], np.ndarray]:
    """Per layer, the largest absolute input of each channel of each projection over ``texts``; and
    ``clf``'s probabilities on them (the same pass)."""
    ranges: list[dict[str, torch.Tensor]] = [{} for _ in layers]

    def hook(i: int, name: str):
        def record(_mod: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0).float()
            ranges[i][name] = torch.maximum(ranges[i][name], x) if name in ranges[i] else x
        return record

    handles = [getattr(layer, part).get_submodule(proj).register_forward_pre_hook(hook(i, proj))
               for i, layer in enumerate(layers)
               for part, proj in (("self_attn", "q_proj"), ("self_attn", "o_proj"), ("mlp", "gate_proj"),
                                  ("mlp", "down_proj"))]
    try:
        probs = clf.predict_proba(list(texts), batch_size=batch_size)
    finally:
        for h in handles:
            h.remove()
    return ranges, probs


def migration_scales(x_max: torch.Tensor, weights: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` over the columns of every weight reading ``X``."""
    w_max = torch.stack([w.detach().abs().amax(0) for w in weights]).amax(0)
    return (x_max.clamp(min=1e-5) ** alpha / w_max.clamp(min=1e-5) ** (1 - alpha)).clamp(min=1e-5)


@torch.no_grad()
def migrate(layer: nn.Module, ranges: dict[str, torch.Tensor], alpha: float, kv_heads: int) -> None:
    """Apply the four rescalings of the module docstring to one decoder layer, in place."""
    at, mlp = layer.self_attn, layer.mlp
    qkv = (at.q_proj, at.k_proj, at.v_proj)
    s = migration_scales(ranges["q_proj"], [p.weight for p in qkv], alpha)
    layer.input_layernorm.weight.div_(s)
    for p in qkv:
        p.weight.mul_(s)
    s = migration_scales(ranges["gate_proj"], [mlp.gate_proj.weight, mlp.up_proj.weight], alpha)
    layer.post_attention_layernorm.weight.div_(s)
    for p in (mlp.gate_proj, mlp.up_proj):
        p.weight.mul_(s)
    s = migration_scales(ranges["down_proj"], [mlp.down_proj.weight], alpha)
    _scale_rows(mlp.up_proj, 1 / s)
    mlp.down_proj.weight.mul_(s)
    # o_proj's input channel (query head h, dim d) reads value channel (h // group, d): one scale per value channel
    head_dim = at.v_proj.out_features // kv_heads
    s = migration_scales(ranges["o_proj"], [at.o_proj.weight], alpha).view(kv_heads, -1, head_dim).amax(1)
    _scale_rows(at.v_proj, 1 / s.reshape(-1))
    at.o_proj.weight.mul_(s.repeat_interleave(at.o_proj.in_features // s.numel(), 0).reshape(-1))


def _scale_rows(linear: nn.Linear, factor: torch.Tensor) -> None:
    """Multiply each output channel of ``linear`` (weight row and bias) by ``factor``."""
    linear.weight.mul_(factor[:, None])
    if linear.bias is not None:
        linear.bias.mul_(factor)


def smooth_for_int8(clf: Any, texts: Sequence[str], alpha: float) -> dict[str, Any]:
    """Migrate activation outliers of ``clf``'s decoder into its weights (in place), calibrated on ``texts``.

    Returns what the export records: ``alpha``, the number of calibration articles, the layers
    rescaled and the largest probability change of the fp32 model on the calibration articles.
    """
    if not 0 < alpha <= 1:
        raise NewsbiasError(f"export.smooth must be in (0, 1], got {alpha} (0.85 measured best)")
    layers = decoder_layers(clf.model)
    if not layers:
        raise NewsbiasError(f"export.smooth needs a decoder LM with the Llama / Qwen layer layout (q/k/v/o and "
                            f"gate/up/down projections, LoRA merged); {clf.source or 'this model'} has none: drop "
                            f"--smooth")
    if not texts:
        raise NewsbiasError("export.smooth needs calibration articles; set export.calibration_data")
    original = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in layers]
    kv_heads = _hf_model(clf.model).config.num_key_value_heads
    per_layer, before = activation_ranges(clf, layers, texts)
    for layer, ranges in zip(layers, per_layer):
        migrate(layer, ranges, alpha, kv_heads)
    moved = float(np.abs(clf.predict_proba(list(texts), batch_size=16) - before).max())
    if moved > CHECK_TOLERANCE:
        for layer, state in zip(layers, original):
            layer.load_state_dict(state)
        raise NewsbiasError(f"export.smooth changed the fp32 model's probabilities by {moved:.3g} on the calibration "
                            f"articles (a norm that is not `x * weight`?); the model is left as it was: drop --smooth")
    return {"alpha": alpha, "calibration_articles": len(texts), "layers": len(layers),
            "max_abs_prob_diff_fp32": round(moved, 8)}


__all__ = ["activation_ranges", "decoder_layers", "migrate", "migration_scales", "smooth_for_int8"]
