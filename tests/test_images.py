"""Images of every mode load as 8-bit RGB with their value range kept; decompression bombs are refused."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generator import images
from generator.images import load_rgb


def test_16_bit_grayscale_keeps_its_range(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 16).reshape(16, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    rgb = np.asarray(load_rgb(path))
    assert rgb.shape == (16, 64, 3) and rgb.min() == 0 and rgb.max() == 255
    assert abs(int(rgb[8, 32, 0]) - round(ramp[8, 32] / 257)) <= 1  # scaled from 16 bits, not clipped at 255


def test_32_bit_and_float_images_keep_their_range(tmp_path):
    as_int = Image.fromarray((np.arange(256, dtype=np.int32).reshape(16, 16) * 256))  # mode I, 16-bit values
    assert as_int.mode == "I"
    out = np.asarray(images._to_rgb(as_int))
    assert out.max() == 254 and out[8, 0, 0] in (127, 128)  # 65280 and 32768 of 65535, not clipped at 255
    as_float = Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16))
    out = np.asarray(images._to_rgb(as_float))
    assert out.min() == 0 and out.max() == 255


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"])
def test_every_mode_converts_to_rgb(tmp_path, mode):
    im = Image.new(mode, (8, 8))
    assert images._to_rgb(im).mode == "RGB" and images._to_rgb(im).size == (8, 8)


def test_transparent_pixels_become_white():
    im = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert np.asarray(images._to_rgb(im))[0, 0].tolist() == [255, 255, 255]


def test_bomb_limit_fits_photos(tmp_path, monkeypatch, caplog):
    assert images.MAX_PIXELS >= 16320 * 12240  # a 200-megapixel phone photo
    path = tmp_path / "big.png"
    Image.new("RGB", (300, 200)).save(path)
    monkeypatch.setattr(images, "MAX_PIXELS", 300 * 200 - 1)
    assert load_rgb(path) is None
    assert "over the" in caplog.text and "big.png" in caplog.text
