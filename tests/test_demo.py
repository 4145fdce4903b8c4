"""The main job (`make demo` = scripts/demo.sh) end to end on a very small slice of AllSides."""

from __future__ import annotations

import csv
import json

import pytest

from demo_slice import demo_slice


@pytest.mark.slow
def test_demo_pipeline_on_a_small_slice(tmp_path_factory):
    run = demo_slice(tmp_path_factory)
    out = run.out
    meta = json.loads((out / "data" / "prep_meta.json").read_text())
    assert meta["splits"]["mode"] == "by_source" and meta["leakage"]["shared_outlets"]["count"] == 0
    assert (out / "lm-adapter" / "adapter_config.json").is_file()
    lm = json.loads((out / "lm-adapter" / "newsbias.json").read_text())
    assert lm["base_model"].endswith(".gguf") and lm["head"] == "lm"
    enc = json.loads((out / "encoder" / "newsbias.json").read_text())
    assert enc["pooling"] == "mean" and enc["finetune"] == "full"
    enc_log = [json.loads(l) for l in (out / "encoder" / "train_log.jsonl").read_text().splitlines()]
    assert enc_log[0]["type"] == "probe" and enc_log[1]["type"] == "eval" and enc_log[1]["step"] == 0
    runs = ("majority", "tfidf-lr", "lm-base", "lm-base-gen", "lm-tuned", "lm-tuned-gen", "enc-base", "enc-tuned",
            "lm-base_eval", "lm-tuned_eval")
    for name in runs:
        assert (out / "preds" / f"{name}.jsonl").stat().st_size > 0, name
    small_ids = [json.loads(l)["id"] for l in (out / "data" / "eval_small.jsonl").read_text().splitlines()]
    for name in ("lm-base_eval", "lm-tuned_eval"):  # the qualitative sample, not the test split
        rows = [json.loads(l) for l in (out / "preds" / f"{name}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == small_ids[:12] and all(r["input"] for r in rows), name
    report = (out / "report" / "report.md").read_text()
    for name in ("majority", "tfidf-lr", "lm-base", "lm-tuned", "enc-base", "enc-tuned", "ensemble",
                 "ensemble-lm-tfidf"):
        assert f"| {name} |" in report, name
    for name in ("lm-base-gen", "lm-tuned-gen"):  # the generation runs' table, in the appendix
        assert f"| {name} |" in report, name
    assert "## Time per stage" in report and "| train: LoRA on SmolLM2" in report
    explained = json.loads((out / "explain" / "manifest.json").read_text())
    assert explained["complete"] and explained["summary"]["articles"] >= 1 and (out / "explain" / "explain.html").is_file()
    assert "## What enc-tuned leans on" in report and "| explain: which words moved enc-tuned" in report
    with open(out / "report" / "eval_compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {"preview", "gold", "lm-base", "lm-tuned", "ensemble"} <= set(rows[0])
    assert "demo: done" in run.stdout and "| **total** |" in run.stdout
