"""The dictionary's atlas (generator/dictionary_atlas.py) and the dictionary unit writing it, on the tiny random model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from generator.classes import imagenet_class
from generator.dictionary_atlas import compute_atlas, regions
from generator.images import augmented, load_class_images
from generator.sae import TopKSAE
from tests.conftest import TINY_CLASSES, write_dictionary_zoo
from tests.rendering import CLASSES, render


@pytest.fixture(scope="module")
def views(tiny_images):
    photos, classes = [], []
    for c in TINY_CLASSES:
        found = load_class_images(tiny_images, imagenet_class(c).wnid)
        photos += found
        classes += [[c]] * len(found)
    views = augmented(photos)
    return views, [classes[i // 10] for i in range(len(views))]


def random_sae(model, atoms=12, k=2, seed=0):
    return TopKSAE(model.num_concept_channels, atoms, k, torch.Generator().manual_seed(seed),
                   torch.zeros(model.num_concept_channels)).eval()


def test_augmentation_gives_ten_named_views_per_photo(views):
    found, _ = views
    assert len(found) == 10 * 2 * len(TINY_CLASSES)
    ids = [v.source for v in found[:10]]
    assert ids[0].endswith("img_0.jpg") and ids[1] == ids[0] + "#flip" and ids[2] == ids[0] + "#crop0"
    assert ids[3] == ids[0] + "#crop0+flip" and len(set(ids)) == 10
    assert found[2].image.size == (72, 54)  # 0.75 of 96 x 72


def test_the_atlas_adds_up_and_does_not_depend_on_the_batch(tiny_model, views):
    found, classes = views
    sae = random_sae(tiny_model)
    a = compute_atlas(tiny_model, sae, found, classes, seed=3, batch=7)
    b = compute_atlas(tiny_model, sae, found, classes, seed=3, batch=32)
    grid = a.grid.h * a.grid.w
    assert a.n_views == len(found) and a.n_tokens == len(found) * grid
    assert a.indices.shape == (len(found), grid, 2) and a.indices.dtype == np.int16
    assert sorted(a.shares) == list(TINY_CLASSES)
    for c, s in a.shares.items():
        assert s["n_images"] == 20
        assert float(np.sum(s["atoms"])) + s["bias"] + s["residual"] == pytest.approx(100, abs=1e-4)
    np.testing.assert_allclose(a.frequency, b.frequency)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.cooccur == b.cooccur and a.xy == b.xy and a.peaks == b.peaks
    for c in TINY_CLASSES:
        np.testing.assert_allclose(a.shares[c]["atoms"], b.shares[c]["atoms"], atol=1e-9)
    alive = set(np.flatnonzero(a.frequency > 0).tolist())
    assert set(a.xy) == alive and all(0 <= v <= 1 for p in a.xy.values() for v in p)
    for atom, partners in a.cooccur.items():
        assert len(partners) <= 5 and all(0 < j <= 1 for _, j in partners)
        assert [j for _, j in partners] == sorted((j for _, j in partners), reverse=True)
    assert a.shown(5) and set(a.shown(5)) <= alive


def test_jaccard_counts_tokens_where_both_atoms_fire(tiny_model, views):
    found, classes = views
    sae = random_sae(tiny_model, atoms=6, k=2, seed=1)
    atlas = compute_atlas(tiny_model, sae, found, classes, seed=0)
    z = []
    from generator.tokens import stream_tokens

    for part in stream_tokens(tiny_model, [v.image for v in found]):
        t = part.tokens.float().cpu()
        z.append(sae.encode(t.reshape(-1, t.shape[-1])))
    fires = torch.cat(z) > 0
    for a, partners in atlas.cooccur.items():
        for b, score in partners:
            both, either = (fires[:, a] & fires[:, b]).sum(), (fires[:, a] | fires[:, b]).sum()
            assert score == pytest.approx(float(both / either))


def test_the_map_is_seeded(tiny_model, views):
    from generator.dictionary_atlas import atom_map

    rows = torch.nn.functional.normalize(torch.randn(12, 16, generator=torch.Generator().manual_seed(0)), dim=1).numpy()
    atoms = np.arange(12) * 2
    first = atom_map(rows, atoms, 0)
    assert first == atom_map(rows, atoms, 0) and sorted(first) == atoms.tolist()
    assert {min(p[0] for p in first.values()), max(p[0] for p in first.values())} == {0.0, 1.0}
    assert atom_map(rows[:1], atoms[:1], 0) == {0: (0.0, 0.0)}


def test_regions_are_crops_with_their_code_maps_one_per_photo(tiny_model, views):
    found, classes = views
    sae = random_sae(tiny_model)
    atlas = compute_atlas(tiny_model, sae, found, classes, seed=0, regions=4)
    shown = atlas.shown(5)
    out = regions(tiny_model, sae, found, {a: atlas.peaks[a] for a in shown}, side=32, out_size=128)
    for atom in shown:
        peaks = atlas.peaks[atom]
        assert 1 <= len(peaks) <= 4 and [p[0] for p in peaks] == sorted((p[0] for p in peaks), reverse=True)
        photos = [found[v].source.split("#")[0] for _, v, _ in peaks]
        assert len(set(photos)) == len(photos)  # one view per photo
        assert [r.view for r in out[atom]] == [v for _, v, _ in peaks]
        for r in out[atom]:
            assert isinstance(r.crop, Image.Image) and r.crop.size == (128, 128)
            assert r.code_map.shape == (32, 32) and r.code_map.min() >= 0 and r.code_map.max() > 0


SMALL = "{atoms: 16, k: 2, epochs: 2, batch_size: 64, tokens_per_image: 8, max_images: 4, augment: true}"


@pytest.fixture()
def config(tmp_path, tiny_images):
    return write_dictionary_zoo(tmp_path / "zoo", tiny_images, SMALL)


def test_the_dictionary_unit_writes_its_atlas_regions_and_codes(config, tmp_path, monkeypatch):
    from generator import sidefiles
    from generator.store import Store, atlas_record, dictionary_record, write_dictionary_record
    from generator.workers import dictionary_unit

    out = tmp_path / "store"
    assert render(config, out, "--what", "dictionary") == 0
    store = Store(out)
    record = dictionary_record(store, "tiny")
    assert record.augmented and record.n_photos == 6 and record.n_images == 60 and "atlas" in record.timings_s
    atlas = atlas_record(store, "tiny")
    assert atlas is not None and atlas.augmented and atlas.n_images == 60 and atlas.n_photos == 6
    assert len(atlas.atoms) == 16 and sorted(atlas.classes) == [str(c) for c in TINY_CLASSES]
    for key, c in atlas.classes.items():
        shares = [t.share for t in c.top]
        assert c.n_images == 20 and 1 <= len(c.top) <= 5 and shares == sorted(shares, reverse=True) and min(shares) > 0
        for t in c.top:  # the same share seen from the atom's side (3 classes: every user is listed)
            assert atlas.atom(t.atom).shown and (int(key), t.share) in [(u.class_index, u.share) for u in atlas.atom(t.atom).classes]
    for k in atlas.shown:
        strips = sidefiles.region_strips(out / "tiny", k, record.settings_hash)
        assert strips is not None and atlas.atom(k).regions == sidefiles.region_stem(k, record.settings_hash)
        with Image.open(strips[0]) as im:
            assert im.height == sidefiles.REGION_SIDE and im.width % sidefiles.REGION_SIDE == 0
    codes = sidefiles.read_codes(out / "tiny" / record.files["codes"])
    assert codes.grid == (2, 2) and len(codes.sources) == 60 and codes.sources[1].endswith("#flip")
    # A dictionary trained before its atlas gets one without training again.
    atoms = (out / "tiny" / record.files["atoms"]).read_bytes()
    (out / "tiny" / record.files.pop("atlas")).unlink()
    write_dictionary_record(store, "tiny", record)
    monkeypatch.setattr(dictionary_unit, "train_sae", lambda *a, **k: pytest.fail("trained again"))
    assert render(config, out, "--what", "dictionary") == 0
    assert atlas_record(store, "tiny") == atlas
    assert (out / "tiny" / record.files["atoms"]).read_bytes() == atoms
    assert json.loads((out / "tiny" / "dictionary.json").read_text())["epochs"] == 2


def test_a_failed_atlas_keeps_the_training_reads_failed_and_is_retried(config, tmp_path, monkeypatch, capsys):
    from generator.cli import main
    from generator.store import Store, dictionary_record
    from generator.workers import dictionary_unit

    real = dictionary_unit._write_atlas

    def broken(*args, **kwargs):
        raise RuntimeError("atlas broke")

    monkeypatch.setattr(dictionary_unit, "_write_atlas", broken)
    out = tmp_path / "store"
    assert render(config, out, "--what", "dictionary") == 1
    record = dictionary_record(Store(out), "tiny")
    assert record.done and "atoms" in record.files and "atlas" not in record.files and "atlas broke" in record.error
    capsys.readouterr()
    assert main(["status", "--config", str(config), "--classes", CLASSES, "--store", str(out), "--what", "dictionary"]) == 1
    text = capsys.readouterr().out
    assert "tiny/dictionary: RuntimeError: atlas broke" in text  # failed with its reason, not "missing"
    monkeypatch.setattr(dictionary_unit, "_write_atlas", real)
    monkeypatch.setattr(dictionary_unit, "train_sae", lambda *a, **k: pytest.fail("trained again"))
    assert render(config, out, "--what", "dictionary") == 0  # the next run makes the atlas from the kept atoms
    record = dictionary_record(Store(out), "tiny")
    assert "atlas" in record.files and record.error is None
