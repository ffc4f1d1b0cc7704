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


def test_dpi_sets_the_pixels_and_jpeg_or_webp_are_the_light_alternative(store, tmp_path):
    png, _ = make_figure(store, [0, 1, 2], list(DEFAULT_MODELS[:2]), tmp_path / "grid", dpi=100)
    small, = make_figure(store, [0, 1, 2], list(DEFAULT_MODELS[:2]), tmp_path / "small", dpi=50, pdf=False)
    with Image.open(png) as a, Image.open(small) as b:
        assert a.format == "PNG" and abs(a.width - 2 * b.width) <= 2 and abs(a.height - 2 * b.height) <= 2
    for fmt, suffix, kind in (("jpeg", ".jpg", "JPEG"), ("webp", ".webp", "WEBP")):
        written = make_figure(store, [0, 1, 2], list(DEFAULT_MODELS[:2]), tmp_path / fmt, dpi=100, fmt=fmt, quality=80)
        assert [p.suffix for p in written] == [suffix, ".pdf"]
        with Image.open(written[0]) as im, Image.open(png) as ref:
            assert im.format == kind and im.size == ref.size
        assert written[0].stat().st_size < png.stat().st_size
    with pytest.raises(ValueError, match="--format 'gif'"):
        make_figure(store, [0], list(DEFAULT_MODELS[:1]), tmp_path / "x", fmt="gif")


def test_cli_figure_format_quality_and_no_pdf(store, tmp_path, capsys):
    out = tmp_path / "slides.png"
    assert main(["figure", "--store", str(store), "--classes", "0-2", "--output", str(out), "--dpi", "50",
                 "--format", "webp", "--quality", "70", "--no-pdf"]) == 0
    assert out.with_suffix(".webp").is_file() and not out.with_suffix(".pdf").exists() and not out.exists()
    capsys.readouterr()
    for bad in (["--quality", "0"], ["--quality", "high"], ["--format", "gif"]):
        with pytest.raises(SystemExit) as e:
            main(["figure", "--store", str(store), "--classes", "0", "--output", str(out), *bad])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("lens figure: error:") and ("--quality" in err[-1] or "--format" in err[-1]), err
