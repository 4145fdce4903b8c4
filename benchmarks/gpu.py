"""GPU benchmark, ready to run on any CUDA device: training and scoring speed, this recipe vs the original.

    python benchmarks/gpu.py [--batch 8] [--steps 6] [--articles 64] [--seq 512]

Runs two scripts beside it on the Qwen3-0.6B architecture with random weights in bf16 (speed does
not depend on the weight values), ``--seq``-token inputs, and prints their Markdown tables:

* ``train_speed.py``: LoRA training examples/s and peak GPU memory, newsbias's recipe (dynamic
  padding, LM head and loss at the label token only) vs the original assignment's recipe
  (padding to max_length, full-vocabulary LM loss), ``--batch`` examples per step;
* ``predict_speed.py``: articles/s of batched label scoring vs per-article greedy generation.

On a machine without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8, help="training examples per step")
    ap.add_argument("--steps", type=int, default=6, help="timed training steps per variant")
    ap.add_argument("--articles", type=int, default=64, help="articles scored / generated")
    ap.add_argument("--score-batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu benchmark: no CUDA device on this machine; nothing measured")
        return 0
    print(f"# GPU benchmark on {torch.cuda.get_device_name()} (torch {torch.__version__})\n")
    print("## LoRA training step\n", flush=True)
    subprocess.run([sys.executable, str(HERE / "train_speed.py"), "--device", "cuda", "--dtype", "bfloat16",
                    "--batch", str(args.batch), "--steps", str(args.steps), "--warmup", "2",
                    "--max-length", str(args.seq)], check=True)
    print("\n## Scoring vs generation\n", flush=True)
    subprocess.run([sys.executable, str(HERE / "predict_speed.py"), "--device", "cuda", "--dtype", "bfloat16",
                    "--articles", str(args.articles), "--batch", str(args.score_batch), "--seq", str(args.seq)],
                   check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
