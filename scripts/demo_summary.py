"""The demo's appendix: the per-stage timing table, the generation runs' results and what enc-tuned leans on.

    python scripts/demo_summary.py OUT_DIR [--timing-only]

Reads ``OUT_DIR/timing.tsv`` (written by scripts/demo.sh), ``OUT_DIR/explain/manifest.json`` and
``OUT_DIR/report/generation/metrics.json`` (the compare of the generation runs).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def timing(out: Path) -> list[str]:
    rows = [line.split("\t") for line in (out / "timing.tsv").read_text().splitlines() if line.strip()]
    total = sum(int(s) for _, s in rows)
    lines = [f"## Time per stage ({os.cpu_count()} CPU cores)", "", "| stage | seconds | minutes |", "|---|---:|---:|"]
    lines += [f"| {name} | {s} | {int(s) / 60:.1f} |" for name, s in rows]
    lines += [f"| **total** | **{total}** | **{total / 60:.1f}** |", ""]
    return lines


def generation(out: Path) -> list[str]:
    path = out / "report" / "generation" / "metrics.json"
    if not path.is_file():
        return []
    runs = json.loads(path.read_text())["metrics"]
    lines = ["## Generation vs label scoring (the same first articles of test)", "",
             "Generation is the reference recipe's method: greedy decoding of a few tokens, parsed; an answer with no "
             "label word is invalid and counts as wrong.", "",
             "| run | macro-F1 | invalid rate | n |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {m['macro_f1']:.3f} | {m['invalid_rate']:.1%} | {m['n']} |" for name, m in runs.items()]
    return lines + [""]


def explained(out: Path) -> list[str]:
    path = out / "explain" / "manifest.json"
    if not path.is_file():
        return []
    s = json.loads(path.read_text())["summary"]
    return ["## What enc-tuned leans on (`newsbias explain`)", "",
            f"Each word enc-tuned read in {s['articles']} test articles (one of each outlet in turn) was left out and "
            f"the article rescored (`{out}/explain/explain.md`, `explain.html`). The word that most supported the "
            f"answer was one of the article's own outlet cues (its outlet's name, a link, a byline or a dateline) in "
            f"{s['top_unit_is_cue']} of {s['articles']} articles; outlet cues carry {s['cue_share_of_support']:.1%} "
            f"of all support for the answers; leaving them out changes {s['flipped_without_cues']} of the "
            f"{s['articles_with_cues']} answers of articles that have any.", ""]


def main() -> None:
    out = Path(sys.argv[1])
    if "--timing-only" in sys.argv:
        lines = timing(out)
    else:  # written before the report's own stage, which appears in timing.tsv and the demo's last lines
        lines = timing(out)[:-1] + ["", "(This table was written before the report itself, whose stage — compare + "
                                    "report — `timing.tsv` and the demo's closing table add.)", ""]
        lines += generation(out) + explained(out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
