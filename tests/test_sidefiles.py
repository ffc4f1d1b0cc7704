"""The store's side files (generator/sidefiles.py): one owner of their names, formats, writers and readers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from generator import sidefiles
from generator.records import HeadRecord
from generator.store import Store


def test_the_side_file_module_is_torch_free():
    check = "import sys, generator.sidefiles, generator.site.reading; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)


def test_class_files_are_written_under_their_names_and_read_back(tmp_path):
    store = Store(tmp_path)
    rng = np.random.default_rng(0)
    per_image = sidefiles.PerImage(rng.random((3, 2), dtype=np.float32), rng.random((3, 2), dtype=np.float32), ["a", "b", "c"])
    pictures = [Image.new("RGB", (80, 80), (40 * i, 0, 0)) for i in range(3)]
    files = sidefiles.ClassFiles(store, "m", 7, "abcd1234", pictures, per_image)
    vectors = rng.random((2, 5), dtype=np.float32)
    assert files.directions(vectors) == sidefiles.directions_name("abcd1234") == "concepts/directions.abcd1234.npy"
    written = files.write()
    assert written == {"per_image": sidefiles.per_image_name("abcd1234"), "thumbs": sidefiles.thumbs_name("abcd1234")}
    assert files.photo(1) == files.photo(1) == sidefiles.photo_name(1, "abcd1234")
    class_dir = store.class_dir("m", 7)
    assert files.written == {*written.values(), "concepts/directions.abcd1234.npy", files.photo(1)}
    assert np.array_equal(sidefiles.read_directions(class_dir / "concepts/directions.abcd1234.npy"), vectors)
    back = sidefiles.read_per_image(class_dir / written["per_image"], 2)
    assert np.array_equal(back.coefficients, per_image.coefficients) and np.array_equal(back.importance, per_image.importance)
    assert back.sources == ["a", "b", "c"]
    with Image.open(class_dir / written["thumbs"]) as sheet, Image.open(class_dir / files.photo(1)) as photo:
        assert sheet.size == (3 * sidefiles.THUMB_CELL, sidefiles.THUMB_CELL)
        assert photo.size == (sidefiles.PHOTO_SIZE, sidefiles.PHOTO_SIZE)
    with pytest.raises(sidefiles.SideFileError):
        sidefiles.read_per_image(class_dir / written["per_image"], 3)  # one column per concept, or it is refused
    with pytest.raises(sidefiles.SideFileError):
        sidefiles.read_directions(class_dir / "concepts/directions.missing.npy")


def test_without_per_image_records_only_the_directions_are_written(tmp_path):
    files = sidefiles.ClassFiles(Store(tmp_path), "m", 1, "t", [Image.new("RGB", (8, 8))], None)
    assert files.write() == {} and files.written == set()


def test_the_head_is_written_once_per_key_and_recorded_in_model_json(tmp_path):
    store = Store(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return np.eye(3, 4, dtype=np.float32), np.zeros(3, np.float32), "gradient"

    assert sidefiles.write_head(store, "m", "k1", compute) == "gradient"
    assert sidefiles.write_head(store, "m", "k1", compute) == "gradient" and len(calls) == 1  # current: not recomputed
    assert store.model_card("m").head == HeadRecord(file=sidefiles.HEAD, kind="gradient", key="k1")
    head = sidefiles.read_head(tmp_path / "m")
    assert head.kind == "gradient" and np.array_equal(head.weight, np.eye(3, 4)) and head.bias.shape == (3,)
    assert sidefiles.write_head(store, "m", "k2", lambda: 1 / 0) is None  # a head that fails is logged, not raised
    assert store.model_card("m").head.key == "k1"


def test_region_strips_have_one_square_per_crop_and_read_back(tmp_path):
    crops = [Image.new("RGB", (60 + 10 * i, 50), (30 * i, 80, 0)) for i in range(4)]
    maps = [np.outer(np.arange(7), np.arange(7)).astype(np.float32) * (i + 1) for i in range(4)]
    assert sidefiles.region_strips(tmp_path, 3, "h1") is None
    stem = sidefiles.write_region_strips(tmp_path, 3, "h1", crops, maps)
    assert stem == sidefiles.region_stem(3, "h1") == "dictionary/regions/0003.h1"
    photos, heat = sidefiles.region_strips(tmp_path, 3, "h1")
    assert (photos.name, heat.name) == ("0003.h1.webp", "0003.h1.heat.webp")
    side = sidefiles.REGION_SIDE
    with Image.open(photos) as p, Image.open(heat) as h:
        assert (p.size, p.mode) == ((4 * side, side), "RGB")
        assert (h.size, h.mode) == ((4 * side, side), "RGBA")
        alpha = np.asarray(h)[..., 3]
    # One scale for the strip: the last map is 4x the first, so its cell is the most opaque.
    cells = [alpha[:, i * side:(i + 1) * side].mean() for i in range(4)]
    assert cells == sorted(cells) and cells[0] < cells[-1] and alpha.max() == 255
    with pytest.raises(ValueError):
        sidefiles.write_region_strips(tmp_path, 4, "h1", crops, maps[:2])


def test_a_region_strip_holds_at_most_top_regions_crops():
    crops = [Image.new("RGB", (32, 32))] * (sidefiles.TOP_REGIONS + 3)
    assert sidefiles.region_strip(crops).size == (sidefiles.TOP_REGIONS * sidefiles.REGION_SIDE, sidefiles.REGION_SIDE)


def test_codes_round_trip_and_refuse_wrong_shapes(tmp_path):
    rng = np.random.default_rng(1)
    indices = rng.integers(0, 300, (3, 12, 4))
    values = rng.random((3, 12, 4))
    codes = sidefiles.Codes(["a.jpg", "a.jpg#flip", "b.jpg"], (3, 4), indices, values)
    rel = sidefiles.write_codes(tmp_path, "h2", codes)
    assert rel == sidefiles.codes_name("h2") == "dictionary/codes.h2.npz"
    back = sidefiles.read_codes(tmp_path / rel)
    assert back.sources == codes.sources and back.grid == (3, 4)
    assert back.indices.dtype == np.int16 and back.values.dtype == np.float16
    np.testing.assert_array_equal(back.indices, indices)
    np.testing.assert_allclose(back.values, values, rtol=1e-3)
    with pytest.raises(ValueError):
        sidefiles.codes_npz(sidefiles.Codes(["a"], (3, 4), indices, values))  # 3 rows for 1 view
    with pytest.raises(ValueError):
        sidefiles.codes_npz(sidefiles.Codes(["a", "b", "c"], (3, 4), indices + 2**15, values))  # beyond int16
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(sidefiles.SideFileError):
        sidefiles.read_codes(tmp_path / "bad.npz")
