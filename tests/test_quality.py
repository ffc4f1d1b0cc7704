"""Quality figures: self, transfer and plausibility in meta.json; accuracy in model.json."""

from __future__ import annotations

import json

import pytest
import torch

from generator.cli import main
from generator.quality import plausibility
from generator.store import Store

from .conftest import write_tiny_zoo

SECOND = "  - {name: tiny-b, arch: test_resnet, weights: {file: tiny.safetensors}, input_size: 64}\n"


def test_plausibility_margin_is_same_class_minus_other_classes():
    viz = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), dim=-1)
    refs = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    out = plausibility(viz, [5, 7], refs, [5, 5, 7])
    assert out[0] == pytest.approx({"same_class": 0.8, "other_classes": 0.0, "margin": 0.8})
    assert abs(out[1]["margin"] - (1.0 - 0.4)) < 1e-6
    assert plausibility(viz, [9, 5], refs, [5, 5, 7])[0] is None  # no real image of class 9


def test_quality_command_fills_transfer_plausibility_and_accuracy(tmp_path, tiny_images):
    config = write_tiny_zoo(tmp_path / "zoo", images=tiny_images, extra=SECOND)
    out = tmp_path / "store"
    common = ["--config", str(config), "--classes", "1-3", "--out", str(out), "--no-progress"]
    assert main(["render", *common, "--what", "maco", "--model", "tiny"]) == 0
    assert main(["quality", *common, "--model", "tiny", "--device", "cpu"]) == 0
    for meta in Store(out).iter_metas("tiny"):
        q = meta["maco"]["quality"]
        assert set(q["transfer"]) == {"tiny-b"} and 1 <= q["transfer"]["tiny-b"]["rank"] <= 1000
        p = q["plausibility"]
        assert p["model"] == "tiny-b" and abs(p["margin"] - (p["same_class"] - p["other_classes"])) < 1e-9
        assert 1 <= meta["maco"]["self_rank"] <= 1000
    card = json.loads((out / "tiny-b" / "model.json").read_text())
    assert card["accuracy"]["n_images"] == 6 and 0 <= card["accuracy"]["top1"] <= 1
