"""The static site: the artifact store turned into a fast, offline, browsable gallery.

Modules, in the order a build uses them (lower ones never import higher ones):
- `report`: SiteReport, what a build did;
- `paths`: safe paths inside the site, writes of changed bytes only, pruning;
- `reading`: the one place the store is read (meta.json, model.json, rendered classes);
- `images`: the WebP files a build needs, encoded once and placed into the site;
- `views`: typed view models (dataclasses) of what the templates show;
- `templating`: the Jinja environment (autoescape);
- `shell`: the MkDocs shell pages and the chrome of Jinja pages;
- `relations`: relations between concepts (importance, similar concepts, alignment, map);
- `pages`: the class pages and the filter index;
- `build`: `build_site`, the orchestration;
- `serving`: `lens serve`.

No torch anywhere in the package: `lens site` and `lens serve` start fast.
"""

from __future__ import annotations

from ..errors import SiteError
from .build import build_site
from .images import ClassImages, ImagePlan, place_images
from .pages import class_index_json, example_figure, shell_context, write_class_pages
from .paths import INDEX_FILE, MARKER_FILE, TEMPLATES, SourceError, is_model_slug, site_path, write_if_changed
from .reading import Unreadable, class_info, model_card, read_meta, rendered_classes, select_models
from .report import SiteReport
from .serving import make_server, serve
from .shell import BODY_MARK, CHROME_PAGE, EXAMPLE_ENTRY, TITLE_MARK, field_reference
from .views import bar, figures_table, fmt, model_class_view, model_summary, photo_credits, short_name

__all__ = [
    "BODY_MARK", "CHROME_PAGE", "EXAMPLE_ENTRY", "INDEX_FILE", "MARKER_FILE", "TEMPLATES", "TITLE_MARK", "Unreadable",
    "ClassImages", "ImagePlan", "SiteError", "SiteReport", "SourceError", "bar", "build_site", "class_index_json",
    "class_info", "example_figure", "field_reference", "figures_table", "fmt", "is_model_slug", "make_server",
    "model_card", "model_class_view", "model_summary", "photo_credits", "place_images", "read_meta",
    "rendered_classes", "select_models", "serve", "shell_context", "short_name", "site_path", "write_class_pages",
    "write_if_changed",
]
