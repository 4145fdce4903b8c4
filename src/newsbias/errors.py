"""The one exception type a user should ever see from newsbias.

Every stage raises :class:`NewsbiasError` for bad input (missing file, wrong column, unknown
label, bad config key ...). The CLI prints its message on one line and exits non-zero, without a
traceback, because the message already says what to change.
"""


class NewsbiasError(Exception):
    """A user-facing error whose message says what went wrong and how to fix it."""


def one_line(message: str, limit: int = 600) -> str:
    """A message on one line, at most ``limit`` characters (article text must never flood a terminal)."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


def shorten(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for values quoted inside error messages."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 1] + "…"


def counted(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless n is 1: "1 article", "3 articles"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


class SettingError(NewsbiasError):
    """An error about one setting that several stages share (``key``: ``device``, ``dtype``, ``model``,
    ``prompt.max_length`` ...), raised where the value is used; the stage that catches it names its own key
    with :meth:`named` (``predict.device``, ``train.model.name_or_path``)."""

    def __init__(self, key: str, rest: str):
        super().__init__(f"{key} {rest}")
        self.key, self.rest = key, rest

    def named(self, name: str) -> NewsbiasError:
        """The same error with the setting called ``name``."""
        return NewsbiasError(f"{name} {self.rest}")


class ConfigError(NewsbiasError):
    """A config file or ``key=value`` override that does not validate."""
