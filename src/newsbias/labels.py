"""The label set and the normalisation of raw labels onto it.

Labels are ordinal (left < center < right); their order in :data:`LABELS` is the class index
used everywhere (metrics, confusion matrices, classifier heads).
"""

from __future__ import annotations

import math
import re
from typing import Literal, Mapping, Optional, Sequence

LABELS: tuple[str, ...] = ("left", "center", "right")

# Raw spellings seen in the wild (Kaggle's five-point scale, AllSides' "lean left", ...).
# Keys are already normalised by `_norm` (lower case, runs of space/underscore/hyphen -> "-").
DEFAULT_ALIASES: dict[str, str] = {
    "left": "left",
    "leaning-left": "left",
    "lean-left": "left",
    "left-leaning": "left",
    "left-center": "left",
    "center-left": "left",
    "centre-left": "left",
    "far-left": "left",
    "liberal": "left",
    "center": "center",
    "centre": "center",
    "central": "center",
    "neutral": "center",
    "least-biased": "center",
    "right": "right",
    "leaning-right": "right",
    "lean-right": "right",
    "right-leaning": "right",
    "right-center": "right",
    "center-right": "right",
    "centre-right": "right",
    "far-right": "right",
    "conservative": "right",
}

NUMERIC_SCHEMES: dict[str, dict[int, str]] = {
    "012": {0: "left", 1: "center", 2: "right"},
    "-101": {-1: "left", 0: "center", 1: "right"},
}

NumericScheme = Literal["none", "012", "-101"]

_SEP = re.compile(r"[\s_\-]+")
_NUMERIC = re.compile(r"^[+-]?\d+(\.0+)?$")


def is_numeric_label(text: str) -> bool:
    """A raw label that only a numeric scheme or an explicit mapping can give a meaning ("2", "-1", "3.0")."""
    return bool(_NUMERIC.match(text.strip()))


def _norm(raw: str) -> str:
    return _SEP.sub("-", raw.strip().lower()).strip("-")


class LabelNormalizer:
    """Maps raw labels (strings or numbers) onto :data:`LABELS`.

    ``numeric`` must name the encoding of numeric labels explicitly ("012" or "-101"): a 0 means
    *left* in one scheme and *center* in the other, so it is never guessed. ``mapping`` adds or
    overrides spellings (``{"lean left": "left"}``); its keys are normalised like the data.
    """

    def __init__(self, numeric: NumericScheme = "none", mapping: Mapping[str, str] | None = None,
                 labels: tuple[str, ...] = LABELS):
        self.labels = labels
        self.numeric = numeric
        self.aliases = {k: v for k, v in DEFAULT_ALIASES.items() if v in labels}
        for lab in labels:
            self.aliases[_norm(lab)] = lab
        for raw, target in (mapping or {}).items():
            if target not in labels:
                raise ValueError(f"label mapping {raw!r} -> {target!r}: target must be one of {', '.join(labels)}")
            self.aliases[_norm(str(raw))] = target
        self.saw_numeric = False

    def __call__(self, raw: object) -> str | None:
        """Return the label for ``raw``, or None when it is missing or unknown."""
        if raw is None or (isinstance(raw, float) and math.isnan(raw)):
            return None
        if isinstance(raw, bool):
            return None
        text = str(raw).strip()
        if not text or text.lower() in {"nan", "none", "null", "na", "n/a"}:
            return None
        key = _norm(text)
        if key in self.aliases and not is_numeric_label(text):
            return self.aliases[key]
        if is_numeric_label(text):
            self.saw_numeric = True
            if self.numeric == "none":
                return self.aliases.get(key)  # only an explicit mapping can give a number meaning
            return NUMERIC_SCHEMES[self.numeric].get(int(float(text)), self.aliases.get(key))
        return None


_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.S | re.I)
_SPECIAL = re.compile(r"<\|[^|>]*\|>|</?s>|\[/?[A-Z]+\]")
# Compounds first: "center-left" is a lean, and a lean maps to its side (as the 5->3 label mapping does).
_LABEL_WORD = re.compile(r"\b(?:(?:center|centre)[\s-]+(left|right)|(left|right)[\s-]+(?:of[\s-]+)?(?:center|centre)"
                         r"|(left|right|center|centre|centrist)(?:[\s-]*leaning)?)\b", re.I)


def parse_generation(raw: str, labels: Sequence[str] = LABELS) -> Optional[str]:
    """The first label word in a generated answer, or None when there is none.

    Strips Qwen3 ``<think>…</think>`` blocks (and an unclosed one) and special tokens first.
    "Center-left" / "left of center" count as left, "centre"/"centrist" as center.
    """
    text = _SPECIAL.sub(" ", _THINK.sub(" ", raw or ""))
    m = _LABEL_WORD.search(text)
    if not m:
        return None
    word = (m.group(1) or m.group(2) or m.group(3)).lower()
    word = {"centre": "center", "centrist": "center"}.get(word, word)
    return word if word in labels else None
