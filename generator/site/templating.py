"""The Jinja environment of every page: templates/ with autoescape on, strict undefined."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from .paths import TEMPLATES
from .views import FEW_IMAGES, fmt, plural, short_name, visitor_text


def code_spans(text: str) -> Markup:
    """Text with Markdown-style `code` spans as HTML <code> (inside HTML blocks Markdown is not
    processed); everything else escaped."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


@functools.lru_cache(maxsize=2)
def jinja_env(templates: Path = TEMPLATES) -> jinja2.Environment:
    """Autoescape on for every template, Markdown included (text from models.yaml is inert there too);
    every printed value passes `views.visitor_text`, which drops machine paths."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=visitor_text,  # the one redaction helper: every printed value, every template
    )
    env.filters["fmt"] = fmt
    env.filters["short_name"] = short_name
    env.filters["plural"] = plural
    env.filters["code_spans"] = code_spans
    env.globals["FEW_IMAGES"] = FEW_IMAGES
    return env


def render(name: str, **context: Any) -> str:
    return jinja_env().get_template(name).render(**context)
