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
