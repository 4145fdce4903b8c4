"""Training stage: input validation, batching, learning, determinism, exact resume, DDP, quick check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from newsbias.config import TrainConfig, load_config
from newsbias.errors import NewsbiasError
from newsbias.classifier import Classifier
from newsbias.records import read_articles
from newsbias.train import LabelOnlyCollator, balanced_class_weights, epoch_batches, resolve_data_paths, train

from conftest import make_planted_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def tiny_cfg(model_dir, data_dir, out_dir, head="lm", **over) -> TrainConfig:
    d = {"model": {"name_or_path": str(model_dir), "head": head},
         "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
         "prompt": {"max_length": 64, "chat_template": "off"},
         "data": {"path": str(data_dir)},
         "optim": {"lr": 5e-3, "epochs": 4, "batch_size": 8, "grad_accum": 1, "warmup_ratio": 0.0},
         "eval": {"every_steps": 12, "patience": None, "batch_size": 16},
         "out_dir": str(out_dir), "progress": False}
    for key, value in over.items():
        node = d
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return TrainConfig.model_validate(d)


def test_reads_kaggle_style_rows_without_id(tmp_path):
    p = write_jsonl(tmp_path / "train.jsonl", [{"instruction": "i", "input": "text a", "output": "Left"},
                                               {"instruction": "i", "input": "text b", "output": "right"}])
    ex = read_articles(p, need_label=True)
    assert [(e.id, e.label) for e in ex] == [("1", "left"), ("2", "right")]
    write_jsonl(tmp_path / "val.jsonl", [{"input": "v", "output": "center"}])
    assert resolve_data_paths(tmp_path)[:2] == resolve_data_paths(p)[:2] == (p, tmp_path / "val.jsonl")


@pytest.mark.parametrize("content,match", [
    ('{"input": "a", "output": "left"}\nnot json\n', r"train.jsonl: line 2: not valid JSON"),
    ('{"input": "a"}\n', "missing or empty 'output'"),
    ('{"output": "left"}\n', "missing or non-string 'input'"),
    ('{"input": "a", "output": "far-left"}\n{"input": "b", "output": "purple"}\n', "line 2: label 'purple' is not in"),
    ('[1, 2]\n', "expected a JSON object"),
])
def test_malformed_data_is_clear(tmp_path, content, match):
    (tmp_path / "train.jsonl").write_text(content)
    with pytest.raises(NewsbiasError, match=match):
        read_articles(tmp_path / "train.jsonl", need_label=True)


def test_errors_before_training(tmp_path, tiny_qwen_dir, planted_data_dir):
    with pytest.raises(NewsbiasError, match="does not exist"):
        train(tiny_cfg(tiny_qwen_dir, tmp_path / "nope", tmp_path / "o"))
    empty = tmp_path / "empty"
    write_jsonl(empty / "train.jsonl", [])
    write_jsonl(empty / "val.jsonl", make_planted_rows(3))
    with pytest.raises(NewsbiasError, match="training set .* is empty"):
        train(tiny_cfg(tiny_qwen_dir, empty, tmp_path / "o"))
    with pytest.raises(NewsbiasError, match="^train.model.name_or_path .*no_model does not exist; give an existing directory"):
        train(tiny_cfg(tmp_path / "no_model", planted_data_dir, tmp_path / "o"))
    with pytest.raises(NewsbiasError, match="max_length=12 is too small"):
        train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "o", prompt__max_length=12))
    with pytest.raises(NewsbiasError, match="no checkpoint"):
        train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "o"), resume=True)
    assert not (tmp_path / "o" / "adapter_config.json").exists()


def test_epoch_batches_deterministic_length_grouped():
    lengths = list(np.random.default_rng(0).integers(5, 500, size=103))
    a = epoch_batches(lengths, 4, seed=1, epoch=0)
    assert a == epoch_batches(lengths, 4, seed=1, epoch=0)
    assert a != epoch_batches(lengths, 4, seed=1, epoch=1)
    assert sorted(i for b in a for i in b) == list(range(103))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a])
    rand = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b)
                    for b in epoch_batches(lengths, 4, 1, 0, group_by_length=False)])
    assert spread < rand / 3  # grouped batches waste little padding
    two = epoch_batches(lengths, 4, 1, 0, world_size=2)
    assert len(two) % 2 == 0


def test_collator_dynamic_padding_keeps_labels():
    feats = [{"input_ids": [5, 6, 7], "labels": [-100, -100, 7], "answer_pos": 1, "class_id": 2},
             {"input_ids": [5, 9], "labels": [-100, 9], "answer_pos": 0, "class_id": 0}]
    b = LabelOnlyCollator(pad_token_id=0)(feats)
    assert b["input_ids"].tolist() == [[5, 6, 7], [5, 9, 0]]
    assert b["labels"].tolist() == [[-100, -100, 7], [-100, 9, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]


def test_balanced_class_weights():
    w = balanced_class_weights([0, 0, 0, 1, 2, 2], 3)
    assert torch.allclose(w, torch.tensor([6 / 9, 2.0, 1.0]))


@pytest.mark.parametrize("head,model_fixture,over", [
    ("lm", "tiny_qwen_dir", {}),
    # a randomly initialised encoder needs more steps to pick the word up than the LM head
    pytest.param("cls", "tiny_bert_dir", {"optim__lr": 1e-2, "optim__epochs": 8}, marks=pytest.mark.slow),
])
def test_planted_word_is_learned_and_adapter_reloads(request, head, model_fixture, over, planted_data_dir, tmp_path):
    model_dir = request.getfixturevalue(model_fixture)
    out = tmp_path / head
    summary = train(tiny_cfg(model_dir, planted_data_dir, out, head=head, optim__class_weights="balanced", **over))
    assert summary["best_val"]["val_macro_f1"] >= 0.9
    for f in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "newsbias.json", "manifest.json", "train_log.jsonl"):
        assert (out / f).is_file(), f
    ckpts = sorted(out.glob("checkpoints/checkpoint-*"))
    assert ckpts and not [p for p in out.rglob("*") if p.suffix in (".pt", ".pth", ".bin", ".pkl")]
    if head == "lm":  # a checkpoint is a peft adapter in its own right
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(ckpts[-1]))
    settings = json.loads((out / "newsbias.json").read_text())
    assert settings["head"] == head and settings["labels"] == ["left", "center", "right"]
    assert settings["prompt"]["max_length"] == 64 and settings["prompt"]["instruction"] == "Classify the political leaning."
    assert settings["best_val"]["val_macro_f1"] == summary["best_val"]["val_macro_f1"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"config", "versions", "git_commit", "data"} <= set(manifest) and "torch" in manifest["versions"]
    assert len(manifest["data"]["train"]["sha256"]) == 64
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert {r["type"] for r in log} == {"train", "eval", "calibration"}
    assert settings["calibration"] == summary["calibration"] and settings["calibration"]["temperature"] > 0

    # prediction's path: base + adapter + newsbias.json reproduce the best val F1
    from sklearn.metrics import f1_score

    clf = Classifier.load(str(out))
    val = [json.loads(l) for l in (planted_data_dir / "val.jsonl").read_text().splitlines()]
    probs = clf.predict_proba([r["input"] for r in val])
    pred = [clf.labels[i] for i in probs.argmax(1)]
    f1 = f1_score([r["output"] for r in val], pred, average="macro")
    assert abs(f1 - summary["best_val"]["val_macro_f1"]) < 1e-6


def _adapter(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "adapter_model.safetensors"))


@pytest.mark.slow
def test_same_seed_same_adapter_and_exact_resume(tiny_qwen_dir, planted_data_dir, tmp_path):
    kw = dict(optim__max_steps=6, optim__batch_size=4, optim__grad_accum=2, optim__warmup_ratio=0.2,
              lora__dropout=0.1, eval__every_steps=3, eval__patience=None, checkpoint__every_steps=2,
              data__train_limit=40)
    train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "a", **kw))
    train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "b", **kw))
    a, b = _adapter(tmp_path / "a"), _adapter(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    cfg_c = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "c", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_c, _interrupt_after_step=5)  # the last checkpoint is step 4: step 5 is redone
    assert not (tmp_path / "c" / "adapter_model.safetensors").exists()
    summary = train(cfg_c, resume=True)
    assert summary["steps"] == 6
    c = _adapter(tmp_path / "c")
    assert all(torch.equal(a[k], c[k]) for k in a)
    log_a = [json.loads(l) for l in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    log_c = [json.loads(l) for l in (tmp_path / "c" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_a] == [r["step"] for r in log_c]
    assert [r.get("loss") for r in log_a] == [r.get("loss") for r in log_c]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(tiny_qwen_dir, planted_data_dir, tmp_path):
    import socket

    out = tmp_path / "ddp"
    with socket.socket() as sock:  # a free port, so parallel test runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "newsbias.cli", "train", "-q",
           f"train.model.name_or_path={tiny_qwen_dir}", f"train.data.path={planted_data_dir}", f"train.out_dir={out}",
           "train.prompt.max_length=64", "train.prompt.chat_template=off", "train.optim.max_steps=4",
           "train.optim.batch_size=4", "train.optim.grad_accum=1", "train.eval.every_steps=2",
           "train.lora.r=4", "train.model.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wrote the adapter" in r.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["world_size"] == 2
    assert Classifier.load(str(out)).predict_proba(["some text"]).shape == (1, 3)
    # the log holds the whole batch's loss, as one process with the same effective batch logs it
    one = tmp_path / "one"
    train(tiny_cfg(tiny_qwen_dir, planted_data_dir, one, optim__max_steps=4, optim__batch_size=4, optim__grad_accum=2,
                   eval__every_steps=2, lora__r=4, lora__dropout=0.05, model__device="cpu", prompt__max_length=64))
    losses = [[r["loss"] for r in map(json.loads, (d / "train_log.jsonl").read_text().splitlines())
               if r["type"] == "train"] for d in (out, one)]
    assert losses[0][0] == pytest.approx(losses[1][0], rel=1e-4)


def test_quick_check_end_to_end(kaggle_sample_dir, tiny_qwen_dir, tmp_path):
    """The assignment's quick check (configs/qwen3-0.6b-unit.yaml) on CPU: prep -> train -> reload."""
    prep = pytest.importorskip("newsbias.data.prep", reason="prep stage (newsbias.data.prep) not available")
    from newsbias.cli import main

    data = tmp_path / "data"
    cfg = ROOT / "configs" / "qwen3-0.6b-unit.yaml"
    over = [f"prep.input.path={kaggle_sample_dir / 'train.jsonl'}", f"prep.out_dir={data}",
            f"train.model.name_or_path={tiny_qwen_dir}", f"train.out_dir={tmp_path / 'adapter'}",
            "train.optim.max_steps=3", "train.data.train_limit=12", "train.data.val_limit=6",
            "train.prompt.max_length=160", "train.eval.batch_size=6"]
    full = load_config(cfg, over)
    prep.run_prep(full.require("prep"))
    assert (data / "train.jsonl").is_file() and (data / "prep_meta.json").is_file()
    assert main(["train", "--config", str(cfg), "-q", *over]) == 0
    out = tmp_path / "adapter"
    manifest = json.loads((out / "manifest.json").read_text())
    assert "train.jsonl" in manifest["data"]["prep_meta"]["outputs"]
    clf = Classifier.load(str(out))
    assert clf.settings.prompt.max_length == 160 and clf.settings.head == "lm"
    assert clf.settings.text_cleaning == "prep"  # trained on prep's output: inference cleans raw articles alike
    test_rows = [json.loads(l) for l in (kaggle_sample_dir / "test.jsonl").read_text().splitlines()[:4]]
    p = clf.predict_proba([r["input"] for r in test_rows])
    assert p.shape == (4, 3) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_cli_reports_errors_in_one_line(tmp_path, capsys):
    from newsbias.cli import main

    assert main(["train", f"train.data.path={tmp_path / 'missing'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("newsbias train: error:") and "\n" not in err


def test_gradient_checkpointing_and_head_tail_options(tiny_qwen_dir, planted_data_dir, tmp_path):
    cfg = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "gc", model__gradient_checkpointing=True,
                   model__attn_implementation="eager", prompt__truncation="head_tail", prompt__max_length=40,
                   optim__max_steps=2, data__train_limit=16, data__val_limit=6)
    summary = train(cfg)
    assert summary["steps"] == 2
    log = [json.loads(l) for l in (tmp_path / "gc" / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in log if r["type"] == "train")
    assert json.loads((tmp_path / "gc" / "newsbias.json").read_text())["prompt"]["truncation"] == "head_tail"


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_gradient_checkpointing_reaches_the_encoder_under_a_mean_pooling_head(tiny_bert_dir, planted_data_dir,
                                                                              tmp_path, monkeypatch, finetune):
    # the mean-pooling head is our module, not a transformers model: checkpointing is the encoder's
    from newsbias import modeling

    seen = []
    real = modeling.enable_checkpointing
    monkeypatch.setattr(modeling, "enable_checkpointing", lambda m: (real(m), seen.append(m.encoder))[0])
    over = {"model__pooling": "mean", "model__gradient_checkpointing": True, "finetune": finetune,
            "optim__max_steps": 2, "data__train_limit": 16, "data__val_limit": 6}
    if finetune == "lora":
        over["lora__target_modules"] = ["query", "key", "value"]
    assert train(tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "gc", head="cls", **over))["steps"] == 2
    enc = seen[0]
    assert getattr(enc, "is_activation_checkpointing", None) or enc.is_gradient_checkpointing
    log = [json.loads(l) for l in (tmp_path / "gc" / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in log if r["type"] == "train")


@pytest.mark.parametrize("finetune,pooling", [("lora", "mean"), ("full", "mean"),
                                              pytest.param("full", "cls", marks=pytest.mark.slow)])
def test_encoder_mean_pooling_and_full_finetune(tiny_bert_dir, planted_data_dir, tmp_path, finetune, pooling):
    """Encoders: a head over mean-pooled states and/or every weight trained; the output reloads and scores as trained."""
    out = tmp_path / f"{finetune}-{pooling}"
    over = {"model__pooling": pooling, "finetune": finetune, "optim__class_weights": "balanced"}
    if finetune == "lora":
        # lr 2e-2 x 4 epochs failed on 2 of 8 seeds (and on a GPU's numerics); this learns on all 8
        over.update(lora__target_modules=["query", "key", "value", "dense"], optim__lr=1e-2, optim__epochs=6)
    else:
        over.update(optim__lr=1e-3, optim__epochs=10)
    summary = train(tiny_cfg(tiny_bert_dir, planted_data_dir, out, head="cls", **over))
    assert summary["best_val"]["val_macro_f1"] >= 0.9
    settings = json.loads((out / "newsbias.json").read_text())
    assert settings["pooling"] == pooling and settings["finetune"] == finetune
    assert (out / "adapter_config.json").is_file() == (finetune == "lora")
    assert (out / "classifier.safetensors").is_file() == (pooling == "mean" and finetune == "full")

    from newsbias.cli import main
    from newsbias.metrics import macro_f1

    clf = Classifier.load(str(out))
    val = [json.loads(l) for l in (planted_data_dir / "val.jsonl").read_text().splitlines()]
    pred = [clf.labels[i] for i in clf.predict_proba([r["input"] for r in val]).argmax(1)]
    assert abs(macro_f1([r["output"] for r in val], pred) - summary["best_val"]["val_macro_f1"]) < 1e-6
    # save -> load round trip (merged for LoRA) scores the same
    texts = [r["input"] for r in make_planted_rows(6, seed=9)]
    clf.save(tmp_path / "saved")
    np.testing.assert_allclose(Classifier.load(str(tmp_path / "saved")).predict_proba(texts), clf.predict_proba(texts),
                               atol=1e-5)
    # whatever `finetune` was, the training output is what --adapter takes
    np.testing.assert_allclose(Classifier.from_options(adapter=str(out)).predict_proba(texts),
                               clf.predict_proba(texts), atol=1e-6)
    assert main(["predict", "--adapter", str(out), "--input", str(planted_data_dir), "--out",
                 str(tmp_path / "p.jsonl"), "-q"]) == 0
    records = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert {r["adapter"] for r in records} == {str(out) if finetune == "lora" else None}
    if finetune == "full":
        with pytest.raises(NewsbiasError, match="not an adapter: it has no base model to replace"):
            Classifier.from_options(model=str(tiny_bert_dir), adapter=str(out))


def test_probe_head_starts_training_from_a_fitted_head(tiny_bert_dir, planted_data_dir, tmp_path):
    """head_init=probe: the head is a logistic regression on the frozen features, scored on val before step 1."""
    out = tmp_path / "probe"
    cfg = tiny_cfg(tiny_bert_dir, planted_data_dir, out, head="cls", model__pooling="mean", finetune="full",
                   head_init="probe", optim__lr=1e-12, optim__max_steps=1, optim__class_weights="balanced")
    summary = train(cfg)
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    probe = next(r for r in log if r["type"] == "probe")
    first_eval = next(r for r in log if r["type"] == "eval")
    assert probe["n"] == 96 and probe["train_macro_f1"] >= 0.9
    assert first_eval["step"] == 0 and first_eval["val_macro_f1"] >= 0.9
    assert summary["best_step"] == 0

    random_head = tmp_path / "random"
    train(cfg.model_copy(update={"head_init": "random", "out_dir": str(random_head)}))
    log = [json.loads(l) for l in (random_head / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["type"] == "eval"] == [1] and not any(r["type"] == "probe" for r in log)
    assert next(r for r in log if r["type"] == "eval")["val_macro_f1"] < 0.9


def test_interpolate_weights_scales_a_lora_update_exactly():
    from newsbias.train import interpolate_weights

    g = torch.Generator().manual_seed(0)
    a0, a1, b1, h0, h1 = (torch.randn(4, 4, generator=g) for _ in range(5))
    start = {"q.lora_A.default.weight": a0, "q.lora_B.default.weight": torch.zeros(4, 4), "head.weight": h0}
    end = {"q.lora_A.default.weight": a1, "q.lora_B.default.weight": b1, "head.weight": h1}
    w = interpolate_weights(start, end, 0.25)
    assert torch.equal(w["q.lora_A.default.weight"], a1)
    torch.testing.assert_close(w["q.lora_B.default.weight"] @ w["q.lora_A.default.weight"], 0.25 * (b1 @ a1))
    torch.testing.assert_close(w["head.weight"], 0.75 * h0 + 0.25 * h1)


def test_wise_alphas_must_lie_between_the_ends(tiny_bert_dir, planted_data_dir, tmp_path):
    for bad in ([0.0], [1.0], [0.5, 1.5]):
        with pytest.raises(Exception, match="strictly between 0 and 1"):
            tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path, head="cls", wise_alphas=bad)
    assert tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path, head="cls", wise_alphas=[0.7, 0.3, 0.7]).wise_alphas \
        == [0.3, 0.7]


def test_wise_keeps_the_point_between_start_and_tuned_weights_that_val_prefers(tiny_bert_dir, planted_data_dir,
                                                                               tmp_path):
    """select_wise: each alpha on the line to the last weights is scored on val and logged; the best is kept."""
    from newsbias.train import _load_trainable_state, setup, select_wise

    cfg = tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "w", head="cls", model__pooling="mean",
                   finetune="full", head_init="probe", wise_alphas=[0.1, 0.9])
    r = setup(cfg, progress=False)
    probed = r.init_weights
    head = [n for n in probed if n.startswith("classifier.")]
    assert head and probed is r.best_weights
    # last weights whose head answers the opposite of the probe's; the kept checkpoint scored as worthless
    _load_trainable_state(r.model, {n: -t if n in head else t for n, t in probed.items()})
    r.state.step, r.state.best, r.state.best_step, r.state.best_metrics = 7, 0.0, 3, {"val_macro_f1": 0.0}
    select_wise(r)
    wise = [json.loads(l) for l in (r.out_dir / "train_log.jsonl").read_text().splitlines()]
    wise = [rec for rec in wise if rec["type"] == "wise"]
    assert [rec["alpha"] for rec in wise] == [0.1, 0.9]
    assert wise[0]["val_macro_f1"] >= 0.9 > wise[1]["val_macro_f1"]
    assert r.state.best_metrics["wise_alpha"] == 0.1 and r.state.best == wise[0]["val_macro_f1"]
    assert r.state.best_step == 7
    for n in head:
        torch.testing.assert_close(r.best_weights[n], 0.8 * probed[n])


def test_wise_runs_after_training_and_resumes_exactly(tiny_bert_dir, planted_data_dir, tmp_path):
    kw = dict(head="cls", model__pooling="mean", finetune="full", head_init="probe", wise_alphas=[0.5],
              optim__lr=1e-3, optim__max_steps=4, optim__batch_size=8, eval__every_steps=2,
              checkpoint__every_steps=2)
    summary = train(tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "a", **kw))
    log = [json.loads(l) for l in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["alpha"]) for r in log if r["type"] == "wise"] == [(4, 0.5)]
    best = max((r for r in log if r["type"] in ("eval", "wise")), key=lambda r: r["val_macro_f1"])
    assert summary["best_val"]["val_macro_f1"] == best["val_macro_f1"]
    assert summary["best_val"]["wise_alpha"] == best.get("alpha")
    assert json.loads((tmp_path / "a" / "newsbias.json").read_text())["best_val"]["wise_alpha"] == best.get("alpha")

    cfg_b = tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_b, _interrupt_after_step=3)
    assert (tmp_path / "b" / "checkpoints" / "checkpoint-2" / "init.safetensors").is_file()
    train(cfg_b, resume=True)
    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keep_last_writes_the_last_steps_weights(tiny_bert_dir, planted_data_dir, tmp_path):
    """eval.keep=last: the run's output and best_val are the last step's, whatever val scored higher before."""
    out = tmp_path / "last"
    cfg = tiny_cfg(tiny_bert_dir, planted_data_dir, out, head="cls", model__pooling="mean", finetune="full",
                   head_init="probe", eval__keep="last", optim__lr=1e-3, optim__max_steps=4, eval__every_steps=2)
    summary = train(cfg)
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    last = [r for r in log if r["type"] == "eval"][-1]
    assert summary["best_step"] == last["step"] == 4
    assert summary["best_val"]["val_macro_f1"] == last["val_macro_f1"]
    model = Classifier.load(str(out)).model
    written = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}  # the pooler is unread
    final = load_file(str(out / "checkpoints" / "checkpoint-4" / "trainable.safetensors"))
    assert final.keys() == written.keys() and all(torch.equal(written[k], final[k]) for k in final)


def test_probe_head_needs_a_head_over_one_vector_per_article(tiny_bert_dir, tiny_qwen_dir, planted_data_dir,
                                                             tmp_path):
    with pytest.raises(Exception, match="head_init=probe needs model.head=cls"):
        tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path, head="lm", head_init="probe")
    cfg = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "q", head="cls", finetune="full", head_init="probe",
                   optim__max_steps=1, data__train_limit=16, data__val_limit=6)
    with pytest.raises(NewsbiasError, match="applies it per token"):
        train(cfg)


def test_mean_pooling_needs_the_cls_head(tiny_bert_dir, planted_data_dir, tmp_path):
    with pytest.raises(Exception, match="pooling=mean needs model.head=cls"):
        tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path, head="lm", model__pooling="mean")


def test_a_run_killed_in_its_first_checkpoint_starts_again_without_overwrite(tiny_qwen_dir, planted_data_dir, tmp_path):
    """Only a half-written checkpoint: --resume said there was none, a plain run that there was one."""
    out = tmp_path / "run"
    (out / "checkpoints" / ".checkpoint-2.tmp").mkdir(parents=True)
    (out / "checkpoints" / ".checkpoint-2.tmp" / "optimizer.safetensors").write_bytes(b"torn")
    summary = train(tiny_cfg(tiny_qwen_dir, planted_data_dir, out, optim__max_steps=2, optim__batch_size=4,
                             data__train_limit=8))
    assert summary["steps"] == 2 and not (out / "checkpoints" / ".checkpoint-2.tmp").exists()


@pytest.mark.slow
def test_checkpoints_of_another_run_are_never_resumed_or_mixed(tiny_qwen_dir, planted_data_dir, tmp_path):
    kw = dict(optim__max_steps=6, optim__batch_size=4, eval__every_steps=3, checkpoint__every_steps=2,
              data__train_limit=40)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tiny_qwen_dir, planted_data_dir, out, seed=1, **kw), _interrupt_after_step=3)
    other = tiny_cfg(tiny_qwen_dir, planted_data_dir, out, seed=2, optim__lr=1e-2, **kw)
    with pytest.raises(NewsbiasError, match=r"belongs to another run: train\.optim\.lr .*; train\.seed \(1 in"):
        train(other, resume=True)
    with pytest.raises(NewsbiasError, match="holds checkpoints of an earlier run"):
        train(other)
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts, "the refused runs must leave the old checkpoints alone"
    summary = train(other.model_copy(update={"overwrite": True}))
    assert summary["steps"] == 6
    fps = {json.loads((p / "trainer_state.json").read_text())["fingerprint"] for p in (out / "checkpoints").iterdir()}
    assert len(fps) == 1  # only the new run's checkpoints remain
    # the data changed under a checkpoint: resume refuses too
    with pytest.raises(KeyboardInterrupt):
        train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "d", **kw), _interrupt_after_step=3)
    moved = tmp_path / "data2"
    import shutil

    shutil.copytree(planted_data_dir, moved)
    rows = (moved / "train.jsonl").read_text().splitlines()
    (moved / "train.jsonl").write_text("\n".join(rows[1:] + rows[:1]) + "\n")
    with pytest.raises(NewsbiasError, match="belongs to another run"):
        train(tiny_cfg(tiny_qwen_dir, moved, tmp_path / "d", **kw), resume=True)


def test_report_to_tensorboard_writes_the_same_scalars_as_the_log(tiny_qwen_dir, planted_data_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    train(tiny_cfg(tiny_qwen_dir, planted_data_dir, out, optim__max_steps=4, eval__every_steps=2,
                   data__train_limit=32, report_to=["tensorboard"]))
    acc = EventAccumulator(str(next((out / "runs").glob("events.*")))).Reload()
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e.value for e in acc.Scalars("train/loss")] == pytest.approx([r["loss"] for r in log if r["type"] == "train"])
    assert [e.step for e in acc.Scalars("eval/val_macro_f1")] == [r["step"] for r in log if r["type"] == "eval"]


def test_report_to_is_not_part_of_the_run_fingerprint(tiny_qwen_dir, planted_data_dir, tmp_path):
    from newsbias.train import run_fingerprint, run_identity

    a = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path)
    b = a.model_copy(update={"report_to": ["tensorboard"]})
    assert run_fingerprint(run_identity(a, {})) == run_fingerprint(run_identity(b, {}))


def _fake_checkpoint(out, identity, with_run=True):
    from newsbias.train import run_fingerprint

    ckpt = out / "checkpoints" / "checkpoint-2"
    ckpt.mkdir(parents=True, exist_ok=True)
    state = {"fingerprint": run_fingerprint(identity), **({"run": identity} if with_run else {})}
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    return ckpt


def test_a_refused_resume_names_what_changed(tiny_qwen_dir, planted_data_dir, tmp_path):
    from newsbias.train import check_checkpoints, run_identity

    hashes = {"train": {"sha256": "aaaa1111" * 8}, "val": {"sha256": "bbbb2222" * 8}}
    cfg = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path)
    ckpt = _fake_checkpoint(tmp_path, run_identity(cfg, hashes))
    assert check_checkpoints(tmp_path, run_identity(cfg, hashes), True, False) == ckpt
    other = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path, optim__lr=1e-2, seed=7)
    with pytest.raises(NewsbiasError, match=r"another run: train\.optim\.lr \(0\.005 in the checkpoint, 0\.01 now\); "
                                            r"train\.seed \(42 in the checkpoint, 7 now\); rerun"):
        check_checkpoints(tmp_path, run_identity(other, hashes), True, False)
    moved = {**hashes, "train": {"sha256": "cccc3333" * 8}}
    with pytest.raises(NewsbiasError, match=r"another run: the train data \(sha256 aaaa1111 in the checkpoint, "
                                            r"sha256 cccc3333 now\); rerun"):
        check_checkpoints(tmp_path, run_identity(cfg, moved), True, False)
    _fake_checkpoint(tmp_path, run_identity(other, hashes), with_run=False)
    with pytest.raises(NewsbiasError, match="belongs to another run \\(config or data differ: fingerprint"):
        check_checkpoints(tmp_path, run_identity(cfg, hashes), True, False)


def test_resume_accepts_settings_that_do_not_change_the_weights(tiny_qwen_dir, planted_data_dir, tmp_path):
    from newsbias.train import check_checkpoints, run_identity

    cfg = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path, model__dtype="auto", model__device="auto")
    ckpt = _fake_checkpoint(tmp_path, run_identity(cfg, {}))
    same = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path, model__dtype="float32", model__device="cpu",
                    eval__batch_size=4)  # auto is fp32 on a CPU
    assert check_checkpoints(tmp_path, run_identity(same, {}), True, False) == ckpt
    half = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path, model__dtype="bfloat16", model__device="cpu")
    with pytest.raises(NewsbiasError, match=r'train\.model\.dtype \("auto" in the checkpoint, "bfloat16" now\)'):
        check_checkpoints(tmp_path, run_identity(half, {}), True, False)


def test_resume_accepts_a_checkpoint_older_than_a_setting_left_at_its_default(tiny_qwen_dir, planted_data_dir,
                                                                             tmp_path):
    from newsbias.train import check_checkpoints, run_identity

    cfg = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path)
    older = run_identity(cfg, {})
    del older["config"]["outlet_adversary"]  # as written by a newsbias that did not have the setting yet
    ckpt = _fake_checkpoint(tmp_path, older)
    assert check_checkpoints(tmp_path, run_identity(cfg, {}), True, False) == ckpt
    on = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path, outlet_adversary__weight=1.0)
    with pytest.raises(NewsbiasError, match=r"train\.outlet_adversary\.weight \(unset in the checkpoint, 1\.0 now\)"):
        check_checkpoints(tmp_path, run_identity(on, {}), True, False)


def test_no_empty_model_card_template_is_left_behind(tiny_qwen_dir, planted_data_dir, tmp_path):
    out = tmp_path / "run"
    train(tiny_cfg(tiny_qwen_dir, planted_data_dir, out, optim__max_steps=2, eval__every_steps=2,
                   data__train_limit=16))
    assert not list(out.rglob("README.md"))


def test_outlet_balanced_epochs_draw_small_outlets_as_often_as_large_ones(tiny_qwen_dir, planted_data_dir, tmp_path):
    from newsbias.baseline import outlet_weights

    outlets = pd.Series(["big"] * 90 + ["small"] * 10)
    w = outlet_weights(outlets, 1.0)
    drawn = [i for b in epoch_batches([10] * 100, 10, seed=3, epoch=0, weights=w) for i in b]
    assert drawn == [i for b in epoch_batches([10] * 100, 10, seed=3, epoch=0, weights=w) for i in b]
    small = sum(outlets[i] == "small" for i in drawn)
    assert len(drawn) == 100 and 35 <= small <= 65  # natural order would give exactly 10
    summary = train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "bal", optim__max_steps=2,
                             eval__every_steps=2, data__train_limit=24, data__sampling="outlet_balanced"))
    assert summary["steps"] == 2


def _share_moved_by_one_step(r) -> float:
    from newsbias.train import train_step

    before = {n: p.detach().float().clone() for n, p in r.model.named_parameters() if p.requires_grad}
    train_step(r, epoch_batches(r.lengths, 8, 0, 0, True, 1)[:1])
    moved = [(p.detach().float() != before[n]).float().mean().item()
             for n, p in r.model.named_parameters() if p.requires_grad]
    return sum(moved) / len(moved)


def test_half_precision_training_keeps_trainable_weights_fp32(tiny_bert_dir, planted_data_dir, tmp_path):
    """bf16 model: frozen weights stay bf16, trainable ones are fp32 and move as in fp32 (autocast forward).

    In pure bf16, AdamW's first steps at lr 5e-5 are below half a bf16 step of most weights and round
    away: 60 % of the weights moved where fp32 moved 90 %.
    """
    from newsbias.train import setup

    common = dict(head="cls", model__pooling="mean", optim__lr=5e-5, optim__warmup_ratio=0.0, overwrite=True)
    lora = setup(tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "lora", model__dtype="bfloat16", **common),
                 progress=False)
    assert lora.half == torch.bfloat16
    params = list(lora.model.named_parameters())
    assert all(p.dtype == torch.float32 for _, p in params if p.requires_grad)
    assert any(p.dtype == torch.bfloat16 for _, p in params if not p.requires_grad)
    moved = {dt: _share_moved_by_one_step(setup(tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / dt,
                                                         model__dtype=dt, finetune="full", **common), progress=False))
             for dt in ("float32", "bfloat16")}
    assert moved["float32"] > 0.5 and abs(moved["bfloat16"] - moved["float32"]) < 0.02, moved
    summary = train(tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "run", model__dtype="bfloat16",
                             optim__max_steps=2, **common))
    assert summary["steps"] == 2
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["dtype"] == "torch.bfloat16"


def test_calibrate_none_leaves_the_raw_softmax(tiny_qwen_dir, planted_data_dir, tmp_path):
    summary = train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "o", calibrate="none", optim__epochs=1))
    settings = json.loads((tmp_path / "o" / "newsbias.json").read_text())
    assert summary["calibration"] is None and settings["calibration"] == {}
    log = [json.loads(l) for l in (tmp_path / "o" / "train_log.jsonl").read_text().splitlines()]
    assert "calibration" not in {r["type"] for r in log}


@pytest.mark.parametrize("over", [{}, {"eval__keep": "last"}, {"wise_alphas": [0.5]}])
def test_the_temperature_is_fitted_on_the_kept_weights_own_val_scores(tiny_qwen_dir, planted_data_dir, tmp_path,
                                                                       monkeypatch, over):
    """train.calibrate reuses the label scores that evaluated the kept weights (val-selected, last, or a WiSE
    point): no val pass after training, and the fit that scoring val with the saved model gives."""
    from newsbias import train as train_mod
    from newsbias.metrics import fit_temperature

    passes, evaluate = [], train_mod.evaluate
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: passes.append(1) or evaluate(*a, **k))
    summary = train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "o", optim__max_steps=3,
                             eval__every_steps=2, **over))
    log = [json.loads(l) for l in (tmp_path / "o" / "train_log.jsonl").read_text().splitlines()]
    assert len(passes) == sum(r["type"] in ("eval", "wise") for r in log)  # none after training
    assert summary["calibration"]["method"] == "temperature"
    val = read_articles(planted_data_dir / "val.jsonl", need_label=True)
    clf = Classifier.load(str(tmp_path / "o"), device="cpu")
    again = fit_temperature(clf.label_logits([clf.builder.encode(e.text) for e in val], 16),
                            [clf.labels.index(e.label) for e in val])
    assert again["temperature"] == pytest.approx(summary["calibration"]["temperature"], rel=1e-4)
    assert again["nll"] == pytest.approx(summary["calibration"]["nll"], rel=1e-5)


def test_a_run_resumed_after_its_last_evaluation_scores_val_for_the_temperature(tiny_qwen_dir, planted_data_dir,
                                                                                tmp_path):
    """The val scores behind the kept weights live in memory, not in checkpoints: a run resumed after its last
    step scores val once more, and fits the temperature the uninterrupted run fitted."""
    kw = dict(optim__max_steps=4, eval__every_steps=2, checkpoint__every_steps=2)
    whole = train(tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "a", **kw))
    cfg = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "b", **kw)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, _interrupt_after_step=4)
    resumed = train(cfg, resume=True)
    assert resumed["best_step"] == whole["best_step"]
    assert resumed["calibration"]["temperature"] == pytest.approx(whole["calibration"]["temperature"], rel=1e-4)


def test_a_diverging_run_stops_with_advice_and_writes_no_model(tiny_bert_dir, planted_data_dir, tmp_path):
    cfg = tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "nan", head="cls", finetune="full",
                   optim__lr=1e8, optim__max_grad_norm=None, optim__max_steps=6, eval__every_steps=2,
                   calibrate="none")
    with pytest.raises(NewsbiasError, match=r"training diverged at step \d: loss nan.*--overwrite and a lower "
                                            r"train.optim.lr \(now [0-9.e+]+\) or train.optim.max_grad_norm=1.0"):
        train(cfg)
    assert not (tmp_path / "nan" / "newsbias.json").exists()


class _NanGradient(torch.autograd.Function):
    """The identity forward; a NaN gradient backward: a finite loss whose gradient is not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def test_a_non_finite_gradient_stops_the_run_without_clipping_too(tiny_bert_dir, planted_data_dir, tmp_path,
                                                                  monkeypatch):
    import newsbias.train as train_mod

    real = train_mod.LabelLossModule.forward

    def poisoned(self, *args, **kwargs):
        loss, logits = real(self, *args, **kwargs)
        return _NanGradient.apply(loss), logits

    monkeypatch.setattr(train_mod.LabelLossModule, "forward", poisoned)
    cfg = tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "g", head="cls", optim__max_grad_norm=None,
                   optim__max_steps=2, calibrate="none")
    with pytest.raises(NewsbiasError, match=r"training diverged at step 1: loss [0-9.]+, gradient norm nan"):
        train(cfg)


def test_the_log_holds_the_rate_each_step_was_taken_at(tiny_qwen_dir, planted_data_dir, tmp_path):
    cfg = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "lr", optim__max_steps=4, optim__scheduler="linear",
                   eval__every_steps=4)
    train(cfg)
    steps = [json.loads(l) for l in (tmp_path / "lr" / "train_log.jsonl").read_text().splitlines()]
    lrs = [s["lr"] for s in steps if s.get("type") == "train"]
    assert lrs == pytest.approx([5e-3, 3.75e-3, 2.5e-3, 1.25e-3])  # linear from the full rate, none at 0


def test_val_path_may_name_a_split_and_val_in_train_is_warned(tmp_path, caplog):
    from newsbias.records import Article
    from newsbias.train import warn_about_data

    rows = make_planted_rows(9, seed=3)
    for split in ("train", "val", "test"):
        write_jsonl(tmp_path / f"{split}.jsonl", rows)
    assert resolve_data_paths(tmp_path, "test")[1] == tmp_path / "test.jsonl"
    assert resolve_data_paths(tmp_path / "train.jsonl", "train")[1] == tmp_path / "train.jsonl"
    train_ex = [Article(id=r["id"], text=r["input"], label=r["output"]) for r in rows if r["output"] != "right"]
    val_ex = [Article(id="v1", text=train_ex[0].text, label="left"), Article(id="v2", text="other", label="left")]
    warn_about_data(train_ex, val_ex)
    assert "no 'right' article: the model cannot learn to answer it" in caplog.text
    assert "1 of the 2 val articles are also in the training set" in caplog.text


def test_a_second_run_into_a_live_runs_directory_is_refused_and_a_resume_needs_its_process_count(
        tiny_qwen_dir, planted_data_dir, tmp_path, monkeypatch):
    import subprocess as sp

    from newsbias.train import check_checkpoints, run_identity

    out = tmp_path / "run"
    out.mkdir()
    live = sp.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (out / ".owner").write_text(str(live.pid))
        with pytest.raises(NewsbiasError, match=f"being written by another newsbias process \\(pid {live.pid}\\)"):
            train(tiny_cfg(tiny_qwen_dir, planted_data_dir, out, optim__max_steps=1))
    finally:
        live.kill()
        live.wait()
    cfg = tiny_cfg(tiny_qwen_dir, planted_data_dir, tmp_path / "c")
    monkeypatch.setenv("WORLD_SIZE", "2")
    _fake_checkpoint(tmp_path / "c", run_identity(cfg, {}))
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(NewsbiasError, match=r"the number of processes \(WORLD_SIZE\) \(2 in the checkpoint, 1 now\)"):
        check_checkpoints(tmp_path / "c", run_identity(cfg, {}), True, False)


def test_accumulated_micro_batches_take_the_step_one_batch_of_their_rows_would(tiny_qwen_dir, tmp_path):
    from safetensors.torch import load_file

    rows = make_planted_rows(96, seed=1)
    rows = [r for r in rows if r["output"] == "left"] + [r for r in rows if r["output"] != "left"][:20]
    data = tmp_path / "d"
    write_jsonl(data / "train.jsonl", rows[:46])  # 32 left, 14 others: balanced weights differ by class
    write_jsonl(data / "val.jsonl", make_planted_rows(12, seed=2))
    weights = {}
    for batch, accum in ((8, 1), (4, 2)):
        out = tmp_path / f"b{batch}x{accum}"
        train(tiny_cfg(tiny_qwen_dir, data, out, optim__batch_size=batch, optim__grad_accum=accum,
                       optim__epochs=1, optim__class_weights="balanced", optim__group_by_length=False,
                       optim__max_grad_norm=None, eval__every_steps=None, eval__keep="last", calibrate="none"))
        weights[batch] = load_file(str(out / "adapter_model.safetensors"))
    for name, w in weights[8].items():
        assert torch.allclose(w, weights[4][name], rtol=1e-4, atol=1e-6), name


def test_balanced_class_weights_reach_the_loss_and_natural_ones_leave_it_unweighted(tiny_qwen_dir, tmp_path):
    from newsbias.labels import LABELS
    from newsbias.train import _loss_module, setup

    rows = make_planted_rows(96, seed=1)
    rows = [r for r in rows if r["output"] == "left"] + [r for r in rows if r["output"] != "left"][:14]
    data = tmp_path / "d"
    write_jsonl(data / "train.jsonl", rows)
    write_jsonl(data / "val.jsonl", make_planted_rows(12, seed=2))
    expected = balanced_class_weights([LABELS.index(r["output"]) for r in rows], len(LABELS))
    assert expected[0] < 1 < expected[1]  # left is the majority here
    for weights, want in (("balanced", expected), ("none", None)):
        r = setup(tiny_cfg(tiny_qwen_dir, data, tmp_path / weights, optim__class_weights=weights, optim__max_steps=1))
        got = _loss_module(r.runner).class_weights
        assert (got is None) if want is None else torch.allclose(got.cpu(), want)


def test_weight_decay_skips_biases_and_norms_and_any_warmup_ratio_warms_up(tiny_bert_dir, planted_data_dir, tmp_path):
    from newsbias.train import setup

    cfg = tiny_cfg(tiny_bert_dir, planted_data_dir, tmp_path / "o", head="cls", finetune="full",
                   optim__weight_decay=0.1, optim__max_steps=10, optim__warmup_ratio=0.05)
    r = setup(cfg)
    decayed, plain = r.optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim >= 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and plain["params"] and all(p.ndim == 1 for p in plain["params"])
    assert r.scheduler.get_last_lr()[0] == 0.0  # 0.05 x 10 steps is one warmup step, not none


def test_a_small_or_incomplete_val_set_is_said(tiny_qwen_dir, tmp_path, caplog):
    data = tmp_path / "d"
    write_jsonl(data / "train.jsonl", make_planted_rows(24, seed=1))
    write_jsonl(data / "val.jsonl", [r for r in make_planted_rows(12, seed=2) if r["output"] != "center"])
    with caplog.at_level("WARNING"):
        train(tiny_cfg(tiny_qwen_dir, data, tmp_path / "o", optim__max_steps=2))
    assert "the val set has no 'center' article" in caplog.text
    assert "the temperature is fitted on 8 val articles" in caplog.text
