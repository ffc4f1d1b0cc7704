"""`lens figure`: a grid of classes x models from the artifact store, as PNG and PDF, for papers.

Rows are classes (labelled with index and name), columns are models (labelled with their
names); with `concepts=K`, each model's class visualization is followed by the visualizations
of its K most important CRAFT concepts. With `overlay`, the attribution map is shown as
transparency over white, as on the site. A part that is missing or failed is a grey cell that
says so, never a silent gap. Only what the store holds is read: no model runs, no torch import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .classes import imagenet_class
from .errors import PlanError, StoreError, output_errors
from .records import STATE_WORDS, MacoRecord, part_state
from .store import Store, UnsafePath

MAX_ROWS = 200  # a figure beyond this is not readable; say so instead of drawing for minutes
MAX_CONCEPTS = 20  # concepts per model and row: beyond this a row is not readable either
CELL_INCHES = (0.2, 20.0)  # side of one image: from a thumbnail to a poster
DPI_RANGE = (10, 2400)
MAX_PIXELS = 2**28  # ~268 Mpx (1 GiB as RGBA): a PNG past this exhausts memory before it is written
MAX_SIDE = 2**16 - 1  # matplotlib's Agg canvas refuses a side of 2**16 pixels or more


def check_layout(concepts: int, cell: float, dpi: int | None = None) -> None:
    """The figure's numeric options, refused (PlanError, one line naming the flag) outside their range."""
    if isinstance(concepts, bool) or not isinstance(concepts, int) or not 0 <= concepts <= MAX_CONCEPTS:
        raise PlanError(f"--concepts {concepts}: must be between 0 and {MAX_CONCEPTS}")
    if not isinstance(cell, (int, float)) or not CELL_INCHES[0] <= cell <= CELL_INCHES[1]:  # NaN fails both
        raise PlanError(f"--cell {cell}: must be between {CELL_INCHES[0]:g} and {CELL_INCHES[1]:g} inches")
    if dpi is not None and (isinstance(dpi, bool) or not isinstance(dpi, int) or not DPI_RANGE[0] <= dpi <= DPI_RANGE[1]):
        raise PlanError(f"--dpi {dpi}: must be between {DPI_RANGE[0]} and {DPI_RANGE[1]}")


@dataclass
class Cell:
    """One picture of the grid, or the reason there is none."""

    image: np.ndarray | None  # (H, W, 3) uint8
    note: str = ""  # e.g. "failed", "not rendered"
    title: str = ""


def _load(store: Store, model: str, class_index: int, record: MacoRecord | None, overlay: bool) -> Cell:
    if record is None or not record.done:
        return Cell(None, STATE_WORDS[part_state(record)])
    paths = store.class_paths(model, class_index)  # the store's one check: no path read from outside it
    files = record.files
    try:
        rgb = np.asarray(Image.open(paths.path(files.get("image"))).convert("RGB"), dtype=np.float32)
        if overlay and files.get("alpha"):
            alpha = Image.open(paths.path(files["alpha"])).convert("L").resize(rgb.shape[1::-1])
            alpha = np.asarray(alpha, dtype=np.float32)[..., None] / 255
            rgb = rgb * alpha + 255 * (1 - alpha)
    except UnsafePath as e:
        store.problems.append(str(e))
        return Cell(None, "not in the store")
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # missing, truncated, not an image, huge
        return Cell(None, f"unreadable ({type(e).__name__})")
    return Cell(rgb.round().astype(np.uint8))


def figure_cells(store_root: Path, classes: Sequence[int], models: Sequence[str], overlay: bool = False,
                 concepts: int = 0) -> tuple[list[int], list[str], list[list[Cell]]]:
    """(classes, models, rows of cells) for the classes and models that the store holds anything of."""
    store = Store(store_root)
    present = set(store.models())
    models = [m for m in models if m in present]
    if not models:
        raise StoreError(f"{store_root}: no renders of the selected models (the store holds: {', '.join(sorted(present)) or 'nothing'})")
    metas = {(m, c): store.meta(m, c, repair=False) for m in models for c in classes}
    classes = [c for c in classes if any(metas[m, c] is not None for m in models)]
    if not classes:
        raise StoreError(f"{store_root}: no renders of the selected classes for {', '.join(models)}")
    if len(classes) > MAX_ROWS:
        raise StoreError(f"{len(classes)} classes would make {len(classes)} rows; select at most {MAX_ROWS} with --classes")
    rows = []
    for c in classes:
        row = []
        for m in models:
            meta = metas[m, c]
            cell = _load(store, m, c, meta.maco if meta is not None else None, overlay)
            cell.title = m
            row.append(cell)
            ranked = sorted(meta.concepts, key=lambda k: k.rank) if meta is not None else []
            for k in range(concepts):
                if k < len(ranked):
                    cell = _load(store, m, c, ranked[k].maco, overlay)
                else:
                    failed = meta is not None and meta.craft is not None and meta.craft.failed
                    cell = Cell(None, "CRAFT failed" if failed else "no concept")
                cell.title = f"concept {k + 1}"
                row.append(cell)
        rows.append(row)
    return classes, models, rows


def grid_figure(store_root: Path, classes: Sequence[int], models: Sequence[str], overlay: bool = False,
                concepts: int = 0, cell: float = 1.4) -> Any:
    """A matplotlib Figure of the grid (no pyplot, so it works under any backend, notebooks included)."""
    from matplotlib.figure import Figure

    check_layout(concepts, cell)
    classes, models, rows = figure_cells(store_root, classes, models, overlay, concepts)
    per_model = 1 + concepts
    ncols, nrows = len(models) * per_model, len(rows)
    label_w, head_h = 1.3, 0.45 if concepts else 0.3
    fig = Figure(figsize=(label_w + ncols * cell, head_h + nrows * cell))
    fig.subplots_adjust(left=label_w / (label_w + ncols * cell), right=0.995, bottom=0.005,
                        top=1 - head_h / (head_h + nrows * cell), wspace=0.04, hspace=0.04)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r, (c, row) in enumerate(zip(classes, rows)):
        for j, item in enumerate(row):
            ax = axes[r][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if item.image is not None:
                ax.imshow(item.image, interpolation="lanczos")
            else:
                ax.set_facecolor("#e6e6e6")
                ax.text(0.5, 0.5, item.note, ha="center", va="center", fontsize=7, color="#555555", transform=ax.transAxes)
            if r == 0 and concepts:
                ax.text(0.5, 1.03, "class" if j % per_model == 0 else item.title, ha="center", va="bottom",
                        fontsize=7, transform=ax.transAxes)
        name = imagenet_class(c).name.split(",")[0]
        axes[r][0].set_ylabel(f"{name}\n({c})", fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
    for g, model in enumerate(models):  # model names centred over their columns
        first, last = axes[0][g * per_model].get_position(), axes[0][g * per_model + per_model - 1].get_position()
        y = first.y1 + (0.2 if concepts else 0.06) / fig.get_figheight()
        fig.text((first.x0 + last.x1) / 2, y, model, ha="center", va="bottom", fontsize=9, fontweight="bold")
    return fig


# Raster formats of `lens figure`: PNG (lossless, for papers) or JPEG / WebP (lossy, a fraction of the
# bytes, for slides and the web); the PDF beside it embeds the images at the same DPI.
RASTER_FORMATS = ("png", "jpeg", "webp")


def make_figure(store_root: Path, classes: Sequence[int], models: Sequence[str], output: Path, *, overlay: bool = False,
                concepts: int = 0, cell: float = 1.4, dpi: int = 200, fmt: str = "png", quality: int = 85,
                pdf: bool = True) -> list[Path]:
    """Write the grid as `output` with the raster format's suffix (.png, .jpg or .webp) and, unless
    `pdf` is false, as .pdf; returns the paths. `dpi` sets the raster's pixels (and the PDF's images):
    the cells' sources are 512 px, so above ~370 dpi at 1.4 in a cell only upsamples. `quality`
    (1-100) applies to JPEG and WebP."""
    if fmt not in RASTER_FORMATS:
        raise PlanError(f"--format {fmt!r}: use one of {', '.join(RASTER_FORMATS)}")
    check_layout(concepts, cell, dpi)
    fig = grid_figure(store_root, classes, models, overlay, concepts, cell)
    width, height = (round(v * dpi) for v in fig.get_size_inches())
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise PlanError(f"--dpi {dpi} --cell {cell:g}: the PNG would be {width} x {height} pixels, more than can be "
                        f"drawn; lower --dpi or --cell, or select fewer classes or --concepts")
    output = Path(output)
    raster = output.with_suffix(".jpg" if fmt == "jpeg" else f".{fmt}")
    options: dict[str, Any] = {"pil_kwargs": {"quality": quality}} if fmt != "png" else {"pil_kwargs": {"optimize": True}}
    written = []
    for path, kwargs in [(raster, {"format": fmt, **options})] + ([(output.with_suffix(".pdf"), {})] if pdf else []):
        with output_errors(path):  # a read-only folder, a folder named like the file, a full disk
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=dpi, facecolor="white", **kwargs)
        written.append(path)
    return written
