"""Quality figures: self, transfer and plausibility in meta.json; accuracy in model.json."""

from __future__ import annotations

import json

import numpy as np
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
    assert main(["quality", *common, "--model", "tiny", "--judges", "tiny,tiny-b", "--device", "cpu"]) == 0
    for meta in (r.to_json_obj() for r in Store(out).iter_meta_records("tiny")):
        q = meta["maco"]["quality"]
        assert set(q["transfer"]) == {"tiny-b"} and 1 <= q["transfer"]["tiny-b"]["rank"] <= 1000
        p = q["plausibility"]
        assert p["model"] == "tiny-b" and abs(p["margin"] - (p["same_class"] - p["other_classes"])) < 1e-9
        assert 1 <= meta["maco"]["self_rank"] <= 1000
    card = json.loads((out / "tiny-b" / "model.json").read_text())
    assert card["accuracy"]["n_images"] == 6 and 0 <= card["accuracy"]["top1"] <= 1


THIRD = "  - {name: tiny-c, arch: test_resnet, weights: {file: tiny.safetensors}, input_size: 96}\n"
BROKEN_JUDGE = "  - {name: gone, arch: test_resnet, weights: {file: gone.safetensors}}\n"


def test_quality_at_scale_selected_incremental_cached(tmp_path, tiny_images, monkeypatch, capsys):
    """Only selected models and classes are scored; a second run scores nothing; reference embeddings
    are cached per judge and images folder; judges are configurable and keep their own input size."""
    from generator import quality

    config = write_tiny_zoo(tmp_path / "zoo", images=tiny_images, extra=SECOND + THIRD)
    out = tmp_path / "store"
    common = ["--config", str(config), "--out", str(out), "--no-progress"]
    assert main(["render", *common, "--classes", "1-3", "--what", "maco", "--model", "tiny,tiny-b"]) == 0
    reads = []
    real_load = quality.load_rgb
    monkeypatch.setattr(quality, "load_rgb", lambda p, *a, **k: reads.append(p) or real_load(p, *a, **k))
    judged = []
    real_classify = quality.classify
    monkeypatch.setattr(quality, "classify", lambda m, ims, cls: judged.append((m.name, m.preprocess.input_size, tuple(cls)))
                        or real_classify(m, ims, cls))
    assert main(["quality", *common, "--classes", "1,2", "--model", "tiny", "--judges", "tiny-b,tiny-c", "--device", "cpu"]) == 0
    assert sorted(judged) == [("tiny-b", 64, (1, 2)), ("tiny-c", 96, (1, 2))]  # tiny-b's renders and class 3 not scored
    assert len(reads) == 2 * 9  # the 9 reference files (3 unreadable), read once per judge
    scored = {m["class_index"]: m for m in (r.to_json_obj() for r in Store(out).iter_meta_records("tiny"))}
    assert set(scored[1]["maco"]["quality"]["transfer"]) == {"tiny-b", "tiny-c"} and "quality" not in scored[3]["maco"]
    assert "quality" not in next(r.to_json_obj() for r in Store(out).iter_meta_records("tiny-b"))["maco"]
    assert len(list((out / ".cache" / "quality").glob("*.npz"))) == 2
    judged.clear()
    reads.clear()
    assert main(["quality", *common, "--classes", "1,2", "--model", "tiny", "--judges", "tiny-b,tiny-c", "--device", "cpu"]) == 0
    assert judged == [] and reads == []  # incremental: nothing left to score
    assert main(["quality", *common, "--classes", "1-3", "--model", "tiny", "--judges", "tiny-b,tiny-c", "--device", "cpu"]) == 0
    assert sorted(judged) == [("tiny-b", 64, (3,)), ("tiny-c", 96, (3,))] and reads == []  # embeddings from the cache
    judged.clear()
    assert main(["quality", *common, "--classes", "1-3", "--model", "tiny", "--judges", "tiny-b", "--device", "cpu"]) == 0
    assert sorted(judged) == [("tiny-b", 64, (1, 2, 3))]  # other judges: scored again


def test_a_judge_that_cannot_load_is_skipped(tmp_path, tiny_images, capsys):
    config = write_tiny_zoo(tmp_path / "zoo", images=tiny_images, extra=SECOND + BROKEN_JUDGE)
    out = tmp_path / "store"
    common = ["--config", str(config), "--out", str(out), "--no-progress", "--classes", "1", "--model", "tiny"]
    assert main(["render", *common, "--what", "maco"]) == 0
    assert main(["quality", *common, "--judges", "gone", "--device", "cpu"]) == 1
    assert "lens: quality: scored 0 class visualizations" in capsys.readouterr().out  # no judge: nothing scored
    assert main(["quality", *common, "--judges", "gone,tiny-b", "--device", "cpu"]) == 1
    assert "lens: quality: scored 1 class visualizations" in capsys.readouterr().out
    q = next(r.to_json_obj() for r in Store(out).iter_meta_records("tiny"))["maco"]["quality"]
    assert set(q["transfer"]) == {"tiny-b"} and "key" not in q  # partial: scored again by the next run


def test_default_judges_are_the_packaged_models_whether_or_not_the_zoo_lists_them(zoo, tmp_path, capsys):
    """A zoo of one's own is judged by the packaged models; its models judge only when named."""
    from generator.config import load_zoo
    from generator.quality import default_judges, judge_entry, quality_key

    packaged = ["efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2"]
    assert default_judges(zoo) == packaged
    own = load_zoo(write_tiny_zoo(tmp_path / "zoo", extra=SECOND))
    assert default_judges(own) == packaged
    assert [judge_entry(own, j).weights.package for j in packaged] == [zoo.model(j).weights.package for j in packaged]
    assert judge_entry(own, "tiny-b") is own.model("tiny-b")
    assert quality_key(own, packaged, "sig", "h") == quality_key(zoo, packaged, "sig", "h")  # the same judges
    with pytest.raises(SystemExit):
        main(["quality", "--help"])
    assert "packaged models efficientnet-lite0,1,2, whether or not the zoo lists them" in " ".join(capsys.readouterr().out.split())


def test_quality_prints_progress_lines_under_no_progress(tmp_path, tiny_images, monkeypatch, capsys):
    """As render does: periodic `lens: progress` lines on stderr instead of a bar (here every line)."""
    config = write_tiny_zoo(tmp_path / "zoo", images=tiny_images, extra=SECOND)
    out = tmp_path / "store"
    common = ["--config", str(config), "--out", str(out), "--no-progress", "--classes", "1,2", "--model", "tiny"]
    assert main(["render", *common, "--what", "maco"]) == 0
    capsys.readouterr()
    monkeypatch.setenv("LENS_PROGRESS_EVERY", "0")
    assert main(["quality", *common, "--judges", "tiny-b", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "judges tiny-b (each embeds 9 reference images once" in err
    lines = [line for line in err.splitlines() if line.startswith("lens: progress quality:")]
    assert len(lines) >= 2 and "11.0/11 units (100%)" in lines[-1]  # 9 reference images, then 2 scores


def test_quality_goes_on_past_an_unusable_meta_json(tmp_path, tiny_images, capsys):
    config = write_tiny_zoo(tmp_path / "zoo", images=tiny_images, extra=SECOND)
    out = tmp_path / "store"
    common = ["--config", str(config), "--out", str(out), "--no-progress", "--classes", "1,2", "--model", "tiny"]
    assert main(["render", *common, "--what", "maco"]) == 0
    (out / "tiny" / "0002" / "meta.json").write_text('{"schema": 2, "model": "tiny"')
    capsys.readouterr()
    assert main(["quality", *common, "--judges", "tiny-b", "--device", "cpu"]) == 0
    assert "0002/meta.json: unusable meta.json" in capsys.readouterr().out
    assert [m.class_index for m in Store(out).iter_meta_records("tiny") if m.maco.quality is not None] == [1]



def test_each_judge_sees_renders_at_its_own_input_size_and_normalisation(tmp_path):
    """A judge with another input size, interpolation and mean/std gets the render resized and normalised its way."""
    import numpy as np
    import torch

    from generator.config import load_zoo
    from generator.models import load_model
    from generator.quality import model_inputs, penultimate

    config = write_tiny_zoo(tmp_path, extra="""  - name: odd
    arch: test_resnet
    weights: {file: tiny.safetensors}
    input_size: 48
    interpolation: bicubic
    mean: [0.5, 0.5, 0.5]
    std: [0.25, 0.25, 0.25]
""")
    zoo = load_zoo(config)
    render = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x01 = torch.from_numpy(render).permute(2, 0, 1)[None].float() / 255
    for name, side, mean, std in (("tiny", 64, None, None), ("odd", 48, 0.5, 0.25)):
        judge = load_model(zoo.model(name), zoo.root)
        x = model_inputs(judge, [render])
        assert x.shape == (1, 3, side, side), name
        resized = torch.nn.functional.interpolate(x01, size=(side, side), mode="bicubic", antialias=True,
                                                  align_corners=False).clamp(0, 1)
        if mean is not None:  # the judge's own normalisation, not the rendering model's
            assert torch.allclose(x, (resized - mean) / std, atol=1e-5)
        assert penultimate(judge, x).shape[0] == 1


def test_color_statistics_in_0_255_units():
    from generator.quality import color_statistics

    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 200, 150, 100  # warm: blue - red = -100, HSV saturation 255 * 100/200
    blue_minus_red, saturation = color_statistics(image)
    assert blue_minus_red == -100 and abs(saturation - 127.5) <= 1
    assert color_statistics(np.full((8, 8, 3), 90, dtype=np.uint8)) == (0.0, 0.0)


def test_blockiness_ranks_axis_aligned_blocks_above_isotropic_texture():
    """Random large rectangles (long straight edges: the blocky backgrounds of issue 22) score high; the same
    rectangles rotated by 45 degrees and isotropic 1/f noise score low: the figure measures axis alignment, not contrast."""
    from PIL import Image, ImageDraw

    from generator.quality import blockiness

    rng = np.random.default_rng(0)
    blocks = Image.new("RGB", (256, 256), (128, 128, 128))
    draw = ImageDraw.Draw(blocks)
    for _ in range(200):
        x, y = rng.integers(0, 256, 2)
        w, h = rng.integers(20, 200, 2)
        draw.rectangle((x, y, x + w, y + h), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    rotated = blocks.resize((512, 512)).rotate(45, resample=Image.Resampling.BICUBIC).crop((128, 128, 384, 384))
    f = np.sqrt(np.fft.fftfreq(256)[:, None] ** 2 + np.fft.fftfreq(256)[None, :] ** 2).clip(1 / 256)
    noise = np.real(np.fft.ifft2(np.exp(2j * np.pi * rng.random((256, 256))) / f))
    noise = ((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8)
    scores = [blockiness(np.asarray(blocks)), blockiness(np.asarray(rotated)), blockiness(np.stack([noise] * 3, -1))]
    assert scores[0] > 0.3 > 0.1 > max(scores[1], scores[2]), scores


def test_plausibility_rank_is_the_rank_of_the_class_by_its_nearest_photo():
    from generator.quality import plausibility_ranks

    refs = torch.eye(4)  # photos of classes 3, 5, 5, 8 along the four axes
    viz = torch.nn.functional.normalize(torch.tensor([[0.1, 0.0, 0.9, 0.2], [0.9, 0.3, 0.0, 0.1], [1.0, 0.0, 0.0, 0.0]]), dim=-1)
    assert plausibility_ranks(viz, [5, 8, 4], refs, [3, 5, 5, 8]) == [1, 3, None]
