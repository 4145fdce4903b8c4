"""The demo's LoRA run under several seeds, with the prompt's shared prefix computed once per batch or per row.

    .venv/bin/python benchmarks/lm_seeds.py --model SmolLM2-135M-Instruct.Q4_1.gguf --data runs/demo/data \
        --work DIR [--seeds 1 2] [--share on off] [--set train.lora.dropout=0 ...]

Each run is ``newsbias train -c configs/demo.yaml`` (the demo's LM recipe: 960 articles, 128 tokens,
LoRA r 16 on every linear layer; ``--set`` adds overrides) with ``train.seed=S``, then ``newsbias
predict`` of its adapter on the demo's first 1,000 test articles. ``--share off`` trains with
:data:`newsbias.modeling.SHARED_PREFIX_MIN` above any prompt's length, i.e. every row computes the
prompt's prefix itself; ``on`` is the default rule, which shares it in training only when the forward
pass is deterministic (``train.lora.dropout=0``; the demo's 0.05 does not share). Scoring always shares
(its probabilities agree within float rounding either way). A run whose ``preds.jsonl`` exists is not
repeated. Prints a Markdown table: val macro-F1 of the kept checkpoint, test macro-F1, training seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from newsbias.config import EvaluateConfig
from newsbias.metrics import evaluate

TRAIN = """
import sys
import newsbias.modeling as m
if sys.argv.pop(1) == "off":
    m.SHARED_PREFIX_MIN = 10 ** 9
from newsbias.cli import main
sys.exit(main())
"""


def run(args: argparse.Namespace, share: str, seed: int) -> dict:
    out = Path(args.work) / f"{share}-{seed}"
    preds = out / "preds.jsonl"
    if not preds.exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", TRAIN, share, "train", "-q", "-c", "configs/demo.yaml",
                        f"train.model.name_or_path={args.model}", f"train.data.path={args.data}",
                        f"train.out_dir={out / 'adapter'}", f"train.seed={seed}", *args.set], check=True)
        (out / "train_seconds").write_text(f"{time.perf_counter() - t:.0f}")
        subprocess.run([sys.executable, "-m", "newsbias.cli", "predict", "-q", "-c", "configs/demo.yaml",
                        "--adapter", str(out / "adapter"), "--input", args.data, "--out", str(preds)], check=True)
    best = json.loads((out / "adapter" / "newsbias.json").read_text())["best_val"]
    m = evaluate(EvaluateConfig(preds=str(preds)))
    return {"share": share, "seed": seed, "val": best["val_macro_f1"], "step": best["step"],
            "test": m["macro_f1"], "secs": (out / "train_seconds").read_text()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--share", nargs="+", default=["on", "off"], choices=["on", "off"])
    ap.add_argument("--set", nargs="*", default=[], help="more key=value overrides for every training run")
    args = ap.parse_args()
    rows = [run(args, share, seed) for share in args.share for seed in args.seeds]
    print("| prefix in training | seed | val macro-F1 (kept step) | test macro-F1 (1,000) | training s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {'once per batch' if r['share'] == 'on' else 'once per row'} | {r['seed']} | "
              f"{r['val']:.3f} ({r['step']}) | {r['test']:.3f} | {r['secs']} |")


if __name__ == "__main__":
    main()
