"""The one exception type a user should ever see from newsbias.

Every stage raises :class:`NewsbiasError` for bad input (missing file, wrong column, unknown
label, bad config key ...). The CLI prints its message on one line and exits non-zero, without a
traceback, because the message already says what to change.
"""


class NewsbiasError(Exception):
    """A user-facing error whose message says what went wrong and how to fix it."""


class ConfigError(NewsbiasError):
    """A config file or ``key=value`` override that does not validate."""
