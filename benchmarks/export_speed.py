"""Eager fp32 vs int8 / ONNX Runtime scoring of a tuned model (issue: fast CPU inference).

    .venv/bin/python benchmarks/export_speed.py MODEL_DIR TEST_JSONL [--n 1000] [--batch 16]
        [--work DIR] [--variants eager,torch-int8,onnx,onnx-int8,onnx-int8-all,onnx-int8-block,...]
        [--threads N]

MODEL_DIR is a ``newsbias train`` output. Each variant scores the same first ``n`` articles of the
test split at ``--batch`` (length-sorted, as predict does) in a process of its own, so its peak
memory (``VmHWM``) is its own:

* ``eager``: ``Classifier.load(MODEL_DIR)``, fp32 PyTorch: the reference;
* ``eager-bf16``: the same in bf16 (fast only on CPUs with AMX or AVX-512 BF16 units);
* ``compiled``: the same, LoRA merged, with the model body under ``torch.compile(dynamic=True)``
  (its compile happens in the warm-up batch, which is not timed);
* ``torch-int8``: the same with torch's dynamic int8 quantisation of the body's Linear layers
  (per-channel weights);
* ``onnx``, ``onnx-int8``, ``onnx-int8-all``, ``onnx-int8-block``, ``onnx-int8-block-all``:
  ``newsbias export --format onnx`` into ``--work`` (fp32; ``--quantize int8`` with the default
  ``keep_fp32`` and with ``keep_fp32=[]``; the same with ``--smooth 0.85`` (decoder LMs only,
  calibrated on the first 128 articles of the train split beside TEST_JSONL), and for
  ``--quantize int8-block``), loaded with ``Classifier.load`` like predict loads them.

Prints a Markdown table: articles/s (scoring only, after one warm-up batch), ratio to eager, peak
memory, macro-F1 against the gold labels, labels identical to eager, median and largest probability
change; then how close eager's top two probabilities are (how small a change can flip a label).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from itertools import islice
from pathlib import Path

import numpy as np

VARIANTS = ("eager", "eager-bf16", "compiled", "torch-int8", "onnx", "onnx-int8", "onnx-int8-all", "onnx-int8-smooth",
            "onnx-int8-smooth-all", "onnx-int8-block", "onnx-int8-block-all")
EXPORTS = {"onnx": {"format": "onnx"}, "onnx-int8": {"format": "onnx", "quantize": "int8"},
           "onnx-int8-all": {"format": "onnx", "quantize": "int8", "keep_fp32": []},
           "onnx-int8-smooth": {"format": "onnx", "quantize": "int8", "smooth": 0.85},
           "onnx-int8-smooth-all": {"format": "onnx", "quantize": "int8", "smooth": 0.85, "keep_fp32": []},
           "onnx-int8-block": {"format": "onnx", "quantize": "int8-block"},
           "onnx-int8-block-all": {"format": "onnx", "quantize": "int8-block", "keep_fp32": []}}


def load(variant: str, model_dir: str, work: Path):
    """The Classifier a variant scores with."""
    import torch

    from newsbias.classifier import Classifier
    from newsbias.modeling import _hf_model

    if variant in EXPORTS:
        return Classifier.load(str(work / variant))
    clf = Classifier.load(model_dir, device="cpu", dtype="bfloat16" if variant == "eager-bf16" else "float32")
    if variant == "compiled":  # Classifier.load has already folded any adapter in
        body = _hf_model(clf.model)
        if clf.settings.head == "lm":
            body.model = torch.compile(body.model, dynamic=True)
        else:
            clf.model.encoder = torch.compile(clf.model.encoder, dynamic=True)
    if variant == "torch-int8":
        warnings.filterwarnings("ignore")  # torch.ao.quantization's deprecation notices
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        body = _hf_model(clf.model).base_model if clf.settings.head == "lm" else clf.model.encoder
        quantize_dynamic(body, {torch.nn.Linear: per_channel_dynamic_qconfig}, inplace=True)
    return clf


def score_one(args: argparse.Namespace) -> None:
    """Child process: score with one variant, save the probabilities, print speed and peak memory as JSON."""
    from newsbias.modeling import set_threads
    from newsbias.records import read_articles

    set_threads(args.threads)
    clf = load(args.one, args.model, Path(args.work))
    texts = [a.text for a in islice(read_articles(args.test), args.n)]
    # warm-up: first-call allocations; compiled: the first shape, then the recompile for dynamic shapes
    clf.predict_proba(texts[:args.batch * (2 if args.one == "compiled" else 1)], batch_size=args.batch)
    t = time.perf_counter()
    probs = clf.predict_proba(texts, batch_size=args.batch)
    seconds = time.perf_counter() - t
    np.save(Path(args.work) / f"{args.one}.npy", probs)
    print(json.dumps({"rate": len(texts) / seconds, "peak_mb": peak_mb()}))


def peak_mb() -> float:
    """This process's peak resident memory: VmHWM (``ru_maxrss`` would carry the parent's peak across exec)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def export_all(model_dir: str, work: Path, variants: list[str], calibration: str) -> dict[str, float]:
    """``newsbias export`` each ONNX variant into ``work`` (kept between runs); seconds per export.
    ``calibration``: the smoothed variants' ``export.calibration_data``."""
    from newsbias.config import ExportConfig
    from newsbias.export import run_export

    seconds = {}
    for v in variants:
        if v in EXPORTS and not (work / v / "model.onnx").is_file():
            t = time.perf_counter()
            calib = {"calibration_data": calibration} if "smooth" in EXPORTS[v] else {}
            run_export(ExportConfig(adapter=model_dir, out=str(work / v), overwrite=True, **EXPORTS[v], **calib))
            seconds[v] = time.perf_counter() - t
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("test")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="default: the physical cores (predict's default)")
    ap.add_argument("--work", default=None, help="where the exports and probabilities go (default: MODEL_DIR-export-speed)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work = args.work or args.model.rstrip("/") + "-export-speed"
    if args.one:
        return score_one(args)
    variants = args.variants.split(",")
    if variants[0] != "eager":
        sys.exit("the first variant must be eager: it is the reference")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for v, s in export_all(args.model, work, variants, str(Path(args.test).parent)).items():
        print(f"exported {v} in {s:.0f} s", file=sys.stderr)
    from newsbias.labels import LABELS
    from newsbias.metrics import macro_f1
    from newsbias.records import read_articles

    gold = [LABELS.index(a.label) for a in islice(read_articles(args.test), args.n)]
    rows = []
    for v in variants:
        cmd = [sys.executable, __file__, args.model, args.test, "--one", v, "--n", str(args.n), "--batch",
               str(args.batch), "--work", str(work)] + (["--threads", str(args.threads)] if args.threads else [])
        res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        rows.append((v, res, np.load(work / f"{v}.npy")))
    ref_rate, ref = rows[0][1]["rate"], rows[0][2]
    print(f"\n{Path(args.model).name}: {len(gold)} articles, batch {args.batch}\n")
    print("| variant | articles/s | ratio | peak memory | macro-F1 | labels = eager | median / max prob change |")
    print("|---|---|---|---|---|---|---|")
    for v, res, p in rows:
        change = np.abs(p - ref).max(1)
        print(f"| {v} | {res['rate']:.1f} | {res['rate'] / ref_rate:.2f} | {res['peak_mb']:.0f} MB | "
              f"{macro_f1(gold, p.argmax(1), range(len(LABELS))):.3f} | {(p.argmax(1) == ref.argmax(1)).mean():.1%} | "
              f"{np.median(change):.4f} / {change.max():.3f} |")
    # an article keeps its label under any change smaller than half its top-2 margin
    top2 = np.sort(ref, 1)[:, -2:]
    margin = np.quantile(top2[:, 1] - top2[:, 0], [0.01, 0.05, 0.1, 0.25, 0.5])
    print("\neager's top-2 probability margin, quantiles 1 / 5 / 10 / 25 / 50 %: "
          + " / ".join(f"{m:.4f}" for m in margin))


if __name__ == "__main__":
    main()
