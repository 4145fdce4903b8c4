"""Readers: every supported input format becomes the same table of raw records.

Columns of the returned DataFrame: ``id, text, title, label, source, source_url, date, url,
line`` (``label`` is still the raw value; ``line`` is where the record came from, for error
messages). Formats:

* ``kaggle``: the "News Articles for Political Bias Classification" CSV (``bias_clean.csv``:
  ``url, topic, date, title, site, bias, page_text``).
* ``allsides``: Baly et al. (2020) — the JSONL(.gz) export, or the release directory
  (``data/jsons/<ID>.json``; split TSVs are read by the ``predefined`` split).
* ``instruction``: already processed JSONL (``instruction, input, output``).
* ``tabular``: any CSV / TSV / JSONL / Parquet with a column mapping.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import itertools
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa

from ..config import ColumnsConfig, InputConfig
from ..errors import NewsbiasError
from ..io import open_bytes
from .clean import drop_unsafe

FIELDS = ("id", "text", "title", "label", "source", "source_url", "date", "url")

log = logging.getLogger(__name__)

KAGGLE_COLUMNS = ColumnsConfig(text="page_text", label="bias", title="title", source="site", date="date", url="url")
ALLSIDES_COLUMNS = ColumnsConfig(text="content_original", label="bias_text", id="ID", title="title", source="source",
                                 date="date", url="url")
INSTRUCTION_COLUMNS = ColumnsConfig(text="input", label="output", id="id", title="title", source="source",
                                    date="date", url="url")

# When a mapped column is missing, these are the names we suggest from the file's header.
_LIKELY = {
    "text": ("text", "body", "content", "content_original", "article", "page_text", "input", "document", "story"),
    "label": ("label", "bias", "bias_text", "leaning", "rating", "output", "class", "lean", "target"),
}


@dataclass
class ReadResult:
    frame: pd.DataFrame
    format: str
    columns: dict[str, str | None]
    bad_rows: list[dict] = field(default_factory=list)  # {"line", "reason"} for skipped rows
    instructions: Counter = field(default_factory=Counter)  # an instruction JSONL's own, by count


def _open_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NewsbiasError(f"input file not found: {path}") from None
    except IsADirectoryError:
        raise NewsbiasError(f"{path} is a directory; expected a file (or use format: allsides for a release dir)") from None
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise NewsbiasError(f"{path}: not a valid or complete gzip file ({exc})") from None
    return data


def _encoding_fix(setting: str | None) -> str:
    """What to do about undecodable bytes; ``setting`` is the config section that has an ``encoding`` key."""
    return "re-encode the file as UTF-8" + (f" or set {setting}.encoding (e.g. cp1252)" if setting else "")


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """Decode a (possibly gzipped) file; non-decodable bytes are an error naming the line."""
    data = _open_bytes(path)
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise NewsbiasError(
            f"{path}: line {line}: bytes that are not valid {encoding} ({data[exc.start:exc.start + 4]!r}); "
            f"{_encoding_fix('prep.input')}") from None
    except LookupError:
        raise NewsbiasError(f"unknown encoding {encoding!r} (prep.input.encoding)") from None
    text = text.removeprefix("\ufeff")
    return text


def _base_name(path: Path) -> str:
    name = path.name.lower()
    return name.removesuffix(".gz")


def _open_raw(path: Path) -> BinaryIO:
    """The file's bytes, un-gzipped as they are read; the caller closes it."""
    try:
        return open_bytes(path)
    except FileNotFoundError:
        raise NewsbiasError(f"input file not found: {path}") from None


def _iter_lines(path: Path, encoding: str, setting: str | None = "prep.input") -> Iterator[tuple[int, str]]:
    """Stream decoded lines of a (possibly gzipped) file: memory stays flat in the file size."""
    try:
        wide = "\n".encode(encoding) != b"\n"
    except LookupError:
        raise NewsbiasError(f"unknown encoding {encoding!r} (prep.input.encoding)") from None
    if wide:  # UTF-16/32 (Excel's "Unicode Text"): a newline is not the byte 0x0A, so decode before splitting
        with _text_stream(path, encoding) as text:
            try:
                yield from enumerate((ln.removeprefix("\ufeff") if i == 0 else ln for i, ln in enumerate(text)), 1)
            except UnicodeDecodeError as exc:
                raise NewsbiasError(f"{path}: bytes that are not valid {encoding} "
                                    f"({exc.object[exc.start:exc.start + 4]!r}); {_encoding_fix(setting)}") from None
        return
    with _open_raw(path) as f:
        try:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode(encoding)
                except UnicodeDecodeError as exc:
                    raise NewsbiasError(
                        f"{path}: line {lineno}: bytes that are not valid {encoding} "
                        f"({raw[exc.start:exc.start + 4]!r}); {_encoding_fix(setting)}") from None
                except LookupError:
                    raise NewsbiasError(f"unknown encoding {encoding!r} (prep.input.encoding)") from None
                if lineno == 1 and line.startswith("\ufeff"):
                    line = line[1:]
                yield lineno, line
        except (OSError, EOFError) as exc:
            raise NewsbiasError(f"{path}: cannot read ({exc})") from None


def _row_fix(setting: str | None) -> str:
    return "fix it" + (f" or set {setting}.on_bad_row=skip" if setting else "")


def _bad_row(path: Path, line: int, reason: str, on_bad_row: str, bad: list[dict],
             fix: str = "set prep.input.on_bad_row=skip to skip it") -> None:
    """Raise for a bad row (``on_bad_row=error``) or record it in ``bad`` to be skipped."""
    if on_bad_row == "error":
        raise NewsbiasError(f"{path}: line {line}: {reason}; {fix}")
    bad.append({"line": line, "reason": reason})


def iter_jsonl(path: Path, encoding: str, on_bad_row: str, bad: list[dict]) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)`` from a JSONL file; bad lines raise or are recorded."""
    for lineno, line in _iter_lines(path, encoding):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            reason = f"malformed JSON ({exc.msg} at column {exc.colno})"
            _bad_row(path, lineno, reason, on_bad_row, bad, "fix the line or set prep.input.on_bad_row=skip")
            continue
        except RecursionError:
            _bad_row(path, lineno, "JSON nested too deeply to be one record", on_bad_row, bad,
                     "fix the line or set prep.input.on_bad_row=skip")
            continue
        if not isinstance(obj, dict):
            reason = f"expected a JSON object, found {type(obj).__name__}"
            _bad_row(path, lineno, reason, on_bad_row, bad)
            continue
        yield lineno, obj


def _text_stream(path: Path, encoding: str) -> io.TextIOWrapper:
    """The (possibly gzipped) file as decoded text, read as it is consumed: memory stays flat in the file size."""
    raw = _open_raw(path)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raw.close()
        raise NewsbiasError(f"unknown encoding {encoding!r} (prep.input.encoding)") from None
    # utf-8-sig drops a byte-order mark, which would otherwise glue itself to the first column's name
    enc = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    return io.TextIOWrapper(raw, encoding=enc, newline="")


def _stream_error(path: Path, line: int, exc: Exception, encoding: str, setting: str | None) -> NewsbiasError:
    if isinstance(exc, UnicodeDecodeError):
        # the text stream decodes in chunks, so its error cannot name the line; a line-by-line pass can
        try:
            for _ in _iter_lines(path, encoding, setting):
                pass
        except NewsbiasError as named:
            return named
        return NewsbiasError(f"{path}: near line {line}: bytes that are not valid {encoding} "
                             f"({exc.object[exc.start:exc.start + 4]!r}); {_encoding_fix(setting)}")
    return NewsbiasError(f"{path}: cannot read past line {line} ({exc}); is the file complete?")


def iter_csv(path: Path, encoding: str, on_bad_row: str, bad: list[dict],
             setting: str | None = "prep.input") -> tuple[list[str], Iterator[tuple[int, dict]]]:
    """Header and ``(line_number, row)`` pairs of a CSV/TSV file; rows with the wrong field count are bad.

    The file is read as it is parsed, so memory grows with one row, not with the file. ``setting`` is the
    config section whose ``encoding`` / ``on_bad_row`` the errors suggest (None: a stage without them).
    """
    stream = _text_stream(path, encoding)
    delimiter = "\t" if _base_name(path).endswith(".tsv") else ","
    csv.field_size_limit(sys.maxsize)
    reader = csv.reader(stream, delimiter=delimiter)
    try:
        header = _csv_header(path, reader, encoding, setting)
    except BaseException:
        stream.close()
        raise

    def rows() -> Iterator[tuple[int, dict]]:
        with stream:
            yield from _csv_rows()

    def _csv_rows() -> Iterator[tuple[int, dict]]:
        while True:
            start = reader.line_num + 1
            try:
                values = next(reader)
            except StopIteration:
                return
            except (UnicodeDecodeError, OSError, EOFError) as exc:
                raise _stream_error(path, start, exc, encoding, setting) from None
            except csv.Error as exc:
                reason = f"malformed CSV ({exc})"
                _bad_row(path, start, reason, on_bad_row, bad, _row_fix(setting))
                continue
            if not values or (len(values) == 1 and not values[0].strip()):
                continue
            if len(values) != len(header):
                reason = f"expected {len(header)} fields, found {len(values)}"
                _bad_row(path, start, f"malformed CSV row ({reason})", on_bad_row, bad, _row_fix(setting))
                continue
            yield start, dict(zip(header, values))

    return header, rows()


def _csv_header(path: Path, reader: Any, encoding: str, setting: str | None) -> list[str]:
    """The first row of ``reader``, stripped; an error names what is wrong with it."""
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise NewsbiasError(f"{path}: the file is empty (no header row)") from None
    except csv.Error as exc:
        raise NewsbiasError(f"{path}: line 1: unreadable CSV header ({exc})") from None
    except (UnicodeDecodeError, OSError, EOFError) as exc:
        raise _stream_error(path, 1, exc, encoding, setting) from None
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise NewsbiasError(f"{path}: the header repeats column {repeated[0]!r}; give every column a distinct name")
    return header


def check_columns(found: Iterable[str], cols: ColumnsConfig, path: Path) -> ColumnsConfig:
    """``cols`` with each column the file names in another case taken as it is spelt there ("ID" for "id"); missing
    text or label columns fail with a message that names them and the override that fixes it."""
    found = list(found)
    cols = _as_spelt(cols, found)
    if cols.id and cols.id not in found:
        log.warning("prep: %s has no %r column, so each article's id is made from its text; set "
                    "prep.input.columns.id to the column that holds your ids", path, cols.id)
    missing = [(f, getattr(cols, f)) for f in ("text", "label") if getattr(cols, f) not in found]
    if not missing:
        return cols
    hints = []
    for fld, _ in missing:
        guess = next((c for c in found if c.lower() in _LIKELY[fld]), None)
        if guess:
            hints.append(f"set `prep.input.columns.{fld}={guess}`")
    expected = ",".join(c for _, c in missing)
    hint = " — " + " and ".join(hints) if hints else " — map them with prep.input.columns.text / .label"
    if cols.label not in found and not any(c.lower() in _LIKELY["label"] for c in found):
        hint += ("; prep splits labelled data (no label column found): to score unlabelled articles, give the file "
                 "to `newsbias predict --input` directly")
    if len(found) == 1 and ("," in found[0] or "\t" in found[0]):
        sep = "commas" if "," in found[0] else "tabs"
        hint = (f" — the header is one column holding {sep}: the delimiter is wrong "
                f"({'name the file .csv' if sep == 'commas' else 'name the file .tsv'})")
        found = [found[0][:80]]
    elif len(found) == 1 and ";" in found[0]:
        hint = (" — the header is one column holding semicolons: prep reads comma-separated .csv and tab-separated "
                ".tsv files; convert it, e.g. pandas.read_csv(path, sep=';').to_csv('out.csv', index=False)")
        found = [found[0][:80]]
    raise NewsbiasError(f"{path}: expected columns {expected}; found {','.join(found) or '(none)'}{hint}")


def _as_spelt(cols: ColumnsConfig, found: list[str]) -> ColumnsConfig:
    """``cols`` with a column missing as named but present in one other case renamed to the file's spelling."""
    lower: dict[str, list[str]] = {}
    for name in found:
        lower.setdefault(str(name).lower(), []).append(name)
    update = {}
    for fld, name in cols.model_dump().items():
        if name and name not in found and len(lower.get(name.lower(), [])) == 1:
            update[fld] = lower[name.lower()][0]
    return cols.model_copy(update=update) if update else cols


def with_defaults(columns: ColumnsConfig | None, defaults: ColumnsConfig) -> ColumnsConfig:
    """A format's column names with the ones the user set (``prep.input.columns.*``) put in their place."""
    return defaults if columns is None else defaults.model_copy(update=columns.model_dump(exclude_unset=True))


def _id_of(row: dict, column: str | None) -> str | None:
    """A dropped row's id as the written rows carry it (a string), so drops.jsonl names it; None without one."""
    value = row.get(column) if column else None
    return None if value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == "" \
        else str(value).strip()


def _records(where: str, rows: Iterable[tuple[int, dict]], cols: ColumnsConfig, extra_source_url: str | None = None,
             bad: list[dict] | None = None, on_bad_row: str = "error", max_chars: int | None = None) -> pd.DataFrame:
    """The rows as one frame of :data:`FIELDS`; ``where`` (``"PATH: line"``) starts an error about a row."""
    out = {k: [] for k in (*FIELDS, "line")}
    getters = {f: getattr(cols, f, None) for f in ("id", "text", "title", "label", "source", "date", "url")}
    for lineno, row in rows:
        text = row.get(getters["text"])
        if text is not None and not isinstance(text, str) and not (isinstance(text, float) and pd.isna(text)):
            # a list / object / number is not an article: its Python repr must not be trained on
            reason = f"the text field {getters['text']!r} holds a {type(text).__name__}, not a string"
            if on_bad_row == "error" or bad is None:
                raise NewsbiasError(f"{where} {lineno}: {reason}; fix the row or set prep.input.on_bad_row=skip")
            bad.append({"line": lineno, "id": _id_of(row, getters["id"]), "reason": reason})
            continue
        if max_chars and isinstance(text, str) and len(text) > max_chars and bad is not None:
            # dropped here, before any copy of it is made: one giant record cannot exhaust memory
            bad.append({"line": lineno, "id": _id_of(row, getters["id"]), "kind": "too_long",
                        "reason": f"{len(text)} chars"})
            continue
        for f, col in getters.items():
            value = row.get(col) if col else None
            if f != "label" and value is not None and not isinstance(value, str):
                value = str(value) if not (isinstance(value, float) and pd.isna(value)) else None
            out[f].append(drop_unsafe(value) if isinstance(value, str) else value)
        out["source_url"].append(row.get(extra_source_url) if extra_source_url else None)
        out["line"].append(lineno)
    return pd.DataFrame(out, columns=[*FIELDS, "line"])


def detect_format(path: Path, encoding: str = "utf-8") -> str:
    """The input format of ``path``, from its extension and first record (a directory: the AllSides release)."""
    if path.is_dir():
        made_by = next((what for marker, what in (("prep_meta.json", "a prep output"), ("newsbias.json", "a model"),
                                                  ("adapter_config.json", "a LoRA adapter"))
                        if (path / marker).is_file()), None)
        if made_by:
            raise NewsbiasError(f"{path} is {made_by}, not raw data: prep reads an AllSides release directory or a "
                                f"CSV / JSONL / Parquet file of articles")
        return "allsides"
    name = _base_name(path)
    if name.endswith(".parquet"):
        return "tabular"
    if name.endswith((".csv", ".tsv")):
        head = next((ln for _, ln in _iter_lines(path, encoding)), "").lower()
        if all(c in head for c in ("page_text", "bias", "site")):
            return "kaggle"
        return "tabular"
    if name.endswith((".jsonl", ".json", ".ndjson")):
        lineno, first = next(((i, ln) for i, ln in _iter_lines(path, encoding) if ln.strip()), (0, ""))
        if not lineno:
            raise NewsbiasError(f"{path}: the file is empty (no JSON record on any line)")
        try:
            keys = set(json.loads(first))
        except (json.JSONDecodeError, TypeError, RecursionError):
            raise NewsbiasError(f"{path}: line {lineno}: not a JSON object; expected JSON Lines") from None
        if {"instruction", "input", "output"} <= keys:
            return "instruction"
        if {"content_original", "bias_text"} & keys:
            return "allsides"
        return "tabular"
    raise NewsbiasError(f"{path}: prep reads .csv, .tsv, .jsonl, .json, .ndjson or .parquet files (any of the text "
                        f"ones gzipped as .gz) and AllSides release directories; save the data in one of them (a "
                        f"spreadsheet: as CSV)")


def _read_table(path: Path, inp: InputConfig, cols: ColumnsConfig, bad: list[dict],
                source_url_col: str | None = None, max_chars: int | None = None) -> tuple[pd.DataFrame, ColumnsConfig]:
    """The file's records as one frame, and the columns they were read from (as the file spells them)."""
    name = _base_name(path)
    if name.endswith(".parquet"):
        try:
            # nullable types: an integer id column with a gap stays integers (1000, not 1000.0), a gap is None
            df = pd.read_parquet(path, dtype_backend="numpy_nullable")
            df = df.astype(object).where(df.notna(), None)
        except FileNotFoundError:
            raise NewsbiasError(f"input file not found: {path}") from None
        except (OSError, ValueError, pa.ArrowException) as exc:  # pyarrow's errors for corrupt files vary
            raise NewsbiasError(f"{path}: cannot read Parquet ({exc})") from None
        cols = check_columns(df.columns, cols, path)
        rows = ((i + 1, r) for i, r in enumerate(df.to_dict("records")))
        return _records(f"{path}: row", rows, cols, source_url_col, bad, inp.on_bad_row, max_chars), cols
    if name.endswith((".csv", ".tsv")):
        header, rows = iter_csv(path, inp.encoding, inp.on_bad_row, bad)
        cols = check_columns(header, cols, path)
        return _records(f"{path}: line", rows, cols, source_url_col, bad, inp.on_bad_row, max_chars), cols
    if name.endswith((".jsonl", ".json", ".ndjson")):
        it = iter_jsonl(path, inp.encoding, inp.on_bad_row, bad)
        head = list(itertools.islice(it, 50))  # JSONL has no header: the columns are the keys its records use
        if not head:
            raise NewsbiasError(f"{path}: empty file (no records)" + (f"; {len(bad)} bad lines" if bad else ""))
        cols = check_columns(dict.fromkeys(k for _, obj in head for k in obj), cols, path)
        return _records(f"{path}: line", itertools.chain(head, it), cols, source_url_col, bad, inp.on_bad_row,
                        max_chars), cols
    raise NewsbiasError(f"{path}: unsupported file type; prep reads .csv, .tsv, .jsonl, .json, .ndjson or .parquet "
                        f"(the text ones optionally gzipped: .csv.gz, .jsonl.gz ...)")


def read_allsides_release(root: Path, inp: InputConfig, bad: list[dict], max_chars: int | None = None) -> pd.DataFrame:
    """The published layout: ``<root>/data/jsons/<ID>.json`` (or ``<root>/jsons``)."""
    jdir = next((d for d in (root / "data" / "jsons", root / "jsons", root) if d.is_dir() and any(d.glob("*.json"))), None)
    if jdir is None:
        raise NewsbiasError(f"{root}: no AllSides JSON files found (expected {root}/data/jsons/<ID>.json)")
    rows = []
    for i, f in enumerate(sorted(jdir.glob("*.json"))):
        try:
            obj = json.loads(read_text(f, inp.encoding))
            reason = None if isinstance(obj, dict) else f"expected one JSON object per file, found a {type(obj).__name__}"
        except json.JSONDecodeError as exc:
            reason = f"malformed JSON ({exc.msg})"
        if reason:
            if inp.on_bad_row == "error":
                raise NewsbiasError(f"{f}: {reason}; fix it or set prep.input.on_bad_row=skip")
            bad.append({"line": i + 1, "file": f.name, "reason": reason})
            continue
        obj.setdefault("ID", f.stem)
        rows.append((i + 1, obj))
    cols = ALLSIDES_COLUMNS
    if rows and "bias_text" not in rows[0][1] and "bias" in rows[0][1]:
        cols = cols.model_copy(update={"label": "bias"})
    cols = check_columns(rows[0][1].keys() if rows else [], cols, jdir)
    return _records(f"{jdir}: file number", rows, cols, "source_url", bad, inp.on_bad_row, max_chars)


def read_input(inp: InputConfig, max_chars: int | None = None) -> ReadResult:
    """Read ``inp.path`` in its format into raw records; texts over ``max_chars`` become bad rows (kind too_long)."""
    path = Path(inp.path)
    if not path.exists():
        raise NewsbiasError(f"input not found: {path} (prep.input.path)")
    fmt = inp.format if inp.format != "auto" else detect_format(path, inp.encoding)
    bad: list[dict] = []
    instructions: Counter = Counter()
    if fmt == "allsides" and path.is_dir():
        df = read_allsides_release(path, inp, bad, max_chars)
        cols = ALLSIDES_COLUMNS
    elif fmt == "allsides":
        df, cols = _read_table(path, inp, with_defaults(inp.columns, ALLSIDES_COLUMNS), bad, source_url_col="source_url",
                               max_chars=max_chars)
    else:
        defaults = {"kaggle": KAGGLE_COLUMNS, "instruction": INSTRUCTION_COLUMNS}.get(fmt, ColumnsConfig())
        df, cols = _read_table(path, inp, with_defaults(inp.columns, defaults), bad, max_chars=max_chars)
        if fmt == "instruction":
            instructions = _instructions(path, inp.encoding)
    if inp.limit:
        df = df.head(inp.limit)
    if df.empty:
        too_long = sum(b.get("kind") == "too_long" for b in bad)
        if too_long and too_long == len(bad):
            raise NewsbiasError(f"{path}: every text is longer than prep.clean.max_chars={max_chars} characters; "
                                f"raise the limit if these really are articles")
        raise NewsbiasError(f"{path}: no records read" + (f" ({len(bad)} bad rows skipped)" if bad else ""))
    return ReadResult(frame=df.reset_index(drop=True), format=fmt, columns=cols.model_dump(), bad_rows=bad,
                      instructions=instructions)


def _instructions(path: Path, encoding: str) -> Counter:
    """How often each ``instruction`` string occurs in a JSONL file (a second pass: the table keeps articles only)."""
    if not _base_name(path).endswith((".jsonl", ".json", ".ndjson")):
        return Counter()
    seen: list[dict] = []  # bad lines were counted by the first pass
    return Counter(obj["instruction"].strip() for _, obj in iter_jsonl(path, encoding, "skip", seen)
                   if isinstance(obj.get("instruction"), str) and obj["instruction"].strip())


def read_id_list(path: Path, id_column: str = "ID") -> list[str]:
    """IDs from a split file: TSV/CSV with an id column (AllSides ``ID\\tbias``), JSONL with ``id``, or one per line."""
    if not path.exists():
        raise NewsbiasError(f"split file not found: {path}")
    name = _base_name(path)
    bad: list[dict] = []
    if name.endswith((".tsv", ".csv")):
        header, rows = iter_csv(path, "utf-8", "error", bad)
        col = id_column if id_column in header else next((h for h in header if h.lower() == "id"), None)
        if col is None:
            raise NewsbiasError(f"{path}: expected an id column {id_column!r}; found {','.join(header)} — "
                                f"set prep.split.predefined.id_column")
        return [r[col].strip() for _, r in rows]
    if name.endswith((".jsonl", ".json")):
        return [str(o.get("id", o.get(id_column))) for _, o in iter_jsonl(path, "utf-8", "error", bad)]
    return [ln.strip() for ln in read_text(path).split("\n") if ln.strip()]
