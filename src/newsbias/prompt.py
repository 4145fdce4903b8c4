"""The one prompt builder shared by training, prediction and serving.

A prompt is ``instruction + article + answer cue``; the label is the first token of its
verbalizer (" left", " center", " right"), predicted right after the answer cue. When the
tokenizer has a chat template it is used (with Qwen3's thinking switched off where the template
knows ``enable_thinking``); otherwise a plain template. Truncation only ever shortens the article
body, so the instruction and the answer cue survive any ``max_length``.

The prompt is tokenized in three pieces (prefix, article, suffix) and the ids concatenated, so the
article can be cut in token space without re-tokenizing; training and inference both go through
:meth:`PromptBuilder.encode`, so they see identical ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import Head, PromptConfig
from .errors import NewsbiasError
from .labels import LABELS

_ARTICLE_SLOT = "\u0000ARTICLE\u0000"


@dataclass
class Encoded:
    """One tokenized prompt. ``answer_pos`` is the index whose next-token logits score the label."""

    input_ids: list[int]
    answer_pos: int
    truncated: bool


def template_accepts(tokenizer: Any, kwarg: str) -> bool:
    """True when the tokenizer's chat template mentions ``kwarg`` (e.g. ``enable_thinking``)."""
    tmpl = getattr(tokenizer, "chat_template", None)
    if isinstance(tmpl, dict):
        tmpl = " ".join(str(v) for v in tmpl.values())
    return bool(tmpl) and kwarg in str(tmpl)


class PromptBuilder:
    """Builds prompt ids for one tokenizer and :class:`~newsbias.config.PromptConfig`.

    ``settings`` is kept with its instruction decided (:meth:`PromptConfig.with_instruction`).
    ``head`` decides whether the tokenizer's own special tokens are added around a plain-template
    prompt (``[CLS] ... [SEP]`` for BERT, BOS for Llama-style models): the ``cls`` head needs them,
    the ``lm`` head only wants a leading BOS. ``labels`` are the classes, in score order.
    """

    def __init__(self, tokenizer: Any, settings: PromptConfig, head: Head = "lm", labels: Sequence[str] = LABELS):
        self.tokenizer = tokenizer
        self.settings = settings.with_instruction()
        self.head = head
        self.labels = tuple(labels)
        unknown = set(settings.verbalizers) ^ set(self.labels)
        if unknown:
            raise NewsbiasError(
                f"prompt.verbalizers must have exactly one entry per label {list(self.labels)}; "
                f"mismatched: {sorted(unknown)}")
        self.uses_chat_template = self._decide_chat()
        prefix_text, suffix_text = self._render()
        self.prefix_ids = self.ids(prefix_text)
        self.suffix_ids = self.ids(suffix_text)
        self.lead_ids: list[int] = []
        self.trail_ids: list[int] = []
        if not self.uses_chat_template:
            self._plain_special_tokens()
        # One token is always reserved for the label, so a training sequence (prompt + label) and
        # an inference prompt truncate the article identically.
        fixed = len(self.lead_ids) + len(self.prefix_ids) + len(self.suffix_ids) + len(self.trail_ids) + 1
        self.article_budget = settings.max_length - fixed
        if self.article_budget < 1:
            raise NewsbiasError(
                f"prompt.max_length={settings.max_length} is too small: the instruction and answer cue alone "
                f"take {fixed - 1} tokens (+1 for the label), leaving none for the article; set max_length to at "
                f"least {fixed + 32} (room for 32 article tokens) or shorten prompt.instruction")
        # The cls head predicts classes directly; verbalizers only matter to the lm head.
        self.label_token_ids = self._label_tokens() if head == "lm" else []

    def ids(self, text: str) -> list[int]:
        """``text``'s token ids, without special tokens. Articles longer than the model's window are expected here
        (they are cut or windowed next), so transformers' warning about over-long sequences is not raised."""
        return list(self.tokenizer.encode(text, add_special_tokens=False, verbose=False)) if text else []

    def _decide_chat(self) -> bool:
        has = bool(getattr(self.tokenizer, "chat_template", None))
        mode = self.settings.chat_template
        if mode == "on" and not has:
            raise NewsbiasError("prompt.chat_template=on but the tokenizer has no chat template; use auto or off")
        return has if mode == "auto" else mode == "on"

    def _render(self) -> tuple[str, str]:
        s = self.settings
        user = f"{s.instruction}\n\nArticle:\n{_ARTICLE_SLOT}"
        if self.uses_chat_template:
            kwargs: dict[str, Any] = {"tokenize": False, "add_generation_prompt": True}
            if template_accepts(self.tokenizer, "enable_thinking"):
                kwargs["enable_thinking"] = False
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": user}], **kwargs)
            if not isinstance(text, str):  # some versions return a BatchEncoding-like object
                text = str(text)
            text = text + s.answer_cue
        else:
            text = f"{user}\n\n{s.answer_cue}"
        if text.count(_ARTICLE_SLOT) != 1:
            raise NewsbiasError("the chat template dropped or duplicated the article; use prompt.chat_template=off")
        prefix, suffix = text.split(_ARTICLE_SLOT)
        return prefix, suffix

    def _plain_special_tokens(self) -> None:
        tok = self.tokenizer
        if self.head == "cls":
            bare = list(tok.encode("news", add_special_tokens=False))
            full = list(tok.encode("news", add_special_tokens=True))
            for i in range(len(full) - len(bare) + 1):
                if full[i:i + len(bare)] == bare:
                    self.lead_ids, self.trail_ids = full[:i], full[i + len(bare):]
                    break
        elif getattr(tok, "add_bos_token", False) and tok.bos_token_id is not None:
            self.lead_ids = [tok.bos_token_id]

    def _label_tokens(self) -> list[int]:
        firsts = []
        for lab in self.labels:
            ids = self.tokenizer.encode(self.settings.verbalizers[lab], add_special_tokens=False)
            if not ids:
                raise NewsbiasError(f"verbalizer {self.settings.verbalizers[lab]!r} for {lab!r} encodes to no tokens; "
                                    f"set prompt.verbalizers to words this tokenizer knows")
            firsts.append(int(ids[0]))
        if len(set(firsts)) != len(firsts):
            shown = ", ".join(f"{lab}={self.settings.verbalizers[lab]!r}->{t}"
                              for lab, t in zip(self.labels, firsts))
            raise NewsbiasError(
                f"the label verbalizers' first tokens are not distinct ({shown}); choose verbalizers in "
                f"prompt.verbalizers whose first token differs, e.g. ' left', ' center', ' right'")
        return firsts

    def truncate_article(self, article_ids: Sequence[int]) -> tuple[list[int], bool]:
        """Cut the article's ids to the budget: its head, or head + tail."""
        budget = self.article_budget
        ids = list(article_ids)
        if len(ids) <= budget:
            return ids, False
        if self.settings.truncation == "head":
            return ids[:budget], True
        n_head = max(0, min(budget, round(budget * self.settings.head_fraction)))
        n_tail = budget - n_head
        return ids[:n_head] + (ids[len(ids) - n_tail:] if n_tail else []), True

    def encode(self, article: str) -> Encoded:
        """Prompt ids for one article (without the label token)."""
        # Cap the characters tokenized: 8 chars/token is far above any BPE's average, so the
        # kept tokens are unaffected, and a 50k-character article costs no more than a short one.
        cap = self.article_budget * 8
        if self.settings.truncation == "head":
            text = article[:cap]
        else:
            text = article if len(article) <= 2 * cap else article[:cap] + article[-cap:]
        art = self.ids(text)
        art, cut = self.truncate_article(art)
        return self.wrap(art, cut or len(text) < len(article))

    def wrap(self, article_ids: Sequence[int], truncated: bool = False) -> Encoded:
        """The prompt around article ids already within the budget (what :meth:`encode` ends with)."""
        ids = self.lead_ids + self.prefix_ids + list(article_ids) + self.suffix_ids
        return Encoded(ids + self.trail_ids, len(ids) - 1, truncated)

    def encode_windows(self, article: str, windows: int) -> list[Encoded]:
        """Prompts over up to ``windows`` stretches of the whole article: head, tail, evenly spaced between.

        An article that fits the budget gives one prompt; windows never repeat a start.
        """
        if windows <= 1:
            return [self.encode(article)]
        art = self.ids(article)
        if len(art) <= self.article_budget:
            return [self.encode(article)]
        return [self.wrap(art[s:s + self.article_budget], True) for s in self.window_starts(len(art), windows)]

    def window_starts(self, n_tokens: int, windows: int) -> list[int]:
        """Where each of up to ``windows`` stretches of an article of ``n_tokens`` tokens starts: head, tail, evenly
        spaced between, never the same start twice; ``[0]`` when the article fits the budget."""
        last = n_tokens - self.article_budget
        if windows <= 1 or last <= 0:
            return [0]
        return sorted({round(i * last / (windows - 1)) for i in range(windows)})

    def encode_for_training(self, article: str, label: str) -> tuple[list[int], list[int], int]:
        """(input_ids, labels, answer_pos) for the lm head: labels are -100 except the label token."""
        enc = self.encode(article)
        tok = self.label_token_ids[self.labels.index(label)]
        ids = enc.input_ids + [tok]
        labels = [-100] * len(enc.input_ids) + [tok]
        return ids, labels, enc.answer_pos


__all__ = ["Encoded", "PromptBuilder", "template_accepts"]
