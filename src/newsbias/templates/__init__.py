"""The Jinja2 templates shipped with newsbias: the classification page of ``serve`` (``page.html``), the
model card of ``export`` (``model_card.md``), compare's report (``report.md``, ``report.html``), explain's
(``explain.md``, ``explain.html``) and cv's (``cv.md``).

:func:`render` fills one by name; HTML templates are autoescaped, Markdown ones are not. The
``num`` filter writes a score with three decimals and a missing one as a dash.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared environment: templates from this package, blocks trimmed, HTML autoescaped."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("newsbias", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = num
    env.filters["md"] = md
    return env


def num(value: Any, digits: int = 3) -> str:
    """``0.4631`` -> ``"0.463"``; None -> ``"–"``; anything else as it is."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def md(value: Any) -> str:
    """Text from the data (an id, an outlet, a word, an article) made safe in a Markdown table cell or line: ``|``
    escaped, newlines joined, and ``<`` written as ``&lt;`` so that no renderer that passes HTML through runs it."""
    return str(value).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def render(name: str, **context: Any) -> str:
    """The template ``name`` (e.g. ``"page.html"``) rendered with ``context``."""
    return environment().get_template(name).render(**context)
