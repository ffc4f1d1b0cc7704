"""The `models.yaml` key reference, read from the pydantic schema that validates the file (config.py),
so it never drifts from what `lens` accepts. One source, two renderings: HTML rows for the site's
"Adding a model" page (operator documentation, kept out of the visitors' navigation) and Markdown
for `docs/models-yaml.md`, which a user reads before building anything (`python -m
generator.reference > docs/models-yaml.md` regenerates it; a test checks the two agree).
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from .config import CraftSettings, DictionarySettings, MacoSettings, ModelEntry, Preset, WeightsSource, ZooFile

SECTIONS: list[tuple[str, str, type[BaseModel]]] = [
    ("top", "Top level", ZooFile), ("model", "Each entry of `models`", ModelEntry),
    ("weights", "`weights` of a model", WeightsSource), ("maco", "`defaults.maco`, a model's `maco`", MacoSettings),
    ("craft", "`defaults.craft`, a model's `craft`", CraftSettings),
    ("dictionary", "`defaults.dictionary`, a model's `dictionary`", DictionarySettings), ("preset", "Each entry of `presets`", Preset),
]

# Meanings of the keys whose schema field carries no description (config.py is not this module's to
# edit); a test checks that every key has a meaning, from the schema or from here.
MEANINGS: dict[tuple[str, str], str] = {
    ("top", "title"): "title of the gallery site, in its header and page titles",
    ("top", "defaults"): "MACO and CRAFT settings of every model (`maco:`, `craft:`), full scale, for GPUs",
    ("top", "presets"): "named runs (`lens build --classes NAME`): a class selection and setting overrides",
    ("top", "models"): "the zoo: one entry per model",
    ("model", "weights"): "where the weights come from: `{package: ..., file: ...}`, `{file: ...}` or `{timm: TAG}`",
    ("model", "description"): "one line shown on the model's page",
    ("model", "mean"): "per-channel input normalisation mean (default: timm pretrained cfg)",
    ("model", "std"): "per-channel input normalisation standard deviation (default: timm pretrained cfg)",
    ("model", "interpolation"): "resampling of the input resize (default: timm pretrained cfg)",
    ("model", "crop_pct"): "centre-crop fraction of the evaluation transform (default: timm pretrained cfg)",
    ("craft", "seed"): "base seed of the factorisation and the Sobol designs",
    ("dictionary", "seed"): "seed of the token sample, the initialisation, the batch order and the atlas's map",
    ("preset", "models"): "models the preset renders (default: every model)",
    ("preset", "images"): "ImageNet-layout folder for CRAFT in this preset (default: the top-level `images`)",
    ("preset", "maco"): "MACO overrides applied on top of `defaults.maco` and each model's `maco`",
    ("preset", "craft"): "CRAFT overrides applied on top of `defaults.craft` and each model's `craft`",
    ("preset", "description"): "what the preset is for, shown by `lens build --help`",
}


def type_text(annotation: Any) -> str:
    """A readable type: `int or null`, `one of bilinear, bicubic, nearest`, `list of ModelEntry`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        parts = [type_text(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, tuple):
        if origin is tuple and args and Ellipsis not in args:
            return f"{len(args)} × {type_text(args[0])}" if len(set(args)) == 1 else "(" + ", ".join(map(type_text, args)) + ")"
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        return "mapping" if not args or args[1] is Any else f"mapping of {type_text(args[0])} to {type_text(args[1])}"
    if annotation is Any:
        return "any"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        titles = {kind: title for _, title, kind in SECTIONS}
        return f"mapping (see “{titles[annotation]}”)" if annotation in titles else "mapping (`maco`, `craft`)"
    if isinstance(annotation, type):
        return {"str": "text", "int": "integer", "float": "number", "bool": "true or false"}.get(annotation.__name__, annotation.__name__)
    return re.sub(r"\b(typing|pydantic\.main|generator\.config)\.", "", str(annotation))


def default_text(f: Any) -> str:
    """The default as YAML would spell it, on one line: `256`, `[0.25, 1.0]`, `null`, or `required`."""
    if f.is_required():
        return "required"
    value = f.default_factory() if f.default_factory is not None else f.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "see below"
    return json.dumps(value, default=str) if value is not None else "null"


def field_reference() -> list[dict[str, Any]]:
    """Every section of models.yaml: {title, doc, rows: [{key, type, default, description}]}; the
    description is the schema's, else MEANINGS'. `type` is the readable type (type_text)."""
    out = []
    for code, title, kind in SECTIONS:
        rows = [{"key": name, "type": type_text(f.annotation), "default": default_text(f),
                 "description": f.description or MEANINGS.get((code, name), "")}
                for name, f in kind.model_fields.items()]
        out.append({"title": title, "doc": (kind.__doc__ or "").strip(), "rows": rows})
    return out


WORD_DEFAULTS = ("required", "see below")  # defaults that are words, not YAML values: not set as code


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_cell(default: str) -> str:
    return default if default in WORD_DEFAULTS else f"`{_cell(default)}`"


def reference_markdown() -> str:
    """The reference as Markdown (docs/models-yaml.md): the same rows as the site's page."""
    lines = ["# `models.yaml` reference", "",
             "Generated from the schema that validates `models.yaml` (`python -m generator.reference >"
             " docs/models-yaml.md`); the site's \"Adding a model\" page shows the same rows.", ""]
    for section in field_reference():
        lines += [f"## {section['title']}", ""]
        if section["doc"]:
            lines += [" ".join(section["doc"].split()), ""]
        lines += ["| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{r['key']}` | {_cell(r['type'])} | {_default_cell(r['default'])} | {_cell(r['description'])} |"
                  for r in section["rows"]]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(reference_markdown())
