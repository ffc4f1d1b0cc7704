"""The concept atlas's data written by the render (generator/concept_data.py computes it, generator/sidefiles.py
writes it): per-image records, thumbnails, photos under the heatmaps and the model's head, as the site's relations read them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from generator import concept_data, sidefiles
from generator.cli import main
from generator.config import load_zoo
from generator.images import load_class_images
from generator.models import load_model
from generator.site import relations as R
from generator.store import Store

CLASSES = (1, 2, 3)


def render_craft(config: Path, out: Path, *extra: str) -> None:
    assert main(["render", "--config", str(config), "--classes", "1-3", "--what", "craft", "--out", str(out),
                 "--no-progress", "--device", "cpu", *extra]) == 0


def metas(out: Path) -> dict[int, dict]:
    """meta.json of each class as on disk (the typed records' JSON form)."""
    return {m.class_index: m.to_json_obj() for m in Store(out).iter_meta_records("tiny")}


def records(out: Path) -> dict:
    """The typed records, as the site reads them."""
    return {m.class_index: m for m in Store(out).iter_meta_records("tiny", repair=False)}


@pytest.fixture(scope="module")
def rendered(tiny_config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("atlas") / "store"
    render_craft(tiny_config, out)
    return out


def test_render_writes_per_image_records_thumbnails_and_photos(rendered):
    for c, meta in metas(rendered).items():
        base = rendered / "tiny" / f"{c:04d}"
        craft, concepts = meta["craft"], meta["concepts"]
        n, r = craft["n_images"], len(concepts)
        assert n == 2 and r == 3  # the tiny zoo: 2 photos per class, rank 3
        with np.load(base / craft["files"]["per_image"], allow_pickle=False) as z:
            assert z["coefficients"].dtype == np.float32 and z["coefficients"].shape == (n, r)
            assert z["importance"].dtype == np.float32 and z["importance"].shape == (n, r)
            assert (z["coefficients"] >= 0).all()  # NMF codes
            sources = [str(s) for s in z["sources"]]
            # the mean of the per-image Sobol totals is each concept's importance (column = concept id)
            for concept in concepts:
                assert z["importance"][:, concept["id"]].mean() == pytest.approx(concept["importance"], rel=1e-4, abs=1e-6)
        crop_sources = {x["source"] for concept in concepts for x in concept["crops"]}
        assert crop_sources <= set(sources) and len(sources) == n
        with Image.open(base / craft["files"]["thumbs"]) as im:
            assert im.size == (n * R.THUMB_CELL, R.THUMB_CELL)  # fewer than THUMB_COLS: one row
        photos = set()
        for concept in concepts:
            for a in concept["attributions"]:
                assert a["photo"].startswith("concepts/photos/photo_")
                with Image.open(base / a["photo"]) as photo, Image.open(base / a["file"]) as heat:
                    assert photo.size == heat.size == (256, 256)
                photos.add(a["photo"])
        assert {p.relative_to(base).as_posix() for p in (base / "concepts" / "photos").iterdir()} == photos


def test_thumbnail_grid_is_sixteen_per_row_in_order():
    sheet = sidefiles.thumbs_image([Image.new("RGB", (128, 128), (i * 10, 0, 0)) for i in range(20)])
    assert sheet.size == (16 * 64, 2 * 64)
    # image 17 sits in row 1, column 1
    assert sheet.getpixel((64 + 32, 64 + 32))[0] == 170 and sheet.getpixel((15 * 64 + 32, 32))[0] == 150


def test_head_is_the_linear_classifier_once_per_model(rendered, tiny_model):
    with np.load(rendered / "tiny" / "head.npz", allow_pickle=False) as z:
        weight, bias, kind = z["weight"], z["bias"], str(z["kind"])
    w, b = tiny_model.linear_head
    assert kind == "linear" and weight.dtype == np.float32 and weight.shape == tuple(w.shape) == (1000, weight.shape[1])
    assert np.allclose(weight, w.numpy()) and np.allclose(bias, b.numpy())
    card = json.loads((rendered / "tiny" / "model.json").read_text())
    assert card["head"]["kind"] == "linear" and card["head"]["file"] == "head.npz"


def test_the_site_relations_read_the_rendered_store(rendered, tmp_path):
    m = metas(rendered)
    rel = R.model_relations("tiny", rendered, records(rendered), tmp_path / "cache")
    assert sorted(rel.classes) == list(CLASSES) and rel.head is not None and rel.head.kind == "linear"
    assert all(cc.problem is None and cc.coefficients is not None and cc.sobol is not None for cc in rel.classes.values())
    assert rel.aligned is not None and rel.aligned.shape == (9, R.ALIGNED_TOP) and rel.xy.shape == (9, 2)
    for c in CLASSES:
        cr = R.class_relations(rel, c)
        assert cr.kind == "logit" and cr.problem is None and cr.n_images == 2 and len(cr.points) == 2
        assert cr.thumbs == m[c]["craft"]["files"]["thumbs"] and len(cr.sources) == 2
        assert set(cr.counts) == {k["id"] for k in m[c]["concepts"]} and sum(cr.counts.values()) == 2


def test_per_image_logit_terms_agree_with_the_logit_shares(rendered, tmp_path):
    """With a linear head, the per-image terms the site derives average to CRAFT's logit shares."""
    m = metas(rendered)
    rel = R.model_relations("tiny", rendered, records(rendered), tmp_path / "cache")
    for c in CLASSES:
        cc = rel.classes[c]
        terms, kind = R.per_image_importance(cc.coefficients, cc.sobol, cc.vectors, rel.head.weight[c])
        assert kind == "logit"
        mean = terms.mean(0)
        shares = mean / np.abs(mean).sum()
        for concept in m[c]["concepts"]:
            assert shares[cc.ids.index(concept["id"])] == pytest.approx(concept["logit_share"], rel=1e-3, abs=1e-5)


def test_per_image_terms_are_the_logit_of_the_rebuilt_activations(tiny_model, tiny_images):
    """Each image's terms plus the bias are exactly the class logit of h on its activations rebuilt from concepts."""
    from generator import craft
    from generator.config import CraftSettings

    images = load_class_images(tiny_images, "n01443537")
    result = craft.run_craft(tiny_model, images, 1, CraftSettings(rank=3, top_crops=2, sobol_designs=4, nmf_iters=30))
    W = torch.stack([c.direction for c in sorted(result.concepts, key=lambda c: c.id)])
    weight, bias = tiny_model.linear_head
    terms, _ = R.per_image_importance(result.coefficients.numpy(), None, W.numpy(), weight[1].numpy())
    with torch.no_grad():
        rebuilt = (result.maps @ W).permute(0, 3, 1, 2)  # (N, C, h, w): maps are on the feature grid
        logits = tiny_model.h(rebuilt)[:, 1]
    assert terms.sum(1) + float(bias[1]) == pytest.approx(logits.numpy(), rel=1e-4, abs=1e-4)


def test_a_new_craft_version_prunes_the_old_atlas_files(tiny_config, tmp_path):
    out = tmp_path / "s"
    render_craft(tiny_config, out)
    before = metas(out)[1]
    base = out / "tiny" / "0001"
    old = [before["craft"]["files"]["per_image"], before["craft"]["files"]["thumbs"],
           before["concepts"][0]["attributions"][0]["photo"]]
    render_craft(tiny_config, out, "--rank", "2")
    after = metas(out)[1]
    assert after["craft"]["settings_hash"] != before["craft"]["settings_hash"]
    assert not any((base / f).exists() for f in old)
    with np.load(base / after["craft"]["files"]["per_image"], allow_pickle=False) as z:
        assert z["coefficients"].shape == (2, 2)
    # the head is current: not recomputed on the second run
    assert json.loads((out / "tiny" / "model.json").read_text())["head"]["kind"] == "linear"


def _nonlinear_model(tiny_config: Path, tmp_path: Path):
    text = tiny_config.read_text().replace("    input_size: 64\n", "    input_size: 64\n    concept_layer: layer2.0.act2\n", 1)
    (tmp_path / "models.yaml").write_text(text)
    (tmp_path / "tiny.safetensors").write_bytes((tiny_config.parent / "tiny.safetensors").read_bytes())
    zoo = load_zoo(tmp_path / "models.yaml")
    return load_model(zoo.model("tiny"), zoo.root)


def test_gradient_head_of_a_linear_head_is_the_linear_head(tiny_model, tiny_images):
    images = load_class_images(tiny_images, "n01443537")
    weight, bias = concept_data.gradient_head(tiny_model, images, chunk=300)
    w, b = tiny_model.linear_head
    assert np.allclose(weight, w.numpy(), atol=1e-5) and np.allclose(bias, b.numpy(), atol=1e-4)


def test_gradient_head_linearises_a_nonlinear_head_at_the_mean_activation(tiny_config, tiny_images, tmp_path, monkeypatch):
    model = _nonlinear_model(tiny_config, tmp_path)
    assert model.linear_head is None
    images = load_class_images(tiny_images, "n01443537")
    store = Store(tmp_path / "store")
    assert concept_data.write_head(store, model, "layer2.0.act2", images) == "gradient"
    with np.load(store.root / "tiny" / "head.npz", allow_pickle=False) as z:
        weight, bias, kind = z["weight"], z["bias"], str(z["kind"])
    assert kind == "gradient" and weight.shape == (1000, model.num_concept_channels) and bias.shape == (1000,)
    # a small spatially uniform step d: the logits move by weight . d (first order), and at d = 0
    # weight . pooled + bias is the logit itself
    from generator.craft import make_views

    _, x = make_views(images, model)
    with torch.no_grad():
        a0 = model.g(x).mean(0, keepdim=True)
        d = 1e-3 * torch.randn(1, model.num_concept_channels, generator=torch.Generator().manual_seed(0))
        step = model.h(a0 + d[:, :, None, None]) - model.h(a0)
        at = model.h(a0)[0].numpy()
        pooled = model.pooled(a0)[0].numpy()
    assert np.allclose(step[0].numpy(), weight @ d[0].numpy(), rtol=0.05, atol=2e-5)
    assert np.allclose(weight @ pooled + bias, at, atol=1e-4)
    # current head recorded in model.json: a second call does not recompute it
    monkeypatch.setattr(concept_data, "model_head", lambda *a: pytest.fail("head recomputed"))
    assert concept_data.write_head(store, model, "layer2.0.act2", images) == "gradient"
    # loaded without its concept layer (`--what maco`): nothing written
    assert concept_data.write_head(store, model, "layer3", images) is None
