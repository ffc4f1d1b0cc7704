"""The Jinja environment of every page: templates/ with autoescape on, strict undefined."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2

from .paths import TEMPLATES
from .views import fmt, short_name


@functools.lru_cache(maxsize=2)
def jinja_env(templates: Path = TEMPLATES) -> jinja2.Environment:
    """Autoescape on for every template, Markdown included (text from models.yaml is inert there too)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = fmt
    env.filters["short_name"] = short_name
    return env


def render(name: str, **context: Any) -> str:
    return jinja_env().get_template(name).render(**context)
