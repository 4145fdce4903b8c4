"""Outlet cues: what lets a model name the outlet instead of reading the article.

Both corpora label an article with its outlet's rating, so an outlet's name, its bylines and
datelines, its links and handles, and its boilerplate ("Sign up for our newsletter") predict the
label without saying anything about the article's leaning. ``prep.clean.outlet_cues``:

* ``keep``: the text as published.
* ``mask``: the article's own outlet's names, and URLs and handles, become :data:`MASK`; bylines,
  datelines and its outlet's boilerplate sentences are removed.
* ``drop``: all of them are removed.

Names come from the data's own ``source`` values and outlet domains, with their common variants
("New York Times - News" -> "New York Times", "The New York Times", "NEW YORK TIMES", "nytimes.com"),
and each article loses only its own outlet's: AllSides lists people ("Barack Obama"), agencies ("NASA")
and common words ("Vice", "Reason") among its sources, and another outlet named in an article is part of
what it says. Boilerplate is learned from the corpus: a sentence found in at least ``MIN_ARTICLES``
articles of one outlet, with that outlet holding at least ``OUTLET_SHARE`` of its occurrences; it is
removed from that outlet's articles. Written by hand because no
library knows this corpus's outlets; every choice is reported in ``prep_meta.json``.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Container, Iterable

import pandas as pd

MASK = "[outlet]"
MIN_ARTICLES = 5
OUTLET_SHARE = 0.8
MIN_SENTENCE = 15  # shorter lines ("Advertisement", "CLOSE") are also common words: not learned by default
MAX_SENTENCE = 300  # longer "sentences" are paragraphs, not boilerplate
EXAMPLES = 20

_SUFFIXES = re.compile(r"\s*(\(.*?\)|-\s*(news|opinion|online|editorial)s?\b.*|\b(online|web)?\s*news\s*$)",
                       re.IGNORECASE)
_BYLINE = re.compile(r"^\s*(?i:by|written by|reporting by|editing by)\s+[A-Z][\w.'-]*(\s+(and\s+)?[A-Z][\w.'-]*){0,6}"
                     r"[ ,;|]*(\S+@\S+)?\s*$", re.MULTILINE)
_DATELINE = re.compile(r"^\s*[A-Z][A-Z .,'/-]{2,40}(\s*\([A-Za-z .]{1,30}\))?\s*[—–-]{1,2}\s+|^\s*\([A-Z][A-Za-z .]{1,20}\)"
                       r"\s*[—–-]*\s*", re.MULTILINE)
_LINKS = re.compile(r"https?://\S+|www\.\S+|\b[\w.+-]+@[\w-]+\.[\w.]+\b|(?<![\w@])@\w{2,}")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


def name_variants(source: str | None, outlet: str | None) -> set[str]:
    """The spellings under which an outlet names itself: source name variants and the domain.

    Variants: the name without a desk suffix ("CNN (Web News)" -> "CNN", "NPR Online News" ->
    "NPR"), with and without a leading "The" (but "The Hill" never becomes "Hill"), "the X" as
    running text writes it, and all-caps words in title case ("USA TODAY" -> "USA Today").
    """
    out: set[str] = set()
    if isinstance(source, str) and source.strip():
        base = _SUFFIXES.sub("", source).strip(" -|") or source.strip()
        core = re.sub(r"^the\s+", "", base, flags=re.IGNORECASE)
        cands = {source.strip(), base}
        if " " in core:
            cands |= {core, f"The {core}"}
        cands |= {"the " + v[4:] for v in cands if v.startswith("The ")}
        cands |= {" ".join(w.title() if w.isupper() and len(w) > 3 else w for w in v.split()) for v in cands}
        cands |= {v.upper() for v in cands if not v.startswith("the ")}  # "POLITICO has learned", "via REUTERS"
        out |= {v for v in cands if len(v) >= 3}
    if isinstance(outlet, str) and "." in outlet:
        out.add(outlet)
    return out


def cue_spans(text: str, source: str | None, outlet: str | None) -> list[tuple[int, int, str]]:
    """Where ``text`` carries its own outlet's cues: sorted ``(start, end, kind)``.

    Kinds: ``name`` (the outlet's names and domain, as :func:`name_variants` spells them), ``link``
    (URLs, e-mail addresses, handles), ``byline``, ``dateline`` — the rules :class:`CueRemover` applies,
    without the boilerplate it learns from a whole corpus.
    """
    names = name_variants(source, outlet)
    domains = {n for n in names if "." in n and " " not in n}
    patterns = (("name", _pattern(domains, True)), ("name", _pattern(names - domains, False)), ("link", _LINKS),
                ("byline", _BYLINE), ("dateline", _DATELINE))
    return sorted((m.start(), m.end(), kind) for kind, pat in patterns if pat is not None
                  for m in pat.finditer(text) if m.end() > m.start())


def _pattern(names: Iterable[str], ignore_case: bool) -> re.Pattern | None:
    names = sorted(set(names), key=len, reverse=True)
    if not names:
        return None
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(n) for n in names) + r")(?!\w)",
                      re.IGNORECASE if ignore_case else 0)


def strip_fixed(text: str) -> str:
    """``text`` without links, handles, datelines and bylines (the cues found by pattern, not learned)."""
    return _BYLINE.sub("", _DATELINE.sub("", _LINKS.sub("", text)))


def _norm(sentence: str) -> str:
    """Case, digits and spacing folded, so "Copyright 2017" and "copyright 2018" are one sentence."""
    return re.sub(r"\d", "0", " ".join(sentence.replace(MASK, " ").lower().split()))


def _sentences(text: str, min_chars: int = MIN_SENTENCE) -> list[str]:
    return [s for s in (m.group().strip() for m in _SENTENCE.finditer(text)) if min_chars <= len(s) <= MAX_SENTENCE]


def learn_boilerplate(texts: Iterable[str], outlets: Iterable[str], min_chars: int = MIN_SENTENCE) -> dict[str, str]:
    """Normalised sentence -> its outlet, for sentences (of ``min_chars`` or more) that recur within one
    outlet and rarely elsewhere."""
    seen: Counter[str] = Counter()
    per: list[set[str]] = []
    for text in texts:
        sents = {_norm(s) for s in _sentences(text, min_chars)}
        seen.update(sents)
        per.append(sents)
    by_outlet: dict[str, Counter[str]] = defaultdict(Counter)
    for sents, outlet in zip(per, outlets):
        for s in sents:
            if seen[s] >= MIN_ARTICLES:  # only candidates are tracked: memory stays near one counter
                by_outlet[s][outlet] += 1
    out = {}
    for s, counts in by_outlet.items():
        outlet, n = counts.most_common(1)[0]
        if n >= MIN_ARTICLES and n >= OUTLET_SHARE * seen[s]:
            out[s] = outlet
    return out


def drop_sentences(text: str, sentences: Container[str]) -> tuple[str, int]:
    """``text`` without the sentences whose normalised form is in ``sentences``, and how many went."""
    spans = [m.span() for m in _SENTENCE.finditer(text) if _norm(m.group()) in sentences]
    ends = [0] + [e for _, e in spans]
    return "".join(text[a:b] for a, b in zip(ends, [s for s, _ in spans] + [len(text)])), len(spans)


@dataclass
class CueRemover:
    """Learned from one corpus; :meth:`apply` rewrites a text and counts what it removed."""

    mode: str
    names: dict[str, set[str]]
    boilerplate: dict[str, str]
    counts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    _patterns: dict[str, tuple[re.Pattern | None, re.Pattern | None, frozenset[str]]] = field(default_factory=dict)

    @classmethod
    def learn(cls, frame: pd.DataFrame, mode: str) -> CueRemover:
        """Each outlet's names from the ``source``/``outlet`` columns, boilerplate from ``text`` grouped by ``outlet``."""
        names: dict[str, set[str]] = defaultdict(set)
        for source, outlet in set(zip(frame["source"], frame["outlet"])):
            names[outlet] |= name_variants(source, outlet)
        texts = (strip_fixed(t) for t in frame["text"])
        return cls(mode, dict(names), learn_boilerplate(texts, frame["outlet"]))

    def _own(self, outlet: str) -> tuple[re.Pattern | None, re.Pattern | None, frozenset[str]]:
        """The outlet's name patterns (domains in any case; names as written: "Salon", "the Hill" are ordinary
        words in lower case) and its boilerplate sentences, built once per outlet."""
        if outlet not in self._patterns:
            names = self.names.get(outlet, set())
            domains = {n for n in names if "." in n and " " not in n}
            self._patterns[outlet] = (_pattern(domains, True), _pattern(names - domains, False),
                                      frozenset(s for s, o in self.boilerplate.items() if o == outlet))
        return self._patterns[outlet]

    def _sub(self, pattern: re.Pattern | None, text: str, outlet: str, kind: str, repl: str) -> str:
        if pattern is None:
            return text
        new, n = pattern.subn(repl, text)
        self.counts[outlet][kind] += n
        return new

    def apply(self, text: str, outlet: str) -> str:
        """``text`` with the cues of its outlet (``outlet``) masked or removed (see the module doc)."""
        repl = MASK if self.mode == "mask" else ""
        names_ci, names_cs, boilerplate = self._own(outlet)
        text = self._sub(_LINKS, text, outlet, "links", repl)
        text = self._sub(_DATELINE, text, outlet, "datelines", "")
        text = self._sub(_BYLINE, text, outlet, "bylines", "")
        text, n = drop_sentences(text, boilerplate)
        if n:
            self.counts[outlet]["boilerplate"] += n
        text = self._sub(names_ci, text, outlet, "names", repl)
        text = self._sub(names_cs, text, outlet, "names", repl)
        return re.sub(r"[ \t]{2,}", " ", text).strip()

    def report(self) -> dict[str, Any]:
        """Counts per outlet and kind, plus examples of the learned boilerplate, for ``prep_meta.json``."""
        totals: Counter[str] = Counter()
        for c in self.counts.values():
            totals.update(c)
        examples = sorted(self.boilerplate.items())[:EXAMPLES]
        return {"mode": self.mode, "mask": MASK if self.mode == "mask" else None, "removed": dict(totals),
                "per_outlet": {o: dict(c) for o, c in sorted(self.counts.items()) if sum(c.values())},
                "boilerplate_sentences": len(self.boilerplate),
                "boilerplate_examples": [{"outlet": o, "sentence": s} for s, o in examples],
                "rules": {"min_articles": MIN_ARTICLES, "outlet_share": OUTLET_SHARE}}
