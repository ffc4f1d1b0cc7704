"""Typed store records: the unit of work, meta.json and model.json validated on read."""

from __future__ import annotations

import pytest

from generator.records import SCHEMA, Meta, ModelCard, Unit

SCHEMA_1 = {  # a meta.json as written before records.py (schema 1): it must still read
    "schema": 1, "model": "m", "class_index": 7, "wnid": "n01518878", "class_name": "ostrich",
    "maco": {"status": "done", "settings_hash": "abc", "files": {"image": "maco.abc.png", "alpha": "maco_alpha.abc.png"},
             "self_prob": 0.5, "self_rank": 1, "quality": {"transfer": {"b": {"rank": 3, "prob": 0.1}}, "plausibility": None}},
    "craft": {"status": "done", "settings_hash": "def", "n_images": 3, "image_selection": "all", "nmf_error": None,
              "files": {"directions": "concepts/directions.def.npy"}},
    "concepts": [{"id": 2, "rank": 1, "importance": 0.7, "logit_share": None,
                  "crops": [{"file": "concepts/2/crop_0.def.jpg", "source": "x.jpg", "box": [0, 0, 1, 1]}],
                  "attributions": [{"file": "concepts/2/attribution_0.def.jpg", "source": "x.jpg"}],
                  "maco": {"status": "failed", "settings_hash": "ghi", "error": "boom", "attempts": 3}}],
}


def test_unit_ids_parse_in_one_place():
    for text in ("m/0007/maco", "m/0007/craft", "efficientnet-lite0/0999/concept/12"):
        assert Unit.parse(text).id == text
    u = Unit.parse("a.b/0003/concept/4")
    assert (u.model, u.class_index, u.kind, u.concept, u.part, u.folder) == ("a.b", 3, "concept", 4, "concept/4", "concepts/4/")
    assert Unit.of("m", 3, "concept/4") == u.__class__("m", 3, "concept", 4)
    for bad in ("m/0003/concept", "m/x/maco", "m/0003/other", "m/0003/concept/-1"):
        with pytest.raises(ValueError):
            Unit.parse(bad)
    with pytest.raises(ValueError):
        Unit("m", 1, "maco", 3)


def test_schema_1_reads_and_writes_back_the_same_layout():
    meta = Meta.from_json_obj(SCHEMA_1)
    assert meta.record(Unit("m", 7, "concept", 2)).error == "boom"
    assert meta.files_of(Unit("m", 7, "craft")) == ["concepts/directions.def.npy", "concepts/2/crop_0.def.jpg",
                                                   "concepts/2/attribution_0.def.jpg"]
    out = meta.to_json_obj()
    assert out["schema"] == SCHEMA
    for key in ("model", "class_index", "wnid", "class_name"):
        assert out[key] == SCHEMA_1[key]
    assert out["maco"]["files"] == SCHEMA_1["maco"]["files"]
    assert out["maco"]["quality"]["transfer"] == {"b": {"rank": 3, "prob": 0.1}}
    assert out["concepts"][0]["crops"][0]["box"] == [0, 0, 1, 1]


def test_extra_fields_survive_a_rewrite():
    meta = Meta.from_json_obj({**SCHEMA_1, "added_later": {"x": 1}, "maco": {**SCHEMA_1["maco"], "new_field": 2}})
    out = meta.to_json_obj()
    assert out["added_later"] == {"x": 1} and out["maco"]["new_field"] == 2


@pytest.mark.parametrize("bad, words", [
    ([], "JSON object"),
    ({**SCHEMA_1, "schema": 99}, "schema 99"),
    ({**SCHEMA_1, "class_index": "seven"}, "class_index"),
    ({**SCHEMA_1, "maco": {"status": "finished", "settings_hash": "a"}}, "maco.status"),
    ({**SCHEMA_1, "concepts": [{"rank": 1}]}, "concepts.0.id"),
    ({k: v for k, v in SCHEMA_1.items() if k != "wnid"}, "wnid"),
])
def test_wrong_shapes_are_refused_naming_the_field(bad, words):
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        Meta.from_json_obj(bad)


def test_no_images_is_a_state_of_its_own():
    meta = Meta.from_json_obj({**SCHEMA_1, "craft": {"status": "no-images", "settings_hash": "d", "n_images": 0,
                                                    "reason": "no usable image for this class"}, "concepts": []})
    assert not meta.craft.done and not meta.craft.failed and meta.craft.status == "no-images"


def test_model_card_reads_cards_without_a_schema():
    card = ModelCard.from_json_obj({"name": "m", "arch": "resnet", "params": 10, "accuracy": None})
    assert card.to_json_obj()["schema"] == SCHEMA and card.to_json_obj()["accuracy"] is None
    with pytest.raises(ValueError):
        ModelCard.from_json_obj({"arch": "resnet"})


def test_former_free_form_fields_are_typed_and_old_files_read_unchanged():
    """model.json's preprocess / accuracy / head and CRAFT's deletion, as stores before the typed records wrote them."""
    from generator.records import Accuracy, Deletion, HeadRecord, ModelCard, Preprocess

    old_card = {"name": "m", "arch": "a", "weights": "w", "key_map": None, "description": None, "params": 5,
                "preprocess": {"input_size": 224, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                               "crop_pct": 0.875},
                "concept_layer": "blocks.5", "accuracy": {"top1": 0.75, "n_images": 1000, "source": "/data"},
                "head": {"file": "head.npz", "kind": "linear", "key": "v1|a"}}
    card = ModelCard.from_json_obj(old_card)
    assert isinstance(card.preprocess, Preprocess) and isinstance(card.accuracy, Accuracy) and isinstance(card.head, HeadRecord)
    assert card.accuracy.top1 == 0.75 and card.head.kind == "linear"
    assert [k for k, _ in card.preprocess.items()] == ["input_size", "mean", "std", "interpolation", "crop_pct"]
    assert card.to_json_obj() == {"schema": 2, **old_card}  # written back as it was read
    card.accuracy = {"top1": 0.5, "n_images": 3, "source": "s"}  # writers assign dicts: kept as the record
    assert isinstance(card.accuracy, Accuracy)
    deletion = {"auc_importance": 0.2, "auc_random": 0.4, "curve_importance": [1.0, 0.5], "curve_random": [1.0, 0.8]}
    meta = Meta.from_json_obj({"schema": 1, "model": "m", "class_index": 1, "wnid": "n0", "class_name": "x",
                               "craft": {"status": "done", "settings_hash": "h", "deletion": deletion, "future": 1}})
    assert isinstance(meta.craft.deletion, Deletion) and meta.craft.deletion.auc_random == 0.4
    assert meta.to_json_obj()["craft"]["deletion"] == deletion and meta.to_json_obj()["craft"]["future"] == 1
