"""Benchmark `newsbias prep` on the whole AllSides corpus: wall time and peak memory.

    .venv/bin/python benchmarks/prep_speed.py [--data data/allsides] [--repeat 1]

Runs prep in a subprocess (near-duplicate detection on, outlet-disjoint split) and samples the
resident memory of the whole process tree (prep and its worker processes) every 0.1 s. Prints a
Markdown table. Target (issue #2): under 2 minutes and under 4 GB peak on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return out


def tree_rss_mb(pid: int) -> float:
    """Sum of PSS over ``pid`` and all its descendants (Linux /proc).

    PSS, not RSS: forked workers share the parent's pages, and RSS would count them once per process.
    """
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
        stack += _children(p)
    return total / 1024


def run_once(data: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "newsbias.cli", "prep", "-q", "--input", str(data), "--out", str(out),
           "--split", "by_source", "prep.dedup.near=true", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"prep failed: {stderr.strip()}")
    meta = json.loads((out / "prep_meta.json").read_text())
    return {"wall_s": wall, "peak_mb": peak, "meta": meta}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "allsides",
                    help="the AllSides corpus: a clone of its repository, or its articles as one .jsonl.gz")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("overrides", nargs="*", help="extra prep overrides, e.g. prep.workers=1")
    args = ap.parse_args()
    if not args.data.exists():
        raise SystemExit(f"data not found: {args.data}; pass --data (a clone of the AllSides repository, or its "
                         f"articles as one .jsonl.gz)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            r = run_once(args.data, Path(tmp) / f"out{i}", args.overrides)
            rows.append(r)
    meta = rows[-1]["meta"]
    sizes = meta["splits"]["sizes"]
    print(f"cores: {os.cpu_count()}, load before run: {os.getloadavg()[0]:.2f}")
    print("| run | articles in | written (train/val/test) | dropped | shared outlets | cross-split dups | wall s | peak MB (PSS, tree) |")
    print("|---|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        m = r["meta"]
        leak = m["leakage"]
        dups = leak["exact_duplicate_pairs_across_splits"]["count"] + leak["near_duplicate_pairs_across_splits"]["count"]
        print(f"| {i + 1} | {m['counts']['read']} | {sizes['train']}/{sizes['val']}/{sizes['test']} | "
              f"{sum(m['counts']['dropped_by_reason'].values())} | {leak['shared_outlets']['count']} | {dups} | "
              f"{r['wall_s']:.1f} | {r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
