"""Malformed inputs, configs and output paths for ``newsbias prep``, generated on the spot.

Each case writes what it needs under a scratch directory and returns the CLI arguments. ``usable``
cases are odd but valid (NULs, lone surrogates, a BOM): prep must succeed and write valid UTF-8.
Used by ``tests/test_fuzz_prep.py`` and ``benchmarks/fuzz_prep.py``.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

HEADER = "text,label,url\n"
TEXT = "The committee met on Tuesday to discuss the budget and the plan for schools and roads in the county"


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[str]]  # scratch dir -> extra CLI arguments (the input, overrides, --out)
    usable: bool = False


def _rows(n: int, outlets: int = 30) -> list[dict]:
    labels = ("left", "center", "right")
    return [{"text": f"{TEXT} number {i} about topic {i % 7}.", "label": labels[i % 3],
             "url": f"https://site{i % outlets}.com/a/{i}"} for i in range(n)]


def _csv(rows: list[dict]) -> str:
    return HEADER + "".join(f"\"{r['text']}\",{r['label']},{r['url']}\n" for r in rows)


def _file(name: str, content: str | bytes) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        p = d / name
        p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        return ["--input", str(p)]
    return build


def _jsonl(name: str, objs: list, raw: str = "") -> Callable[[Path], list[str]]:
    body = "".join(json.dumps(o) + "\n" for o in objs) + raw
    return _file(name, body)


def _with(build: Callable[[Path], list[str]], *extra: str) -> Callable[[Path], list[str]]:
    return lambda d: build(d) + list(extra)


def _config(text: str | bytes, good: bool = True) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        args = _file("in.csv", _csv(_rows(90)))(d) if good else []
        c = d / "cfg.yaml"
        c.write_bytes(text if isinstance(text, bytes) else text.encode())
        return args + ["-c", str(c)]
    return build


def _out(kind: str) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        args = _file("in.csv", _csv(_rows(90)))(d)
        if kind == "file":
            (d / "taken").write_text("a file")
            return args + ["--out", str(d / "taken")]
        if kind == "under_file":
            (d / "taken").write_text("a file")
            return args + ["--out", str(d / "taken" / "sub")]
        if kind == "user_dir":
            (d / "mine").mkdir()
            (d / "mine" / "thesis.tex").write_text("work")
            return args + ["--out", str(d / "mine")]
        if kind == "contains_input":
            return args + ["--out", str(d)]
        if kind == "dot":
            return args + ["--out", "."]
        raise ValueError(kind)
    return build


def _allsides_dir(files: dict[str, str]) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        j = d / "release" / "data" / "jsons"
        j.mkdir(parents=True)
        for name, body in files.items():
            (j / name).write_text(body)
        return ["--input", str(d / "release"), "prep.input.format=allsides"]
    return build


def _predefined(kind: str) -> Callable[[Path], list[str]]:
    def build(d: Path) -> list[str]:
        rows = [{**r, "id": f"a{i}"} for i, r in enumerate(_rows(60))]
        args = _jsonl("in.jsonl", rows)(d)
        split = ["prep.split.mode=predefined", f"prep.split.predefined.train={d / 'tr.tsv'}",
                 f"prep.split.predefined.val={d / 'va.tsv'}"]
        if kind == "missing":
            return args + split
        if kind == "no_id_column":
            (d / "tr.tsv").write_text("name\tbias\nx\t0\n")
            (d / "va.tsv").write_text("name\tbias\nx\t0\n")
            return args + split
        (d / "tr.tsv").write_text("ID\tbias\nzz1\t0\n")  # ids that match nothing
        (d / "va.tsv").write_text("ID\tbias\nzz2\t0\n")
        return args + split
    return build


def cases() -> list[Case]:
    rnd = random.Random(0)
    good = _rows(90)
    out: list[Case] = [
        Case("empty csv", _file("in.csv", "")),
        Case("header only", _file("in.csv", HEADER)),
        Case("wrong columns", _file("in.csv", "body,leaning\nsome text,left\n")),
        Case("comma-separated .tsv", _file("in.tsv", _csv(good))),
        Case("two text headers", _file("in.csv", "text,label,text\na,left,b\n")),
        Case("ragged rows", _file("in.csv", HEADER + "a,left\nb,right,u,extra\n")),
        Case("latin-1 bytes", _file("in.csv", _csv(good).encode("utf-8") + "café,left,x\n".encode("latin-1"))),
        Case("utf-16 file", _file("in.csv", _csv(good).encode("utf-16"))),
        Case("random bytes .csv", _file("in.csv", bytes(rnd.randrange(256) for _ in range(4000)))),
        Case("truncated .csv.gz", _file("in.csv.gz", gzip.compress(_csv(good).encode())[:200])),
        Case(".gz that is not gzip", _file("in.csv.gz", _csv(good))),
        Case("unknown labels", _file("in.csv", _csv([{**r, "label": "purple"} for r in good]))),
        Case("numeric labels without a scheme", _file("in.csv", _csv([{**r, "label": str(i % 3)}
                                                                          for i, r in enumerate(good)]))),
        Case("two rows", _file("in.csv", _csv(good[:2]))),
        Case("one outlet, by_source", _file("in.csv", _csv(_rows(60, outlets=1)))),
        Case("all texts empty", _file("in.csv", _csv([{**r, "text": ""} for r in good]))),
        Case("all texts too short", _file("in.csv", _csv([{**r, "text": "short"} for r in good]))),
        Case("whitespace texts", _file("in.csv", _csv([{**r, "text": "   \t  "} for r in good]))),
        Case("zero-width texts", _file("in.csv", _csv([{**r, "text": "\u200b\u200b"} for r in good]))),
        Case("labels missing", _file("in.csv", _csv([{**r, "label": ""} for r in good]))),
        Case("empty .jsonl", _file("in.jsonl", "")),
        Case("blank-line .jsonl", _file("in.jsonl", "\n\n\n")),
        Case("malformed JSON line", _jsonl("in.jsonl", good, '{"text": "a", "label": \n')),
        Case("JSON array line", _jsonl("in.jsonl", good, '["a", "left"]\n')),
        Case("text is a list", _jsonl("in.jsonl", [{**r, "text": [r["text"]]} for r in good])),
        Case("text is an object", _jsonl("in.jsonl", [{**r, "text": {"body": r["text"]}} for r in good])),
        Case("text is a number", _jsonl("in.jsonl", [{**r, "text": 12345} for r in good])),
        Case("labels null", _jsonl("in.jsonl", [{**r, "label": None} for r in good])),
        Case("one JSON array file", _file("in.json", json.dumps(good))),
        Case("corrupt parquet", _file("in.parquet", b"PAR1" + bytes(300) + b"PAR1")),
        Case("unknown extension", _file("in.txt", "just some text\n")),
        Case("input missing", lambda d: ["--input", str(d / "nope.csv")]),
        Case("input is a directory (tabular)", lambda d: ["--input", str(d), "prep.input.format=tabular"]),
        Case("allsides dir without json", lambda d: (d / "rel").mkdir() or ["--input", str(d / "rel"),
                                                                              "prep.input.format=allsides"]),
        Case("allsides dir with a JSON array", _allsides_dir({"a.json": json.dumps(good)})),
        Case("allsides dir with bad JSON", _allsides_dir({"a.json": "{not json"})),
        Case("binary config", _config(bytes(range(256)) * 4)),
        Case("config is a list", _config("- a\n- b\n")),
        Case("config YAML syntax error", _config("prep: [unclosed\n")),
        Case("unknown config key", _with(_file("in.csv", _csv(good)), "prep.split.mdoe=random")),
        Case("mapping to an unknown label", _with(_file("in.csv", _csv(good)), "prep.labels.mapping={far: extreme}")),
        Case("negative min_chars", _with(_file("in.csv", _csv(good)), "prep.clean.min_chars=-5")),
        Case("test_frac 1.5", _with(_file("in.csv", _csv(good)), "prep.split.test_frac=1.5")),
        Case("unknown split mode", _with(_file("in.csv", _csv(good)), "prep.split.mode=sideways")),
        Case("group_by an unknown field", _with(_file("in.csv", _csv(good)), "prep.split.group_by=author")),
        Case("bad numeric scheme", _with(_file("in.csv", _csv(good)), "prep.labels.numeric=0123")),
        Case("max_chars 0", _with(_file("in.csv", _csv(good)), "prep.clean.max_chars=0")),
        Case("every text over max_chars", _with(_file("in.csv", _csv(good)), "prep.clean.max_chars=20")),
        Case("format names the wrong reader", _with(_file("in.csv", _csv(good)), "prep.input.format=instruction")),
        Case("bad encoding name", _with(_file("in.csv", _csv(good)), "prep.input.encoding=klingon")),
        Case("override without a section", _with(_file("in.csv", _csv(good)), "nosuch=1")),
        Case("by_time without dates", _with(_file("in.csv", _csv(good)), "prep.split.mode=by_time")),
        Case("--out is a file", _out("file")),
        Case("--out under a file", _out("under_file")),
        Case("--out holds a user's file", _out("user_dir")),
        Case("--out contains the input", _out("contains_input")),
        Case("--out .", _out("dot")),
        Case("predefined split file missing", _predefined("missing")),
        Case("predefined split without an id column", _predefined("no_id_column")),
        Case("predefined ids match nothing", _predefined("no_match")),
        Case("column mapping to a missing column", _with(_file("in.csv", _csv(good)), "prep.input.columns.text=body")),
        Case("on_bad_row skip leaves nothing", _with(_file("in.csv", HEADER + "a,left\nb\n"), "prep.input.on_bad_row=skip")),
        # odd but usable: prep must succeed and write valid UTF-8
        Case("NUL bytes in text", _file("in.csv", _csv([{**r, "text": r["text"] + "\x00\x00"} for r in good])), True),
        Case("lone surrogate in text", _jsonl("in.jsonl", [{**r, "text": r["text"] + "\ud83d"} for r in good]), True),
        Case("lone surrogate in id", _jsonl("in.jsonl", [{**r, "id": f"x{i}\udc00"} for i, r in enumerate(good)]), True),
        Case("UTF-8 BOM", _file("in.csv", "\ufeff" + _csv(good)), True),
        Case("CRLF line ends", _file("in.csv", _csv(good).replace("\n", "\r\n")), True),
        Case("one giant article among good ones", _file("in.csv", _csv(good + [{**good[0], "text": "x " * 150_000}])),
             True),
    ]
    if os.geteuid() != 0:  # root writes anywhere: a read-only parent only stops other users
        def readonly(d: Path) -> list[str]:
            args = _file("in.csv", _csv(good))(d)
            (d / "ro").mkdir()
            (d / "ro").chmod(0o500)
            return args + ["--out", str(d / "ro" / "out")]
        out.append(Case("read-only parent", readonly))
    return out


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def run_case(case: Case, scratch: Path, good_out: Path) -> dict:
    """Run one case in-process; returns what happened (exit code, stderr, traceback, files kept)."""
    import contextlib
    import io
    import shutil
    import traceback

    from newsbias.cli import main

    scratch.mkdir(parents=True, exist_ok=True)
    out = scratch / "out"
    shutil.copytree(good_out, out)  # a previous good prep output: must survive a failed run untouched
    (scratch / "user.txt").write_text("a user's file")
    args = case.build(scratch)
    if "--out" not in args:
        args += ["--out", str(out)]
    before = snapshot(scratch)
    err, tb, rc = io.StringIO(), None, None
    cwd = os.getcwd()
    try:
        os.chdir(scratch)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["prep", "-q", *args, "prep.dedup.near=false", "prep.workers=1"])
    except BaseException:  # the point of the exercise: nothing may escape as a traceback
        tb = traceback.format_exc()
    finally:
        os.chdir(cwd)
    after = snapshot(scratch)
    own = ("out/", "out\\")
    if case.usable:
        touched = [k for k in before if not k.startswith(own) and after.get(k) != before[k]]
    else:
        touched = [k for k in before if after.get(k) != before[k]]
    message = err.getvalue().strip()
    valid_utf8 = True
    if case.usable and rc == 0:
        for name, data in after.items():
            if name.startswith(own) and name.endswith(".jsonl"):
                try:
                    valid_utf8 &= "\x00" not in data.decode("utf-8")
                except UnicodeDecodeError:
                    valid_utf8 = False
    ok = (tb is None and not touched and valid_utf8
          and (rc == 0 if case.usable else rc == 2 and message.count("\n") == 0 and message.startswith("newsbias prep: error:")))
    return {"case": case.name, "usable": case.usable, "rc": rc, "message": message, "traceback": tb,
            "touched": touched, "valid_utf8": valid_utf8, "ok": ok}
