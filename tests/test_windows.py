"""Whole-article scoring: k windows over an article longer than the prompt budget, pooled."""

import numpy as np
import pytest

from newsbias.classifier import Classifier
from newsbias.modeling import score_encoded
from newsbias.config import PromptConfig

from conftest import FILLER

LONG = " ".join(list(FILLER)[i % 40] for i in range(600)) + " the very last words here"


@pytest.fixture(scope="module", params=["lm", "cls"])
def clf(request, tiny_qwen_dir, tiny_bert_dir):
    source = tiny_qwen_dir if request.param == "lm" else tiny_bert_dir
    return Classifier.load(str(source), head=request.param, device="cpu",
                           prompt=PromptConfig(max_length=128, chat_template="off"))


def test_windows_cover_head_and_tail_without_repeats(clf):
    b = clf.builder
    assert b.encode_windows("a short article.", 4) == [b.encode("a short article.")]
    wins = b.encode_windows(LONG, 4)
    assert len(wins) == 4 and all(len(w.input_ids) == len(wins[0].input_ids) for w in wins)
    assert wins[0].input_ids == b.encode(LONG).input_ids  # the first window is today's head truncation
    art = clf.tokenizer.encode(LONG, add_special_tokens=False)
    tail = art[-b.article_budget:]
    body = wins[-1].input_ids[len(b.lead_ids) + len(b.prefix_ids):][:b.article_budget]
    assert body == tail
    assert len({tuple(w.input_ids) for w in wins}) == 4
    assert len(b.encode_windows(LONG, 1000)) <= len(art) - b.article_budget + 1


def test_pooled_probabilities_are_the_mean_or_the_most_confident_window(clf):
    texts = [LONG, "a short one.", LONG[::-1]]
    assert len(clf.builder.encode_windows(texts[1], 3)) == 1
    assert np.allclose(clf.predict_proba(texts, windows=1), clf.predict_proba(texts))
    mean = clf.predict_proba(texts, batch_size=3, windows=3)
    best = clf.predict_proba(texts, batch_size=3, windows=3, pool="max")
    for k, t in enumerate(texts):
        per = score_encoded(clf.model, clf.tokenizer, clf.settings, clf.builder.encode_windows(t, 3), 2, clf.builder)
        np.testing.assert_allclose(mean[k], per.mean(0), atol=1e-6)
        np.testing.assert_allclose(best[k], per[per.max(1).argmax()], atol=1e-6)
    np.testing.assert_allclose(mean[1], clf.predict_proba([texts[1]])[0], atol=1e-6)  # one window: unchanged
    recs = clf.classify(texts, windows=3)
    assert [r["pred"] for r in recs] == [clf.labels[i] for i in mean.argmax(1)]
    with pytest.raises(Exception, match="pool must be 'mean' or 'max'"):
        clf.predict_proba(texts, windows=2, pool="median")


def test_predict_and_serve_settings_reach_the_classifier(tiny_qwen_dir, tmp_path):
    """predict.windows/pool change the written probabilities exactly as Classifier.predict_proba does."""
    import json

    from newsbias.config import PredictConfig
    from newsbias.predict import run_predict

    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": str(i), "input": t}) for i, t in enumerate([LONG, "short one."])) + "\n")
    common = {"model": str(tiny_qwen_dir), "input": str(src), "device": "cpu",
              "prompt": {"max_length": 128, "chat_template": "off"}}
    run_predict(PredictConfig(out=str(tmp_path / "one.jsonl"), **common))
    run_predict(PredictConfig(out=str(tmp_path / "win.jsonl"), windows=3, pool="max", **common))
    one, win = ([json.loads(l)["probs"] for l in (tmp_path / f).read_text().splitlines()] for f in ("one.jsonl",
                                                                                                   "win.jsonl"))
    clf = Classifier.load(str(tiny_qwen_dir), device="cpu", prompt=PromptConfig(max_length=128, chat_template="off"))
    expect = clf.predict_proba([LONG, "short one."], windows=3, pool="max")
    assert win[0]["left"] == pytest.approx(float(expect[0][0]), abs=1e-5) and one[0] != win[0]
    assert one[1] == win[1]  # a short article has one window


def test_reading_counts_the_tokens_the_windows_cover(clf):
    b = clf.builder
    n = len(clf.tokenizer.encode(LONG, add_special_tokens=False))
    assert clf.reading([LONG])[0] == {"tokens_read": b.article_budget, "truncated": True}
    two = clf.reading([LONG], windows=2)[0]  # head and tail
    assert two == {"tokens_read": min(n, 2 * b.article_budget), "truncated": n > 2 * b.article_budget}
    # windows that overlap count each token once: many windows read the whole article
    assert clf.reading([LONG, "a short one."], windows=32) == [
        {"tokens_read": n, "truncated": False}, clf.reading(["a short one."])[0]]
