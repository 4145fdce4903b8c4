"""newsbias as a library in a notebook: the Classifier's arguments, errors and side effects."""

import json
import shutil

import numpy as np
import pytest
import torch

import newsbias
from newsbias.classifier import Classifier
from newsbias.config import PredictConfig, PromptConfig
from newsbias.errors import NewsbiasError, SettingError
from newsbias.predict import run_predict

from conftest import write_jsonl

PROMPT = PromptConfig(max_length=64, chat_template="off")


@pytest.fixture(scope="module")
def enc(tiny_bert_dir):
    return Classifier.load(str(tiny_bert_dir), head="cls", device="cpu", prompt=PROMPT)


def test_the_package_names_its_api_at_the_top():
    assert {"Classifier", "NewsbiasError", "load_config"} <= set(newsbias.__all__)
    assert newsbias.Classifier is Classifier and newsbias.NewsbiasError is NewsbiasError


def test_loading_a_zero_shot_encoder_leaves_the_callers_random_stream_alone(tiny_bert_dir):
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    first = Classifier.load(str(tiny_bert_dir), head="cls", device="cpu", prompt=PROMPT)
    assert torch.equal(torch.rand(3), expected)
    second = Classifier.load(str(tiny_bert_dir), head="cls", device="cpu", prompt=PROMPT)
    texts = ["the court said the plan was new", "voters in the county"]
    assert np.array_equal(first.predict_proba(texts), second.predict_proba(texts))  # the head is still seeded


@pytest.mark.parametrize("kwargs, message", [
    ({"windows": 2.5}, "windows must be a whole number of at least 1, got 2.5"),
    ({"windows": 0}, "windows must be a whole number of at least 1, got 0"),
    ({"windows": 33}, "windows must be at most 32, got 33"),
    ({"pool": "median"}, "pool must be 'mean' or 'max', got 'median'"),
    ({"batch_size": 2.0}, "batch_size must be a whole number of at least 1, got 2.0"),
])
def test_predict_proba_arguments_are_checked_as_a_config_checks_them(enc, kwargs, message):
    with pytest.raises(NewsbiasError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        enc.predict_proba(["the court said"], **kwargs)


def test_numpy_integers_are_whole_numbers(enc):
    texts = ["the court said the plan was new", "voters in the county"]
    assert np.array_equal(enc.predict_proba(texts, batch_size=np.int64(2), windows=np.int32(1)),
                          enc.predict_proba(texts, batch_size=2))


def test_an_unknown_mode_is_refused_not_read_as_generate(enc):
    with pytest.raises(NewsbiasError, match="mode must be 'score' or 'generate', got 'scores'"):
        enc.classify(["the court said"], mode="scores")


def test_reading_counts_the_cleaned_text_as_scoring_reads_it(enc):
    plain = "the court said the plan was new"
    hidden = "the co\u00adurt sa\u200bid the plan was new"
    assert enc.reading([hidden]) == enc.reading([plain])
    assert enc.reading([hidden], windows=2) == enc.reading([plain], windows=2)


@pytest.mark.parametrize("source, kwargs, message", [
    (None, {}, "pass a model to load"),
    ("TINY", {"head": "xyz"}, "head must be 'lm' or 'cls'"),
    ("TINY", {"head": "cls", "pooling": "max"}, "pooling 'cls' or 'mean'"),
    ("FILE", {}, "is a file, not a model"),
])
def test_bad_load_arguments_are_one_line_errors(tiny_bert_dir, tmp_path, source, kwargs, message):
    (tmp_path / "articles.jsonl").write_text("{}\n")
    source = {"TINY": str(tiny_bert_dir), "FILE": str(tmp_path / "articles.jsonl")}.get(source, source)
    with pytest.raises(NewsbiasError, match=message):
        Classifier.load(source, **kwargs)


def test_a_model_directory_without_its_tokenizer_is_refused(tiny_bert_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_bert_dir, bare)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(SettingError, match="its tokenizer reads every word as unknown"):
        Classifier.load(str(bare), head="cls")


def test_damaged_weights_of_a_saved_model_are_one_line_errors(enc, tmp_path):
    saved = tmp_path / "saved"
    enc.save(saved)
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(NewsbiasError, match=r"cannot load the model weights in .*saved \(.*\); the files are damaged"):
        Classifier.load(str(saved))


def test_saving_onto_a_file_is_refused(enc, tmp_path):
    target = tmp_path / "model"
    target.write_text("a file")
    with pytest.raises(NewsbiasError, match="is a file; save to a new or empty directory"):
        enc.save(target)
    assert target.read_text() == "a file"


@pytest.mark.parametrize("kwargs, key", [({"device": "cuda"}, "device"), ({"dtype": "float16"}, "dtype")])
def test_an_onnx_export_refuses_a_device_or_dtype_it_cannot_honour(tmp_path, kwargs, key):
    export = tmp_path / "onnx"
    export.mkdir()
    (export / "newsbias.json").write_text(json.dumps({"head": "cls"}))
    (export / "model.onnx").write_bytes(b"not read before the check")
    with pytest.raises(SettingError) as err:
        Classifier.load(str(export), **kwargs)
    assert err.value.key == key and "ONNX" in str(err.value)


def test_a_stage_run_from_python_gives_back_the_callers_thread_count(tiny_bert_dir, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "the court said the plan was new"}])
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    run_predict(PredictConfig(model=str(tiny_bert_dir), head="cls", input=str(data), out=str(tmp_path / "p.jsonl"),
                              threads=wanted, device="cpu"), progress=False)
    assert torch.get_num_threads() == before


def test_a_classifier_says_what_it_is(enc, tiny_bert_dir):
    assert repr(enc) == (f"Classifier(source={str(tiny_bert_dir)!r}, head='cls', labels=['left', 'center', 'right'], "
                         f"device='cpu', dtype='float32')")


def test_a_long_article_raises_no_warning_about_the_models_window(enc, caplog, capfd, monkeypatch):
    from transformers.utils import logging as hf_logging

    monkeypatch.setattr(enc.tokenizer, "model_max_length", 128)
    monkeypatch.setattr(enc.tokenizer, "deprecation_warnings", {})  # transformers warns once per tokenizer
    long = " ".join(["the court said the plan was new"] * 200)
    before = hf_logging.get_verbosity()  # a CLI test's -q earlier in the process quiets transformers
    hf_logging.set_verbosity_warning()
    try:
        enc.predict_proba([long], windows=3)
        enc.reading([long], windows=3)
        assert "Token indices sequence length" not in caplog.text + capfd.readouterr().err
        enc.tokenizer.encode(long)  # what transformers says without newsbias's care, so the test can fail
        assert "Token indices sequence length" in caplog.text + capfd.readouterr().err
    finally:
        hf_logging.set_verbosity(before)


def test_predict_gives_the_most_probable_label_of_each_text(enc):
    texts = ["the court said the plan was new", "voters in the county", "traditional values"]
    probs = enc.predict_proba(texts)
    assert enc.predict(texts) == [enc.labels[i] for i in probs.argmax(axis=1)]

