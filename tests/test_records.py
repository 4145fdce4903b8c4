"""newsbias.records: the one format, reader and writer of prep records and prediction records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datagen import make_articles, write_jsonl

from newsbias.config import load_config
from newsbias.data.prep import run_prep
from newsbias.errors import NewsbiasError
from newsbias.records import (SPLIT_FILES, SPLITS, TITLE_SEPARATOR, Article, Prediction, join_title,
                              normalize_label, read_articles, read_predictions, record_id, resolve_split,
                              write_articles, write_predictions)


@pytest.fixture(scope="module")
def prep_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("prep")
    raw = write_jsonl(d / "raw.jsonl", make_articles(120))
    items = [f"prep.input.path={raw}", f"prep.out_dir={d / 'out'}", "prep.clean.min_chars=20",
             "prep.clean.prepend_title=true", "prep.eval_small=5"]
    run_prep(load_config(None, items).prep)
    return d / "out"


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


@pytest.mark.parametrize("split", SPLIT_FILES)
def test_prep_files_round_trip_byte_for_byte(prep_dir, tmp_path, split):
    src = prep_dir / f"{split}.jsonl"
    articles = read_articles(src, need_label=split != "eval_small")
    assert articles and all(a.id and a.text and a.outlet for a in articles)
    assert all((a.label is None) == (split == "eval_small") for a in articles)
    assert [a.line for a in articles] == list(range(1, len(articles) + 1))
    assert write_articles(tmp_path / "copy.jsonl", articles) == len(articles)
    assert (tmp_path / "copy.jsonl").read_bytes() == src.read_bytes()


def test_prediction_round_trip_byte_for_byte(tmp_path):
    preds = [Prediction(id="a", pred="left", probs={"left": 0.7, "center": 0.2, "right": 0.1}, gold="left",
                        outlet="x.com", model="m", adapter="runs/lora"),
             Prediction(id="0", pred=None, probs=None, gold="right", valid=False, model="m", raw="I cannot tell",
                        text="the article")]
    path = tmp_path / "p.jsonl"
    assert write_predictions(path, preds) == 2
    first, second = (json.loads(x) for x in lines(path))
    assert list(first) == ["id", "pred", "probs", "gold", "valid", "outlet", "model", "adapter"]
    assert list(second) == ["id", "pred", "probs", "gold", "valid", "raw", "outlet", "model", "adapter", "input"]
    back = read_predictions(path)
    assert back == preds and [p.line for p in back] == [1, 2]
    write_predictions(tmp_path / "q.jsonl", back)
    assert (tmp_path / "q.jsonl").read_bytes() == path.read_bytes()


def test_article_to_dict_is_prep_order():
    a = Article(id="a1", text="body", label="left", instruction="Classify.", title="T", outlet="x.com")
    assert list(a.to_dict()) == ["id", "instruction", "input", "output", "title", "source", "outlet", "date", "url"]
    assert "output" not in Article(id="a1", text="body").to_dict()


@pytest.mark.parametrize("raw, expected", [(None, "7"), (0, "0"), ("", ""), (False, "False"), ("a\ud83d", "a\ufffd"),
                                           (12, "12"), ("x", "x")])
def test_id_rule(raw, expected):
    assert record_id(raw, 7) == expected


def test_id_rule_in_both_readers(tmp_path):
    arts = tmp_path / "a.jsonl"
    arts.write_text("".join(json.dumps({"id": i, "input": "text", "output": "left"}) + "\n" for i in (None, 0, "")))
    assert [a.id for a in read_articles(arts)] == ["1", "0", ""]
    arts.write_text(json.dumps({"input": "text"}) + "\n\n" + json.dumps({"id": None, "input": "t"}) + "\n")
    assert [a.id for a in read_articles(arts)] == ["1", "3"]  # blank lines count
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": i, "pred": "left", "gold": "left"}) + "\n" for i in (None, 0, "")))
    assert [p.id for p in read_predictions(preds)] == ["1", "0", ""]


@pytest.mark.parametrize("raw, expected", [("Left", "left"), ("LEFT", "left"), (" lean left ", "left"),
                                           ("Leaning-Right", "right"), ("centre", "center"), ("neutral", "center"),
                                           ("purple", None), ("", None), (None, None), (2, None)])
def test_label_normalisation(raw, expected):
    assert normalize_label(raw) == expected


def test_labels_are_normalised_in_both_readers(tmp_path):
    arts = tmp_path / "a.jsonl"
    arts.write_text("".join(json.dumps({"input": "t", k: v}) + "\n"
                            for k, v in (("output", "Lean Left"), ("label", "CENTRE"), ("gold", "right"))))
    assert [a.label for a in read_articles(arts)] == ["left", "center", "right"]
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"id": "a", "pred": "left", "gold": "Leaning Left"}) + "\n")
    assert read_predictions(preds)[0].gold == "left"
    preds.write_text(json.dumps({"id": "a", "pred": "Left", "gold": "left"}) + "\n")
    with pytest.raises(NewsbiasError, match="line 1: predicted label 'Left' is not in the label set"):
        read_predictions(preds)  # predictions are written by newsbias: exact labels only


def test_title_joining():
    assert TITLE_SEPARATOR == "\n"
    assert join_title("Budget deal", "Lawmakers agreed.") == "Budget deal\nLawmakers agreed."
    assert join_title("  Budget   deal ", "Lawmakers agreed.") == "Budget deal\nLawmakers agreed."
    assert join_title("Budget deal", "BUDGET DEAL: lawmakers agreed.") == "BUDGET DEAL: lawmakers agreed."
    assert join_title(None, "body") == join_title("", "body") == join_title("   ", "body") == "body"
    assert join_title("Title", "") == ""


def test_prep_wrote_titles_with_the_same_rule(prep_dir):
    raw = {r["id"]: r for r in make_articles(120)}
    for a in read_articles(prep_dir / "test.jsonl"):
        assert a.text == join_title(a.title, raw[a.id]["text"])


def test_split_names_have_one_owner():
    from newsbias.data import split

    assert split.SPLITS is SPLITS == ("train", "val", "test")
    assert SPLIT_FILES == ("train", "val", "test", "eval_small")


def test_split_resolution(prep_dir, tmp_path):
    assert resolve_split(prep_dir, "val") == prep_dir / "val.jsonl"
    assert resolve_split(prep_dir, "eval_small") == prep_dir / "eval_small.jsonl"
    assert resolve_split(prep_dir / "train.jsonl", "test") == prep_dir / "train.jsonl"  # a file is the file
    assert resolve_split(prep_dir, str(prep_dir / "test.jsonl")) == prep_dir / "test.jsonl"
    with pytest.raises(NewsbiasError, match=r"predict.input not found: .*nowhere does not exist"):
        resolve_split(tmp_path / "nowhere", "test", "predict.input", "predict.split")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.jsonl").write_text("")
    with pytest.raises(NewsbiasError, match=r"split file not found: .*val.jsonl \(.*d holds train.jsonl\); "
                                            r"set predict.split to one of train, val, test, eval_small"):
        resolve_split(tmp_path / "d", "val", "predict.input", "predict.split")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("")
    with pytest.raises(NewsbiasError, match=r"baseline.data .*other is not a prep output \(no prep_meta.json"):
        resolve_split(tmp_path / "other", "train", "baseline.data", "baseline.split")


@pytest.mark.parametrize("content, message", [
    ('{"input": "a", "output": "left"}\n{"input": "b", "output": \n', "x.jsonl: line 2: not valid JSON"),
    ('\n[1, 2]\n', "x.jsonl: line 2: expected a JSON object, found list"),
    ('{"input": "a", "label": "left"}\n{"output": "left"}\n', "x.jsonl: line 2: missing or non-string 'input'"),
    ('{"input": 5, "output": "left"}\n', "x.jsonl: line 1: missing or non-string 'input'"),
    ('{"input": "  ", "output": "left"}\n', "x.jsonl: line 1: no article text in 'input'"),
    ('{"input": "a", "output": "left"}\n{"input": "b"}\n', "x.jsonl: line 2: missing or empty 'output'"),
    ('{"input": "a", "output": "purple"}\n', "x.jsonl: line 1: label 'purple' is not in the label set"),
])
def test_article_errors_name_the_line(tmp_path, content, message):
    (tmp_path / "x.jsonl").write_text(content)
    with pytest.raises(NewsbiasError, match=message) as err:
        read_articles(tmp_path / "x.jsonl", need_label=True)
    assert "\n" not in str(err.value)


def test_undecodable_bytes_name_the_line(tmp_path):
    (tmp_path / "x.jsonl").write_bytes(b'{"input": "a"}\n{"input": "\xff"}\n')
    with pytest.raises(NewsbiasError, match="x.jsonl: line 2: bytes that are not UTF-8"):
        read_articles(tmp_path / "x.jsonl")


def test_bad_labels_kept_when_asked(tmp_path):
    (tmp_path / "x.jsonl").write_text(json.dumps({"input": "a", "output": "purple"}) + "\n")
    a = read_articles(tmp_path / "x.jsonl", bad_label="keep")[0]
    assert a.label is None and a.bad_label == "purple"


@pytest.mark.parametrize("rows, message", [
    ([{"id": "a", "pred": "left", "gold": "left"}, {"id": "a", "pred": "left", "gold": "left"}],
     "line 2: id 'a' already seen on line 1"),
    ([{"id": "a", "pred": "left", "gold": "purple"}], "line 1: gold label 'purple' is not in the label set"),
    ([{"id": "a", "pred": "left", "probs": {"left": 1}}], "line 1: probs must map exactly the labels"),
    ([{"id": "a", "pred": "left", "probs": {"left": "x", "center": 0, "right": 0}}], "line 1: probs must map"),
    ([{"id": "a", "pred": "left", "probs": {"left": 5, "center": 1, "right": 1}}],
     r"line 1: probs .* are not probabilities \(each in \[0, 1\], summing to 1\)"),
    ([{"id": "a", "pred": "left", "probs": {"left": 0.2, "center": 0.9, "right": -0.1}}], "line 1: probs .* not probab"),
    ([{"id": "a", "pred": "left", "probs": {"left": 0.5, "center": 0.5, "right": 0.5}}], "line 1: probs .* not probab"),
    ([{"id": "a", "pred": "left", "probs": {"left": 0.5, "center": 0.5, "right": 0}},
      {"id": "b", "pred": "left", "probs": {"left": float("nan"), "center": 0.5, "right": 0.5}}],
     "line 2: probs .* not probabilities"),
    ([{"id": "a", "pred": "left"}, {"id": "b", "gold": "left"}],
     "line 2: not a prediction record .no `pred` field.*pass a file written by `newsbias predict`"),
])
def test_prediction_errors_name_the_line(tmp_path, rows, message):
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(NewsbiasError, match=message):
        read_predictions(tmp_path / "p.jsonl")


def test_missing_and_empty_prediction_files(tmp_path):
    with pytest.raises(NewsbiasError, match="predictions file not found"):
        read_predictions(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(NewsbiasError, match="is empty"):
        read_predictions(tmp_path / "e.jsonl")
    (tmp_path / "i.jsonl").write_text(json.dumps({"id": "a", "pred": None, "valid": False}) + "\n")
    assert read_predictions(tmp_path / "i.jsonl")[0].valid is False


def test_an_article_file_given_as_predictions_is_named_as_such(prep_dir):
    with pytest.raises(NewsbiasError, match=r"line 1: not a prediction record .*looks like an article file: score it "
                                            r"with `newsbias predict`"):
        read_predictions(prep_dir / "test.jsonl")


def test_non_finite_probabilities_are_an_error_not_a_label():
    from newsbias.records import scored

    with pytest.raises(NewsbiasError, match="non-finite probabilities.*diverged"):
        scored(("left", "center", "right"), [float("nan")] * 3)
    assert scored(("left", "center", "right"), [0.2, 0.5, 0.3])["pred"] == "center"


def test_a_manifest_that_describes_another_version_of_its_predictions_is_flagged(tmp_path, caplog):
    import hashlib
    import json

    from newsbias.records import read_manifest

    preds = tmp_path / "run.jsonl"
    preds.write_text('{"id": "1", "pred": "left"}\n{"id": "2", "pred": "right"}\n')
    sha = hashlib.sha256(preds.read_bytes()).hexdigest()
    (tmp_path / "run.manifest.json").write_text(json.dumps({"stage": "predict",
                                                            "outputs": {"run.jsonl": {"sha256": sha, "rows": 2}}}))
    with caplog.at_level("WARNING"):
        assert read_manifest(preds)["stage"] == "predict"
    assert not caplog.records
    preds.write_text('{"id": "1", "pred": "left"}\n')  # cut short after the manifest was written
    with caplog.at_level("WARNING"):
        read_manifest(preds)
    assert "run.jsonl was changed after run.manifest.json was written" in caplog.text


def test_a_prediction_whose_valid_is_not_a_boolean_is_refused():
    with pytest.raises(NewsbiasError, match="`valid` is 'false'; write true or false"):
        Prediction.from_dict({"id": "1", "pred": "right", "valid": "false"}, 1)
    assert Prediction.from_dict({"id": "1", "pred": None, "valid": False}, 1).valid is False


def test_a_prediction_record_given_as_an_article_is_named_as_such():
    from newsbias.records import Article

    with pytest.raises(NewsbiasError, match="a prediction record \\(it has `pred`\\), not an article"):
        Article.from_dict({"id": "1", "pred": "left", "probs": None}, 1)
    with pytest.raises(NewsbiasError, match="missing or non-string 'input'.*predict.text_field / explain.text_field"):
        Article.from_dict({"id": "1", "body": "words"}, 1)
