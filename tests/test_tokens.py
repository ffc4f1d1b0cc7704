"""The streamed token pass and CRAFT's token mode, on the tiny random model."""

from __future__ import annotations

import torch

from generator import craft
from generator.config import CraftSettings, settings_hash
from generator.images import load_class_images
from generator.tokens import as_tokens, stream_tokens, token_box, token_boxes


def test_stream_gives_each_image_its_tokens_in_bounded_batches(tiny_model, tiny_images):
    images = [s.image for s in load_class_images(tiny_images, "n01443537")] * 3  # 6 photos
    batches = list(stream_tokens(tiny_model, images, batch=4, flips=True))
    assert [len(b.indices) for b in batches] == [4, 4, 4]
    assert [i for b in batches for i in b.indices] == list(range(12))
    c, h, w = tiny_model.act_shape
    assert all(b.tokens.shape == (len(b.indices), h * w, c) and b.grid == (h, w) for b in batches)
    x = tiny_model.image_transform()(images[0].convert("RGB"))[None]
    with torch.no_grad():
        direct = as_tokens(tiny_model, tiny_model.g(x))
        mirrored = as_tokens(tiny_model, tiny_model.g(torch.flip(x, dims=(-1,))))
    torch.testing.assert_close(batches[0].tokens[0], direct[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(batches[0].tokens[1], mirrored[0], rtol=1e-4, atol=1e-5)


def test_token_boxes_lie_inside_the_input_and_follow_the_grid():
    assert token_box(0, (7, 7), 224, 64) == (0, 0, 64, 64)
    assert token_box(48, (7, 7), 224, 64) == (160, 160, 224, 224)
    x0, y0, x1, y1 = token_box(24, (7, 7), 224, 64)  # the centre position
    assert (x0 + x1) / 2 == 112 and (y0 + y1) / 2 == 112
    assert token_box(3, (2, 2), 32, 64) == (0, 0, 32, 32)  # a patch larger than the input is the input


def test_craft_token_mode_factorises_the_images_own_tokens(tiny_model, tiny_images):
    settings = CraftSettings(rank=3, top_crops=3, sobol_designs=8, nmf_iters=50, mode="tokens")
    images = load_class_images(tiny_images, "n01443537")
    r = craft.run_craft(tiny_model, images, 1, settings)
    c, h, w = tiny_model.act_shape
    assert r.maps.shape == (2, h, w, 3) and 0 <= r.nmf_error < 1
    boxes = set(token_boxes(tiny_model, craft.patch_side(tiny_model, settings)))
    size = tiny_model.preprocess.input_size
    for concept in r.concepts:
        assert len(concept.crops) == 3
        for crop in concept.crops:
            assert crop.box in boxes and 0 <= crop.box[0] < crop.box[2] <= size and 0 <= crop.view < 2
    # The crops are the tokens with the largest codes: their coefficients are the concept's map maxima.
    top = r.concepts[0]
    assert top.crops[0].coefficient == float(r.maps[..., top.id].max())


def test_token_mode_keeps_the_patch_settings_hash():
    """`mode` came later: at its default the dump (and every stored settings hash) is as before."""
    assert "mode" not in CraftSettings().model_dump(mode="json")
    assert CraftSettings(mode="tokens").model_dump()["mode"] == "tokens"
    assert settings_hash(CraftSettings()) != settings_hash(CraftSettings(mode="tokens"))
