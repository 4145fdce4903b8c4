"""The prep stage: readers, label mapping, cleaning, dedup, splits, caps, leakage report, bad input."""

from __future__ import annotations

import gc
import gzip
import json
import random
import re
import subprocess
import sys
import warnings
from collections import Counter
from itertools import pairwise
from pathlib import Path

import pandas as pd
import pytest
from conftest import ALLSIDES_JSONL, KAGGLE_SAMPLE, NO_DATA
from datagen import (
    LABEL_OF_OUTLET,
    article_text,
    kaggle_rows,
    make_articles,
    write_csv,
    write_jsonl,
)

from newsbias.config import PrepConfig, load_config
from newsbias.data.clean import domain_of, outlet_of, repair_text
from newsbias.data.prep import prepare, run_prep
from newsbias.data.readers import iter_csv
from newsbias.errors import NewsbiasError
from newsbias.labels import LabelNormalizer
from newsbias.records import join_title

ALLSIDES = ALLSIDES_JSONL


def cfg_for(path: Path, out: Path, **over) -> PrepConfig:
    items = [f"prep.input.path={path}", f"prep.out_dir={out}", "prep.clean.min_chars=20"]
    items += [f"prep.{k}={v}" for k, v in over.items()]
    return load_config(None, items).prep


def read_split(out: Path, name: str) -> list[dict]:
    return [json.loads(l) for l in (out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def articles_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "articles.jsonl", make_articles(240))


@pytest.mark.parametrize("raw, expected", [
    ("Left", "left"), (" leaning-left ", "left"), ("Leaning Left", "left"), ("lean_right", "right"),
    ("CENTER", "center"), ("centre", "center"), ("right", "right"), ("far right", "right"),
    ("Center-Right", "right"), ("centre left", "left"),  # as the generation parser reads them
    ("banana", None), (None, None), (float("nan"), None), ("", None), ("nan", None),
])
def test_label_normalisation(raw, expected):
    assert LabelNormalizer()(raw) == expected


def test_numeric_labels_need_an_explicit_scheme():
    assert LabelNormalizer("012")(0) == "left" and LabelNormalizer("012")("2") == "right"
    assert LabelNormalizer("-101")(-1) == "left" and LabelNormalizer("-101")(0) == "center"
    assert LabelNormalizer("-101")("1") == "right" and LabelNormalizer("-101")(2) is None
    guess = LabelNormalizer()
    assert guess(0) is None and guess.saw_numeric
    assert LabelNormalizer(mapping={"7": "right"})("7") == "right"
    with pytest.raises(ValueError, match="must be one of"):
        LabelNormalizer(mapping={"x": "purple"})


def test_numeric_labels_without_scheme_fail_with_hint(tmp_path):
    rows = make_articles(30)
    for r in rows:
        r["label"] = {"left": 0, "center": 1, "right": 2}[r["label"]]
    path = write_jsonl(tmp_path / "num.jsonl", rows)
    with pytest.raises(NewsbiasError, match="prep.labels.numeric=012"):
        prepare(cfg_for(path, tmp_path / "o"))
    frames, meta, _ = prepare(cfg_for(path, tmp_path / "o", **{"labels.numeric": "012"}))
    assert sum(meta["splits"]["sizes"].values()) == 30
    expected = Counter(r["label"] for r in make_articles(30))
    assert Counter(pd.concat(frames.values())["label"]) == expected
    with pytest.raises(NewsbiasError, match=r"'2' \(\d+\)"):  # 2 means nothing in the -1/0/1 scheme
        prepare(cfg_for(path, tmp_path / "o", **{"labels.numeric": "-101"}))


def test_ratings_one_to_five_are_sent_to_a_mapping(tmp_path, caplog):
    rows = make_articles(90)
    for i, r in enumerate(rows):
        r["label"] = {"left": 1 + i % 2, "center": 3, "right": 4 + i % 2}[r["label"]]
    path = write_jsonl(tmp_path / "num.jsonl", rows)
    for numeric in ("none", "012"):  # neither scheme fits, so neither is suggested
        with pytest.raises(NewsbiasError, match=r"the numbers (1, 2, 3, 4, 5|3, 4, 5) fit neither numeric scheme "
                                                r"\(012, -101\): map each one, e.g. \"prep.labels.mapping="):
            prepare(cfg_for(path, tmp_path / "o", **{"labels.numeric": numeric}))
    frames, _, _ = prepare(cfg_for(path, tmp_path / "o", **{"labels.numeric": "012", "labels.on_unknown": "drop",
                                                        "split.mode": "random"}))
    assert "the train split has no left articles, so no model can learn it" in caplog.text  # 1 -> center, 2 -> right
    mapping = "{1: left, 2: left, 3: center, 4: right, 5: right}"  # unquoted numbers as keys, as a user types them
    frames, _, _ = prepare(cfg_for(path, tmp_path / "o", **{"labels.mapping": mapping}))
    assert Counter(pd.concat(frames.values())["label"]) == Counter(r["label"] for r in make_articles(90))


def test_unknown_and_missing_labels_error_then_drop(tmp_path):
    rows = make_articles(30)
    rows[3]["label"], rows[5]["label"], rows[6]["label"] = "purple", None, "purple"
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    with pytest.raises(NewsbiasError) as err:
        prepare(cfg_for(path, tmp_path / "o"))
    msg = str(err.value)
    assert "3 rows" in msg and "'purple' (2)" in msg and "(missing)" in msg and "on_unknown=drop" in msg
    meta = run_prep(cfg_for(path, tmp_path / "o", **{"labels.on_unknown": "drop"}))
    assert meta["counts"]["dropped_by_reason"]["unknown_label"] == 3
    assert meta["unknown_labels"] == {"purple": 2, "(missing)": 1}
    drops = [json.loads(l) for l in (tmp_path / "o" / "drops.jsonl").read_text().splitlines()]
    assert sorted(d["id"] for d in drops if d["reason"] == "unknown_label") == ["a0003", "a0005", "a0006"]


def test_mojibake_is_repaired():
    assert repair_text("cafÃ© owners said â\x80\x9cno\x80\x9d") != "cafÃ© owners said â\x80\x9cno\x80\x9d"
    assert repair_text("cafÃ© &amp; bar").startswith("café & bar")
    # the Kaggle sample's C1-stripped form: the quote bytes are gone, only "â" is left
    assert repair_text("before âviabilityâ - the point") == 'before "viability" - the point'
    assert repair_text("Womenâs Health") == "Women\u2019s Health"
    assert repair_text("un château à Paris") == "un château à Paris"  # real accents untouched
    # "â" in real words is not the stripped-C1 damage, even glued to letters
    for clean in ("Premier Lâm said les personnes âgées et l’âme; o âmbito", "Tâm met Lâm", "un âge d'or"):
        assert repair_text(clean) == clean
    assert repair_text("Iâm sure donât go â now") == "I’m sure don’t go — now"


@pytest.mark.skipif(not KAGGLE_SAMPLE.exists(), reason=NO_DATA.format(KAGGLE_SAMPLE))
def test_kaggle_sample_mojibake_gone_after_prep(tmp_path):
    meta = run_prep(cfg_for(KAGGLE_SAMPLE / "train.jsonl", tmp_path / "o", **{"split.mode": "random"}))
    assert meta["input"]["format"] == "instruction" and sum(meta["splits"]["sizes"].values()) == 60
    text = "".join(r["input"] for s in ("train", "val", "test") for r in read_split(tmp_path / "o", s))
    assert "âviability" not in text and '"viability"' in text


def test_a_text_that_is_not_a_string_names_its_file_and_line(tmp_path):
    rows = make_articles(6)
    rows[3]["text"] = ["a", "list"]
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(NewsbiasError, match=rf"^{re.escape(str(path))}: line 4: the text field 'text' holds a list"):
        run_prep(cfg_for(path, tmp_path / "o"))


def test_an_id_reused_for_another_text_is_renamed_aloud(tmp_path, caplog):
    rows = make_articles(60)
    rows[7]["id"] = rows[3]["id"]
    meta = run_prep(cfg_for(write_jsonl(tmp_path / "a.jsonl", rows), tmp_path / "o", **{"split.mode": "random"}))
    assert meta["counts"]["ids_renamed_for_clashes"] == 2
    assert "prep: 2 rows share an id with a different text and were renamed ('a0003' -> 'a0003~" in caplog.text
    ids = [r["id"] for s in ("train", "val", "test") for r in read_split(tmp_path / "o", s)]
    assert len(ids) == len(set(ids)) == 60 and sum(i.startswith("a0003~") for i in ids) == 2


def test_too_few_outlets_names_them_and_does_not_push_a_random_split(tmp_path):
    rows = make_articles(60)
    for r in rows:
        r["url"] = f"https://web.archive.org/web/2020/https://www.{r['url'].split('www.')[1]}"  # still 24 outlets
    meta = run_prep(cfg_for(write_jsonl(tmp_path / "ok.jsonl", rows), tmp_path / "ok"))
    assert meta["splits"]["outlets"]["train"] > 1
    for r in rows:
        r["url"], r["source"] = "https://archive.example.com/x", None  # every article under one host
    with pytest.raises(NewsbiasError, match=r"found 1 outlet \(example\.com\): check that the url / source columns "
                                            r"name each article's outlet .* an upper bound, not a test\)"):
        run_prep(cfg_for(write_jsonl(tmp_path / "one.jsonl", rows), tmp_path / "o"))


def test_utf16_tables_excel_writes_are_read(tmp_path):
    rows = make_articles(60)
    body = "id\ttext\tlabel\turl\n" + "".join(f"{r['id']}\t{r['text']} café\t{r['label']}\t{r['url']}\n" for r in rows)
    (tmp_path / "u.tsv").write_bytes(body.encode("utf-16"))  # Excel's "Unicode Text": UTF-16 with a BOM
    meta = run_prep(cfg_for(tmp_path / "u.tsv", tmp_path / "o", **{"input.encoding": "utf-16"}))
    assert meta["counts"]["read"] == 60
    assert all(r["input"].endswith("café") for r in read_split(tmp_path / "o", "train"))


def test_instruction_jsonl_keeps_its_own_instruction(tmp_path, caplog):
    rows = [{"id": a["id"], "instruction": "Say the bias." if i % 5 else "Other words.", "input": a["text"],
             "output": a["label"]} for i, a in enumerate(make_articles(60))]
    path = write_jsonl(tmp_path / "inst.jsonl", rows)
    meta = run_prep(cfg_for(path, tmp_path / "o", **{"split.mode": "random"}))
    assert meta["instruction"] == {"text": "Say the bias.", "from": "input", "variants": 2}
    assert {r["instruction"] for r in read_split(tmp_path / "o", "train")} == {"Say the bias."}
    assert "2 different instructions" in caplog.text and "prep.instruction" in caplog.text
    meta = run_prep(cfg_for(path, tmp_path / "p", **{"split.mode": "random", "instruction": "Mine."}))
    assert meta["instruction"] == {"text": "Mine.", "from": "prep.instruction"}
    assert {r["instruction"] for r in read_split(tmp_path / "p", "val")} == {"Mine."}


def test_whitespace_title_and_short_texts(tmp_path):
    rows = make_articles(30)
    rows[0]["text"] = "  spaced \t out   text  " + rows[0]["text"] + "\n\n\n  second paragraph  "
    rows[1]["text"] = "too short"
    rows[2]["text"] = "   "
    rows[4]["text"] = rows[4]["title"] + " " + rows[4]["text"]  # already starts with its title
    path = write_jsonl(tmp_path / "x.jsonl", rows)
    meta = run_prep(cfg_for(path, tmp_path / "o", **{"clean.prepend_title": "true"}))
    assert meta["counts"]["dropped_by_reason"] == {"empty_text": 1, "too_short": 1}
    out = {r["id"]: r for s in ("train", "val", "test") for r in read_split(tmp_path / "o", s)}
    assert out["a0000"]["input"].startswith("Title 0\nspaced out text w")
    assert out["a0000"]["input"].endswith(".\nsecond paragraph")
    assert out["a0004"]["input"].count("Title 4") == 1
    assert join_title(None, "body") == "body"


def test_outlet_keys():
    assert domain_of("http://edition.cnn.com/2016/x.html") == "cnn.com"
    assert domain_of("www.nytimes.com") == "nytimes.com"
    assert domain_of("https://www.bbc.co.uk/news") == "bbc.co.uk"
    # an archived copy is judged by the page it archived, not by the archive
    assert domain_of("https://web.archive.org/web/20200101000000/https://www.foxnews.com/x") == "foxnews.com"
    assert domain_of("web.archive.org/web/2019id_/http://edition.cnn.com/a") == "cnn.com"
    assert domain_of("https://archive.org/details/x") == "archive.org"
    assert domain_of("") is None and domain_of(None) is None
    # the Public Suffix List (tldextract, offline): blogs on one host are separate outlets
    assert domain_of("https://foo.blogspot.com/2016/x") == "foo.blogspot.com" != domain_of("bar.blogspot.com")
    assert domain_of("https://news.example.com.au/a") == "example.com.au" and domain_of("localhost") is None
    # without a URL the source name is the outlet; an edition or section of it is the same outlet
    assert outlet_of(None, None, "CNN (Web News)") == "cnn" == outlet_of(None, None, "CNN Opinion")
    assert outlet_of(None, None, "Fox News (Online)") == "fox news" == outlet_of(None, None, "fox news  online")
    assert outlet_of(None, None, "Cato Institute (blog)") == "cato institute"
    assert outlet_of(None, None, "PRI (Public Radio International)") == "pri public radio international"
    assert outlet_of(None, None, "The Blog") == "blog" and outlet_of(None, None, "Opinion") == "opinion"
    assert outlet_of(None, None, "The New York Times") == "new york times" == outlet_of(None, None, "New York Times")
    # a source column that holds an address is read as one, as a url column would be
    assert outlet_of(None, None, "cnn.com") == "cnn.com" == outlet_of(None, None, "https://www.CNN.com/")
    assert outlet_of(None, "https://edition.cnn.com/x", None) == outlet_of(None, None, "www.cnn.com")
    assert outlet_of(None, None, "U.S. News") == "u s news"
    assert outlet_of("www.npr.org", "http://other.com/x", "Ezra Klein") == "npr.org"


def test_kaggle_csv_reader_maps_five_labels(tmp_path):
    path = write_csv(tmp_path / "bias_clean.csv", kaggle_rows(make_articles(60)))
    frames, meta, _ = prepare(cfg_for(path, tmp_path / "o"))
    assert meta["input"]["format"] == "kaggle"
    assert meta["columns"]["text"] == "page_text"
    allrows = pd.concat(frames.values())
    assert Counter(allrows["label"]) == Counter(r["label"] for r in make_articles(60))
    assert set(allrows["outlet"]) <= set(LABEL_OF_OUTLET)


def test_tabular_csv_parquet_jsonl_with_column_mapping(tmp_path):
    rows = [{"body": r["text"], "leaning": r["label"], "uid": r["id"], "site": r["url"]} for r in make_articles(45)]
    mapping = {"input.columns.text": "body", "input.columns.label": "leaning", "input.columns.id": "uid",
               "input.columns.url": "site"}
    outs = []
    for path in (write_csv(tmp_path / "t.csv", rows), write_jsonl(tmp_path / "t.jsonl", rows)):
        frames, meta, _ = prepare(cfg_for(path, tmp_path / "o", **mapping))
        outs.append(sorted(pd.concat(frames.values())["id"]))
    pq = tmp_path / "t.parquet"
    pd.DataFrame(rows).to_parquet(pq)
    frames, meta, _ = prepare(cfg_for(pq, tmp_path / "o", **mapping))
    outs.append(sorted(pd.concat(frames.values())["id"]))
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) == 45 and outs[0][0] == "a0000"
    assert meta["input"]["format"] == "tabular"
    # integer ids with a gap: Parquet's nullable integers stay integers ("1000", not "1000.0")
    numbered = [{**r, "uid": None if i == 3 else 1000 + i} for i, r in enumerate(rows)]
    import pyarrow as pa
    import pyarrow.parquet as pap

    pap.write_table(pa.Table.from_pylist(numbered), pq)  # written by another tool: no pandas dtypes recorded
    frames, _, _ = prepare(cfg_for(pq, tmp_path / "o", **mapping))
    ids = set(pd.concat(frames.values())["id"])
    assert "1000" in ids and "1044" in ids and not any(i.endswith(".0") for i in ids)


def test_missing_columns_error_suggests_mapping(tmp_path):
    rows = [{"body": r["text"], "leaning": r["label"]} for r in make_articles(5)]
    path = write_csv(tmp_path / "t.csv", rows)
    with pytest.raises(NewsbiasError) as err:
        prepare(cfg_for(path, tmp_path / "o"))
    msg = str(err.value)
    assert "expected columns text,label; found body,leaning" in msg
    assert "prep.input.columns.text=body" in msg and "prep.input.columns.label=leaning" in msg
    assert "unlabelled" not in msg
    path = write_csv(tmp_path / "u.csv", [{"body": r["text"]} for r in make_articles(5)])
    with pytest.raises(NewsbiasError, match=r"found body — set `prep.input.columns.text=body`; prep splits labelled "
                                            r"data \(no label column found\): to score unlabelled articles, give the "
                                            r"file to `newsbias predict --input` directly"):
        prepare(cfg_for(path, tmp_path / "o"))


def test_a_semicolon_separated_csv_is_named_as_such(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("doc_id;body;leaning\n" + "".join(f"{i};{r['text']};{r['label']}\n"
                                                      for i, r in enumerate(make_articles(5))))
    with pytest.raises(NewsbiasError) as err:
        prepare(cfg_for(path, tmp_path / "o"))
    msg = str(err.value)
    assert "one column holding semicolons" in msg and "sep=';'" in msg and "no label column" not in msg


def _allsides_record(i: int, r: dict) -> dict:
    domain = r["url"].split("/")[2]
    return {"ID": r["id"], "topic": "t", "source": r["source"], "source_url": domain, "url": r["url"],
            "date": r["date"], "authors": "", "title": r["title"], "content_original": r["text"],
            "bias_text": r["label"], "bias": {"left": 0, "center": 1, "right": 2}[r["label"]]}


def test_allsides_jsonl_gz_and_release_dir_agree(tmp_path):
    recs = [_allsides_record(i, r) for i, r in enumerate(make_articles(60))]
    gz = tmp_path / "articles.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        for r in recs:
            f.write(json.dumps(r) + "\n")
    jdir = tmp_path / "release" / "data" / "jsons"
    jdir.mkdir(parents=True)
    for r in recs:
        (jdir / f"{r['ID']}.json").write_text(json.dumps(r))
    a = run_prep(cfg_for(gz, tmp_path / "a"))
    b = run_prep(cfg_for(tmp_path / "release", tmp_path / "b"))
    assert a["input"]["format"] == b["input"]["format"] == "allsides"
    for name in ("train", "val", "test"):
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (tmp_path / "b" / f"{name}.jsonl").read_bytes()


def test_release_dir_bad_files_are_skipped_with_their_reason(tmp_path):
    jdir = tmp_path / "release" / "data" / "jsons"
    jdir.mkdir(parents=True)
    for i, r in enumerate(make_articles(30)):
        (jdir / f"{r['id']}.json").write_text(json.dumps(_allsides_record(i, r)))
    (jdir / "zz1.json").write_text("[1, 2]")
    (jdir / "zz2.json").write_text("{not json")
    with pytest.raises(NewsbiasError, match=r"zz1\.json: expected one JSON object per file, found a list"):
        prepare(cfg_for(tmp_path / "release", tmp_path / "o", **{"split.mode": "random"}))
    _, meta, drops = prepare(cfg_for(tmp_path / "release", tmp_path / "o", **{"split.mode": "random",
                                                                              "input.on_bad_row": "skip"}))
    assert [(d["line"], d["reason"], d["detail"]) for d in drops if d["reason"] == "bad_row"] == [
        (31, "bad_row", "expected one JSON object per file, found a list"),
        (32, "bad_row", "malformed JSON (Expecting property name enclosed in double quotes)")]
    assert meta["input"]["rows_read"] == 32 and meta["input"]["bad_rows"] == 2


def test_filters_are_the_steps_in_order_and_chain(tmp_path):
    rows = make_articles(120)
    rows[5]["label"] = "banana"
    rows[7]["text"] = "too short"
    rows[9]["text"] = rows[8]["text"]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    _, meta, drops = prepare(cfg_for(path, tmp_path / "o", **{"split.mode": "random", "labels.on_unknown": "drop"}))
    steps = meta["filters"]
    assert [f["step"] for f in steps] == ["read", "labels", "text", "outlet_cues", "exact_dedup", "near_dedup", "split",
                                          "cross_split_dedup"]
    assert steps[0]["before"] == 120 and all(a["after"] == b["before"] for a, b in pairwise(steps))
    assert [f["dropped"] for f in steps[:5]] == [0, 1, 1, 0, 1]
    assert sum(f["dropped"] for f in steps) == len(drops) == 120 - meta["counts"]["written"]
    assert [(d["id"], d["reason"]) for d in drops] == [("a0005", "unknown_label"), ("a0007", "too_short"),
                                                       ("a0009", "exact_duplicate")]


@pytest.mark.skipif(not ALLSIDES.exists(), reason=NO_DATA.format(ALLSIDES))
def test_allsides_release_layout_from_real_records_with_predefined_split(tmp_path):
    """A small release directory built from real AllSides records, split by its own TSVs."""
    wanted = {}
    media = ALLSIDES.parent / "splits" / "media"
    for split in ("train", "valid"):
        ids = [l.split("\t")[0] for l in (media / f"{split}.tsv").read_text().splitlines()[1:60]]
        wanted.update({i: split for i in ids})
    root = tmp_path / "Article-Bias-Prediction"
    (root / "data" / "jsons").mkdir(parents=True)
    (root / "data" / "splits" / "media").mkdir(parents=True)
    with gzip.open(ALLSIDES, "rt", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec["ID"] in wanted:
                rec["bias"] = {"left": 0, "center": 1, "right": 2}[rec["bias_text"]]
                (root / "data" / "jsons" / f"{rec['ID']}.json").write_text(json.dumps(rec))
    for split in ("train", "valid"):
        ids = [i for i, s in wanted.items() if s == split]
        (root / "data" / "splits" / "media" / f"{split}.tsv").write_text("ID\tbias\n" + "".join(f"{i}\t0\n" for i in ids))
    n_files = len(list((root / "data" / "jsons").glob("*.json")))
    assert n_files > 100
    meta = run_prep(cfg_for(root, tmp_path / "o", **{
        "split.mode": "predefined", "split.predefined.train": root / "data/splits/media/train.tsv",
        "split.predefined.val": root / "data/splits/media/valid.tsv", "dedup.near": "false"}))
    assert meta["input"]["format"] == "allsides"
    val_ids = {r["id"] for r in read_split(tmp_path / "o", "val")}
    assert val_ids and val_ids <= {i for i, s in wanted.items() if s == "valid"}
    assert meta["splits"].get("test_carved_from_train") == "by outlet"
    train_outlets = {r["outlet"] for r in read_split(tmp_path / "o", "train")}
    assert not train_outlets & {r["outlet"] for r in read_split(tmp_path / "o", "test")}  # carved outlets apart
    assert sum(meta["splits"]["sizes"].values()) + sum(meta["counts"]["dropped_by_reason"].values()) == n_files


def _with_planted_duplicates(tmp_path: Path) -> Path:
    rows = make_articles(120)
    rng = random.Random(5)
    dup = dict(rows[10], id="dup-exact")                    # same text, other case/spacing, same label
    dup["text"] = "  " + rows[10]["text"].upper() + "  "
    near = dict(rows[20], id="dup-near")                    # one word changed in 80
    words = rows[20]["text"].split()
    words[40] = "changed"
    near["text"] = " ".join(words)
    conflict = dict(rows[30], id="dup-conflict", label="left" if rows[30]["label"] != "left" else "right")
    shared = rows[40]["text"].split()  # 60 % of its words, then another article's: a Jaccard near 0.4, no copy
    cut = len(shared) * 3 // 5
    half = dict(rows[40], id="half-shared", text=" ".join(shared[:cut] + article_text(rng).split()[:len(shared) - cut]))
    rows += [dup, near, conflict, half, dict(rows[0], id="z-unrelated", text=article_text(rng))]
    return write_jsonl(tmp_path / "dups.jsonl", rows)


def test_exact_near_and_conflicting_duplicates_are_dropped(tmp_path):
    path = _with_planted_duplicates(tmp_path)
    meta = run_prep(cfg_for(path, tmp_path / "o"))
    reasons = meta["counts"]["dropped_by_reason"]
    assert reasons == {"exact_duplicate": 1, "near_duplicate": 1, "label_conflict": 2}
    conflicts = meta["label_conflicts"]
    assert conflicts["count"] == 1 and sorted(conflicts["examples"][0]["ids"]) == ["a0030", "dup-conflict"]
    kept = {r["id"] for s in ("train", "val", "test") for r in read_split(tmp_path / "o", s)}
    assert "a0010" in kept and "dup-exact" not in kept      # the first in id order survives
    assert "a0020" in kept and "dup-near" not in kept
    assert "a0030" not in kept and "dup-conflict" not in kept and "z-unrelated" in kept
    assert "a0040" in kept and "half-shared" in kept  # sharing part of a text is no near duplicate at 0.8
    leak = meta["leakage"]
    assert leak["exact_duplicate_pairs_across_splits"]["count"] == 0
    assert leak["near_duplicate_pairs_across_splits"]["count"] == 0


def test_leakage_report_finds_planted_cross_split_duplicates_when_dedup_is_off(tmp_path):
    path = _with_planted_duplicates(tmp_path)
    cfg = cfg_for(path, tmp_path / "o", **{"dedup.exact": "false", "dedup.near": "false", "split.mode": "random",
                                            "split.test_frac": 0.5, "split.val_frac": 0.5})
    # with dedup off, three pairs remain; the split decides which of them cross splits
    frames, meta, drops = prepare(cfg)
    removed = meta["leakage"]["cross_split_duplicates_removed"]
    pair_ids = [("a0010", "dup-exact"), ("a0020", "dup-near"), ("a0030", "dup-conflict")]
    dropped = {d["id"] for d in drops if d["reason"] == "cross_split_duplicate"}
    assert removed["exact"] + removed["near"] >= len(dropped) > 0
    kept_ids = {s: set(f["id"]) for s, f in frames.items()}
    for d in drops:
        if d["reason"] == "cross_split_duplicate":  # the held-out copy goes; the copy it duplicates stays
            partner, partner_split = re.fullmatch(r"duplicate of (\S+) in (train|val|test)", d["detail"]).groups()
            assert partner_split != "test" and partner in kept_ids[partner_split], d
    for a, b in pair_ids:
        present = [x for x in (a, b) if x in set(pd.concat(frames.values())["id"])]
        splits = {x: s for s, f in frames.items() for x in f["id"] if x in (a, b)}
        assert len(set(splits.values())) <= 1, f"{a}/{b} still straddle splits"
        assert present
    assert meta["leakage"]["exact_duplicate_pairs_across_splits"]["count"] == 0
    assert meta["leakage"]["near_duplicate_pairs_across_splits"]["count"] == 0
    assert meta["leakage"]["shared_outlets"]["count"] > 0   # random split: outlets are shared, and said so


def test_random_split_is_stratified(articles_file, tmp_path):
    meta = run_prep(cfg_for(articles_file, tmp_path / "o", **{"split.mode": "random"}))
    sizes, counts = meta["splits"]["sizes"], meta["splits"]["label_counts"]
    assert sizes == {"train": 174, "val": 30, "test": 36}   # 15% test, then 15% of the rest
    for split, n in (("test", 12), ("val", 10), ("train", 58)):
        assert counts[split] == {"left": n, "center": n, "right": n}


def test_by_source_split_is_outlet_disjoint_and_balanced(articles_file, tmp_path):
    meta = run_prep(cfg_for(articles_file, tmp_path / "o", **{"split.mode": "by_source"}))
    outlets = {s: {r["outlet"] for r in read_split(tmp_path / "o", s)} for s in ("train", "val", "test")}
    assert not (outlets["train"] & outlets["val"]) and not (outlets["train"] & outlets["test"])
    assert not (outlets["val"] & outlets["test"])
    assert meta["leakage"]["shared_outlets"]["count"] == 0
    assert all(meta["splits"]["sizes"][s] > 0 for s in ("train", "val", "test"))
    for s in ("train", "test"):  # every label present where outlet counts allow
        assert all(v > 0 for v in meta["splits"]["label_counts"][s].values())


def test_by_source_without_urls_keeps_an_outlets_editions_in_one_split(tmp_path):
    rows = make_articles(240)
    for i, r in enumerate(rows):
        del r["url"]
        if i % 2:  # every outlet under two spellings, as AllSides writes "Fox News" and "Fox News (Online)"
            r["source"] += " (Online News)" if i % 4 == 1 else " Opinion"
    meta = run_prep(cfg_for(write_jsonl(tmp_path / "s.jsonl", rows), tmp_path / "o", **{"split.mode": "by_source"}))
    where: dict = {}
    for s in ("train", "val", "test"):
        for r in read_split(tmp_path / "o", s):
            assert where.setdefault(r["outlet"], s) == s, r["outlet"]
    assert len(where) == len(LABEL_OF_OUTLET) and meta["leakage"]["shared_source_names"]["count"] == 0


def test_group_by_with_outlets_keeps_both_apart(tmp_path):
    """by_source + group_by: an author writing for two outlets joins them (it failed as an internal error)."""
    rows = make_articles(240)
    for i, r in enumerate(rows):
        r["title"] = f"author-{i % 30}" if i % 7 else None  # 6 joint groups; a missing title joins nothing
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    meta = run_prep(cfg_for(path, tmp_path / "o", **{"split.group_by": "title"}))
    assert meta["leakage"]["shared_outlets"]["count"] == 0
    where: dict = {}
    for s in ("train", "val", "test"):
        for r in read_split(tmp_path / "o", s):
            for key in (r["outlet"], r["title"]):
                assert key is None or where.setdefault(key, s) == s, key


def test_group_by_keeps_groups_together(tmp_path):
    rows = make_articles(120)
    for i, r in enumerate(rows):
        r["title"] = f"story-{i // 4}"
    path = write_jsonl(tmp_path / "g.jsonl", rows)
    run_prep(cfg_for(path, tmp_path / "o", **{"split.mode": "random", "split.group_by": "title"}))
    where = {}
    for s in ("train", "val", "test"):
        for r in read_split(tmp_path / "o", s):
            assert where.setdefault(r["title"], s) == s


def test_by_time_puts_newest_in_test(articles_file, tmp_path):
    meta = run_prep(cfg_for(articles_file, tmp_path / "o", **{"split.mode": "by_time"}))
    dates = {s: [pd.Timestamp(r["date"]) for r in read_split(tmp_path / "o", s)] for s in ("train", "val", "test")}
    assert min(dates["test"]) >= max(dates["val"]) >= max(dates["train"]) or min(dates["test"]) >= max(dates["train"])
    assert min(dates["val"]) >= max(dates["train"])
    assert meta["splits"]["undated_rows_in_train"] == 0
    assert meta["splits"]["ambiguous_dates_read_month_first"] == 0  # ISO dates are never ambiguous


def test_by_time_counts_dates_that_read_two_ways(tmp_path, caplog):
    rows = make_articles(60)
    for i, r in enumerate(rows):  # 03/04/2019 is March 4th or April 3rd; 13/04/2019 and 04/04/2019 are not ambiguous
        r["date"] = ["03/04/2019", "13/04/2019", "04/04/2019", "2019-05-06"][i % 4]
    meta = run_prep(cfg_for(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "o", **{"split.mode": "by_time"}))
    assert meta["splits"]["ambiguous_dates_read_month_first"] == 15
    assert "15 dates such as 03/04/2020 could be day-first or month-first" in caplog.text


def test_predefined_split_from_tsv_files(articles_file, tmp_path):
    ids = [f"a{i:04d}" for i in range(240)]
    for name, part in (("train", ids[:150]), ("valid", ids[150:200]), ("test", ids[200:230])):
        (tmp_path / f"{name}.tsv").write_text("ID\tbias\n" + "".join(f"{i}\t0\n" for i in part))
    meta = run_prep(cfg_for(articles_file, tmp_path / "o", **{
        "split.mode": "predefined", "split.predefined.train": tmp_path / "train.tsv",
        "split.predefined.val": tmp_path / "valid.tsv", "split.predefined.test": tmp_path / "test.tsv"}))
    assert meta["splits"]["sizes"] == {"train": 150, "val": 50, "test": 30}
    assert meta["counts"]["dropped_by_reason"] == {"not_in_predefined_split": 10}
    assert [r["id"] for r in read_split(tmp_path / "o", "test")] == ids[200:230]


def test_same_input_any_row_order_gives_byte_identical_outputs(tmp_path):
    rows = make_articles(240)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    a, b = write_jsonl(tmp_path / "a.jsonl", rows), write_jsonl(tmp_path / "b.jsonl", shuffled)
    for mode in ("random", "by_source", "by_time"):
        run_prep(cfg_for(a, tmp_path / "oa", **{"split.mode": mode}))
        run_prep(cfg_for(b, tmp_path / "ob", **{"split.mode": mode}))
        for name in ("train.jsonl", "val.jsonl", "test.jsonl", "eval_small.jsonl"):
            assert (tmp_path / "oa" / name).read_bytes() == (tmp_path / "ob" / name).read_bytes(), (mode, name)
    run_prep(cfg_for(a, tmp_path / "oa", **{"split.mode": "random"}))
    run_prep(cfg_for(a, tmp_path / "oc", **{"split.mode": "random", "split.seed": 7}))
    assert {r["id"] for r in read_split(tmp_path / "oa", "test")} != {r["id"] for r in read_split(tmp_path / "oc", "test")}


def test_train_caps_touch_train_only(articles_file, tmp_path):
    base = run_prep(cfg_for(articles_file, tmp_path / "o", **{"split.mode": "random"}))
    meta = run_prep(cfg_for(articles_file, tmp_path / "o", **{"split.mode": "random", "downsample.train_cap": 100}))
    assert meta["splits"]["sizes"]["train"] == 100
    assert sorted(meta["splits"]["label_counts"]["train"].values()) == [33, 33, 34]
    assert meta["splits"]["sizes"]["val"] == base["splits"]["sizes"]["val"]
    assert meta["splits"]["sizes"]["test"] == base["splits"]["sizes"]["test"]
    assert meta["splits"]["label_counts_before_downsample"]["train"] == base["splits"]["label_counts"]["train"]
    meta = run_prep(cfg_for(articles_file, tmp_path / "o", **{"split.mode": "random", "downsample.per_label_cap": 20}))
    assert meta["splits"]["label_counts"]["train"] == {"left": 20, "center": 20, "right": 20}
    meta = run_prep(cfg_for(articles_file, tmp_path / "o", **{"split.mode": "random", "downsample.fraction": 0.5}))
    assert meta["splits"]["sizes"]["train"] == 87


def test_balanced_cap_on_imbalanced_train(tmp_path):
    rows = [r for r in make_articles(240) if r["label"] != "center" or int(r["id"][1:]) % 4 == 0]
    path = write_jsonl(tmp_path / "imb.jsonl", rows)
    meta = run_prep(cfg_for(path, tmp_path / "o", **{"split.mode": "random", "downsample.train_cap": 60,
                                                     "downsample.strategy": "balanced"}))
    c = meta["splits"]["label_counts"]["train"]
    avail = meta["splits"]["label_counts_before_downsample"]["train"]
    assert avail["center"] < 20  # the minority label cannot fill its third: it gives all it has
    assert c == {"left": (60 - avail["center"]) // 2, "center": avail["center"], "right": (60 - avail["center"]) // 2}
    meta = run_prep(cfg_for(path, tmp_path / "o", **{"split.mode": "random", "downsample.train_cap": 30,
                                                     "downsample.strategy": "balanced"}))
    assert meta["splits"]["label_counts"]["train"] == {"left": 10, "center": 10, "right": 10}


def test_outputs_eval_small_and_meta_hashes(articles_file, tmp_path):
    meta = run_prep(cfg_for(articles_file, tmp_path / "o", eval_small=7))
    out = tmp_path / "o"
    row = read_split(out, "train")[0]
    assert list(row) == ["id", "instruction", "input", "output", "title", "source", "outlet", "date", "url"]
    assert row["instruction"].startswith("Classify the political leaning")
    small = read_split(out, "eval_small")
    assert len(small) == 7 and all("output" not in r for r in small)
    assert {r["id"] for r in small} <= {r["id"] for r in read_split(out, "test")}
    import hashlib
    for name, info in meta["outputs"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == info["sha256"]
    on_disk = json.loads((out / "prep_meta.json").read_text())
    assert on_disk["config"]["split"]["mode"] == "by_source" and on_disk["versions"]["pandas"]


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(NewsbiasError, match="input not found"):
        prepare(cfg_for(tmp_path / "nope.csv", tmp_path / "o"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(NewsbiasError, match="empty"):
        prepare(cfg_for(tmp_path / "empty.csv", tmp_path / "o"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(NewsbiasError, match="no records"):
        prepare(cfg_for(tmp_path / "empty.jsonl", tmp_path / "o", **{"input.format": "tabular"}))
    for content, message in (("", "the file is empty"), ("\n \n", "the file is empty"),
                             ('\n\nnot json\n', "line 3: not a JSON object")):
        (tmp_path / "in.jsonl").write_text(content)
        with pytest.raises(NewsbiasError, match=message):  # the format is detected from the first record
            prepare(cfg_for(tmp_path / "in.jsonl", tmp_path / "o"))


def test_malformed_csv_row_error_or_skip(tmp_path):
    rows = make_articles(30)
    path = write_csv(tmp_path / "t.csv", rows, ["id", "text", "label"])
    lines = path.read_text().splitlines()
    lines.insert(5, 'broken,row,with,too,many,fields')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(NewsbiasError, match=r"line 6: malformed CSV row \(expected 3 fields, found 6\)"):
        prepare(cfg_for(path, tmp_path / "o", **{"split.mode": "random"}))
    meta = run_prep(cfg_for(path, tmp_path / "o", **{"input.on_bad_row": "skip", "split.mode": "random"}))
    assert meta["counts"]["dropped_by_reason"]["bad_row"] == 1 and meta["input"]["bad_rows"] == 1


def test_malformed_json_line_error_or_skip(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", make_articles(30))
    lines = path.read_text().splitlines()
    lines.insert(3, '{"id": "x", "text": ')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(NewsbiasError, match="line 4: malformed JSON"):
        prepare(cfg_for(path, tmp_path / "o"))
    _, _, drops = prepare(cfg_for(path, tmp_path / "o", **{"input.on_bad_row": "skip"}))
    assert [d["line"] for d in drops if d["reason"] == "bad_row"] == [4]
    lines[3] = "[" * 100_000 + "]" * 100_000  # deeper than Python's JSON parser can go
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(NewsbiasError, match="line 4: JSON nested too deeply"):
        prepare(cfg_for(path, tmp_path / "o"))
    _, _, drops = prepare(cfg_for(path, tmp_path / "o", **{"input.on_bad_row": "skip"}))
    assert [d["line"] for d in drops if d["reason"] == "bad_row"] == [4]


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = write_csv(tmp_path / "t.csv", make_articles(10), ["id", "text", "label"])
    data = path.read_bytes().split(b"\n")
    data[4] = data[4].replace(b"w", b"\xe9", 1)
    path.write_bytes(b"\n".join(data))
    with pytest.raises(NewsbiasError, match=r"line 5: bytes that are not valid utf-8.*prep.input.encoding"):
        prepare(cfg_for(path, tmp_path / "o", **{"split.mode": "random"}))
    frames, _, _ = prepare(cfg_for(path, tmp_path / "o", **{"input.encoding": "latin-1", "split.mode": "random"}))
    assert sum(len(f) for f in frames.values()) == 10


def test_failed_run_keeps_previous_output_and_leaves_no_partial_files(articles_file, tmp_path):
    out = tmp_path / "o"
    run_prep(cfg_for(articles_file, out))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(NewsbiasError):
        run_prep(cfg_for(articles_file, out, **{"split.mode": "by_time", "split.group_by": "title"}))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["articles.jsonl", "o"]


def test_cli_prints_one_line_error_and_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "newsbias.cli", "prep", "--input", str(tmp_path / "missing.csv"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "input not found" in proc.stderr


def test_cli_runs_prep_with_overrides(articles_file, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "newsbias.cli", "prep", "-q", "--input", str(articles_file),
                           "--out", str(tmp_path / "o"), "--split", "random", "prep.clean.min_chars=20",
                           "prep.downsample.train_cap=90"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    meta = json.loads((tmp_path / "o" / "prep_meta.json").read_text())
    assert meta["splits"]["sizes"]["train"] == 90 and meta["config"]["split"]["mode"] == "random"


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_texts_over_max_chars_are_dropped_at_read_and_counted(tmp_path, suffix):
    rows = make_articles(240)
    rows[7] = {**rows[7], "text": "word " * 5000}  # 25,000 characters
    path = tmp_path / f"articles{suffix}"
    (write_jsonl if suffix == ".jsonl" else write_csv)(path, rows)
    meta = run_prep(cfg_for(path, tmp_path / "o", **{"clean.max_chars": 20_000}))
    assert meta["counts"]["dropped_by_reason"].get("too_long") == 1
    drops = [json.loads(l) for l in (tmp_path / "o" / "drops.jsonl").read_text().splitlines()]
    assert [(d["id"], d["detail"]) for d in drops if d["reason"] == "too_long"] == [(rows[7]["id"], "25000 chars")]


@pytest.mark.parametrize("content", ["a,b,a\n1,2,3\n", ""], ids=["repeated column", "empty"])
def test_a_refused_csv_header_closes_the_file(tmp_path, content):
    path = tmp_path / "in.csv"
    path.write_text(content, encoding="utf-8")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(NewsbiasError, match="repeats column 'a'|empty"):
            iter_csv(path, "utf-8", "skip", [])
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]


def test_invisible_characters_leave_the_text_and_do_not_hide_a_copy(tmp_path):
    rows = make_articles(60)
    rows[5]["text"] = ("The legislature debated the appropriations measure for several hours before the "
                       "committee chairman announced that negotiations would continue next week. ") * 3
    copy = dict(rows[5], id="shy-copy", source="Another Outlet")
    # a soft hyphen inside long words and a zero-width space after every "e": the same article to a reader
    copy["text"] = re.sub(r"(\w{4})(\w{4,})", "\\1\u00ad\\2", rows[5]["text"]).replace("e", "e\u200b")
    path = write_jsonl(tmp_path / "in.jsonl", rows + [copy])
    meta = run_prep(cfg_for(path, tmp_path / "o"))
    assert meta["counts"]["dropped_by_reason"].get("exact_duplicate") == 1
    texts = [r["input"] for s in ("train", "val", "test") for r in read_split(tmp_path / "o", s)]
    assert not any(ch in t for t in texts for ch in "\u00ad\u200b")


def test_columns_in_another_case_are_found_and_a_partial_mapping_keeps_the_formats_others(tmp_path, caplog):
    rows = make_articles(60)
    header = "ID,Title,Text,Bias,Source\n"
    body = "".join(f'{r["id"]},{r["title"]},"{r["text"]}",{r["label"]},{r["source"]}\n' for r in rows)
    (tmp_path / "caps.csv").write_text(header + body)
    frames, meta, _ = prepare(cfg_for(tmp_path / "caps.csv", tmp_path / "o", **{"input.columns": {
        "text": "Text", "label": "Bias", "source": "Source"}}))
    ids = {r for f in frames.values() for r in f["id"]}
    assert ids == {r["id"] for r in rows}  # the file's "ID" column, not content hashes
    assert meta["columns"]["id"] == "ID" and meta["columns"]["title"] == "Title"
    # an AllSides record with numbered labels: naming the label column keeps AllSides' other columns
    allsides = [{"ID": r["id"], "content_original": r["text"], "bias": {"left": 0, "center": 1, "right": 2}[r["label"]],
                 "source": r["source"], "title": r["title"]} for r in rows]
    path = write_jsonl(tmp_path / "allsides.jsonl", allsides)
    frames, _, _ = prepare(cfg_for(path, tmp_path / "o2", **{"input.format": "allsides",
                                                              "input.columns": {"label": "bias"},
                                                              "labels": {"numeric": "012"}}))
    assert {r for f in frames.values() for r in f["id"]} == {r["id"] for r in rows}
    (tmp_path / "noid.csv").write_text("text,label\n" + "".join(f'"{r["text"]}",{r["label"]}\n' for r in rows))
    with caplog.at_level("WARNING"):
        prepare(cfg_for(tmp_path / "noid.csv", tmp_path / "o3", **{"split.mode": "random"}))
    assert "has no 'id' column, so each article's id is made from its text" in caplog.text


def test_a_text_with_no_letter_or_digit_is_dropped_as_no_words(tmp_path):
    rows = make_articles(60)
    rows += [{**rows[0], "id": "dots", "text": ". . . " * 80, "label": "left"},
             {**rows[1], "id": "emoji", "text": "\U0001F600 " * 120, "label": "right"}]
    _, meta, drops = prepare(cfg_for(write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "o"))
    assert meta["counts"]["dropped_by_reason"]["no_words"] == 2
    assert {d["id"] for d in drops if d["reason"] == "no_words"} == {"dots", "emoji"}


def test_a_jsonl_record_without_a_label_key_is_a_missing_label_not_a_missing_column(tmp_path):
    rows = make_articles(60)
    first = {k: v for k, v in rows[0].items() if k != "label"}
    path = write_jsonl(tmp_path / "in.jsonl", [first, *rows[1:]])
    with pytest.raises(NewsbiasError, match=r"'\(missing\)' \(1\) \(first at lines 1\)"):
        prepare(cfg_for(path, tmp_path / "o"))
    _, _, drops = prepare(cfg_for(path, tmp_path / "o", **{"labels.on_unknown": "drop"}))
    assert [d["id"] for d in drops if d["id"] == rows[0]["id"]] == [rows[0]["id"]]


def test_prep_refuses_its_own_output_or_a_model_as_input(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "prep_meta.json").write_text("{}")
    with pytest.raises(NewsbiasError, match="is a prep output, not raw data"):
        prepare(cfg_for(tmp_path / "p", tmp_path / "o"))


def test_a_spreadsheet_is_told_which_files_prep_reads(tmp_path):
    (tmp_path / "articles.xlsx").write_bytes(b"PK\x03\x04")
    with pytest.raises(NewsbiasError, match=r"prep reads \.csv, \.tsv, .*a spreadsheet: as CSV"):
        prepare(cfg_for(tmp_path / "articles.xlsx", tmp_path / "o"))


def test_a_split_missing_a_label_is_said(tmp_path, caplog):
    rows = make_articles(90)
    for i, r in enumerate(rows):  # two centre articles in 90: small val and test splits get none
        r["label"] = "center" if i >= 88 else ("left" if i % 2 else "right")
    meta = run_prep(cfg_for(write_jsonl(tmp_path / "d.jsonl", rows), tmp_path / "o",
                            **{"split.mode": "random", "split.test_frac": 0.05, "split.val_frac": 0.05, "split.seed": 1}))
    sizes = meta["splits"]["label_counts"]
    lacking = [s for s in ("val", "test") if not sizes[s].get("center")]
    assert lacking and sizes["train"].get("center")
    for split in lacking:
        assert f"prep: the {split} split has no 'center' article" in caplog.text
    assert all(f"the {s} split has no" not in caplog.text for s in ("train", "val", "test") if s not in lacking)
