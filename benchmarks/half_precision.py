"""How many weights a few training steps move: fp32, bf16 as training runs it, and pure bf16.

    .venv/bin/python benchmarks/half_precision.py MODEL_DIR [--config configs/demo-encoder.yaml]
        [--data runs/demo/data] [--steps 3] [KEY=VALUE ...]

Builds the recipe of ``--config`` (by default the demo's encoder: full fine-tune, lr 5e-5) on the
first 64 training articles, runs ``--steps`` optimizer steps without warm-up and prints the share of
trainable weight elements that changed. Modes:

* ``float32``: the reference;
* ``bfloat16``: what ``newsbias train`` does with ``model.dtype: bfloat16`` (or ``auto`` on a GPU):
  frozen weights in bf16, trained weights in fp32, forward passes under autocast;
* ``pure bfloat16``: the trained weights cast back to bf16 and no autocast (what training did before):
  AdamW's steps below half a bf16 step of a weight are rounded away.

bf16 is fast only on CPUs with bf16 units (AMX, AVX-512 BF16) and on GPUs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from newsbias.config import load_config  # noqa: E402
from newsbias.train import epoch_batches, setup, train_step  # noqa: E402


def share_moved(overrides: list[str], config: str, steps: int, pure: bool) -> tuple[str, float]:
    """(dtype of the trained weights, share of their elements changed by ``steps`` optimizer steps)."""
    import torch

    r = setup(load_config(config, overrides).train, progress=False)
    if pure:
        for p in r.model.parameters():
            if p.requires_grad:
                p.data = p.data.bfloat16()
        r.half = None
    trained = [(n, p) for n, p in r.model.named_parameters() if p.requires_grad]
    before = {n: p.detach().float().clone() for n, p in trained}
    batches = epoch_batches(r.lengths, r.cfg.optim.batch_size, 0, 0, True, 1)
    for k in range(steps):
        train_step(r, batches[k % len(batches):k % len(batches) + 1])
    with torch.no_grad():
        moved = sum(int((p.float() != before[n]).sum()) for n, p in trained)
    return str(trained[0][1].dtype).replace("torch.", ""), moved / sum(p.numel() for _, p in trained)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="the model the config trains (e.g. the all-MiniLM-L6-v2 directory)")
    ap.add_argument("--config", default="configs/demo-encoder.yaml")
    ap.add_argument("--data", default="runs/demo/data")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default="/tmp/newsbias-half-precision")
    ap.add_argument("overrides", nargs="*", help="extra KEY=VALUE overrides of the config")
    args = ap.parse_intermixed_args()  # KEY=VALUE overrides may follow the flags, as the synopsis shows
    common = [f"train.model.name_or_path={args.model}", f"train.data.path={args.data}", "train.data.train_limit=64",
              "train.data.val_limit=16", "train.optim.warmup_ratio=0", "train.head_init=random",
              "train.overwrite=true", "train.progress=false", *args.overrides]
    print(f"{args.config}, {args.steps} steps, {args.model}\n")
    print("| mode | trained weights | share of their elements moved |")
    print("|---|---|---:|")
    for mode, dtype, pure in (("float32", "float32", False), ("bfloat16 (training today)", "bfloat16", False),
                              ("pure bfloat16", "bfloat16", True)):
        kept, share = share_moved([*common, f"train.model.dtype={dtype}", f"train.out_dir={args.out}/{dtype}{pure}"],
                                  args.config, args.steps, pure)
        print(f"| {mode} | {kept} | {share:.1%} |")


if __name__ == "__main__":
    main()
