"""The shared prompt builder: templates, truncation that keeps instruction + answer cue, verbalizers."""

from __future__ import annotations

import pytest

from newsbias.errors import NewsbiasError
from newsbias.config import DEFAULT_INSTRUCTION, PromptConfig
from newsbias.prompt import PromptBuilder, template_accepts


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


@pytest.fixture(scope="module")
def plain_tok(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    t.chat_template = None
    return t


LONG = " ".join(["first"] + ["the news"] * 400 + ["last"])


def test_chat_template_with_thinking_off(tok):
    b = PromptBuilder(tok, PromptConfig(max_length=256))
    assert b.uses_chat_template and template_accepts(tok, "enable_thinking")
    text = tok.decode(b.encode("Some article text.").input_ids)
    assert text.startswith("<|im_start|>user\n" + DEFAULT_INSTRUCTION)
    assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\nAnswer:")
    assert "Some article text." in text


def test_template_without_enable_thinking_is_not_passed_it(tok):
    class Wrapped:
        def __init__(self, inner):
            self.inner = inner
            self.chat_template = "{% for m in messages %}<|im_start|>{{ m['content'] }}{% endfor %}"
            self.calls = []

        def apply_chat_template(self, msgs, **kw):
            self.calls.append(kw)
            return "<|im_start|>" + msgs[0]["content"]

        def __getattr__(self, name):
            return getattr(self.inner, name)

    w = Wrapped(tok)
    b = PromptBuilder(w, PromptConfig(max_length=256))
    assert b.uses_chat_template and "enable_thinking" not in w.calls[0]


def test_plain_template_when_no_chat_template(plain_tok, tok):
    for t, s in ((plain_tok, PromptConfig(max_length=256)), (tok, PromptConfig(max_length=256, chat_template="off"))):
        b = PromptBuilder(t, s)
        assert not b.uses_chat_template
        text = t.decode(b.encode("Body here.").input_ids)
        assert text == f"{DEFAULT_INSTRUCTION}\n\nArticle:\nBody here.\n\nAnswer:"
    with pytest.raises(NewsbiasError, match="no chat template"):
        PromptBuilder(plain_tok, PromptConfig(chat_template="on"))


@pytest.mark.parametrize("chat", ["auto", "off"])
def test_head_truncation_keeps_instruction_and_cue(tok, chat):
    s = PromptConfig(max_length=96, chat_template=chat)
    b = PromptBuilder(tok, s)
    enc = b.encode(LONG)
    assert enc.truncated
    assert len(enc.input_ids) == s.max_length - 1  # one token reserved for the label
    assert enc.answer_pos == len(enc.input_ids) - 1
    text = tok.decode(enc.input_ids)
    assert DEFAULT_INSTRUCTION in text and text.endswith("Answer:")
    assert "first" in text and "last" not in text
    ids, labels, pos = b.encode_for_training(LONG, "center")
    assert len(ids) == s.max_length and pos == s.max_length - 2


def test_head_tail_truncation_keeps_both_ends(tok):
    s = PromptConfig(max_length=96, truncation="head_tail", head_fraction=0.5)
    enc = PromptBuilder(tok, s).encode(LONG)
    text = tok.decode(enc.input_ids)
    assert "first" in text and "last" in text and text.endswith("Answer:")
    assert len(enc.input_ids) == s.max_length - 1


def test_short_article_not_truncated(tok):
    enc = PromptBuilder(tok, PromptConfig(max_length=512)).encode("A short one.")
    assert not enc.truncated


def test_training_encoding_masks_all_but_label(tok):
    b = PromptBuilder(tok, PromptConfig(max_length=128))
    ids, labels, pos = b.encode_for_training("Some text", "right")
    assert [i for i, l in enumerate(labels) if l != -100] == [len(ids) - 1]
    assert labels[-1] == ids[-1] == b.label_token_ids[2]
    assert pos == len(ids) - 2


def test_label_first_tokens_must_be_distinct(tok):
    with pytest.raises(NewsbiasError, match="not distinct"):
        PromptBuilder(tok, PromptConfig(verbalizers={"left": " left", "center": " left wing", "right": " right"}))
    with pytest.raises(ValueError, match="one verbalizer per label"):  # refused as the settings are read
        PromptConfig(verbalizers={"left": " left", "right": " right"})


def test_max_length_too_small(tok):
    with pytest.raises(NewsbiasError, match="max_length=16 is too small"):
        PromptBuilder(tok, PromptConfig(max_length=16))


def test_cls_head_adds_encoder_special_tokens(tiny_bert_dir):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(tiny_bert_dir)
    b = PromptBuilder(t, PromptConfig(max_length=64), head="cls")
    enc = b.encode(LONG)
    assert enc.input_ids[0] == t.cls_token_id and enc.input_ids[-1] == t.sep_token_id
    assert len(enc.input_ids) == 63 and b.label_token_ids == []


def test_real_qwen_label_ids(qwen_real_tokenizer_dir):
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(qwen_real_tokenizer_dir)
    b = PromptBuilder(t, PromptConfig(max_length=512))
    assert b.label_token_ids == [2115, 4126, 1290]
    assert b.uses_chat_template and b.encode("x").input_ids[0] == 151644  # <|im_start|>
