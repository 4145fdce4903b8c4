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


def test_prep_rerun_refuses_when_user_files_sit_beside_its_output(tmp_path, capsys):
    (tmp_path / "in.csv").write_text(_csv(_rows(90)))
    args = ["prep", "-q", "--input", str(tmp_path / "in.csv"), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    meta = json.loads((tmp_path / "out" / "prep_meta.json").read_text())
    assert meta["files"] == sorted(p.name for p in (tmp_path / "out").iterdir())
    assert main(args) == 0  # its own output alone: replaced
    note = _plant(tmp_path / "out")
    (tmp_path / "out" / "tfidf-lr.jsonl").write_text("{}\n")  # e.g. a baseline written beside the data
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "did not write (notes.txt, tfidf-lr.jsonl)" in err and "move them out" in err
    assert note.read_text() == NOTE and (tmp_path / "out" / "tfidf-lr.jsonl").read_text() == "{}\n"


def test_train_refuses_to_write_over_its_model_its_data_or_another_model(tmp_path, tiny_qwen_dir, planted_data_dir,
                                                                        capsys):
    import shutil

    base = Path(shutil.copytree(tiny_qwen_dir, tmp_path / "base"))
    before = {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()}
    run = ["train", "-q", "--max-steps", "1", "train.prompt.max_length=64"]
    assert main(run + ["--model", str(base), "--data", str(planted_data_dir), "--out", str(base)]) == 2
    assert "is, or holds, the run's model" in capsys.readouterr().err
    assert main(run + ["--model", str(base), "--data", str(planted_data_dir), "--out", str(planted_data_dir)]) == 2
    assert "is, or holds, the run's data" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text('{"mine": true}')
    assert main(run + ["--model", str(base), "--data", str(planted_data_dir), "--out", str(other)]) == 2
    assert "holds another model's files (config.json)" in capsys.readouterr().err
    assert main(run + ["--model", str(base), "--data", str(planted_data_dir), "--out", str(tmp_path / "new"),
                       "--resume", "--overwrite"]) == 2
    assert "pass one" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in base.iterdir() if p.is_file()} == before
    assert (other / "config.json").read_text() == '{"mine": true}'


def test_predict_and_evaluate_never_write_over_their_input_or_a_user_file(tmp_path, tiny_qwen_dir, capsys):
    inp = write_jsonl(tmp_path / "in.jsonl", make_planted_rows(3, seed=4))
    text = inp.read_text()
    assert main(["predict", "-q", "--model", str(tiny_qwen_dir), "--input", str(inp), "--out", str(inp),
                 "--overwrite"]) == 2
    assert "is the input file" in capsys.readouterr().err and inp.read_text() == text
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"id": str(i), "pred": p, "gold": g}) + "\n"
                             for i, (p, g) in enumerate([("left", "left"), ("right", "center"), ("center", "center")])))
    kept = preds.read_text()
    assert main(["evaluate", "--preds", str(preds), "--out", str(preds)]) == 2
    assert "is the predictions file" in capsys.readouterr().err and preds.read_text() == kept
    mine = tmp_path / "mine.json"
    mine.write_text('{"mine": 1}\n')
    assert main(["evaluate", "--preds", str(preds), "--out", str(mine)]) == 2
    assert "was not written by newsbias evaluate" in capsys.readouterr().err and mine.read_text() == '{"mine": 1}\n'
    out = tmp_path / "m.json"
    assert main(["evaluate", "--preds", str(preds), "--out", str(out)]) == 0
    assert main(["evaluate", "--preds", str(preds), "--out", str(out)]) == 0  # its own earlier metrics: replaced
    assert json.loads(out.read_text())["stage"] == "evaluate"


def test_trained_and_exported_weights_are_readable_as_the_umask_says(tmp_path, planted_data_dir, tiny_qwen_dir, lm_adapter):
    """safetensors writes 0600 whatever the umask: a serving account or a teammate could not read the model."""
    import os
    import stat

    old = os.umask(0o027)
    try:
        assert main(["train", "-q", "--model", str(tiny_qwen_dir), "--data", str(planted_data_dir), "--out",
                     str(tmp_path / "adapter"), "--max-steps", "2", "train.prompt.max_length=64",
                     "train.prompt.chat_template=off", "train.eval.every_steps=1"]) == 0
        assert main(["export", "--adapter", str(lm_adapter), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    finally:
        os.umask(old)
    weights = [*(tmp_path / "adapter").rglob("*.safetensors"), *(tmp_path / "merged").rglob("*.safetensors")]
    assert {p.parent.name for p in weights} >= {"adapter", "merged", "checkpoint-2"}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in weights} == {p.name: "0o640" for p in weights}


def test_a_new_run_into_a_finished_one_needs_overwrite_and_a_killed_one_leaves_no_model(
        tmp_path, planted_data_dir, tiny_qwen_dir, monkeypatch, capsys):
    import newsbias.train as train_mod

    run = ["train", "-q", "--model", str(tiny_qwen_dir), "--data", str(planted_data_dir), "--out", str(tmp_path / "a"),
           "--max-steps", "2", "train.prompt.max_length=64", "train.prompt.chat_template=off"]
    assert main(run) == 0
    notes = _plant(tmp_path / "a")
    mine = tmp_path / "a" / "my_probe_backup.safetensors"  # the user's own weights beside the run's
    mine.write_bytes(b"user weights")
    import shutil

    shutil.rmtree(tmp_path / "a" / "checkpoints")  # a finished run's own files, without its checkpoints
    capsys.readouterr()
    assert main(run) == 2
    assert "holds a finished training run" in capsys.readouterr().err
    assert (tmp_path / "a" / "newsbias.json").is_file()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(train_mod, "train_step", killed)
    (tmp_path / "a" / "chat_template.jinja").write_text("{{ old run's template }}")  # the tokenizer's, as saved
    assert main([*run, "--overwrite", "train.seed=7"]) != 0
    assert not (tmp_path / "a" / "newsbias.json").exists() and not (tmp_path / "a" / "adapter_model.safetensors").exists()
    assert not (tmp_path / "a" / "chat_template.jinja").exists()  # a new run without one would have inherited it
    assert mine.read_bytes() == b"user weights"
    inp = write_jsonl(tmp_path / "in.jsonl", make_planted_rows(3, seed=4))
    assert main(["predict", "-q", "--adapter", str(tmp_path / "a"), "--input", str(inp), "--out",
                 str(tmp_path / "p.jsonl")]) == 2  # the earlier run's model is gone, not served as this one's
    assert notes.read_text() == NOTE


def test_a_training_run_that_has_not_finished_is_not_loaded_as_a_model(tmp_path):
    from newsbias.classifier import Classifier
    from newsbias.errors import NewsbiasError

    run = tmp_path / "t5"
    (run / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    (run / "checkpoints" / "checkpoint-10" / "trainer_state.json").write_text("{}")
    (run / "adapter_model.safetensors").write_bytes(b"weights written, newsbias.json not yet")
    for load in (lambda: Classifier.from_options(adapter=str(run)), lambda: Classifier.load(str(run))):
        with pytest.raises(NewsbiasError, match=r"t5 holds a training run that has not finished \(no newsbias.json "
                                                r"yet\); finish it with `newsbias train \.\.\. --resume`"):
            load()
