"""newsbias.json: the prompt is written once, as the config's PromptConfig; older files still load."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from newsbias.classifier import Classifier
from newsbias.config import PromptConfig
from newsbias.errors import NewsbiasError
from newsbias.modeling import SETTINGS_FILE, ModelSettings

from conftest import make_planted_rows
from serve_fixtures import adapter_for


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_qwen_dir, planted_data_dir):
    return adapter_for("lm", tmp_path_factory, tiny_qwen_dir, planted_data_dir)


def _format_1(d: dict) -> dict:
    """The same settings as the first format wrote them (labels and verbalizers twice, chat flag in the prompt)."""
    p = d["prompt"]
    return {"format": 1, "head": d["head"], "pooling": d["pooling"], "base_model": d["base_model"],
            "labels": d["labels"], "verbalizers": p["verbalizers"], "label_token_ids": d["label_token_ids"],
            "prompt": {"instruction": p["instruction"], "max_length": p["max_length"], "truncation": p["truncation"],
                       "head_fraction": p["head_fraction"], "chat_template": p["chat_template"],
                       "answer_cue": p["answer_cue"], "verbalizers": p["verbalizers"], "labels": d["labels"],
                       "uses_chat_template": d["uses_chat_template"]},
            "best_val": d["best_val"], "finetune": d["finetune"]}


def test_settings_hold_each_thing_once(adapter):
    d = json.loads((adapter / SETTINGS_FILE).read_text())
    assert d["format"] == 2 and "verbalizers" not in d and d["labels"] == ["left", "center", "right"]
    assert set(d["prompt"]) == set(PromptConfig.model_fields) and d["prompt"]["instruction"]
    assert ModelSettings.from_dict(d).to_dict() == d


def test_an_adapter_trained_with_the_first_format_loads_and_scores_alike(adapter, tmp_path):
    old = tmp_path / "yesterday"
    shutil.copytree(adapter, old)
    today = json.loads((adapter / SETTINGS_FILE).read_text())
    (old / SETTINGS_FILE).write_text(json.dumps(_format_1(today), indent=2))
    settings = ModelSettings.load(old)
    assert settings.prompt == ModelSettings.load(adapter).prompt and settings.extra == {"finetune": "lora"}
    assert settings.uses_chat_template == today["uses_chat_template"]
    # the first format predates calibration: it scores with the raw softmax, today's adapter without its temperature
    assert settings.temperature == 1.0 and today["calibration"]["temperature"] != 1.0
    raw = tmp_path / "raw"
    shutil.copytree(adapter, raw)
    (raw / SETTINGS_FILE).write_text(json.dumps({**today, "calibration": {}}, indent=2))
    texts = [r["input"] for r in make_planted_rows(5, seed=3)]
    np.testing.assert_allclose(Classifier.load(str(old)).predict_proba(texts),
                               Classifier.load(str(raw)).predict_proba(texts), atol=1e-6)
    settings.save(old)  # written back in today's format; a file that predates text_cleaning was trained on prep's
    assert today["text_cleaning"] == "none"  # the planted data has no prep_meta.json
    assert json.loads((old / SETTINGS_FILE).read_text()) == {**today, "calibration": {}, "text_cleaning": "prep"}


def test_a_bad_prompt_in_the_settings_names_the_key(tmp_path):
    from newsbias.errors import NewsbiasError

    (tmp_path / SETTINGS_FILE).write_text(json.dumps({"head": "lm", "prompt": {"max_length": 2}}))
    with pytest.raises(NewsbiasError, match="newsbias.json: prompt.max_length: .*restore"):
        ModelSettings.load(tmp_path)


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_scores_divide_the_label_logits_by_the_recorded_temperature(adapter, tmp_path, temperature):
    today = json.loads((adapter / SETTINGS_FILE).read_text())
    raw, scaled = tmp_path / "raw", tmp_path / "scaled"
    for d, cal in ((raw, {}), (scaled, {"method": "temperature", "temperature": temperature})):
        shutil.copytree(adapter, d)
        (d / SETTINGS_FILE).write_text(json.dumps({**today, "calibration": cal}))
    texts = [r["input"] for r in make_planted_rows(6, seed=4)]
    p1 = Classifier.load(str(raw)).predict_proba(texts)
    pt = Classifier.load(str(scaled)).predict_proba(texts)
    expected = np.exp(np.log(p1) / temperature)
    np.testing.assert_allclose(pt, expected / expected.sum(1, keepdims=True), atol=1e-5)
    assert (pt.argmax(1) == p1.argmax(1)).all()


def test_a_raw_article_scores_as_its_prep_output_does(adapter, tmp_path):
    """Inference cleans an article as prep cleaned the training texts; a model trained on raw texts reads raw."""
    from newsbias.data.clean import clean_text

    raw = ["w1  w2\r\n\r\n  w3 &amp; w4\u00a0w5 \n", "  w7\tw8\n\n\nw9  "]
    prepped = [clean_text(t) for t in raw]
    assert prepped != raw
    today = json.loads((adapter / SETTINGS_FILE).read_text())
    scored = {}
    for mode in ("prep", "none"):
        d = tmp_path / mode
        shutil.copytree(adapter, d)
        (d / SETTINGS_FILE).write_text(json.dumps({**today, "text_cleaning": mode}))
        clf = Classifier.load(str(d))
        scored[mode] = clf.predict_proba(raw), clf.predict_proba(prepped)
        assert clf.article_text(None, raw[0]) == (prepped[0] if mode == "prep" else raw[0])
    np.testing.assert_array_equal(*scored["prep"])
    assert not np.allclose(*scored["none"], atol=1e-4)  # the tokenizer reads the difference


def test_the_api_refuses_what_it_cannot_score(adapter, tmp_path):
    clf = Classifier.load(str(adapter))
    texts = [r["input"] for r in make_planted_rows(3, seed=5)]
    assert clf.predict_proba(t for t in texts).shape == (3, 3)  # a generator is read once, not used up
    np.testing.assert_array_equal(clf.predict_proba(t for t in texts), clf.predict_proba(texts))
    for bad in (0, -1, 2.5):
        with pytest.raises(NewsbiasError, match="batch_size must be a whole number of at least 1"):
            clf.predict_proba(texts, batch_size=bad)
    with pytest.raises(NewsbiasError, match="one label per text: got 3 texts and 1 labels"):
        clf.calibrate(texts, ["left"])
    with pytest.raises(NewsbiasError, match="pass a list of texts, not NoneType"):
        clf.predict_proba(None)
    with pytest.raises(NewsbiasError, match="text 1 has no letter or digit to read"):
        clf.predict_proba(["a real text", "\ufffd\ufffd -- \u200e"])
