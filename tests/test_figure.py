"""`lens figure` (generator/figure.py): a classes x models grid from the store, as PNG and PDF."""

from __future__ import annotations

import pytest
from PIL import Image

from benchmarks.synthetic_store import DEFAULT_MODELS, write_synthetic_store
from generator.cli import main
from generator.figure import figure_cells, make_figure
from generator.store import Store

from .conftest import REPO

CLASSES = list(range(12))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("store"), len(CLASSES), DEFAULT_MODELS)


def test_cells_follow_the_store_and_name_what_is_missing(store):
    classes, models, rows = figure_cells(store, CLASSES, DEFAULT_MODELS, concepts=2)
    assert classes == CLASSES and models == list(DEFAULT_MODELS)
    st = Store(store)
    for c, row in zip(classes, rows):
        assert len(row) == 3 * len(DEFAULT_MODELS)
        for m, model in enumerate(DEFAULT_MODELS):
            meta = st.meta(model, c, repair=False)
            cls = row[3 * m]
            if meta is None:  # the synthetic store leaves some classes unrendered
                assert all(cell.image is None for cell in row[3 * m : 3 * m + 3])
                assert cls.note == "not rendered"
                continue
            if meta.maco.status == "done":
                assert cls.image is not None and cls.image.shape[2] == 3
                stored = Image.open(store / model / f"{c:04d}" / meta.maco.files["image"])
                assert cls.image.shape[:2] == (stored.height, stored.width)
            else:
                assert cls.image is None and cls.note == "failed"
            concepts = sorted(meta.concepts, key=lambda k: k.rank)
            for k, cell in enumerate(row[3 * m + 1 : 3 * m + 3]):
                if meta.craft.status == "failed":
                    assert cell.note == "CRAFT failed"
                elif k >= len(concepts):
                    assert cell.note == "no concept"
                elif concepts[k].maco is not None and concepts[k].maco.status == "done":
                    assert cell.image is not None
                else:
                    assert cell.image is None and cell.note in ("failed", "not rendered")
    notes = {cell.note for row in rows for cell in row}
    assert {"failed", "CRAFT failed"} <= notes  # the synthetic store has both


def test_overlay_fades_the_picture_where_the_attribution_is_low(store):
    _, _, plain = figure_cells(store, [0], ["efficientnet-lite0"])
    _, _, faded = figure_cells(store, [0], ["efficientnet-lite0"], overlay=True)
    a, b = plain[0][0].image.astype(int), faded[0][0].image.astype(int)
    assert (b >= a).mean() > 0.9 and (b > a).any()  # blended towards white


def test_png_and_pdf_are_written_with_labels(store, tmp_path):
    written = make_figure(store, [0, 1, 2], list(DEFAULT_MODELS[:2]), tmp_path / "grid", concepts=1, dpi=60)
    assert [p.suffix for p in written] == [".png", ".pdf"]
    png = Image.open(written[0])
    assert png.width > png.height  # 3 rows, 4 columns
    pdf = written[1].read_bytes()
    assert pdf.startswith(b"%PDF")
    assert b"efficientnet" in pdf or b"/Font" in pdf  # text is embedded as text, not only pixels


def test_cli_figure_and_its_errors(store, tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert main(["figure", "--store", str(store), "--classes", "0-2", "--models", "efficientnet-lite0", "--overlay",
                 "--output", str(out), "--dpi", "50"]) == 0
    assert out.is_file() and out.with_suffix(".pdf").is_file()
    assert "figure written to" in capsys.readouterr().out
    assert main(["figure", "--store", str(store), "--classes", "500-510", "--output", str(out)]) == 2
    assert "no renders of the selected classes" in capsys.readouterr().err
    assert main(["figure", "--store", str(tmp_path / "empty"), "--classes", "0", "--output", str(out)]) == 2
    assert "no renders of the selected models" in capsys.readouterr().err


@pytest.mark.slow
def test_figure_of_a_real_render(real_store):
    """A real figure for the eye: test-outputs/figure-real.png (git-ignored)."""
    out = REPO / "test-outputs" / "figure-real"
    written = make_figure(real_store, [872, 967], ["efficientnet-lite0", "efficientnet-lite1"], out, overlay=False,
                          concepts=2, dpi=120)
    assert all(p.is_file() and p.stat().st_size > 10_000 for p in written)
