"""Hostile input for `newsbias prep`: every malformed input, config or output path is one line and exit 2.

Nothing escapes as a traceback, no file outside prep's own output changes, a previous good output
stays byte-identical when a run fails, and odd-but-usable input (NULs, lone surrogates, a BOM, one
giant article) is cleaned into valid UTF-8. Cases: ``tests/fuzz/prep_cases.py``.
"""

from __future__ import annotations

import pytest

from newsbias.cli import main

from fuzz.prep_cases import _csv, _rows, cases, run_case

CASES = cases()


@pytest.fixture(scope="module")
def good_out(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    (d / "in.csv").write_text(_csv(_rows(90)))
    assert main(["prep", "-q", "--input", str(d / "in.csv"), "--out", str(d / "out"), "prep.dedup.near=false"]) == 0
    return d / "out"


def test_there_are_at_least_60_malformed_cases():
    assert sum(not c.usable for c in CASES) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_prep_case(case, good_out, tmp_path):
    r = run_case(case, tmp_path, good_out)
    assert r["traceback"] is None, r["traceback"]
    assert not r["touched"], f"files changed: {r['touched']}"
    if case.usable:
        assert r["rc"] == 0 and r["valid_utf8"], r["message"]
    else:
        assert r["rc"] == 2, f"exit {r['rc']} on unusable input: {r['message']}"
        assert r["message"].startswith("newsbias prep: error:") and "\n" not in r["message"], r["message"]
        assert len(r["message"]) <= 700
