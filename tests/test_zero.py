"""Zero-training mode: the closed-form patch denoiser, the model object and the CLI flag."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SMALL_PATCHES, natural_like, natural_tensor
from PIL import Image

import sindiffusion
from sindiffusion.cli import main
from sindiffusion.config import Config, PatchConfig, preset
from sindiffusion.errors import SinDiffusionError
from sindiffusion.metrics import patch_nn_distance
from sindiffusion.patch_denoiser import PatchDenoiser
from sindiffusion.samplers import SAMPLERS


@pytest.fixture
def img() -> torch.Tensor:
    """A 24x32 natural-looking image (3, 24, 32) in [-1, 1]."""
    return torch.from_numpy(natural_like(24, 32)).permute(2, 0, 1).float() / 127.5 - 1


def assert_made_of_the_images_patches(samples: torch.Tensor, image: torch.Tensor) -> None:
    """Every sample's 7x7 patches lie near the image's, at less than half the patch-NN distance
    of noise of the samples' size: the image's own pixels drawn at random, or uniform noise.
    Shape, range and std hold for noise too. Measured (seeds 0-2, every sampler, all sizes
    and the outpainted strip in this file): samples 0.06 to 0.14, noise 0.38 to 0.61."""
    g = torch.Generator().manual_seed(0)
    h, w = samples.shape[-2:]
    pixels = image.flatten(1)[:, torch.randint(0, image[0].numel(), (h * w,), generator=g)]
    noises = (pixels.reshape(1, 3, h, w), torch.rand(1, 3, h, w, generator=g) * 2 - 1)
    noise = min(patch_nn_distance(image, x).item() for x in noises)
    near = patch_nn_distance(image, samples)
    assert near.max() < 0.5 * noise, (near.tolist(), noise)


def test_tiny_sigma_returns_the_image_itself(img):
    # Every query patch of the real image is one of the reference patches, at distance 0.
    den = PatchDenoiser(img)
    g = torch.Generator().manual_seed(0)
    x = img + 1e-3 * torch.randn(img.shape, generator=g)
    x0 = den(x[None], 1e-3)
    assert x0.shape == (1, 3, 24, 32) and x0.dtype == torch.float32
    torch.testing.assert_close(x0[0], img, atol=1e-4, rtol=0)


def test_very_high_sigma_returns_the_mean_colour(img):
    # The exact MMSE (all patches, no position prior): near-uniform weights give the mean patch
    # (small patches, so that the mean patch is the image's mean colour everywhere).
    den = PatchDenoiser(img, topk=None, prior=None, levels=1, patch_size=7, stride=4)
    g = torch.Generator().manual_seed(0)
    x = img + 1e3 * torch.randn(img.shape, generator=g)
    x0 = den(x[None], 1e3)[0]
    torch.testing.assert_close(x0.mean((1, 2)), img.mean((1, 2)), atol=0.03, rtol=0)
    assert x0.std((1, 2)).max() < 0.1 < img.std((1, 2)).max()


def test_sigma_per_sample_and_levels_follow_sigma(img):
    den = PatchDenoiser(img, levels=3, coarsest=8)
    assert den.factors[-1] == 1.0 and den.factors[0] < den.factors[1] < 1.0
    sig = den.sampling_sigmas(9)
    assert len(sig) == 10 and sig[-1] == 0 and torch.all(sig[:-1] > sig[1:])
    assert sig[0] == pytest.approx(den.sigma_max) and sig[-2] == pytest.approx(den.sigma_min)
    levels = [den.level_of(float(s)) for s in sig[:-1]]
    assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == 2
    x = img.expand(2, -1, -1, -1) + 0.01 * torch.randn(2, *img.shape)
    out = den(x, torch.tensor([0.01, 5.0]))
    torch.testing.assert_close(out[0], den(x[:1], 0.01)[0])
    torch.testing.assert_close(out[1], den(x[1:], 5.0)[0])


def test_samples_are_seeded_and_in_range(img):
    model = sindiffusion.zero_training(img, steps=6, dropout=0.2)
    assert isinstance(model, sindiffusion.SinDiffusion) and model.network is None
    assert model.size == (24, 32) and model.config.sampling.steps == 6
    a = model.sample(2, seed=3)
    b = model.sample(2, seed=3)
    c = model.sample(2, seed=4)
    assert a.shape == (2, 3, 24, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])
    assert torch.equal(model.sample(2, seed=3, autoguidance=0), a)  # nothing to turn off
    with pytest.raises(SinDiffusionError, match="no network to autoguide"):
        model.sample(1, autoguidance=0.3)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_any_size(img, sampler):
    model = sindiffusion.zero_training(img)
    out = model.sample(1, size=(20, 48), steps=4, sampler=sampler, seed=0)
    assert out.shape == (1, 3, 20, 48) and torch.isfinite(out).all()
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0.05
    assert_made_of_the_images_patches(out, img)  # which noise is not


def test_max_size_and_path(image_file):
    model = sindiffusion.zero_training(image_file, max_size=16)
    assert model.size == (16, 16) and model.image.min() >= -1
    # It is the file's image, shrunk: near its 2x2 means (measured 0.020; another image's
    # 0.23, the file's top-left crop 0.34, every second pixel 0.067).
    pooled = torch.nn.functional.avg_pool2d(natural_tensor(32, 32)[None], 2)[0]
    assert (model.image - pooled).abs().mean() < 0.05


def test_user_errors(img):
    with pytest.raises(SinDiffusionError, match="unknown patch-denoiser knob patch_sise"):
        PatchDenoiser(img, patch_sise=5)
    with pytest.raises(SinDiffusionError, match="smaller than one 31 px patch"):
        PatchDenoiser(img, patch_size=31)
    with pytest.raises(SinDiffusionError, match="dropout"):
        PatchDenoiser(img, dropout=1.0)
    with pytest.raises(SinDiffusionError, match="nothing to save"):
        sindiffusion.zero_training(img).save("somewhere")
    for bad in (0, (19, 0), (19, 65), tuple(range(3, 20)), 7.5, (9, "x")):
        with pytest.raises(SinDiffusionError, match="patch_size"):
            PatchDenoiser(img, patch_size=bad)
    for bad in (0, -0.1, 11, "0.1", True):
        with pytest.raises(SinDiffusionError, match="vote_width is"):
            PatchDenoiser(img, vote_width=bad)
    # Knobs from someone else's config: a wrong type is a sentence, not a TypeError.
    for knob, bad in (("temperature", "1"), ("handover", None), ("sigma_min", float("nan")),
                      ("sigma_max", "80"), ("sigma_floor", True), ("topk", 1.5)):  # fmt: skip
        with pytest.raises(SinDiffusionError, match=f"{knob} is"):
            PatchConfig(**{knob: bad})


def test_a_narrow_vote_window_still_gives_every_pixel_a_value(img):
    # 0.04 x 15 px: the window's corners underflowed to 0, and a pixel only corners covered
    # was 0 / 0 (a NaN sample, SIFID-E 2048 in a sweep).
    x = sindiffusion.zero_training(img, steps=6, vote_width=0.02).sample(n=1, seed=0)
    assert torch.isfinite(x).all() and x.abs().max() <= 1


def test_patch_sizes_per_level_finest_last():
    cfg = PatchConfig(patch_size=(19, 15), stride=(10, 8))
    assert cfg.patch_sizes(5) == [19, 19, 19, 19, 15] and cfg.patch_sizes(1) == [15]
    assert cfg.strides(3) == [10, 10, 8]
    assert PatchConfig(patch_size=(9, 7, 5), stride=6).strides(4) == [6, 6, 6, 5]  # <= patch
    assert PatchConfig(patch_size=[11]).patch_size == 11  # one entry is one side
    # A config file's lists come back as the same tuples.
    config = sindiffusion.zero_training(natural_tensor(48, 64)).config
    assert Config.from_dict(json.loads(config.to_json())) == config
    # Each level unfolds its own patches (a 48 px image: levels of 24 ... 48 px).
    den = PatchDenoiser(natural_tensor(48, 64), patch_size=(13, 9, 5), levels=4, coarsest=24)
    assert [lev.p for lev in den.levels] == [13, 13, 9, 5]
    assert [lev.patches.shape[1] for lev in den.levels] == [3 * p * p for p in (13, 13, 9, 5)]
    # The stride is read at each call: a copy with another one denoises differently.
    x = natural_tensor(48, 64)[None] + 0.3 * torch.randn(1, 3, 48, 64)
    assert not torch.equal(den(x, 0.3), den.with_knobs(stride=(2, 2))(x, 0.3))


def test_cli_sample_zero_training(image_file, tmp_path, capsys):
    out = tmp_path / "zero"
    argv = ["sample", str(image_file), "--zero-training", "--n", "2", "--steps", "4"]
    assert main([*argv, "--size", "40x24", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["grid.png", "sample-000.png", "sample-001.png"]
    assert Image.open(out / "sample-001.png").size == (40, 24)
    assert "wrote 2 samples" in capsys.readouterr().out


def test_cli_tells_which_flag_to_use(image_file, tmp_path, capsys):
    assert main(["sample", str(image_file), "--out", str(tmp_path / "a")]) == 2
    assert "add --zero-training" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    assert main(["sample", str(run), "--zero-training", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "drop the flag" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_outpaint_runs_with_the_zero_training_model(img):
    from sindiffusion.apps.outpaint import outpaint

    model = sindiffusion.zero_training(img)
    out = outpaint(model, extend={"right": 16}, n=1, steps=5, seed=0)
    assert out.shape == (1, 3, 24, 48) and torch.isfinite(out).all()
    # The known part stays the image (up to 8-bit rounding); the new part is not blank, and
    # is made of the image's patches, not noise.
    torch.testing.assert_close(out[0, :, :, :32], img, atol=0.02, rtol=0)
    assert out[0, :, :, 32:].std() > 0.05
    assert_made_of_the_images_patches(out[:, :, :, 32:], img)


@pytest.mark.parametrize(
    "app",
    [
        ["outpaint", "--extend", "right=8"],
        ["inpaint", "--mask", "MASK"],
        ["paint", "--image", "IMAGE"],
        ["harmonize", "--mask", "MASK"],
        ["edit"],
    ],
)
def test_every_application_takes_an_image_with_zero_training(app, image_file, tmp_path):
    mask = tmp_path / "mask.png"
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 10:24] = 255
    Image.fromarray(m).save(mask)
    args = [str(mask) if a == "MASK" else str(image_file) if a == "IMAGE" else a for a in app]
    out = tmp_path / "out"
    argv = [app[0], str(image_file), "--zero-training", *args[1:], "--n", "1", "--steps", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    assert (out / "grid.png").exists()
    assert main([app[0], str(image_file), *args[1:], "--out", str(tmp_path / "x")]) == 2


@pytest.mark.parametrize("size", [(16, 16), (23, 17), (16, 70)])
def test_the_smallest_canvases_sample(img, size):
    # At the coarsest pyramid level a 16 px canvas is smaller than one patch; it is shrunk to
    # one patch there instead of failing (issue #31).
    out = sindiffusion.zero_training(img).sample(n=2, size=size, steps=6, seed=0)
    assert out.shape == (2, 3, *size) and torch.isfinite(out).all() and out.std() > 0.05
    assert_made_of_the_images_patches(out, img)


def test_a_prior_pair_frees_one_direction_only():
    # Channel 0 ramps down the image, channel 1 across it: a position prior that is tight in
    # one direction keeps that ramp, a wide one lets patches wander and breaks it.
    h, w = 32, 48
    yy = torch.linspace(-1, 1, h)[:, None].expand(h, w)
    xx = torch.linspace(-1, 1, w)[None, :].expand(h, w)
    ramps = torch.stack([yy, xx, 0.5 * yy * xx])

    def draw(prior):
        model = sindiffusion.zero_training(
            ramps, prior=prior, steps=10, levels=2, coarsest=12, **SMALL_PATCHES
        )
        return model.sample(n=4, seed=0)

    def corr(samples, channel, ramp):
        a = samples[:, channel] - samples[:, channel].mean((1, 2), keepdim=True)
        b = ramp - ramp.mean()
        return float(((a * b).sum((1, 2)) / (a.flatten(1).norm(dim=1) * b.norm())).mean())

    same = draw(0.03)
    assert torch.equal(draw((0.03, 0.03)), same)  # a pair of equal stds is the single std
    assert corr(same, 0, yy) > 0.99 and corr(same, 1, xx) > 0.99
    sideways = draw((0.03, 1.0))  # (vertical, horizontal)
    assert corr(sideways, 0, yy) > 0.99 and corr(sideways, 1, xx) < 0.8
    upright = draw((1.0, 0.03))
    assert corr(upright, 0, yy) < 0.9 and corr(upright, 1, xx) > 0.99


def test_prior_pairs_are_checked_and_kept_in_configs():
    from sindiffusion.config import SamplingConfig

    cfg = Config(sampling=SamplingConfig(patch=PatchConfig(prior=[0.02, 0.08])))
    assert cfg.sampling.patch.prior == (0.02, 0.08)
    assert Config.from_dict(json.loads(cfg.to_json())).sampling.patch.prior == (0.02, 0.08)
    for bad in ((0.02, 0.03, 0.04), (0.02, -0.1), 0, -0.05, "0.1", (0.02, "x"), True):
        with pytest.raises(SinDiffusionError, match="prior is"):
            PatchConfig(prior=bad)


def test_a_zero_training_sample_is_made_of_the_images_patches_not_noise():
    # Shape, range and std hold for noise too: the sample's 7x7 patches must lie near the
    # image's, unlike noise of the same shape and range, even noise made of the image's own
    # pixel values. Measured (RMS per pixel, [-1, 1] units): sample 0.114 (seeds 0-2: 0.10 to
    # 0.11), the image's pixels shuffled 0.398, uniform noise 0.572; the bar is half the nearer.
    image = natural_tensor(40, 48)
    sample = sindiffusion.zero_training(image, steps=8).sample(n=2, seed=0)
    g = torch.Generator().manual_seed(0)
    shuffled = image.flatten(1)[:, torch.randperm(40 * 48, generator=g)].reshape(1, 3, 40, 48)
    uniform = torch.rand(1, 3, 40, 48, generator=g) * 2 - 1
    near = patch_nn_distance(image, sample).mean().item()
    noise = min(patch_nn_distance(image, x).mean().item() for x in (shuffled, uniform))
    print(f"patch NN distance to the image: sample {near:.3f}, noise {noise:.3f}")
    assert near < 0.5 * noise, (near, noise)


def test_samples_keep_the_images_share_of_each_region():
    # A bright band over a near-grey field. Started where the coarsest level sees noise 2 of
    # its own, the first estimates favour the patches nearest mid-grey and the band shrinks:
    # measured sample mean 0.07 against the image's 0.27 (8 samples); from noise 20, 0.21.
    image = torch.full((3, 32, 48), -0.1)
    image[:, :12] = 0.9
    image += 0.05 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    gap = {
        start: abs(
            sindiffusion.zero_training(image, steps=10, start_noise=start)
            .sample(n=8, seed=0)
            .mean()
            .item()
            - image.mean().item()
        )
        for start in (2.0, PatchConfig().start_noise)
    }
    assert gap[PatchConfig().start_noise] < 0.1 < 0.15 < gap[2.0], gap


def test_configs_written_before_start_noise_keep_the_start_of_their_time():
    saved = preset("fast").to_dict()
    assert saved["sampling"]["patch"]["start_noise"] == 2.0  # the hybrid's, as before
    del saved["sampling"]["patch"]["start_noise"]
    assert Config.from_dict(saved) == preset("fast")
    saved["sampling"]["patch"]["prior"] = 0.1
    assert Config.from_dict(saved).sampling.patch.start_noise == 2.0
    assert PatchConfig().start_noise == 20.0  # zero-training's
    for bad in (0, -1.0, float("nan"), float("inf"), "20"):
        with pytest.raises(SinDiffusionError, match="start_noise is"):
            PatchConfig(start_noise=bad)
