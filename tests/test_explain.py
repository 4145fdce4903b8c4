"""newsbias explain: occlusion effects are the model's own scores, outlet cues are found, runs resume."""

import io
import json
import os
import re

import numpy as np
import pytest

from newsbias.classifier import Classifier
from newsbias.cli import main
from newsbias.config import ExplainConfig, PromptConfig
from newsbias.errors import NewsbiasError
from newsbias.explain import (RECORDS, explain_article, outlet_table, read_window, round_robin, run_explain,
                              summarize, top_units, word_table)
from newsbias.records import Article
from newsbias.train import train

from conftest import FILLER, PLANTED, make_planted_rows, write_jsonl
from test_train import tiny_cfg

LONG = " ".join(list(FILLER)[i % 40] for i in range(400))


@pytest.fixture(scope="module", params=["lm", "cls"])
def clf(request, tiny_qwen_dir, tiny_bert_dir):
    source = tiny_qwen_dir if request.param == "lm" else tiny_bert_dir
    return Classifier.load(str(source), head=request.param, device="cpu",
                           prompt=PromptConfig(max_length=128, chat_template="off", truncation="head_tail"))


@pytest.fixture(scope="module")
def planted_adapter(tmp_path_factory, tiny_qwen_dir, planted_data_dir):
    out = tmp_path_factory.mktemp("explain") / "lm"
    summary = train(tiny_cfg(tiny_qwen_dir, planted_data_dir, out, optim__class_weights="balanced"))
    assert summary["best_val"]["val_macro_f1"] >= 0.9
    return out


def _cue_rows(n: int, seed: int) -> list[dict]:
    """Planted articles whose outlet is named by the planted word itself: the model's cue is the outlet."""
    return [{**r, "source": PLANTED[r["output"]]} for r in make_planted_rows(n, seed=seed)]


def test_the_window_is_what_the_prompt_reads(clf):
    for text in ("A short article, with punctuation!", LONG, "  spaced\n\nout   words  "):
        w = read_window(clf, text)
        enc = clf.builder.encode(text)
        assert clf.builder.wrap(w.ids, w.truncated).input_ids == enc.input_ids
        assert w.truncated == enc.truncated
        assert all(text[a:b].strip() == text[a:b] and text[a:b] for a, b in w.words)
    w = read_window(clf, LONG)
    # head + tail: the window's words come from both ends of the article, none twice
    assert w.words[0][0] == 0 and w.words[-1][1] == len(LONG)
    assert len(set(w.words)) == len(w.words) < len(LONG.split())


def test_an_effect_is_the_drop_in_the_models_own_probability(clf):
    text = "the court said the new law on tax and health will pass the senate this week"
    a = Article(id="x", text=text)
    r = explain_article(clf, a, span=1, batch_size=4)
    assert [u["text"] for u in r["units"]] == text.split() and r["words_read"] == len(text.split())
    full = clf.predict_proba([text])[0]
    assert np.allclose(list(r["probs"].values()), full, atol=1e-5)
    for i in (0, 5, len(text.split()) - 1):
        # left out in token space: the next word keeps its leading space (it matters to byte-level BPE)
        rest = (" " if i == 0 else "") + " ".join(w for j, w in enumerate(text.split()) if j != i)
        alone = clf.score_encoded([clf.builder.encode(rest)])[0]  # as read: cleaning would strip the space
        got = np.array(list(r["units"][i]["effect"].values()))
        assert np.allclose(got, full - alone, atol=1e-5), (i, got, full - alone)
    pairs = explain_article(clf, a, span=2, batch_size=4)
    assert [u["text"] for u in pairs["units"]][:2] == ["the court", "said the"]
    assert len(pairs["units"]) == (len(text.split()) + 1) // 2


def test_outlet_cues_are_flagged_and_left_out_together(clf):
    text = "NEW YORK (Reuters) - The senate voted on the bill, Reuters reported. See https://reuters.com/x now."
    a = Article(id="r", text=text, source="Reuters", outlet="reuters.com")
    r = explain_article(clf, a)
    cues = {u["text"]: u["cue"] for u in r["units"] if u["cue"]}
    assert cues == {"NEW": "dateline", "YORK": "dateline", "(Reuters)": "name", "-": "dateline",
                    "Reuters": "name", "https://reuters.com/x": "name"}
    kept = " " + " ".join(u["text"] for u in r["units"] if not u["cue"])
    assert np.allclose(list(r["without_cues"]["probs"].values()), clf.score_encoded([clf.builder.encode(kept)])[0],
                       atol=1e-5)
    assert explain_article(clf, Article(id="n", text="nothing here names an outlet"))["without_cues"] is None


def _record(pred, units, gold=None, without=None):
    return {"id": "i", "gold": gold, "pred": pred, "probs": {}, "span": 1, "words_read": len(units), "outlet": None,
            "without_cues": without, "units": [{"text": t, "cue": c, "effect": {"left": e, "center": 0.0,
                                                                               "right": -e}} for t, c, e in units]}


def test_by_outlet_sampling_takes_each_outlet_in_turn():
    arts = [Article(id=str(i), text="t", outlet=o) for i, o in enumerate("aaaabbc")]
    assert [a.id for a in round_robin(arts, 5)] == ["0", "4", "6", "1", "5"]
    assert [a.id for a in round_robin(arts, 100)] == ["0", "4", "6", "1", "5", "2", "3"]
    assert round_robin([], 3) == []


def test_the_outlet_table_keeps_the_largest_outlets_and_sums_the_rest():
    recs = [{**_record("left", [("w", None, 0.1)], gold="left"), "outlet": o} for o in "aaabbcde"]
    rows = outlet_table(recs, top=3)
    assert [(r["outlet"], r["articles"], r["correct"]) for r in rows] == [("a", 3, 3), ("b", 2, 2),
                                                                          ("3 more outlets", 3, 3)]
    assert len(outlet_table(recs, top=5)) == 5 and outlet_table(recs, top=5)[-1]["outlet"] == "e"
    # among outlets of equal size, one whose cue led an answer comes before the alphabet
    cued = _record("left", [("Snopes", "outlet", 0.3), ("w", None, 0.1)], gold="left")
    recs = [{**_record("left", [("w", None, 0.1)], gold="left"), "outlet": o} for o in "abcd"] + [{**cued, "outlet": "z"}]
    assert [r["outlet"] for r in outlet_table(recs, top=3)] == ["z", "a", "3 more outlets"]


def test_the_summary_counts_cues_and_ranks_words():
    recs = [_record("left", [("Vox", "name", 0.4), ("tax", None, 0.1), ("the", None, -0.05)], gold="left",
                    without={"pred": "right"}),
            _record("left", [("tax,", None, 0.3), ("Vox", "name", 0.1)], gold="right", without={"pred": "left"}),
            _record("right", [("tax", None, 0.2), ("the", None, -0.1)])]
    s = summarize(recs, ["left", "center", "right"], min_articles=2, k=5)
    assert s["articles"] == 3 and s["articles_with_cues"] == 2 and s["flipped_without_cues"] == 1
    assert s["top_unit_is_cue"] == 1  # the first article's strongest word is its outlet's name
    assert s["cue_share_of_support"] == pytest.approx(0.5 / (0.4 + 0.1 + 0.3 + 0.1 + 0.1))
    assert s["cue_units"] == {"name": 2} and s["accuracy"] == 0.5
    assert s["outlets"] == [{"outlet": "(unknown)", "articles": 3, "correct": 1, "labelled": 2, "top_unit_is_cue": 1,
                             "flipped_without_cues": 1}]
    left = word_table(recs, "left", 2, 5)
    assert [(r["word"], r["articles"], r["as_cue"]) for r in left] == [("vox", 2, 2), ("tax", 3, 0)]
    assert left[1]["mean_effect"] == pytest.approx(0.2)
    assert [r["word"] for r in word_table(recs, "right", 2, 5)] == ["the"]  # only positive mean effects


def test_a_word_repeated_in_an_article_counts_at_its_mean_not_its_luckiest_occurrence():
    # "the" occurs five times per article with effects around 0: the largest of five would rank it first
    noisy = [("the", None, e) for e in (0.09, -0.08, 0.01, -0.03, 0.01)]
    recs = [_record("left", noisy + [("tax", None, 0.05)]) for _ in range(3)]
    rows = word_table(recs, "left", 2, 5)
    assert [r["word"] for r in rows] == ["tax"]
    assert rows[0]["mean_effect"] == pytest.approx(0.05)


def test_explain_finds_the_planted_outlet_word_and_resumes(planted_adapter, tmp_path, capsys):
    data = write_jsonl(tmp_path / "test.jsonl", _cue_rows(12, seed=3))
    out = tmp_path / "ex"
    args = ["explain", "--adapter", str(planted_adapter), "--input", str(data), "--out", str(out), "--limit", "12",
            "--quiet"]
    assert main(args) == 0
    said = capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    s = manifest["summary"]
    assert manifest["complete"] and s["articles"] == 12 and s["articles_with_cues"] == 12
    assert s["top_unit_is_cue"] >= 11 and s["cue_share_of_support"] > 0.5, s
    assert f"the strongest word was an outlet cue in {s['top_unit_is_cue']}" in said
    md = (out / "explain.md").read_text()
    assert "\nAgainst it: " in md  # what spoke against each answer is listed under its supporting words
    assert s["n_outlets"] == 3 and "12 articles from 3 outlets of `" in md
    assert "These counts are a lower bound" in md
    assert len(re.findall(r"Without its outlet cues: \*\*(left|center|right)\*\* \((left|center|right) 0\.\d{3} → 0\.\d{3}\)\.",
                          md)) == 12
    for label, word in PLANTED.items():
        first = re.search(rf"### {label}\n\n\| word .*\n\|---.*\n\| (\S+) \| 4 \|", md)
        assert first and first.group(1) == word, (label, md)
    records = (out / RECORDS).read_text().splitlines()
    assert len(records) == 12

    with pytest.raises(NewsbiasError, match="pass --overwrite"):
        run_explain(ExplainConfig(adapter=str(planted_adapter), input=str(data), out_dir=str(out), limit=12),
                    progress=False)
    with pytest.raises(NewsbiasError, match="pass --overwrite"):  # refused before any model loads
        run_explain(ExplainConfig(adapter=str(tmp_path / "no-such-adapter"), input=str(data), out_dir=str(out)),
                    progress=False)
    # a run killed after four articles, in the middle of the fifth line, resumes from the fourth
    manifest_text = json.dumps({"stage": "explain", "signature": manifest["signature"], "complete": False})
    (out / "manifest.json").write_text(manifest_text)
    (out / RECORDS).write_text("\n".join(records[:4]) + "\n" + records[4][:50])
    again = run_explain(ExplainConfig(adapter=str(planted_adapter), input=str(data), out_dir=str(out), limit=12),
                        progress=False)
    assert again["resumed"] == 4 and again["summary"] == s
    assert [json.loads(l)["id"] for l in (out / RECORDS).read_text().splitlines()] == \
        [json.loads(l)["id"] for l in records]
    # the same path with other articles in it (prep rerun): a killed run's records are not resumed onto them
    (out / "manifest.json").write_text(manifest_text)
    (out / RECORDS).write_text("\n".join(records[:4]) + "\n")
    data.write_text(data.read_text().replace('"id": "', '"id": "new-'))
    with pytest.raises(NewsbiasError, match="pass --overwrite"):
        run_explain(ExplainConfig(adapter=str(planted_adapter), input=str(data), out_dir=str(out), limit=12),
                    progress=False)


def test_explain_reading_stdin_never_resumes_and_one_directory_takes_one_run(planted_adapter, tmp_path, monkeypatch):
    out = tmp_path / "ex"
    out.mkdir()
    sig = {"input": "-", "input_sha256": None}
    (out / "manifest.json").write_text(json.dumps({"stage": "explain", "signature": sig, "complete": False}))
    (out / RECORDS).write_text('{"id": "from another stdin"}\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("Senate passes the bill\n"))
    cfg = ExplainConfig(adapter=str(planted_adapter), input="-", out_dir=str(out), limit=1)
    with pytest.raises(NewsbiasError, match="reads stdin cannot resume it"):
        run_explain(cfg, progress=False)
    (out / ".owner").write_text(str(os.getppid()))  # a live process (pytest's parent) is writing there
    with pytest.raises(NewsbiasError, match="being written by another newsbias process"):
        run_explain(cfg.model_copy(update={"overwrite": True}), progress=False)
    (out / ".owner").unlink()
    monkeypatch.setattr("sys.stdin", io.StringIO("Senate passes the bill\n"))
    done = run_explain(cfg.model_copy(update={"overwrite": True}), progress=False)
    assert done["resumed"] == 0 and not (out / ".owner").exists()
    assert [json.loads(line)["id"] for line in (out / RECORDS).read_text().splitlines()] == ["1"]


def test_the_page_escapes_article_text(tiny_bert_dir, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": "<b>1</b>", "text": "a <script>alert(1)</script> story",
                                                "source": "Tiny & Co"}])
    out = tmp_path / "ex"
    run_explain(ExplainConfig(model=str(tiny_bert_dir), head="cls", input=str(data), out_dir=str(out),
                              prompt=PromptConfig(max_length=64, chat_template="off")), progress=False)
    page = (out / "explain.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;1" in page
    md = (out / "explain.md").read_text()
    assert "<script>" not in md and "<b>" not in md and "### &lt;b>1&lt;/b>" in md  # Markdown renderers pass HTML
    for caveat in ("positive effects support the label", "names the outlet, not the article's leaning"):
        assert caveat in page and caveat in md  # the page says what the markdown says


def test_bad_settings_are_clear(tmp_path, tiny_bert_dir):
    with pytest.raises(ValueError, match="explain reads one window"):
        ExplainConfig(windows=3)
    with pytest.raises(ValueError, match="nothing to pool; drop explain.pool"):
        ExplainConfig(pool="max")
    with pytest.raises(NewsbiasError, match=r"nothing to explain with: pass --adapter DIR .* \(explain\.adapter / explain\.model\)"):
        run_explain(ExplainConfig(input=str(write_jsonl(tmp_path / "a.jsonl", [{"text": "x"}])),
                                  out_dir=str(tmp_path / "o")), progress=False)
    empty = write_jsonl(tmp_path / "e.jsonl", [{"text": ""}])
    with pytest.raises(NewsbiasError, match="no article with text"):
        run_explain(ExplainConfig(model=str(tiny_bert_dir), head="cls", input=str(empty),
                                  out_dir=str(tmp_path / "o2")), progress=False)


def test_an_outlet_named_by_its_url_alone_is_found_in_the_text(clf):
    text = "Lawmakers met on Tuesday, foxnews.com reported, and agreed on the budget."
    with_url = explain_article(clf, Article(id="1", text=text, url="https://www.foxnews.com/politics/budget"))
    without = explain_article(clf, Article(id="1", text=text))
    assert [u["text"] for u in with_url["units"] if u["cue"] == "name"] == ["foxnews.com"]
    assert not [u for u in without["units"] if u["cue"] == "name"]


def test_the_words_against_an_answer_are_listed_too():
    rec = {"pred": "left", "units": [{"text": "a", "cue": None, "effect": {"left": 0.3}},
                                     {"text": "(Reuters)", "cue": "name", "effect": {"left": -0.4}},
                                     {"text": "b", "cue": None, "effect": {"left": -0.1}},
                                     {"text": "c", "cue": None, "effect": {"left": 0.0}}]}
    assert [u["text"] for u in top_units(rec, 5)] == ["a"]
    assert [u["text"] for u in top_units(rec, 5, against=True)] == ["(Reuters)", "b"]
    assert [u["text"] for u in top_units(rec, 1, against=True)] == ["(Reuters)"]


@pytest.mark.parametrize("sample", ["first", "by_outlet"])
def test_explain_reads_no_more_than_its_limit(planted_adapter, tmp_path, sample):
    data = write_jsonl(tmp_path / "test.jsonl", _cue_rows(9, seed=4))
    m = run_explain(ExplainConfig(adapter=str(planted_adapter), input=str(data), out_dir=str(tmp_path / "ex"),
                                  limit=4, sample=sample), progress=False)
    assert m["summary"]["articles"] == 4
    assert len((tmp_path / "ex" / RECORDS).read_text().splitlines()) == 4


def test_articles_without_an_outlet_are_said_to_have_no_cues_to_look_for(planted_adapter, tmp_path, caplog):
    rows = [{k: v for k, v in r.items() if k not in ("source", "outlet", "url")} for r in make_planted_rows(3, seed=6)]
    data = write_jsonl(tmp_path / "test.jsonl", rows)
    run_explain(ExplainConfig(adapter=str(planted_adapter), input=str(data), out_dir=str(tmp_path / "ex"), limit=3),
                progress=False)
    assert "no article names its outlet" in caplog.text
    md = (tmp_path / "ex" / "explain.md").read_text()
    assert "so there were no outlet cues to look for" in md and "Outlet cues carry" not in md
    assert "no outlet cues to look for" in (tmp_path / "ex" / "explain.html").read_text()
