"""On a CUDA GPU: what ``auto`` picks there (bf16) trains, scores and exports like fp32 on CPU.

Skipped on machines without CUDA (CI has none): run ``pytest tests/test_cuda.py`` on a GPU machine.
Planted data has wide margins, so bf16 rounding must not change labels; probabilities may move a little.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from newsbias.classifier import Classifier
from newsbias.config import ExportConfig, PredictConfig
from newsbias.export import run_export
from newsbias.predict import run_predict
from newsbias.train import train

from conftest import make_planted_rows
from test_train import tiny_cfg

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ENCODER = {"model__pooling": "mean", "finetune": "full", "head_init": "probe", "optim__lr": 1e-3, "optim__epochs": 10}


def _texts(data_dir: Path, split: str = "val") -> list[str]:
    return [json.loads(line)["input"] for line in (data_dir / f"{split}.jsonl").read_text().splitlines()]


def _param_dtype(clf: Classifier) -> torch.dtype:
    return next(clf.model.parameters()).dtype


@pytest.fixture(scope="module")
def gpu_runs(tmp_path_factory, tiny_qwen_dir, tiny_bert_dir, planted_data_dir) -> dict[str, tuple[Path, dict]]:
    """One run per head, trained with device and dtype left at auto (the GPU, bf16)."""
    runs = {}
    for head, model_dir, over in (("lm", tiny_qwen_dir, {}), ("cls", tiny_bert_dir, ENCODER)):
        out = tmp_path_factory.mktemp(f"gpu_{head}")
        summary = train(tiny_cfg(model_dir, planted_data_dir, out, head=head, optim__class_weights="balanced", **over))
        runs[head] = (out, summary)
    return runs


@pytest.mark.parametrize("head", ["lm", "cls"])
def test_bf16_training_on_the_gpu_learns_and_scores_alike_on_cpu(gpu_runs, head, planted_data_dir):
    out, summary = gpu_runs[head]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["device"].startswith("cuda") and manifest["dtype"] == "torch.bfloat16"
    assert summary["best_val"]["val_macro_f1"] >= 0.9
    gpu = Classifier.load(str(out))
    assert next(gpu.model.parameters()).device.type == "cuda" and _param_dtype(gpu) == torch.bfloat16
    cpu = Classifier.load(str(out), device="cpu", dtype="float32")
    texts = _texts(planted_data_dir)
    p_gpu, p_cpu = gpu.predict_proba(texts), cpu.predict_proba(texts)
    assert p_gpu.dtype == np.float32 and np.allclose(p_gpu.sum(1), 1, atol=1e-4)
    assert (p_gpu.argmax(1) == p_cpu.argmax(1)).all()
    assert np.abs(p_gpu - p_cpu).max() < 0.05


def test_fp32_on_the_gpu_matches_cpu_closely(gpu_runs, planted_data_dir):
    out, _ = gpu_runs["lm"]
    texts = _texts(planted_data_dir)
    gpu = Classifier.load(str(out), dtype="float32")
    assert _param_dtype(gpu) == torch.float32
    np.testing.assert_allclose(gpu.predict_proba(texts), Classifier.load(str(out), device="cpu").predict_proba(texts),
                               atol=2e-3)  # TF32 matmuls may be on


def test_predict_stage_on_the_gpu_keeps_order_and_labels(gpu_runs, planted_data_dir, tmp_path):
    out, _ = gpu_runs["lm"]
    rows = {}
    for name, over in (("gpu", {}), ("cpu", {"device": "cpu", "dtype": "float32"})):
        cfg = PredictConfig.model_validate({"adapter": str(out), "input": str(planted_data_dir), "split": "test",
                                            "out": str(tmp_path / f"{name}.jsonl"), "batch_size": 4, "chunk_size": 8,
                                            "windows": 3, **over})
        run_predict(cfg, progress=False)
        rows[name] = [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows["gpu"]] == [r["id"] for r in rows["cpu"]]
    assert [r["pred"] for r in rows["gpu"]] == [r["pred"] for r in rows["cpu"]]
    assert json.loads((tmp_path / "gpu.manifest.json").read_text())["dtype"] == "bfloat16"
    gen = PredictConfig.model_validate({"adapter": str(out), "input": str(planted_data_dir), "split": "test",
                                        "out": str(tmp_path / "gen.jsonl"), "mode": "generate", "max_new_tokens": 1})
    run_predict(gen, progress=False)
    answers = [json.loads(line) for line in (tmp_path / "gen.jsonl").read_text().splitlines()]
    assert sum(a["pred"] == r["pred"] for a, r in zip(answers, rows["cpu"])) >= 0.9 * len(answers)


@pytest.mark.parametrize("head", ["lm", "cls"])
def test_merged_export_of_a_gpu_run_scores_like_it_on_cpu(gpu_runs, head, tmp_path):
    out, _ = gpu_runs[head]
    run_export(ExportConfig.model_validate({"adapter": str(out), "out": str(tmp_path / "merged"), "merge": True}))
    texts = [r["input"] for r in make_planted_rows(12, seed=11)]
    merged = Classifier.load(str(tmp_path / "merged"), device="cpu").predict_proba(texts)
    run = Classifier.load(str(out), device="cpu").predict_proba(texts)
    np.testing.assert_allclose(merged, run, atol=1e-4)


def test_fp16_training_on_the_gpu_learns(tiny_qwen_dir, planted_data_dir, tmp_path):
    summary = train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "fp16", model__dtype="float16",
                             optim__class_weights="balanced"))
    assert summary["best_val"]["val_macro_f1"] >= 0.9
