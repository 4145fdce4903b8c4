"""Export: merged weights score like base + adapter (both heads), model card fields, hub push mocked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from newsbias.cli import main
from newsbias.config import ExportConfig
from newsbias.errors import NewsbiasError
from newsbias.classifier import Classifier
from newsbias.export import is_hub_id, model_card, run_export
from newsbias.modeling import ModelSettings, score_batch

from conftest import make_planted_rows
from serve_fixtures import adapter_for


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tiny_qwen_dir, tiny_bert_dir, planted_data_dir) -> dict[str, Path]:
    return {"lm": adapter_for("lm", tmp_path_factory, tiny_qwen_dir, planted_data_dir),
            "cls": adapter_for("cls", tmp_path_factory, tiny_bert_dir, planted_data_dir)}


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


@pytest.mark.parametrize("head", ["lm", "cls"])
def test_merged_model_scores_like_base_plus_adapter(adapters, head, tmp_path):
    texts = [r["input"] for r in make_planted_rows(9, seed=5)]
    clf = Classifier.load(str(adapters[head]), device="cpu")
    tok, settings = clf.tokenizer, clf.settings
    ref = clf.predict_proba(texts, batch_size=4)

    res = run_export(ExportConfig(adapter=str(adapters[head]), out=str(tmp_path / "merged"), merge=True))
    out = Path(res["out"])
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert (out / "tokenizer.json").is_file() or (out / "vocab.txt").is_file()
    assert not (out / "adapter_config.json").exists()
    saved = ModelSettings.load(out)
    assert saved.extra["merged"] is True and saved.head == head and saved.base_model == settings.base_model

    merged = Classifier.load(str(out), device="cpu")
    assert not hasattr(merged.model, "peft_config")  # a plain transformers model
    got = merged.predict_proba(texts, batch_size=4)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert (got.argmax(1) == ref.argmax(1)).all()
    # `newsbias predict --model <export>` reads the export's newsbias.json and scores the same
    from newsbias.config import PredictConfig
    from newsbias.predict import run_predict

    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)))
    run_predict(PredictConfig(model=str(out), input=str(inp), out=str(tmp_path / "p.jsonl"), device="cpu"),
                progress=False)
    preds = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([[p["probs"][l] for l in settings.labels] for p in preds], ref, atol=1e-5)
    # the adapter changed something: merging a no-op would pass the check above trivially
    if head == "cls":
        from newsbias.modeling import load_model_and_tokenizer
        import torch

        torch.manual_seed(0)
        plain, _ = load_model_and_tokenizer(settings.base_model, head="cls", device="cpu")
        assert not np.allclose(score_batch(plain.eval(), tok, settings, texts), ref, atol=1e-4)
    card = (out / "README.md").read_text()
    fm = front_matter(card)
    assert fm["library_name"] == "transformers" and "merged" in fm["tags"]


def test_served_merged_model_equals_adapter(adapters, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from newsbias.config import ServeConfig
    from newsbias.serve import create_app, load_model

    run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "m"), merge=True))
    texts = [r["input"] for r in make_planted_rows(4, seed=3)]
    answers = []
    for cfg in (ServeConfig(adapter=str(adapters["lm"])), ServeConfig(model=str(tmp_path / "m"))):
        with TestClient(create_app(cfg, predictor=load_model(cfg))) as c:
            answers.append(c.post("/v1/classify", json={"texts": texts}).json()["results"])
            if cfg.model:
                assert c.get("/v1/model").json()["merged"] is True
    for a, b in zip(*answers):
        assert a["pred"] == b["pred"]
        np.testing.assert_allclose(list(a["probs"].values()), list(b["probs"].values()), atol=1e-5)


def with_prep_meta(adapter: Path, tmp_path: Path, mode: str = "random") -> Path:
    """A copy of the adapter whose manifest points at a prep_meta.json like prep writes."""
    d = tmp_path / "adapter"
    shutil.copytree(adapter, d)
    meta = {"stage": "prep", "input": {"path": "/data/allsides/articles.jsonl.gz", "format": "allsides"},
            "counts": {"read": 1000, "written": 900},
            "splits": {"mode": mode, "seed": 13, "sizes": {"train": 700, "val": 100, "test": 100},
                       "label_counts": {"train": {"left": 300, "center": 150, "right": 250}}},
            "leakage": {"shared_outlets": {"count": 17, "examples": []},
                        "shared_source_names": {"count": 5, "examples": []},
                        "exact_duplicate_pairs_across_splits": {"count": 0, "examples": []},
                        "near_duplicate_pairs_across_splits": {"count": 3, "threshold": 0.8, "examples": []}}}
    (tmp_path / "prep_meta.json").write_text(json.dumps(meta))
    man = json.loads((d / "manifest.json").read_text())
    man["data"]["prep_meta"] = {"path": str(tmp_path / "prep_meta.json"), "outputs": {}}
    (d / "manifest.json").write_text(json.dumps(man))
    return d


def test_model_card_fields(adapters, tmp_path):
    adir = with_prep_meta(adapters["lm"], tmp_path)
    metrics = {"macro_f1": 0.6123, "accuracy": 0.65, "micro_f1": 0.65, "invalid_rate": 0.0, "n": 100,
               "macro_f1_ci": {"low": 0.55, "high": 0.67, "confidence": 0.95},
               "per_class": {"left": {"precision": 0.7, "recall": 0.6, "f1": 0.65, "support": 40}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "export"
    assert main(["export", "--adapter", str(adir), "--out", str(out), "--metrics", str(tmp_path / "metrics.json"),
                 "--base-model-id", "Qwen/Qwen3-0.6B", "--card-in-adapter", "export.datasets=[allsides]"]) == 0
    card = (out / "README.md").read_text()
    fm = front_matter(card)
    assert fm["base_model"] == "Qwen/Qwen3-0.6B" and fm["license"] == "apache-2.0"
    assert fm["library_name"] == "peft" and fm["datasets"] == ["allsides"]
    assert fm["pipeline_tag"] == "text-classification" and "f1" in fm["metrics"]
    res = fm["model-index"][0]["results"][0]
    assert {"type": "f1", "value": 0.6123, "name": "macro-F1"} in res["metrics"] and res["dataset"]["split"] == "test"
    # body: training config, data + split with the leakage figures, evaluation, limitations
    assert "LoRA r / alpha / dropout | 4 / 8 / 0.0" in card
    assert "Split: **random** (seed 13)" in card and "train 700, val 100, test 100" in card
    assert "| shared outlets | 17 |" in card and "| near duplicate pairs across splits | 3 |" in card
    assert "upper bound" in card and "outlet-level ratings, not per-article judgements" in card
    assert "| macro-F1 | 0.6123 |" in card and "0.5500 - 0.6700" in card
    assert "Best validation checkpoint (selected by val_macro_f1)" in card
    # the adapter files are exported as they are, and the adapter dir got its own card
    for f in ("adapter_config.json", "adapter_model.safetensors", "newsbias.json", "manifest.json"):
        assert (out / f).is_file()
    assert "library_name: peft" in (adir / "README.md").read_text()


def test_model_card_without_prep_meta_or_known_base(adapters):
    card = model_card(adapters["cls"])
    fm = front_matter(card)
    assert "base_model" not in fm  # a local path is no hub id
    assert fm["license"] == "other" and "unknown: check the base model" in card
    assert "not available" in card and "sequence-classification head" in card
    assert is_hub_id("Qwen/Qwen3-0.6B") and not is_hub_id("/tmp/x") and not is_hub_id("a/b/c")


def test_push_to_hub_is_mocked_at_the_http_boundary(adapters, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, **kw: calls.append(("create", kw)) or
                        f"https://hub.example/{kw['repo_id']}")
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw)))
    res = run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "o"), push_to_hub="me/newsbias-lm"))
    assert res["pushed"].endswith("me/newsbias-lm")
    assert calls[0] == ("create", {"repo_id": "me/newsbias-lm", "repo_type": "model", "private": True,
                                   "exist_ok": True})
    assert calls[1][1]["folder_path"] == str(tmp_path / "o") and calls[1][1]["repo_id"] == "me/newsbias-lm"

    def denied(self, **kw):
        raise OSError("401 Client Error: Unauthorized")

    monkeypatch.setattr(HfApi, "upload_folder", denied)
    with pytest.raises(NewsbiasError, match="upload to me/x failed: 401.*HF_TOKEN"):
        run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "o2"), push_to_hub="me/x"))


def test_export_user_errors(adapters, tmp_path, capsys):
    with pytest.raises(NewsbiasError, match="not a `newsbias train` output"):
        run_export(ExportConfig(adapter=str(tmp_path), out=str(tmp_path / "o")))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("keep me")
    for overwrite in (False, True):  # a directory newsbias did not write is never replaced
        with pytest.raises(NewsbiasError, match="not empty .* not written by newsbias export"):
            run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "busy"), overwrite=overwrite))
    assert (tmp_path / "busy" / "x").read_text() == "keep me"
    run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "done")))
    with pytest.raises(NewsbiasError, match="earlier export; pass --overwrite"):
        run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "done")))
    run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "done"), overwrite=True))
    with pytest.raises(NewsbiasError, match="is inside the export output directory"):
        run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(Path(adapters["lm"]).parent), overwrite=True))
    with pytest.raises(NewsbiasError, match="metrics file"):
        run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "o"), metrics=str(tmp_path / "no.json")))
    assert main(["export", "--adapter", str(adapters["lm"])]) == 2
    assert "export.out: required" in capsys.readouterr().err
