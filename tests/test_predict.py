"""Prediction: generation parsing, scoring records, base vs adapter, resume after a kill, DDP merge, bad input."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from newsbias.config import PredictConfig, PromptConfig, TrainConfig
from newsbias.errors import NewsbiasError
from newsbias.metrics import compute_metrics
from newsbias.classifier import Classifier
from newsbias.predict import _signature, parse_generation, run_predict
from newsbias.modeling import prefix_cache, tune_cpu_allocator
from newsbias.train import train

from conftest import make_planted_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["left", "center", "right"]


@pytest.fixture(scope="session")
def lm_adapter_dir(tmp_path_factory, tiny_qwen_dir, planted_data_dir) -> Path:
    out = tmp_path_factory.mktemp("lm_adapter")
    cfg = TrainConfig.model_validate({
        "model": {"name_or_path": str(tiny_qwen_dir), "head": "lm"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0}, "prompt": {"max_length": 64, "chat_template": "off"},
        "data": {"path": str(planted_data_dir)},
        "optim": {"lr": 5e-3, "epochs": 4, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.0,
                  "class_weights": "balanced"},
        "eval": {"every_steps": 12, "patience": None, "batch_size": 16}, "out_dir": str(out), "progress": False})
    train(cfg)
    return out


def pcfg(**kw) -> PredictConfig:
    return PredictConfig.model_validate({"batch_size": 4, "chunk_size": 8, **kw})


def read(path: Path) -> list[dict]:
    return [json.loads(l) for l in Path(path).read_text().splitlines()]


@pytest.mark.parametrize("raw, expected", [
    (" left", "left"), ("Left.", "left"), (" RIGHT\n", "right"), ("center", "center"), ("Centre", "center"),
    ("<think>\nthe article is on the left side\n</think>\n\nright", "right"),
    ("<think>hmm, right or left", None),                 # unclosed think block: no answer given
    ("Center-left", "left"), ("center-right leaning", "right"), ("left of center", "left"),
    ("The answer is: center<|im_end|>", "center"), ("centrist", "center"),
    ("I cannot tell", None), ("", None), ("leftover rightly", None), ("42", None),
])
def test_parse_generation(raw, expected):
    assert parse_generation(raw) == expected


def test_tuned_scoring_records_are_complete_and_learned(lm_adapter_dir, planted_data_dir, tmp_path):
    out = tmp_path / "tuned.jsonl"
    before = torch.get_num_threads()
    m = run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(planted_data_dir), split="val", out=str(out),
                         name="tuned", threads=1 if before != 1 else 2), progress=False)
    assert m["threads"] == (1 if before != 1 else 2)  # predict.threads applied (read back while it ran)
    assert torch.get_num_threads() == before  # and the caller's count given back
    assert m["allocator"] == ("tuned" if tune_cpu_allocator() else "as found")  # recorded as applied
    rows = read(out)
    src = read(planted_data_dir / "val.jsonl")
    assert [r["id"] for r in rows] == [s["id"] for s in src]           # input order kept
    for r, s in zip(rows, src):
        assert set(r) == {"id", "pred", "probs", "gold", "valid", "outlet", "model", "adapter"}
        assert r["gold"] == s["output"] and r["valid"] and r["model"] == "tuned"
        assert abs(sum(r["probs"].values()) - 1) < 1e-4
        assert r["pred"] == max(r["probs"], key=r["probs"].get)
    # the same numbers as the shared scoring function on the same texts
    probs = Classifier.load(str(lm_adapter_dir)).predict_proba([s["input"] for s in src])
    got = np.array([[r["probs"][l] for l in LABELS] for r in rows])
    assert np.allclose(got, probs, atol=1e-5)
    met = compute_metrics([LABELS.index(r["gold"]) for r in rows], [LABELS.index(r["pred"]) for r in rows])
    assert met["macro_f1"] >= 0.9
    assert m["counts"] == {"rows": len(src), "predicted": len(src), "skipped": 0, "skipped_by_reason": {}, "skipped_first": [],
                           "invalid": 0, "resumed_rows": 0, "repeated_ids": 0}
    man = json.loads((tmp_path / "tuned.manifest.json").read_text())
    assert man["head"] == "lm" and man["adapter"] == str(lm_adapter_dir) and man["input"]["sha256"]
    assert man["weights_sha256"] == hashlib.sha256((lm_adapter_dir / "adapter_model.safetensors").read_bytes()).hexdigest()
    assert man["device"] == "cpu" and man["dtype"] == "float32"  # what auto resolved to
    adapter_cal = json.loads((lm_adapter_dir / "newsbias.json").read_text())["calibration"]
    assert man["temperature"] == adapter_cal.get("temperature", 1.0)
    assert not (tmp_path / ".tuned.jsonl.parts").exists()


def test_half_precision_load_folds_the_adapter_in_fp32_first(lm_adapter_dir, planted_data_dir):
    """bf16: the adapter is merged into fp32 weights, then cast (one rounding), never run unmerged."""
    texts = [json.loads(l)["input"] for l in (planted_data_dir / "val.jsonl").read_text().splitlines()]
    fp32 = Classifier.load(str(lm_adapter_dir), device="cpu")
    bf16 = Classifier.load(str(lm_adapter_dir), device="cpu", dtype="bfloat16")
    assert not hasattr(bf16.model, "merge_and_unload") and next(bf16.model.parameters()).dtype == torch.bfloat16
    p32 = fp32.predict_proba(texts)
    fp32.model.to(torch.bfloat16)
    np.testing.assert_array_equal(bf16.predict_proba(texts), fp32.predict_proba(texts))
    assert (bf16.predict_proba(texts).argmax(1) == p32.argmax(1)).all()


def test_base_zero_shot_score_and_generate(tiny_qwen_dir, planted_data_dir, tmp_path):
    run_predict(pcfg(model=str(tiny_qwen_dir), input=str(planted_data_dir / "val.jsonl"), out=str(tmp_path / "b.jsonl"),
                     **{"prompt": {"max_length": 64}}), progress=False)
    rows = read(tmp_path / "b.jsonl")
    assert all(r["model"] == tiny_qwen_dir.name and r["adapter"] is None and r["pred"] in LABELS for r in rows)
    m = run_predict(pcfg(model=str(tiny_qwen_dir), input=str(planted_data_dir / "val.jsonl"), mode="generate",
                         out=str(tmp_path / "g.jsonl"), max_new_tokens=3, **{"prompt": {"max_length": 64}}),
                    progress=False)
    gen = read(tmp_path / "g.jsonl")
    assert len(gen) == len(rows) and all("raw" in r and r["probs"] is None for r in gen)
    # a random tiny model mostly babbles: unparseable answers are invalid, never a default label
    for r in gen:
        assert r["valid"] == (r["pred"] is not None) and (r["pred"] == parse_generation(r["raw"]))
    assert m["counts"]["invalid"] == sum(not r["valid"] for r in gen)


def test_tuned_generation_agrees_with_scoring(lm_adapter_dir, planted_data_dir, tmp_path):
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(planted_data_dir / "val.jsonl"), mode="generate",
                     out=str(tmp_path / "g.jsonl"), max_new_tokens=1), progress=False)
    gen = read(tmp_path / "g.jsonl")
    assert sum(r["valid"] for r in gen) >= 0.9 * len(gen)
    assert sum(r["pred"] == r["gold"] for r in gen) >= 0.9 * len(gen)


def test_cls_adapter_predicts(tmp_path, tiny_bert_dir, planted_data_dir):
    out = tmp_path / "cls"
    train(TrainConfig.model_validate({
        "model": {"name_or_path": str(tiny_bert_dir), "head": "cls"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "prompt": {"max_length": 64},
        "data": {"path": str(planted_data_dir)}, "optim": {"lr": 5e-3, "max_steps": 2, "batch_size": 8},
        "eval": {"every_steps": 2, "patience": None}, "out_dir": str(out), "progress": False}))
    run_predict(pcfg(adapter=str(out), input=str(planted_data_dir / "val.jsonl"), out=str(tmp_path / "p.jsonl")),
                progress=False)
    rows = read(tmp_path / "p.jsonl")
    assert rows and all(r["pred"] in LABELS and abs(sum(r["probs"].values()) - 1) < 1e-4 for r in rows)
    with pytest.raises(NewsbiasError, match="mode=generate needs a causal LM"):
        run_predict(pcfg(adapter=str(out), input=str(planted_data_dir / "val.jsonl"), mode="generate",
                         out=str(tmp_path / "q.jsonl")), progress=False)


def _predict_cmd(adapter: Path, inp: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "newsbias.cli", "predict", "-q", "--adapter", str(adapter), "--input", str(inp),
            "--out", str(out), "--batch-size", "1", "predict.chunk_size=4", *extra]


@pytest.mark.slow
def test_killed_run_resumes_without_losing_or_duplicating_rows(lm_adapter_dir, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", make_planted_rows(400, seed=3))
    ref = tmp_path / "ref.jsonl"
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(ref), batch_size=1, chunk_size=4),
                progress=False)
    out = tmp_path / "out.jsonl"
    part = tmp_path / ".out.jsonl.parts" / "rank0.jsonl"
    proc = subprocess.Popen(_predict_cmd(lm_adapter_dir, inp, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if part.exists() and part.read_text().count("\n") >= 12:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "predict finished before it could be killed: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = part.read_text().count("\n")
    assert 12 <= written < 400 and not out.exists()
    with open(part, "a") as f:          # a torn last line, as a kill mid-write leaves
        f.write('{"id": "torn", "pr')
    proc = subprocess.run(_predict_cmd(lm_adapter_dir, inp, out), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == ref.read_bytes()
    man = json.loads((tmp_path / "out.manifest.json").read_text())
    assert man["counts"]["resumed_rows"] == written and man["counts"]["predicted"] == 400
    assert f"{written} of them kept from the interrupted run" in proc.stdout


def test_existing_output_and_foreign_parts_are_not_clobbered(lm_adapter_dir, planted_data_dir, tmp_path):
    out = tmp_path / "p.jsonl"
    cfg = dict(adapter=str(lm_adapter_dir), input=str(planted_data_dir / "val.jsonl"), out=str(out))
    run_predict(pcfg(**cfg), progress=False)
    with pytest.raises(NewsbiasError, match="already exists; pass --overwrite"):
        run_predict(pcfg(**cfg), progress=False)
    run_predict(pcfg(**cfg, overwrite=True), progress=False)
    parts = tmp_path / ".p.jsonl.parts"
    parts.mkdir()
    (parts / "run.json").write_text('{"other": 1}')
    with pytest.raises(NewsbiasError, match="unfinished run of a different .*pass --overwrite"):
        run_predict(pcfg(**cfg), progress=False)


def test_a_resume_knows_one_adapter_by_any_spelling_and_a_base_by_its_weights(lm_adapter_dir, tiny_qwen_dir,
                                                                              tmp_path, monkeypatch):
    from newsbias.classifier import weights_sha256

    plain = Classifier.load(str(lm_adapter_dir), device="cpu").identity()
    monkeypatch.chdir(lm_adapter_dir.parent)
    spelled = Classifier.load(f"./{lm_adapter_dir.name}/../{lm_adapter_dir.name}/", device="cpu").identity()
    assert spelled == plain  # a resume from another working directory or spelling is the same run
    assert plain["base_weights_sha256"] == weights_sha256(tiny_qwen_dir) is not None  # new base weights: other run


def test_a_run_reading_stdin_never_resumes_an_unfinished_one(lm_adapter_dir, tmp_path, monkeypatch):
    out = tmp_path / "p.jsonl"
    cfg = dict(adapter=str(lm_adapter_dir), input="-", out=str(out))
    monkeypatch.setattr("sys.stdin", io.StringIO("Senate passes the bill\nMarkets fall\n"))
    run_predict(pcfg(**cfg, overwrite=True), progress=False)
    parts = tmp_path / ".p.jsonl.parts"
    parts.mkdir()  # a killed run that read other articles from stdin, with every setting the same
    sig = _signature(pcfg(**cfg), "-", 1, Classifier.load(str(lm_adapter_dir), device="cpu"))
    (parts / "run.json").write_text(json.dumps(sig))
    (parts / "rank0.jsonl").write_text('{"id": "1", "pred": "left"}\n')
    monkeypatch.setattr("sys.stdin", io.StringIO("Another article\nAnd another\n"))
    with pytest.raises(NewsbiasError, match="reads stdin cannot resume it"):
        run_predict(pcfg(**cfg, overwrite=False), progress=False)
    run_predict(pcfg(**cfg, overwrite=True), progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["1", "2"] and all("probs" in r for r in rows)  # scored anew, none kept


def test_bad_inputs(lm_adapter_dir, tiny_qwen_dir, tmp_path):
    good = write_jsonl(tmp_path / "in.jsonl", make_planted_rows(6))
    with pytest.raises(NewsbiasError, match="adapter not found"):
        run_predict(pcfg(adapter=str(tmp_path / "nope"), input=str(good), out=str(tmp_path / "a.jsonl")), progress=False)
    (tmp_path / "not_an_adapter").mkdir()
    with pytest.raises(NewsbiasError, match="not an adapter directory"):
        run_predict(pcfg(adapter=str(tmp_path / "not_an_adapter"), input=str(good), out=str(tmp_path / "a.jsonl")),
                    progress=False)
    with pytest.raises(NewsbiasError, match="was trained on"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), model="some/other-model", input=str(good),
                         out=str(tmp_path / "a.jsonl")), progress=False)
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(NewsbiasError, match="no articles to predict"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(tmp_path / "empty.jsonl"), out=str(tmp_path / "e.jsonl")),
                    progress=False)
    with pytest.raises(NewsbiasError, match="input not found"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(tmp_path / "none.jsonl"), out=str(tmp_path / "e.jsonl")),
                    progress=False)
    with pytest.raises(NewsbiasError, match="nothing to predict with"):
        run_predict(pcfg(input=str(good), out=str(tmp_path / "e.jsonl")), progress=False)
    with pytest.raises(NewsbiasError, match=r"no output given: pass --out FILE \(predict.out\)"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(good)), progress=False)
    # a setting shared by every stage that loads a model is named by this stage's key
    with pytest.raises(NewsbiasError, match=r"^predict\.device 'tpu7' is not a torch device; use auto, cpu"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(good), out=str(tmp_path / "e.jsonl"), device="tpu7"),
                    progress=False)
    with pytest.raises(NewsbiasError, match=r"^predict\.model .*gone\.gguf: no such GGUF file"):
        run_predict(pcfg(model=str(tmp_path / "gone.gguf"), input=str(good), out=str(tmp_path / "e.jsonl")),
                    progress=False)


def test_empty_texts_and_bad_gold_are_counted_skips(lm_adapter_dir, tmp_path):
    rows = make_planted_rows(6)
    rows[1]["input"] = "   "
    rows[2]["input"] = "\ufffd\ufffd \u0001 -- \u200e"  # what a failed decode leaves: nothing to read
    rows[3]["output"] = "purple"
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    with pytest.raises(NewsbiasError, match=r"in.jsonl: line 4: label 'purple' is not in the label set"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(tmp_path / "a.jsonl")), progress=False)
    m = run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(tmp_path / "a.jsonl"),
                         on_bad_gold="skip"), progress=False)
    assert m["counts"]["skipped_by_reason"] == {"empty text": 2, "gold label": 1}
    assert m["counts"]["skipped_first"] == [  # which ones, so they can be fixed
        {"id": rows[1]["id"], "line": 2, "skipped": "empty text"},
        {"id": rows[2]["id"], "line": 3, "skipped": "empty text"},
        {"id": rows[3]["id"], "line": 4, "skipped": "gold label 'purple' not in the label set"}]
    assert [r["id"] for r in read(tmp_path / "a.jsonl")] == [rows[i]["id"] for i in (0, 4, 5)]


@pytest.mark.slow  # two CLI processes of their own
def test_stdin_plain_text_and_csv(lm_adapter_dir, tmp_path):
    texts = [r["input"] for r in make_planted_rows(5)]
    proc = subprocess.run([sys.executable, "-m", "newsbias.cli", "predict", "-q", "--adapter", str(lm_adapter_dir),
                           "--input", "-", "--out", str(tmp_path / "s.jsonl")], input="\n".join(texts) + "\n",
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = read(tmp_path / "s.jsonl")
    assert [r["id"] for r in rows] == [str(i) for i in range(1, 6)] and all(r["gold"] is None for r in rows)
    import csv
    with open(tmp_path / "a.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        for i, t in enumerate(texts):
            w.writerow([f"c{i}", t, "Leaning-Left"])
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(tmp_path / "a.csv"), out=str(tmp_path / "c.jsonl")),
                progress=False)
    assert [r["gold"] for r in read(tmp_path / "c.jsonl")] == ["left"] * 5
    assert [r["probs"] for r in read(tmp_path / "c.jsonl")] == [r["probs"] for r in rows]
    (tmp_path / "a.txt").write_text("\n".join(texts) + "\n")  # a text file reads as stdin does: one article a line
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(tmp_path / "a.txt"), out=str(tmp_path / "t.jsonl")),
                progress=False)
    assert [(r["id"], r["probs"]) for r in read(tmp_path / "t.jsonl")] == [(r["id"], r["probs"]) for r in rows]
    # --out -: the records on stdout (a pipe's end), the summary on stderr, no file called "-"
    proc = subprocess.run([sys.executable, "-m", "newsbias.cli", "predict", "-q", "--adapter", str(lm_adapter_dir),
                           "--input", "-", "--out", "-"], input="\n".join(texts) + "\n", capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(l)["probs"] for l in proc.stdout.splitlines()] == [r["probs"] for r in rows]
    assert "5 articles -> stdout" in proc.stderr and not (tmp_path / "-").exists()


@pytest.mark.slow
def test_two_process_run_writes_one_merged_output(lm_adapter_dir, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", make_planted_rows(21, seed=5))
    ref = tmp_path / "ref.jsonl"
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(ref)), progress=False)
    out = tmp_path / "ddp.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29533", "-m", "newsbias.cli", "predict", "-q", "--adapter",
                           str(lm_adapter_dir), "--input", str(inp), "--out", str(out), "--batch-size", "4",
                           "predict.chunk_size=8"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = read(ref), read(out)
    assert [r["id"] for r in a] == [r["id"] for r in b]
    for x, y in zip(a, b):
        assert x["pred"] == y["pred"] and all(abs(x["probs"][l] - y["probs"][l]) < 1e-4 for l in LABELS)
    assert json.loads((tmp_path / "ddp.manifest.json").read_text())["world_size"] == 2


def _rows_with_repeated_and_falsy_ids(n: int) -> list[dict]:
    rows = make_planted_rows(n, seed=11)
    for i, r in enumerate(rows):
        r["id"] = [0, "0", "", None, False][i % 5] if i % 7 == 0 else f"dup{i % (n // 2)}"
    return rows


def _crash_after(monkeypatch, chunks: int) -> None:
    """Make Classifier.classify raise KeyboardInterrupt (a crash) after ``chunks`` more calls."""
    from newsbias.classifier import Classifier

    real = Classifier.classify
    calls = {"n": 0}

    def crashing(self, *a, **k):
        calls["n"] += 1
        if calls["n"] > chunks:
            raise KeyboardInterrupt("simulated crash")
        return real(self, *a, **k)

    monkeypatch.setattr(Classifier, "classify", crashing)


def test_crash_and_resume_with_repeated_and_falsy_ids(lm_adapter_dir, tmp_path, monkeypatch):
    """Resume keys on the input position: repeated ids, 0, "" and false lose or duplicate nothing."""
    inp = write_jsonl(tmp_path / "in.jsonl", _rows_with_repeated_and_falsy_ids(60))
    ref = tmp_path / "ref.jsonl"
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(ref), chunk_size=4), progress=False)
    assert len(read(ref)) == 60 and read(ref)[0]["id"] == "0"  # id 0 is an id, not a line number
    out = tmp_path / "out.jsonl"
    for stop_after in (2, 5, 1, 3):  # crash after that many more chunks, four times over
        monkeypatch.undo()
        _crash_after(monkeypatch, stop_after)
        with pytest.raises(KeyboardInterrupt):
            run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(out), chunk_size=4), progress=False)
    monkeypatch.undo()
    man = run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(out), chunk_size=4), progress=False)
    assert man["counts"]["resumed_rows"] == 4 * (2 + 5 + 1 + 3)
    assert out.read_bytes() == ref.read_bytes()


def test_changed_input_is_refused_not_mixed(lm_adapter_dir, tmp_path, monkeypatch):
    rows = make_planted_rows(40, seed=12)
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    _crash_after(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(out), chunk_size=4), progress=False)
    monkeypatch.undo()
    rows[3]["input"] = "a corrected text " + rows[3]["input"]
    write_jsonl(inp, rows)  # fixed in place
    with pytest.raises(NewsbiasError, match="unfinished run of a different input_sha256"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(out), chunk_size=4), progress=False)
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(out), chunk_size=4, overwrite=True),
                progress=False)
    fresh = tmp_path / "fresh.jsonl"
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(fresh), chunk_size=4), progress=False)
    assert out.read_bytes() == fresh.read_bytes()


def test_bad_input_midway_leaves_nothing_that_blocks_the_fixed_rerun(lm_adapter_dir, tmp_path):
    rows = make_planted_rows(30, seed=13)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows[:20]) + "{not json\n")
    out = tmp_path / "out.jsonl"
    with pytest.raises(NewsbiasError, match="not valid JSON"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(out), chunk_size=4), progress=False)
    assert not (tmp_path / ".out.jsonl.parts").exists()
    write_jsonl(inp, rows)
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(out), chunk_size=4), progress=False)
    assert len(read(out)) == 30


@pytest.mark.parametrize("content", [
    b'{"text": "caf\xe9 au lait"}\n',                      # Latin-1
    b'\xff\xfe{\x00"\x00t\x00',                            # UTF-16
    b'{"text": "ok"}\n{"text": "\xc3\x28"}\n',             # invalid continuation byte
    b"\x89PNG\r\n\x1a\n" + bytes(range(256)),              # a binary file
    b'{"text": "\xed\xa0\x80"}\n',                         # an encoded surrogate (CESU-8)
])
def test_non_utf8_input_is_one_line_error(lm_adapter_dir, tmp_path, content):
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(content)
    with pytest.raises(NewsbiasError, match="not UTF-8|not valid JSON"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(tmp_path / "o.jsonl")), progress=False)


def test_lone_surrogates_output_paths_and_corrupt_weights(lm_adapter_dir, tmp_path):
    import shutil

    inp = tmp_path / "in.jsonl"
    inp.write_text('{"id": "a\\ud83d", "text": "budget talks \\udc00 resumed"}\n')
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(tmp_path / "o.jsonl")), progress=False)
    rec = read(tmp_path / "o.jsonl")[0]
    assert rec["id"] == "a\ufffd" and rec["valid"]
    with pytest.raises(NewsbiasError, match="is a directory"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(tmp_path)), progress=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NewsbiasError, match="is a file, not a directory"):
        run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(tmp_path / "afile" / "o.jsonl")),
                    progress=False)
    broken = tmp_path / "broken"
    shutil.copytree(lm_adapter_dir, broken)
    w = broken / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[: len(w.read_bytes()) // 2])
    with pytest.raises(NewsbiasError, match="cannot load the adapter weights"):
        run_predict(pcfg(adapter=str(broken), input=str(inp), out=str(tmp_path / "b.jsonl")), progress=False)


@pytest.mark.slow
def test_kill_9_at_five_random_points(lm_adapter_dir, tmp_path):
    """SIGKILL at random moments (repeated and falsy ids), resumed each time: every row exactly once."""
    import random

    inp = write_jsonl(tmp_path / "in.jsonl", _rows_with_repeated_and_falsy_ids(300))
    ref = tmp_path / "ref.jsonl"
    run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(ref), batch_size=1, chunk_size=4),
                progress=False)
    out = tmp_path / "out.jsonl"
    part = tmp_path / ".out.jsonl.parts" / "rank0.jsonl"
    rng = random.Random(7)
    kills = 0
    for _ in range(5):
        start = part.read_text().count("\n") if part.exists() else 0
        target = start + rng.randrange(4, 40)
        proc = subprocess.Popen(_predict_cmd(lm_adapter_dir, inp, out), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if part.exists() and part.read_text().count("\n") >= target:
                break
            time.sleep(0.002 + rng.random() * 0.01)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills == 5 and not out.exists()
    proc = subprocess.run(_predict_cmd(lm_adapter_dir, inp, out), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == ref.read_bytes()


@pytest.mark.parametrize("source", ["base", "tuned"])
def test_generation_runs_the_shared_prefix_once_and_computes_each_prompt_as_if_alone(
        source, tiny_qwen_dir, lm_adapter_dir, planted_data_dir, monkeypatch):
    """Generation computes a batch's common instruction once, its padding placed after it: each row's logits at
    every new token are those of its prompt generated alone, and the tokens those of left-padded batches."""
    from newsbias import classifier, modeling

    texts = [json.loads(l)["input"] for l in (planted_data_dir / "val.jsonl").read_text().splitlines()][:12]
    texts[1], texts[7] = "Economy", " ".join(texts[7].split()[:6])  # lengths differ: padding inside the batch
    clf = (Classifier.load(str(tiny_qwen_dir), device="cpu", prompt=PromptConfig(max_length=96)) if source == "base"
           else Classifier.load(str(lm_adapter_dir), device="cpu"))
    if source == "tuned":  # the fixture's instruction is short ("Classify the political leaning.")
        monkeypatch.setattr(modeling, "SHARED_PREFIX_MIN", 4)
    prompts = [e.input_ids[:e.answer_pos + 1] for e in map(clf.builder.encode, texts[:6])]
    assert len({len(p) for p in prompts}) > 1
    ids, mask, cache = clf._generation_batch(prompts, clf.tokenizer.pad_token_id, share_prefix=True)
    assert cache and len({tuple(row) for row in ids[:, :modeling.SHARED_PREFIX_MIN].tolist()}) == 1
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=clf.tokenizer.pad_token_id, output_logits=True,
              return_dict_in_generate=True)
    together = clf.model.generate(input_ids=ids, attention_mask=mask, **kw, **cache).logits
    for r, p in enumerate(prompts):
        alone = clf.model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                   **kw).logits
        for step in range(3):
            torch.testing.assert_close(together[step][r], alone[step][0], atol=1e-4, rtol=1e-4)
    built = []
    monkeypatch.setattr(classifier, "prefix_cache", lambda *a: built.append(a[1].shape) or prefix_cache(*a))
    shared = clf.generate(texts, max_new_tokens=3, batch_size=5)
    assert len(built) == 3 and shared == clf.generate(texts, max_new_tokens=3, batch_size=5, share_prefix=False)


def test_an_adapter_whose_recorded_base_is_gone_says_to_pass_the_base(lm_adapter_dir, tiny_qwen_dir, tmp_path):
    import shutil

    moved = Path(shutil.copytree(lm_adapter_dir, tmp_path / "adapter"))
    settings = json.loads((moved / "newsbias.json").read_text())
    settings["base_model"] = str(tmp_path / "gone" / tiny_qwen_dir.name)  # trained on another machine
    (moved / "newsbias.json").write_text(json.dumps(settings))
    with pytest.raises(NewsbiasError, match=r"gone/\w+ \(recorded in .*newsbias.json\), is not on this machine; "
                                            r"pass the same model where it is now \(--model PATH"):
        Classifier.load(str(moved), device="cpu")
    assert Classifier.load(str(moved), base_model=str(tiny_qwen_dir), device="cpu").labels == LABELS


def test_a_prompt_override_a_trained_model_does_not_use_is_named_in_a_warning(lm_adapter_dir, tmp_path, caplog):
    inp = write_jsonl(tmp_path / "in.jsonl", make_planted_rows(3, seed=5))
    trained = json.loads((lm_adapter_dir / "newsbias.json").read_text())["prompt"]["max_length"]
    for length, warned in ((trained + 64, True), (trained, False)):
        caplog.clear()
        run_predict(PredictConfig(adapter=str(lm_adapter_dir), input=str(inp), out=str(tmp_path / f"{length}.jsonl"),
                                  device="cpu", prompt=PromptConfig(max_length=length)), progress=False)
        assert (f"predict.prompt.max_length={length} not used: a trained model scores with the prompt it was "
                f"trained with" in caplog.text) is warned
    caplog.clear()  # the same override again in this process (cv's rounds): said once
    run_predict(PredictConfig(adapter=str(lm_adapter_dir), input=str(inp), out=str(tmp_path / "again.jsonl"),
                              device="cpu", prompt=PromptConfig(max_length=trained + 64)), progress=False)
    assert "not used" not in caplog.text
    assert (tmp_path / f"{trained + 64}.jsonl").read_bytes() == (tmp_path / f"{trained}.jsonl").read_bytes()


def test_csv_records_are_named_by_the_line_they_start_on(tmp_path):
    from newsbias.predict import input_articles

    (tmp_path / "m.csv").write_text('text,label\n"line one\nstill one",left\n"two",right\n"three\n\nstill three",center\n')
    arts = list(input_articles(str(tmp_path / "m.csv"), LABELS))
    assert [(a.id, a.label) for a in arts] == [("2", "left"), ("4", "right"), ("5", "center")]  # as prep names them


def test_csv_with_a_byte_order_mark_or_a_short_row(tmp_path):
    """The one CSV reader prep uses: a BOM (Excel's "CSV UTF-8") is not part of the first column's name."""
    from newsbias.predict import input_articles

    (tmp_path / "bom.csv").write_bytes("\ufefftext,label\nan article,left\n".encode())
    assert [(a.text, a.label) for a in input_articles(str(tmp_path / "bom.csv"), LABELS)] == [("an article", "left")]
    (tmp_path / "excel.csv").write_text("ID,Title,Text,Outlet\nk-7,A headline,the body,Fox News\n")
    [a] = input_articles(str(tmp_path / "excel.csv"), LABELS)
    assert (a.id, a.title, a.text, a.outlet) == ("k-7", "A headline", "the body", "Fox News")
    (tmp_path / "short.csv").write_text("text,label,source\nfine,left,x\nno label\n")
    with pytest.raises(NewsbiasError) as err:
        list(input_articles(str(tmp_path / "short.csv"), LABELS))
    assert "line 3: malformed CSV row (expected 3 fields, found 1); fix it" in str(err.value)
    assert "prep.input" not in str(err.value)


def test_a_second_predict_into_the_same_out_is_refused_while_the_first_runs(lm_adapter_dir, planted_data_dir, tmp_path):
    import subprocess

    out = tmp_path / "p.jsonl"
    parts = tmp_path / ".p.jsonl.parts"
    parts.mkdir()
    other = subprocess.Popen(["sleep", "60"])  # stands for a predict that is writing these parts now
    try:
        (parts / ".owner").write_text(str(other.pid))
        cfg = pcfg(adapter=str(lm_adapter_dir), input=str(planted_data_dir / "val.jsonl"), out=str(out))
        with pytest.raises(NewsbiasError, match=rf"p\.jsonl is being written by another newsbias process \(pid "
                                                rf"{other.pid}\); wait for it"):
            run_predict(cfg, progress=False)
    finally:
        other.kill()
        other.wait()
    run_predict(cfg.model_copy(update={"overwrite": True}), progress=False)  # its owner gone: taken over
    assert out.is_file() and not parts.exists()


def test_a_resume_in_another_dtype_is_refused(lm_adapter_dir, planted_data_dir, tmp_path):
    """bf16 rows after fp32 rows in one file would mix two precisions' probabilities."""
    from newsbias.classifier import Classifier
    from newsbias.predict import _signature

    out = tmp_path / "p.jsonl"
    cfg = dict(adapter=str(lm_adapter_dir), input=str(planted_data_dir / "val.jsonl"), out=str(out))
    fp32 = Classifier.from_options(None, str(lm_adapter_dir), None, device="cpu", dtype="float32")
    (tmp_path / ".p.jsonl.parts").mkdir()
    (tmp_path / ".p.jsonl.parts" / "run.json").write_text(json.dumps(_signature(pcfg(**cfg), cfg["input"], 1, fp32)))
    with pytest.raises(NewsbiasError, match="unfinished run of a different dtype;"):
        run_predict(pcfg(**cfg, dtype="bfloat16"), progress=False)
    m = run_predict(pcfg(**cfg, dtype="float32"), progress=False)  # the same run resumes
    assert m["counts"]["predicted"] > 0


def test_a_too_short_prompt_names_the_predict_key_to_change(tiny_qwen_dir, tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", make_planted_rows(2))
    with pytest.raises(NewsbiasError) as exc:
        run_predict(pcfg(model=str(tiny_qwen_dir), input=str(inp), out=str(tmp_path / "p.jsonl"),
                         prompt={"max_length": 8, "instruction": "Classify " * 20}), progress=False)
    msg = str(exc.value)
    assert msg.startswith("predict.prompt.max_length=8 is too small") and "predict.prompt.instruction" in msg
    assert "predict.model" not in msg and "leaving none for the article" in msg


def test_lines_are_all_text_or_all_records(tmp_path):
    from newsbias.predict import _line_rows, _raw_records

    text = ["Senate passes the bill\n", "{Breaking} Markets fall\n", "\n", "A third article\n"]
    assert [r for _, r in _line_rows(text, "<stdin>")] == [
        {"text": "Senate passes the bill"}, {"text": "{Breaking} Markets fall"}, {"text": "A third article"}]
    records = ['{"id": "a", "text": "one"}\n', '{"id": "b", "text": "two"}\n']
    assert [r["id"] for _, r in _line_rows(records, "<stdin>")] == ["a", "b"]
    # a byte-order mark before the first record (Windows editors write one) does not make the lines text
    assert [r for _, r in _line_rows(["\ufeff" + records[0], records[1]], "<stdin>")] == [
        {"id": "a", "text": "one"}, {"id": "b", "text": "two"}]
    assert [r for _, r in _line_rows(["\ufeffSenate passes\n"], "<stdin>")] == [{"text": "Senate passes"}]
    with pytest.raises(NewsbiasError, match="line 2"):  # a broken record in JSONL is an error, not an article
        list(_line_rows([records[0], "{oops\n"], "<stdin>"))
    (tmp_path / "a.txt").write_text('{"id": "x", "text": "looks like a record"}\nplain\n')
    assert [r for _, r in _raw_records(str(tmp_path / "a.txt"))] == [
        {"text": '{"id": "x", "text": "looks like a record"}'}, {"text": "plain"}]


def test_gzipped_inputs_read_as_their_plain_copies(tmp_path):
    import gzip

    from newsbias.predict import _count_lines, _raw_records

    plain = {"in.jsonl": '{"id": "a", "text": "one"}\n{"id": "b", "text": "two"}\n',
             "in.csv": "id,text\na,one\nb,two\n", "in.txt": "one\ntwo\n"}
    for name, content in plain.items():
        (tmp_path / name).write_text(content)
        with gzip.open(tmp_path / f"{name}.gz", "wt") as f:
            f.write(content)
        assert list(_raw_records(str(tmp_path / f"{name}.gz"))) == list(_raw_records(str(tmp_path / name)))
        assert _count_lines(str(tmp_path / f"{name}.gz")) == _count_lines(str(tmp_path / name)) == 2
    (tmp_path / "cells.csv").write_text('id,text\na,"one\nstory over\nthree lines"\nb,two\n')
    assert _count_lines(str(tmp_path / "cells.csv")) == 2  # records, not physical lines
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(b'{"id": "a", "text": "one"}\n')[:-12])  # cut short
    with pytest.raises(NewsbiasError, match="cannot read .*bad.jsonl.gz"):
        list(_raw_records(str(tmp_path / "bad.jsonl.gz")))


def test_repeated_ids_in_the_output_are_counted_and_said(lm_adapter_dir, tmp_path, caplog):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "2", "text": "one story"}, {"text": "a story without an id"},
                                              {"id": "x", "text": "another"}])
    with caplog.at_level("WARNING"):
        m = run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(inp), out=str(tmp_path / "p.jsonl")),
                        progress=False)
    assert m["counts"]["repeated_ids"] == 1
    assert "1 id repeated in" in caplog.text and "(first '2')" in caplog.text


def test_a_csv_with_another_delimiter_is_named_as_such(tmp_path):
    from newsbias.predict import _raw_records

    (tmp_path / "semi.csv").write_text("id;text\n1;one story\n")
    with pytest.raises(NewsbiasError, match="one column holding semicolons: the delimiter is wrong"):
        list(_raw_records(str(tmp_path / "semi.csv")))


def test_json_record_fields_in_another_case_are_read(tmp_path):
    from newsbias.predict import _raw_records

    path = write_jsonl(tmp_path / "in.jsonl", [{"ID": "a1", "Title": "T", "text": "one"},
                                               {"ID": "x", "id": "b2", "text": "two"}])
    assert [r for _, r in _raw_records(str(path))] == [{"id": "a1", "title": "T", "text": "one"},
                                                        {"ID": "x", "id": "b2", "text": "two"}]


def test_limit_scores_the_first_articles_only(lm_adapter_dir, planted_data_dir, tmp_path):
    out = tmp_path / "five.jsonl"
    m = run_predict(pcfg(adapter=str(lm_adapter_dir), input=str(planted_data_dir), split="val", out=str(out),
                         limit=5), progress=False)
    src = read(planted_data_dir / "val.jsonl")
    assert len(src) > 5
    assert [r["id"] for r in read(out)] == [s["id"] for s in src[:5]] and m["counts"]["rows"] == 5
