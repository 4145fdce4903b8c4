"""Text repair and normalisation, outlet keys, and the normalised text used for de-duplication."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from urllib.parse import urlsplit

import ftfy

# ftfy is thorough but slow (~3 ms per AllSides article); it only changes texts that contain
# mojibake-looking characters or HTML entities, so everything else takes the cheap path.
_CP1252_TAIL = "\u0080-\u00bf\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
_SUSPECT = re.compile(f"[\u00c2-\u00f4][{_CP1252_TAIL}]|[\u0080-\u009f\ufffd]|\u00e2(?=[A-Za-z ])|&#?[a-zA-Z0-9]{{2,8}};")
_FTFY = ftfy.TextFixerConfig(uncurl_quotes=False, fix_line_breaks=True)

# UTF-8 punctuation decoded as Latin-1 with the C1 bytes then stripped leaves a lone "â"
# ("âviabilityâ", "Womenâs"): the bytes are gone, so ftfy cannot undo it. These patterns
# restore the most likely character. They run only on a text that shows the damage in a form
# no real word has (an English contraction, a quoted phrase, a spaced dash), so "â" in âge,
# l'âme or Lâm stays.
_LOST_MARK = re.compile(r"[A-Za-z]â(?:s|t|re|ve|ll|d)\b|\bIâm\b|(?<= )â(?= )"
                        r"|(?<![A-Za-z\u00c0-\u024f])â[A-Za-z][^â\n]{0,80}?[A-Za-z0-9.,!?]â(?![A-Za-z\u00c0-\u024f])")
_LOST_APOS = re.compile(r"(?<=[A-Za-z])â(?=(?:s|t|re|ve|ll|d)\b)|(?<=\bI)â(?=m\b)")
_LOST_DASH = re.compile(r"(?<= )â(?= )")
_LOST_QUOTE = re.compile(r"(?<![A-Za-z\u00c0-\u024f])â(?=[A-Za-z0-9])|(?<=[A-Za-z0-9.,!?])â(?![A-Za-z\u00c0-\u024f])")

# Format characters with no visible form and no meaning in news text: soft hyphens (which split
# "elec\u00adtion" in two for every tokenizer), zero-width spaces, word joiners, byte-order marks and
# bidirectional marks. Zero-width (non-)joiners stay in the text (emoji sequences, Persian spelling)
# and go only from the dedup key.
_INVISIBLE = re.compile("[\u00ad\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
_INVISIBLE_KEY = re.compile("[\u00ad\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff]")
_SPACES = re.compile(r"[^\S\n]{2,}|[^\S\n ]")  # only runs and odd spaces: most single spaces stay untouched
_NEWLINES = re.compile(r" ?\n[ \n]*")
_WORD = re.compile(r"\w+", re.UNICODE)


def repair_text(text: str) -> str:
    """Repair mojibake (ftfy plus the stripped-C1 pattern) without touching clean text."""
    if _SUSPECT.search(text):
        text = ftfy.fix_text(text, _FTFY)
        if "â" in text and _LOST_MARK.search(text):
            text = _LOST_APOS.sub("\u2019", text)
            text = _LOST_DASH.sub("\u2014", text)
            text = _LOST_QUOTE.sub('"', text)
    return unicodedata.normalize("NFC", text)


_UNSAFE = re.compile("[\x00\ud800-\udfff]")  # NUL and unpaired surrogates (not encodable as UTF-8)


def drop_unsafe(text: str) -> str:
    """Remove NUL characters and replace unpaired surrogates with U+FFFD, so outputs are valid UTF-8."""
    return _UNSAFE.sub(lambda m: "" if m.group() == "\x00" else "\ufffd", text) if _UNSAFE.search(text) else text


def normalize_whitespace(text: str) -> str:
    """Collapse runs of spaces, keep single paragraph breaks, strip the ends (NULs, lone surrogates and invisible
    format characters go too)."""
    text = _INVISIBLE.sub("", drop_unsafe(text))
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    text = _NEWLINES.sub("\n", text)
    return text.strip()


def clean_text(text: str, fix: bool = True) -> str:
    if fix:
        text = repair_text(text)
    return normalize_whitespace(text)


def dedup_key(text: str) -> str:
    """Lower-cased word sequence: two texts differing only in case, spacing, punctuation or invisible characters
    collide."""
    return " ".join(_WORD.findall(_INVISIBLE_KEY.sub("", text).lower()))


@lru_cache(maxsize=1)
def _extractor():
    import tldextract

    # the suffix list bundled with the package: no network, the same answer on every machine;
    # private suffixes count, so two blogs on blogspot.com are two outlets
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)


# an archived copy names the archive, not the outlet: web.archive.org/web/<timestamp>/<original address>
_ARCHIVED = re.compile(r"^(?:https?://)?(?:web\.)?archive\.org/web/[^/]+/(.+)$", re.I)


def domain_of(url: str | None) -> str | None:
    """Registrable domain of a URL or bare host (Public Suffix List): 'http://edition.cnn.com/x' -> 'cnn.com'; an
    Internet Archive copy is the domain of the page it archived."""
    if not url or not isinstance(url, str) or not url.strip():
        return None
    archived = _ARCHIVED.match(url.strip())
    if archived:
        return domain_of(archived.group(1))
    host = urlsplit(url.strip().lower() if "//" in url else "//" + url.strip().lower()).hostname
    if not host or "." not in host:
        return None
    return _extractor()(host).top_domain_under_public_suffix or None


# words that name an outlet's edition or section, not another outlet: 'Fox News (Online)' and 'Fox News' are one
_EDITION_IN_PARENS = re.compile(r"\s*\(\s*(?:(?:online|web|news|opinions?|blogs?|editorials?|commentary|digital|print)"
                                r"\s*)+\)\s*$", re.I)
_EDITION_WORD = {"online", "opinion", "opinions", "blog", "blogs", "editorial", "editorials", "commentary"}


def source_key(name: str | None) -> str | None:
    """Normalised outlet name: 'CNN (Web News)', 'cnn  (web news)' and 'CNN Opinion' are the outlet 'cnn'.

    Case, spacing and punctuation are ignored, and so is a trailing edition or section ("(Online News)",
    "Opinion", "Blog"): without URLs an outlet's editions would otherwise be split as different outlets.
    """
    if not name or not isinstance(name, str):
        return None
    words = _WORD.findall(_EDITION_IN_PARENS.sub("", name).lower())
    while len(words) > 1 and words[-1] in _EDITION_WORD and words[:-1] != ["the"]:
        words.pop()
    if len(words) > 1 and words[0] == "the":  # 'The New York Times' and 'New York Times' are one outlet
        words.pop(0)
    return " ".join(words) or " ".join(_WORD.findall(name.lower())) or None


# a source column that holds an address ('cnn.com', 'https://www.cnn.com/') rather than a name
_ADDRESS = re.compile(r"^(?:https?://)?[\w-]+(?:\.[\w-]+)*\.[a-z]{2,}(?:[/:?#]\S*)?$", re.I)


def outlet_of(source_url: str | None, url: str | None, source: str | None) -> str | None:
    """The outlet an article is judged by: its domain (source_url, then url, then a source given as an address),
    else its source name."""
    address = domain_of(source) if isinstance(source, str) and _ADDRESS.match(source.strip()) else None
    return domain_of(source_url) or domain_of(url) or address or source_key(source)
