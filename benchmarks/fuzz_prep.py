"""Hostile-input run of `newsbias prep`: every case of tests/fuzz/prep_cases.py, as a Markdown table.

    .venv/bin/python benchmarks/fuzz_prep.py

Each case runs in-process against a copy of a good prep output; a row passes when the run ends
with one line and exit 2 (exit 0 and valid UTF-8 for the usable cases), no traceback, and no file
outside prep's own output changed (for failures: none at all, the old output included).
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz.prep_cases import _csv, _rows, cases, run_case  # noqa: E402

from newsbias.cli import main  # noqa: E402


def main_() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "in.csv").write_text(_csv(_rows(90)))
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["prep", "-q", "--input", str(d / "in.csv"), "--out", str(d / "good"),
                         "prep.dedup.near=false"]) == 0
        results = [run_case(c, d / f"case{i}", d / "good") for i, c in enumerate(cases())]
    print("| case | usable | exit | traceback | files touched | pass | message |")
    print("|---|---|---:|---|---:|---|---|")
    for r in results:
        msg = r["message"].replace("|", "\\|")[:110]
        print(f"| {r['case']} | {'yes' if r['usable'] else ''} | {r['rc']} | {'YES' if r['traceback'] else ''} "
              f"| {len(r['touched'])} | {'ok' if r['ok'] else 'FAIL'} | {msg} |")
    bad = [r for r in results if not r["ok"]]
    n_mal = sum(not r["usable"] for r in results)
    print(f"\n{len(results)} cases ({n_mal} malformed, {len(results) - n_mal} usable): "
          f"{len(results) - len(bad)} pass, {len(bad)} fail; tracebacks: {sum(bool(r['traceback']) for r in results)}; "
          f"exit 0 on unusable input: {sum(r['rc'] == 0 and not r['usable'] for r in results)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main_())
