"""MACO: parameterisation, crops, objectives, batching invariance, spectrum, finishing; the real model."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from generator import maco
from generator.config import MacoSettings
from generator.spectrum import decorrelate, load_spectrum_file, powerlaw_spectrum, resolve_spectrum, save_spectrum, spectrum_from_images

SMALL = MacoSettings(steps=4, image_size=64, crops=2, input_size=64)


def test_phase_to_image_shapes_and_range():
    mag = powerlaw_spectrum(64).magnitude
    img = maco.phase_to_image(torch.randn(3, 3, 64, 33), mag)
    assert img.shape == (3, 3, 64, 64)
    assert 0 <= img.min() and img.max() <= 1


def test_phase_scaling_leaves_no_bright_corner():
    """A unit-std phase sums coherently at pixel (0, 0); the pi-scaled one must not."""
    torch.manual_seed(0)
    img = maco.phase_to_image(torch.randn(16, 3, 128, 65), powerlaw_spectrum(128).magnitude)
    corner = img[:, :, 0, 0].mean()
    assert abs(float(corner) - float(img.mean())) < 0.15


def keys_of(*seeds: int) -> torch.Tensor:
    return maco.stream_keys(maco.seed_tensor(list(seeds), torch.device("cpu")), 0, maco.STREAM_BOXES)


def test_boxes_stay_inside_and_follow_scale():
    s = MacoSettings(crop_scale=(0.25, 0.5), crops=500)
    boxes = maco.sample_boxes(keys_of(0), s, 100)[0]
    side = boxes[:, 2] - boxes[:, 0]
    assert torch.allclose(side, boxes[:, 3] - boxes[:, 1])
    assert side.min() >= 25 - 1e-4 and side.max() <= 50 + 1e-4
    assert side.max() - side.min() > 20  # they do spread over the scale
    assert boxes.min() >= 0 and boxes.max() <= 100


def test_crops_shape():
    boxes = maco.sample_boxes(keys_of(0, 1, 2), SMALL, 64)
    assert boxes.shape == (3, SMALL.crops, 4)
    crops = maco.random_crops(torch.rand(3, 3, 64, 64), boxes, 32)
    assert crops.shape == (3 * SMALL.crops, 3, 32, 32)


def test_splitmix64_matches_a_python_reference():
    """int64 tensor arithmetic must wrap modulo 2^64 as the hash needs."""
    def splitmix64(x: int) -> int:
        m = (1 << 64) - 1
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
        return x ^ (x >> 31)

    inputs = [0, 1, 12345, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, 0x9E3779B97F4A7C15]
    got = maco.mix64(torch.tensor([maco._signed(x) for x in inputs], dtype=torch.int64)).tolist()
    assert [g & ((1 << 64) - 1) for g in got] == [splitmix64(x) for x in inputs]


def test_counter_draws_have_the_right_moments_and_differ_by_key_and_step():
    seeds = maco.seed_tensor([1, 2], torch.device("cpu"))
    inc = maco.counters(200_000, torch.device("cpu"))
    bits = maco.random_bits(maco.stream_keys(seeds, 0, maco.STREAM_NOISE), inc)
    u, z = maco.uniform_from_bits(bits, torch.float64), maco.normal_from_bits(bits, torch.float64)
    n = maco.noise_from_bits_(bits.clone(), torch.float64)
    assert 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01 and z.abs().max() < 3.47
    assert n.shape == (2, 400_000) and abs(n.mean()) < 0.01 and abs(n.var() - (1 + 1 / 12)) < 0.02  # as N(0, 1) + U(-1/2, 1/2)
    assert n.abs().max() <= 510 * math.sqrt(13 / 12 / 21845) + 1e-9  # 3.59
    assert abs(torch.corrcoef(torch.stack([n[0, 0::2], n[0, 1::2]]))[0, 1]) < 0.01  # the two values of one word
    assert abs(torch.corrcoef(z)[0, 1]) < 0.01  # two keys, independent streams
    later = maco.random_bits(maco.stream_keys(seeds, 1, maco.STREAM_NOISE), inc)
    assert not torch.equal(bits, later) and (bits == later).float().mean() < 1e-3


def test_an_objective_draws_the_same_numbers_in_any_batch():
    alone = maco.sample_boxes(keys_of(7), SMALL, 64)
    batched = maco.sample_boxes(keys_of(3, 7, 9), SMALL, 64)
    assert torch.equal(alone[0], batched[1]) and not torch.equal(batched[0], batched[1])
    n1 = maco.crop_noise(keys_of(7), SMALL, 16)
    n3 = maco.crop_noise(keys_of(3, 7, 9), SMALL, 16)
    assert torch.equal(n1, n3[SMALL.crops : 2 * SMALL.crops])


def test_turned_crops_are_roi_align_crops_turned_and_drawn_per_objective():
    """At 0 degrees a turned crop is roi_align's crop (up to the resampling); at 90 degrees it is that crop
    turned a quarter; the angles come from each objective's own stream, and the boxes stay as without them."""
    x = torch.linspace(0, 1, 64)
    image = torch.stack([x[None, :].expand(64, 64), x[:, None].expand(64, 64), (x[None, :] * x[:, None])])[None]
    boxes = torch.tensor([[[8.0, 12.0, 40.0, 44.0], [16.0, 16.0, 48.0, 48.0]]])
    plain = maco.random_crops(image, boxes, 16)
    level = maco.turned_crops(image, boxes, torch.zeros(1, 2), 16)
    assert (level - plain).abs().max() < 0.02
    quarter = maco.turned_crops(image, boxes, torch.full((1, 2), math.pi / 2), 16)
    assert (quarter - torch.rot90(plain, 1, dims=(-2, -1))).abs().max() < 0.02
    turned = SMALL.model_copy(update={"crop_rotation": 20.0})
    alone, batched = maco.sample_angles(keys_of(7), turned), maco.sample_angles(keys_of(3, 7, 9), turned)
    assert torch.equal(alone[0], batched[1]) and alone.abs().max() <= math.radians(20) and alone.std() > 0
    level_settings = SMALL.model_copy(update={"crop_rotation": 0.0})
    assert torch.equal(maco.sample_boxes(keys_of(7), turned, 64), maco.sample_boxes(keys_of(7), level_settings, 64))
    assert "crop_rotation" not in level_settings.model_dump() and turned.model_dump()["crop_rotation"] == 20.0  # old hashes hold


def test_turned_crops_render_the_same_in_any_batch(tiny_model_f64):
    model = tiny_model_f64
    settings = SMALL.model_copy(update={"steps": 6, "crop_rotation": 15.0})
    objectives = [maco.class_objective(1), maco.class_objective(3)]
    batched = maco.render(model, objectives, settings, powerlaw_spectrum())
    (single,) = maco.render(model, objectives[1:], settings, powerlaw_spectrum())
    assert np.array_equal(single.image, batched[1].image) and np.array_equal(single.alpha, batched[1].alpha)
    (level,) = maco.render(model, objectives[1:], SMALL.model_copy(update={"steps": 6, "crop_rotation": 0.0}), powerlaw_spectrum())
    assert not np.array_equal(level.image, single.image)


def test_lr_decay_follows_a_half_cosine_and_keeps_old_hashes(tiny_model_f64):
    """lr_decay 1 is the constant rate of before (and leaves the settings dump as it was); below 1 the rate falls along a
    half cosine from `lr` to `lr * lr_decay` at the last step, and the render stays batch-invariant."""
    from generator.maco.loop import lr_schedule

    model = tiny_model_f64

    falling = SMALL.model_copy(update={"steps": 5, "lr": 2.0, "lr_decay": 0.1})
    assert lr_schedule(falling) == pytest.approx([2.0, 2.0 * 0.1 + 1.8 * 0.5 * (1 + math.cos(math.pi / 4)), 1.1,
                                                  0.2 + 1.8 * 0.5 * (1 + math.cos(3 * math.pi / 4)), 0.2])
    constant = SMALL.model_copy(update={"lr_decay": 1.0})
    assert lr_schedule(constant) == [SMALL.lr] * SMALL.steps
    assert "lr_decay" not in constant.model_dump() and falling.model_dump()["lr_decay"] == 0.1
    objectives = [maco.class_objective(1), maco.class_objective(3)]
    settings = SMALL.model_copy(update={"steps": 6, "lr_decay": 0.05})
    batched = maco.render(model, objectives, settings, powerlaw_spectrum())
    (single,) = maco.render(model, objectives[1:], settings, powerlaw_spectrum())
    assert np.array_equal(single.image, batched[1].image)
    (steady,) = maco.render(model, objectives[1:], settings.model_copy(update={"lr_decay": 1.0}), powerlaw_spectrum())
    assert not np.array_equal(steady.image, single.image)


def test_host_work_per_step_does_not_depend_on_the_batch(tiny_model):
    """Boxes, crops and noise of all objectives come from a fixed number of batched calls: the operator calls the host
    dispatches per step (profiler, top-level events) are the same for 1 and 32 objectives."""
    spec = powerlaw_spectrum()
    for rotation in (0.0, 15.0):  # turned crops: one grid_sample per crop index, whatever the batch
        settings = SMALL.model_copy(update={"image_size": 32, "input_size": 32, "crop_rotation": rotation})
        _, one = maco.operator_calls_per_step(tiny_model, [maco.class_objective(1)], settings, spec)
        _, many = maco.operator_calls_per_step(tiny_model, [maco.class_objective(c) for c in range(32)], settings, spec)
        assert one == many, f"{one} operator calls per step at B=1, {many} at B=32 (crop_rotation {rotation})"


def test_objective_seed_depends_on_key_not_batch():
    assert maco.objective_seed(0, "m", "class/0001") == maco.objective_seed(0, "m", "class/0001")
    assert maco.objective_seed(0, "m", "class/0001") != maco.objective_seed(0, "m", "class/0002")
    assert maco.objective_seed(0, "m", "class/0001") != maco.objective_seed(1, "m", "class/0001")


def test_objective_needs_exactly_one_target():
    with pytest.raises(ValueError):
        maco.Objective("x")
    with pytest.raises(ValueError):
        maco.Objective("x", class_index=1, direction=torch.ones(3))


def test_dot_cossim_prefers_aligned_features():
    d = torch.tensor([[1.0, 0.0]])
    aligned, oblique = torch.tensor([[2.0, 0.0]]), torch.tensor([[2.0, 2.0]])
    assert maco.dot_cossim(aligned, d, 2.0) > maco.dot_cossim(oblique, d, 2.0)
    # p = 0 is the plain dot product
    assert torch.allclose(maco.dot_cossim(oblique, d, 0.0), torch.tensor([2.0]))


def test_render_shapes_and_alpha(tiny_model):
    spec = powerlaw_spectrum()
    out = maco.render(tiny_model, [maco.class_objective(1)], SMALL, spec)
    (r,) = out
    assert r.image.shape == (64, 64, 3) and r.image.dtype == np.uint8
    assert r.alpha.shape == (64, 64) and r.alpha.max() == 255
    assert r.finite and np.isfinite(r.objective)
    assert r.rgba.shape == (64, 64, 4)


def test_batched_equals_one_at_a_time_exactly_in_float64(tiny_model_f64):
    """The batch only shares passes: each image is exactly what it is when rendered alone.

    Checked in float64, where rounding cannot hide cross-talk. (In float32 the conv kernels round
    differently for other batch sizes, ~1e-3 relative on the first gradient, and MACO's large
    NAdam steps amplify that chaotically over tens of steps, like a change of seed.)
    """
    model = tiny_model_f64
    spec = powerlaw_spectrum()
    direction = torch.rand(model.num_concept_channels)
    objectives = [maco.class_objective(1), maco.direction_objective("concept/0002/0", direction), maco.class_objective(3)]
    settings = SMALL.model_copy(update={"steps": 12})
    batched = maco.render(model, objectives, settings, spec)
    for o, b in zip(objectives, batched):
        (single,) = maco.render(model, [o], settings, spec)
        assert single.key == b.key
        assert abs(single.objective - b.objective) <= 1e-9 * max(1.0, abs(b.objective))
        assert np.array_equal(single.image, b.image)
        assert np.array_equal(single.alpha, b.alpha)


def test_batched_matches_single_in_float32_on_the_first_steps(tiny_model):
    """At float32 the first steps agree to rounding: objectives within 1e-3 relative."""
    spec = powerlaw_spectrum()
    objectives = [maco.class_objective(1), maco.class_objective(2), maco.class_objective(3)]
    settings = SMALL.model_copy(update={"steps": 2})
    batched = maco.render(tiny_model, objectives, settings, spec)
    for o, b in zip(objectives, batched):
        (single,) = maco.render(tiny_model, [o], settings, spec)
        assert abs(single.objective - b.objective) <= 1e-3 * max(1e-2, abs(b.objective))


def test_optimisation_raises_the_objective(tiny_model):
    """Summed over three objectives: each one's score is a noisy sample (random crops on a random model)."""
    spec = powerlaw_spectrum()
    objectives = [maco.class_objective(c) for c in (1, 2, 3)]
    short = maco.render(tiny_model, objectives, SMALL.model_copy(update={"steps": 1}), spec)
    longer = maco.render(tiny_model, objectives, SMALL.model_copy(update={"steps": 12}), spec)
    assert sum(r.objective for r in longer) > sum(r.objective for r in short)


def test_direction_of_wrong_length_is_refused(tiny_model):
    with pytest.raises(ValueError, match="direction has 5 values"):
        maco.render(tiny_model, [maco.direction_objective("concept/0001/0", torch.ones(5))], SMALL, powerlaw_spectrum())


def test_finish_image_clips_percentiles():
    img = torch.rand(3, 32, 32)
    img[0, 0, 0] = 50.0  # an outlier must not squash the rest
    out = maco.finish_image(img, 1.0)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert out.std() > 40


def test_finish_alpha_caps_at_percentile():
    a = torch.zeros(3, 10, 10)
    a[:, :5] = 1.0
    a[:, 9, 9] = 100.0
    out = maco.finish_alpha(a, 90)
    assert out[0, 0] == 255 and out[9, 9] == 255 and out[7, 0] == 0


def test_powerlaw_spectrum_shape_and_decay():
    s = powerlaw_spectrum(64)
    assert s.magnitude.shape == (3, 64, 33)
    assert s.magnitude[0, 0, 1] > s.magnitude[0, 0, 16] > 0
    assert s.resized(32).shape == (3, 32, 17)


def test_spectrum_from_images_and_cache(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(3)]
    s = spectrum_from_images(images, size=32, label="t")
    assert s.magnitude.shape == (3, 32, 17) and s.id.startswith("t-3-")
    save_spectrum(s, tmp_path / "s.npy")
    again = load_spectrum_file(tmp_path / "s.npy")
    assert again.id == s.id and torch.allclose(again.magnitude, s.magnitude)
    with pytest.raises(ValueError, match="expected a \\(3, R, R//2\\+1\\)"):
        np.save(tmp_path / "bad.npy", np.ones((2, 2)))
        load_spectrum_file(tmp_path / "bad.npy")


def test_resolve_spectrum_caches_computed_ones(tmp_path, tiny_images):
    first = resolve_spectrum("images", tmp_path, tiny_images)
    assert list(tmp_path.glob("images-*.npy"))
    assert resolve_spectrum("images", tmp_path, tiny_images).id == first.id
    assert resolve_spectrum("powerlaw", tmp_path).id == "powerlaw-1"
    with pytest.raises(ValueError, match="nor an existing .npy"):
        resolve_spectrum("nope", tmp_path)


def test_decorrelation_inverts_recorrelation():
    x = torch.rand(3, 8, 8)
    back = torch.einsum("chw,cd->dhw", decorrelate(x), maco.COLOR_CORRELATION)
    assert torch.allclose(back, x, atol=1e-5)


@pytest.mark.slow
def test_espresso_visualization_is_seen_as_espresso(lite0, zoo, tmp_path):
    """The real efficientnet-lite0 at the CPU demo settings: the espresso MACO is classified espresso."""
    spec = resolve_spectrum("photos", tmp_path)
    settings = zoo.maco_settings(lite0.entry, zoo.preset("demo").maco)
    (r,) = maco.render(lite0, [maco.class_objective(967)], settings, spec)
    probs, ranks = maco.classify(lite0, [r.image], [967])
    assert ranks[0] == 1, f"espresso ranked {ranks[0]} (p={probs[0]:.3f})"


def test_step_mode_comes_from_the_environment_and_is_checked(monkeypatch, tiny_model):
    from generator.errors import ConfigError

    monkeypatch.delenv(maco.STEP_MODE_ENV, raising=False)
    assert maco.step_mode() == "eager"
    monkeypatch.setenv(maco.STEP_MODE_ENV, "reduce-overhead")
    assert maco.step_mode() == "reduce-overhead" and maco.step_mode("eager") == "eager"
    monkeypatch.setenv(maco.STEP_MODE_ENV, "fast")
    with pytest.raises(ConfigError, match="LENS_MACO_STEP=fast"):
        maco.step_mode()
    with pytest.raises(ConfigError, match="cuda-graph needs a CUDA device; model 'tiny'"):
        maco.render(tiny_model, [maco.class_objective(1)], SMALL, powerlaw_spectrum(), mode="cuda-graph")


@pytest.mark.slow
def test_compiled_step_matches_eager(tiny_model):
    """torch.compile of the step (minutes of compilation on a CPU) gives the eager result up to float32 rounding."""
    spec = powerlaw_spectrum()
    objectives = [maco.class_objective(1), maco.class_objective(2)]
    settings = SMALL.model_copy(update={"steps": 2})
    eager = maco.render(tiny_model, objectives, settings, spec)
    compiled = maco.render(tiny_model, objectives, settings, spec, mode="compile")
    for e, c in zip(eager, compiled):
        assert abs(e.objective - c.objective) <= 1e-2 * max(1e-2, abs(e.objective))


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_a_render_reaches_the_model_and_the_judges_through_one_conversion(tmp_path, interpolation):
    """classify (the self rank) and quality (transfer, plausibility) see the same pixels: the render
    resized with the model's own interpolation, then normalised."""
    from generator import quality
    from generator.config import load_zoo
    from generator.models import load_model

    from .conftest import write_tiny_zoo

    config = write_tiny_zoo(tmp_path, extra=f"""  - name: other
    arch: test_resnet
    weights: {{file: tiny.safetensors}}
    input_size: 48
    interpolation: {interpolation}
""")
    zoo = load_zoo(config)
    model = load_model(zoo.model("other"), zoo.root)
    render = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    x = maco.render_inputs(model, [render])
    x01 = torch.from_numpy(render).permute(2, 0, 1)[None].float() / 255
    expected = model.normalize(torch.nn.functional.interpolate(x01, size=(48, 48), mode=interpolation, antialias=True,
                                                               align_corners=False).clamp(0, 1))
    assert torch.equal(x, expected)
    assert torch.equal(quality.model_inputs(model, [render]), x)
    (prob,), (rank,) = maco.classify(model, [render], [5])
    with torch.no_grad():
        probs = model.logits(x).float().softmax(-1)[0]
    assert prob == pytest.approx(float(probs[5]), rel=1e-6) and rank == 1 + int((probs > probs[5]).sum())


def test_the_same_settings_and_seed_give_the_same_render_bit_for_bit_in_a_fresh_process(tiny_config, tmp_path):
    """A render depends on its settings, seed and objective only: another process (fresh allocator,
    fresh kernels' state) gives the same pixels, alpha map and objective as this one."""
    import subprocess
    import sys

    code = f"""
import numpy as np, torch
from generator import maco
from generator.config import MacoSettings, load_zoo
from generator.models import load_model
from generator.spectrum import powerlaw_spectrum
zoo = load_zoo({str(tiny_config)!r})
model = load_model(zoo.model("tiny"), zoo.root, "cpu")
d = torch.linspace(0, 1, model.num_concept_channels)
objectives = [maco.class_objective(2), maco.direction_objective("concept/0001/0", d)]
renders = maco.render(model, objectives, MacoSettings(steps=3, image_size=32, crops=2, input_size=32, seed=5), powerlaw_spectrum())
np.savez(OUT, *[r.rgba for r in renders], objectives=np.array([r.objective for r in renders]))
"""
    subprocess.run([sys.executable, "-c", "import sys; OUT = sys.argv[1]" + code, str(tmp_path / "a.npz")], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the other process: the same kernels' reduction order
    try:
        exec(code, {"OUT": str(tmp_path / "b.npz")})  # the very same lines, in this process
    finally:
        torch.set_num_threads(threads)
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
        assert a["arr_0"].shape == (32, 32, 4) and np.isfinite(a["objectives"]).all()


def test_the_windowed_spectrum_has_no_border_cross():
    """A non-periodic image (a ramp) puts a step at its borders, hence energy on the frequency axes; the Hann window
    (the default) keeps it off them, so renders drawn with the spectrum get no axis-aligned blocks (issue 22)."""
    from PIL import Image

    ramp = np.linspace(0, 255, 64)[None, :, None] * np.ones((64, 1, 3)) * np.linspace(0.2, 1, 64)[:, None, None]
    images = [Image.fromarray(ramp.astype(np.uint8))]
    plain, windowed = (spectrum_from_images(images, size=64, window=w).magnitude[0] for w in (False, True))

    def axis_excess(m: torch.Tensor) -> float:  # power on the fy = 0 row vs the rows 3-6 beside it, at 8-24 cycles
        return float(m[0, 8:24].pow(2).mean() / m[3:7, 8:24].pow(2).mean())

    assert axis_excess(plain) > 20 * axis_excess(windowed)
    assert axis_excess(windowed) < 10


def test_the_photos_spectrum_cache_key_carries_the_spectrum_version(tmp_path):
    """A photos spectrum cached before the window (`photos.npy`) is not reused for the windowed one."""
    from generator.spectrum import SPECTRUM_VERSION

    save_spectrum(powerlaw_spectrum(32), tmp_path / "photos.npy")
    spectrum = resolve_spectrum("photos", tmp_path)
    assert spectrum.id.startswith("photos-9-") and (tmp_path / f"photos-v{SPECTRUM_VERSION}.npy").is_file()


def test_mean_color_tints_the_image_and_none_leaves_it_as_before():
    torch.manual_seed(0)
    phase, mag = torch.randn(4, 3, 64, 33), powerlaw_spectrum(64).magnitude
    grey = maco.phase_to_image(phase, mag)
    assert torch.equal(grey, maco.phase_to_image(phase, mag, maco.color_bias_of(None, torch.device("cpu"), torch.float32)))
    warm = maco.phase_to_image(phase, mag, maco.color_bias_of((0.6, 0.5, 0.3), torch.device("cpu"), torch.float32))
    blue_minus_red = lambda x: float((x[:, 2] - x[:, 0]).mean())  # noqa: E731
    assert abs(blue_minus_red(grey)) < 0.02 and blue_minus_red(warm) < -0.15


def test_mean_color_is_checked():
    with pytest.raises(ValueError, match="mean_color must lie strictly between 0 and 1"):
        MacoSettings(mean_color=(0.5, 1.0, 0.5))
