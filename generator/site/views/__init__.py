"""Typed view models: what the templates show, computed from the store's records.

Each view is a dataclass with the display-ready fields a template reads (text already formatted,
URLs already relative to the page). A part that cannot be shown carries `state` (what its
placeholder tells visitors, in words the templates hold) and `problem` (the detail, for the build
report and the model page only); views never raise for a bad or partial record.

A module per job (lower ones never import higher ones): `formatting` (values as text, the visitor
filter, placeholder states) -> `figures` (the importance chart, the concept order, the figures table)
-> `classes` (the views of one class for one model) and `model_page` (a model's page). This package
re-exports every name `generator.site.views` had as a single module.
"""

from __future__ import annotations

from .classes import (
    ConceptView,
    CraftView,
    ImageView,
    ModelClassView,
    concept_page,
    concept_view,
    concepts_page,
    count_placeholders,
    craft_view,
    maco_view,
    model_class_view,
    photo_credits,
    view_problems,
)
from .figures import Bar, Chart, Row, Section, concept_order, figures_table, importance_chart, normalised_sobol, ordered_concepts
from .formatting import (
    FAILED,
    FEW_IMAGES,
    MISSING,
    NO_CONCEPTS,
    NO_IMAGES,
    NOT_VISUALIZED,
    UNAVAILABLE,
    bar,
    few_images,
    finite,
    fmt,
    part_problem,
    pct,
    plural,
    redact_paths,
    short_name,
    visitor_text,
)
from .model_page import Item, ModelSummary, model_summary

__all__ = [
    "FAILED", "FEW_IMAGES", "MISSING", "NO_CONCEPTS", "NO_IMAGES", "NOT_VISUALIZED", "UNAVAILABLE",
    "Bar", "Chart", "ConceptView", "CraftView", "ImageView", "Item", "ModelClassView", "ModelSummary", "Row", "Section",
    "bar", "concept_order", "concept_page", "concept_view", "concepts_page", "count_placeholders", "craft_view",
    "few_images", "figures_table", "finite", "fmt", "importance_chart", "maco_view", "model_class_view", "model_summary",
    "normalised_sobol", "ordered_concepts", "part_problem", "pct", "photo_credits", "plural", "redact_paths",
    "short_name", "view_problems", "visitor_text",
]
