"""Matches between two models' dictionaries written by the render (generator/workers/dictionary_matches.py)."""

from __future__ import annotations

import json

import pytest

from generator.store import Store, atlas_record, dictionary_matches, match_path
from tests.conftest import write_dictionary_zoo
from tests.rendering import render

SMALL = "{atoms: 16, k: 2, epochs: 2, batch_size: 64, tokens_per_image: 8, max_images: 4}"
TWIN = "  - name: twin\n    arch: test_resnet\n    weights: {file: tiny.safetensors}\n    input_size: 64\n"


@pytest.fixture()
def config(tmp_path, tiny_images):
    path = write_dictionary_zoo(tmp_path / "zoo", tiny_images, SMALL)
    path.write_text(path.read_text() + TWIN)
    return path


def test_two_models_dictionaries_are_matched_once_both_are_done(config, tmp_path):
    out = tmp_path / "store"
    assert render(config, out, "--what", "dictionary") == 0
    store = Store(out)
    found = dictionary_matches(store, "twin", "tiny")
    assert found is not None and found.models == ["tiny", "twin"] and match_path(store, "twin", "tiny").name == "tiny--twin.json"
    assert found.n_images == 6 and found.grid == [2, 2] and 0 < found.threshold < 1
    # The twin is the same network with the same dictionary settings: the same dictionary, so every
    # matched atom is matched to itself, both ways, with a correlation of 1.
    assert found.a_to_b and found.mutual_rate == 1.0
    for side in (found.a_to_b, found.b_to_a):
        assert all(int(k) == m.atom and m.mutual and m.score == pytest.approx(1.0) for k, m in side.items())
    alive = [a.index for a in atlas_record(store, "tiny").atoms if a.alive]
    assert set(map(int, found.a_to_b)) <= set(alive)
    path = match_path(store, "tiny", "twin")
    stamp = path.stat().st_mtime_ns
    assert render(config, out, "--what", "dictionary") == 0
    assert path.stat().st_mtime_ns == stamp  # current: not computed again


def test_a_model_whose_dictionary_changed_is_matched_again_and_a_broken_pair_fails_alone(config, tmp_path, monkeypatch):
    from generator.workers import dictionary_matches as module

    out = tmp_path / "store"
    monkeypatch.setattr(module, "match_codes", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broken matching")))
    assert render(config, out, "--what", "dictionary") == 1  # the dictionaries are done, the pair failed
    assert dictionary_matches(Store(out), "tiny", "twin") is None
    events = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert any(e["event"] == "unit_failed" and e["units"] == ["dictionary-matches/tiny--twin"] for e in events)
    monkeypatch.undo()
    assert render(config, out, "--what", "dictionary") == 0  # retried
    before = dictionary_matches(Store(out), "tiny", "twin")
    config.write_text(config.read_text().replace(TWIN, TWIN + "    dictionary: {seed: 5}\n"))
    assert render(config, out, "--what", "dictionary") == 0
    after = dictionary_matches(Store(out), "tiny", "twin")
    assert after.dictionaries[0] == before.dictionaries[0] and after.dictionaries[1] != before.dictionaries[1]
