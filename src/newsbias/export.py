"""``newsbias export``: a trained adapter -> a shareable directory with a model card.

* Without ``merge``: the adapter files (peft config + weights, tokenizer, ``newsbias.json``,
  ``manifest.json``) copied as they are.
* With ``merge``: the LoRA weights folded into the base (``merge_and_unload``; for ``head: cls``
  the trained classifier replaces the base's) and saved as a plain transformers model
  (safetensors) with the tokenizer and ``newsbias.json`` (``merged: true``). It scores like base +
  adapter; load it with ``Classifier.load(DIR)`` or ``newsbias serve --model DIR``.

Both get a ``README.md`` model card (:func:`model_card`). ``push_to_hub`` uploads the directory
with ``huggingface_hub`` (token from ``HF_TOKEN`` or ``huggingface-cli login``).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import ExportConfig
from .errors import NewsbiasError
from .classifier import Classifier
from .io import atomic_dir, check_output_dir
from .modeling import ModelSettings

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
MARKER_FILE = "export.json"  # {"stage": "export", ...}: marks a directory this stage may replace
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "newsbias.json", "manifest.json",
                 "train_log.jsonl")
# Licenses of bases people use with newsbias (model id prefix, lower case -> SPDX-like hub id).
KNOWN_LICENSES = {
    "qwen/qwen3-": "apache-2.0", "qwen/qwen2.5-0.5b": "apache-2.0", "qwen/qwen2.5-1.5b": "apache-2.0",
    "qwen/qwen2.5-7b": "apache-2.0", "sentence-transformers/all-minilm": "apache-2.0",
    "google-bert/bert-": "apache-2.0", "bert-base": "apache-2.0", "distilbert": "apache-2.0",
    "answerdotai/modernbert": "apache-2.0", "microsoft/deberta-v3": "mit", "roberta-": "mit",
    "facebookai/roberta-": "mit", "huggingfacetb/smollm": "apache-2.0",
    "meta-llama/llama-3.2": "llama3.2", "google/gemma": "gemma",
}


# ------------------------------------------------------------------------------ merge / load


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base_model: Optional[str] = None,
                  dtype: str = "auto") -> ModelSettings:
    """Base + adapter merged into one transformers model saved in ``out_dir`` (safetensors).

    Writes the model, the adapter's tokenizer and ``newsbias.json`` (``merged: true``, the
    original base kept in ``base_model``); returns the settings written. A GGUF base is written
    as ordinary safetensors weights (the dequantised values it was trained on).
    """
    clf = Classifier.load(str(adapter_dir), base_model=base_model, device="cpu", dtype=dtype)
    return clf.save(out_dir, extra={"merged": True, "merged_from": str(adapter_dir)})


# ------------------------------------------------------------------------------ model card


def _read_json(path: Optional[Path]) -> Optional[dict[str, Any]]:
    if path is None or not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def is_hub_id(name: str) -> bool:
    """``owner/name`` that is not a local path."""
    return (name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()
            and all(part.strip() for part in name.split("/")))


def base_license(base_id: str) -> Optional[str]:
    """The license of a known base model id, else None."""
    low = base_id.lower()
    return next((lic for prefix, lic in KNOWN_LICENSES.items() if low.startswith(prefix)), None)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def model_card(adapter_dir: str | Path, merged: bool = False, base_model_id: Optional[str] = None,
               license: Optional[str] = None, datasets: Optional[list[str]] = None,
               metrics: Optional[dict[str, Any]] = None) -> str:
    """The ``README.md`` of an export: YAML front matter + training, data, evaluation, use and limits.

    Reads ``newsbias.json`` and ``manifest.json`` of the adapter dir, and ``prep_meta.json`` when
    the manifest points at it (split mode, sizes, leakage figures). ``metrics`` is a metrics JSON
    of ``newsbias evaluate`` (test-set figures); otherwise only best validation figures are shown.
    """
    adir = Path(adapter_dir)
    settings = ModelSettings.load(adir)
    manifest = _read_json(adir / "manifest.json") or {}
    prep_path = ((manifest.get("data") or {}).get("prep_meta") or {}).get("path")
    prep = _read_json(Path(prep_path)) if prep_path else None
    base = base_model_id or settings.base_model
    base_for_yaml = base if is_hub_id(base) else None
    lic = license or (base_license(base) if base_for_yaml else None)
    train_cfg = manifest.get("config") or {}
    split = (prep or {}).get("splits") or {}

    front: dict[str, Any] = {}
    if base_for_yaml:
        front["base_model"] = base_for_yaml
    front["library_name"] = "transformers" if merged else "peft"
    front["license"] = lic or "other"
    if datasets:
        front["datasets"] = list(datasets)
    front["language"] = ["en"]
    front["metrics"] = ["f1", "accuracy"]
    front["pipeline_tag"] = "text-classification"
    front["tags"] = ["newsbias", "political-bias", "news", "lora", "peft"] + (["merged"] if merged else [])
    best = settings.best_val or {}
    if metrics or best:
        results = []
        src = metrics or {}
        for key, typ, name in (("macro_f1", "f1", "macro-F1"), ("accuracy", "accuracy", "accuracy")):
            value = src.get(key) if metrics else best.get(f"val_{key}")
            if isinstance(value, (int, float)):
                results.append({"type": typ, "value": round(float(value), 4), "name": name})
        if results:
            front["model-index"] = [{"name": adir.name, "results": [{
                "task": {"type": "text-classification", "name": "political leaning (left / center / right)"},
                "dataset": {"type": (datasets or ["newsbias-prep"])[0],
                            "name": "test split" if metrics else "validation split",
                            "split": "test" if metrics else "validation"},
                "metrics": results}]}]

    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             f"# {adir.name}: political leaning of news articles (left / center / right)", ""]
    kind = ("a merged model (LoRA weights folded into the base" +
            (", trained classifier head included)" if settings.head == "cls" else ")")) if merged else "a LoRA adapter"
    lines += [f"This is {kind} for `{base}`, trained with "
              f"newsbias to label a news article **left**, **center** or **right**.",
              "", "| | |", "|---|---|",
              f"| base model | `{base}` |",
              f"| license of the base | {lic or 'unknown: check the base model before redistributing'} |",
              f"| head | `{settings.head}` ("
              + ("label-token logits of the causal LM at the answer position" if settings.head == "lm"
                 else "sequence-classification head") + ") |",
              f"| labels | {', '.join(settings.labels)} |",
              f"| max input tokens | {settings.prompt.max_length} (truncation: {settings.prompt.truncation}) |",
              f"| chat template | {'yes' if settings.uses_chat_template else 'no'} |", ""]

    lines += ["## Use", ""]
    if merged:
        lines += ["```bash", "newsbias serve --model path/to/this/dir   # API + page on 127.0.0.1:8000", "```", "",
                  "```python", "from newsbias.classifier import Classifier",
                  "clf = Classifier.load(\"path/to/this/dir\")",
                  "probs = clf.predict_proba([\"article text ...\"])  # columns: left, center, right",
                  "```", ""]
    else:
        lines += ["```bash", "newsbias predict --adapter path/to/this/dir --input articles.jsonl --out preds.jsonl",
                  "newsbias serve --adapter path/to/this/dir   # API + page on 127.0.0.1:8000", "```", "",
                  "```python", "from newsbias.classifier import Classifier",
                  "clf = Classifier.load(\"path/to/this/dir\")",
                  "probs = clf.predict_proba([\"article text ...\"])  # columns: left, center, right",
                  "```", ""]
    lines += ["Scoring reads the model's probabilities for the three labels from one forward pass, with the "
              "prompt, truncation and label tokens recorded in `newsbias.json`; use newsbias to get the same "
              "numbers as in training.", ""]

    lines += ["## Training", ""]
    if train_cfg:
        lora, optim, prm = train_cfg.get("lora", {}), train_cfg.get("optim", {}), train_cfg.get("prompt", {})
        summary = manifest.get("summary") or {}
        rows = [["LoRA r / alpha / dropout", f"{lora.get('r')} / {lora.get('alpha')} / {lora.get('dropout')}"],
                ["target modules", lora.get("target_modules")],
                ["learning rate", optim.get("lr")], ["epochs / max steps", f"{optim.get('epochs')} / {optim.get('max_steps')}"],
                ["batch size x grad accum", f"{optim.get('batch_size')} x {optim.get('grad_accum')}"],
                ["class weights", optim.get("class_weights")], ["prompt max_length", prm.get("max_length")],
                ["steps run", summary.get("steps")], ["best step", summary.get("best_step")],
                ["seed", train_cfg.get("seed")], ["device / dtype", f"{manifest.get('device')} / {manifest.get('dtype')}"],
                ["training time (s)", manifest.get("seconds")], ["git commit", manifest.get("git_commit")]]
        lines += [_table(["setting", "value"], rows), "",
                  "The full configuration, data hashes and package versions are in `manifest.json`.", ""]
    else:
        lines += ["No `manifest.json` was found next to the adapter; the training configuration is unknown.", ""]

    lines += ["## Data and split", ""]
    if prep:
        inp = prep.get("input") or {}
        sizes = split.get("sizes") or {}
        lines += [f"Source: `{Path(str(inp.get('path', '?'))).name}` (format {inp.get('format', '?')}), "
                  f"{prep.get('counts', {}).get('read', '?')} rows read, "
                  f"{prep.get('counts', {}).get('written', '?')} kept after cleaning and de-duplication.", "",
                  f"Split: **{split.get('mode', '?')}** (seed {split.get('seed')}); sizes: "
                  + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ".", ""]
        counts = split.get("label_counts") or {}
        if counts:
            lines += [_table(["split"] + list(settings.labels),
                             [[k] + [v.get(l, 0) for l in settings.labels] for k, v in counts.items()]), ""]
        leak = prep.get("leakage") or {}
        if leak:
            rows = [[k.replace("_", " "), (v or {}).get("count")] for k, v in leak.items() if isinstance(v, dict)]
            lines += ["Leakage between splits (from prep's report):", "", _table(["check", "count"], rows), ""]
        if split.get("mode") == "random":
            lines += ["**This model was evaluated on a random split**: the same outlets appear in train and test, "
                      "so the figures below are an upper bound; expect lower scores on outlets it has not seen "
                      "(use `prep.split.mode=by_source` for an honest estimate).", ""]
    else:
        lines += ["The training manifest does not point at a `prep_meta.json`; split and leakage figures are "
                  "not available.", ""]

    lines += ["## Evaluation", ""]
    if metrics:
        ci = metrics.get("macro_f1_ci") or {}
        rows = [["macro-F1", metrics.get("macro_f1")], ["accuracy", metrics.get("accuracy")],
                ["micro-F1", metrics.get("micro_f1")], ["invalid rate", metrics.get("invalid_rate")],
                ["n", metrics.get("n")]]
        if ci:
            rows.insert(1, [f"macro-F1 {int(round(100 * ci.get('confidence', 0.95)))}% CI",
                            f"{_fmt(ci.get('low'))} - {_fmt(ci.get('high'))}"])
        lines += ["Test set (`newsbias evaluate`):", "", _table(["metric", "value"], rows), ""]
        per = metrics.get("per_class") or {}
        if per:
            lines += [_table(["label", "precision", "recall", "F1", "support"],
                             [[l, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support")]
                              for l, v in per.items()]), ""]
    if best:
        rows = [[k, v] for k, v in best.items() if k != "metric"]
        lines += [f"Best validation checkpoint (selected by {best.get('metric', '?')}):", "",
                  _table(["metric", "value"], rows), ""]
    if not metrics and not best:
        lines += ["No evaluation figures recorded.", ""]

    lines += ["## Intended use and limitations", "",
              "- **The labels are outlet-level ratings, not per-article judgements.** Each training article "
              "carries the bias rating of the outlet that published it (e.g. AllSides' media rating). The model "
              "learns what text from outlets rated left / center / right tends to look like — topic, wording, "
              "house style — not whether a particular article is slanted. Read a prediction as \"reads like "
              "outlets rated X\".",
              "- Figures from a random split are an upper bound: outlets shared between train and test let the "
              "model recognise the outlet instead of the leaning. Outlet-disjoint (`by_source`) figures are the "
              "honest estimate for unseen outlets.",
              "- US-centric, English-only, three coarse classes on a one-dimensional left-right axis; ratings "
              "change over time and differ between rating organisations.",
              "- Inputs longer than the max input tokens are truncated.",
              "- Intended for research, media-literacy tools and aggregate analysis. Do not use it to label, "
              "rank, moderate or censor individual authors, articles or outlets without human review.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ export / push


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


def run_export(cfg: ExportConfig) -> dict[str, Any]:
    """Export ``cfg.adapter`` into ``cfg.out`` (copied or merged) with a model card; optionally push it.

    ``cfg.out`` must be new, empty, or an earlier export (``export.json``), replaced only with
    ``overwrite``; the export is written atomically.
    """
    adir = Path(cfg.adapter)
    if not (adir / "newsbias.json").is_file():
        raise NewsbiasError(f"{adir} is not a `newsbias train` output (no newsbias.json); set export.adapter")
    full = not (adir / "adapter_config.json").is_file()  # a train.finetune=full output: weights, no adapter
    out = check_output_dir(cfg.out, "export", MARKER_FILE, inputs=[adir])
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise NewsbiasError(f"{out} holds an earlier export; pass --overwrite to replace it or pick another --out")
    metrics = None
    if cfg.metrics:
        metrics = _read_json(Path(cfg.metrics))
        if metrics is None:
            raise NewsbiasError(f"metrics file {cfg.metrics} is missing or not JSON; pass the output of `newsbias evaluate`")
    merged = cfg.merge or full
    with atomic_dir(out) as tmp:
        if merged:
            merge_adapter(adir, tmp, base_model=cfg.base_model, dtype=cfg.dtype)
            if (adir / "manifest.json").is_file():
                shutil.copy2(adir / "manifest.json", tmp / "manifest.json")
        else:
            for f in adir.iterdir():
                if f.is_file() and (f.name in ADAPTER_FILES or f.name.startswith(
                        ("tokenizer", "special_tokens", "vocab", "merges", "chat_template"))):
                    shutil.copy2(f, tmp / f.name)
        card = model_card(adir, merged=merged, base_model_id=cfg.base_model_id, license=cfg.license,
                          datasets=cfg.datasets, metrics=metrics)
        (tmp / CARD_FILE).write_text(card, encoding="utf-8")
        (tmp / MARKER_FILE).write_text(json.dumps({"stage": "export", "from": str(adir.resolve()), "merged": merged},
                                                  indent=2) + "\n", encoding="utf-8")
    if cfg.card_in_adapter:
        (adir / CARD_FILE).write_text(model_card(adir, merged=False, base_model_id=cfg.base_model_id,
                                                 license=cfg.license, datasets=cfg.datasets, metrics=metrics),
                                      encoding="utf-8")
    result: dict[str, Any] = {"out": str(out), "merged": merged, "files": sorted(p.name for p in out.iterdir())}
    if cfg.push_to_hub:
        result["pushed"] = push_to_hub(out, cfg.push_to_hub, private=cfg.private)
    return result
