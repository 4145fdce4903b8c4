"""A user's file placed in any stage's output directory survives that stage (written next to, or refused)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from newsbias.cli import main

from conftest import make_planted_rows, write_jsonl
from fuzz.prep_cases import _csv, _rows
from serve_fixtures import adapter_for

NOTE = "my notes, not newsbias's"


def _plant(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "notes.txt").write_text(NOTE)
    return d / "notes.txt"


@pytest.fixture(scope="module")
def lm_adapter(tmp_path_factory, tiny_qwen_dir, planted_data_dir) -> Path:
    return adapter_for("lm", tmp_path_factory, tiny_qwen_dir, planted_data_dir)


def test_prep_refuses_a_directory_with_user_files(tmp_path, capsys):
    (tmp_path / "in.csv").write_text(_csv(_rows(90)))
    note = _plant(tmp_path / "out")
    assert main(["prep", "-q", "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "out")]) == 2
    assert "not written by newsbias prep" in capsys.readouterr().err
    assert note.read_text() == NOTE and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["notes.txt"]
    # the input's own directory is never the output
    assert main(["prep", "-q", "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path)]) == 2
    assert (tmp_path / "in.csv").is_file()


def test_baseline_train_predict_compare_export_keep_user_files(tmp_path, planted_data_dir, tiny_qwen_dir,
                                                               lm_adapter, capsys):
    notes = []
    notes.append(_plant(tmp_path / "preds"))
    assert main(["baseline", "--data", str(planted_data_dir), "--out", str(tmp_path / "preds"),
                 "baseline.lr.C_grid=[1.0]"]) == 0
    notes.append(_plant(tmp_path / "adapter"))
    assert main(["train", "-q", "--model", str(tiny_qwen_dir), "--data", str(planted_data_dir), "--out",
                 str(tmp_path / "adapter"), "--max-steps", "2", "train.prompt.max_length=64",
                 "train.prompt.chat_template=off", "train.eval.every_steps=2"]) == 0
    inp = write_jsonl(tmp_path / "in.jsonl", make_planted_rows(6, seed=4))
    assert main(["predict", "-q", "--adapter", str(lm_adapter), "--input", str(inp),
                 "--out", str(tmp_path / "preds" / "tuned.jsonl")]) == 0
    notes.append(_plant(tmp_path / "report"))
    assert main(["compare", "--preds", f"tuned={tmp_path / 'preds' / 'tfidf-lr.jsonl'}", "--out",
                 str(tmp_path / "report"), "compare.metrics.n_boot=20"]) == 0
    notes.append(_plant(tmp_path / "export"))
    assert main(["export", "--adapter", str(lm_adapter), "--out", str(tmp_path / "export"), "--overwrite"]) == 2
    assert "not written by newsbias export" in capsys.readouterr().err
    for n in notes:
        assert n.read_text() == NOTE, n
    assert json.loads((tmp_path / "adapter" / "newsbias.json").read_text())["head"] == "lm"
