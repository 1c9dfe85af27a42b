"""The layout stage of hybrid models: routing by noise level, the split schedule, candidate
layouts (the coarse-patch Fréchet distance and `sample(candidates=)`), renoised layouts and
random shifts of the position prior."""

from __future__ import annotations

import pytest
import torch
from conftest import SMALL_PATCHES, natural_tensor, tiny_config

import sindiffusion
from sindiffusion import SinDiffusion
from sindiffusion.config import SamplingOptions
from sindiffusion.errors import SinDiffusionError
from sindiffusion.layout import Hybrid, layout_cut, layout_mismatch
from sindiffusion.schedules import karras_sigmas, placed_sigmas, split_sigmas


def test_mismatch_is_zero_for_the_image_and_grows_with_foreign_or_missing_content():
    img = natural_tensor(48, 40)
    flat = img.mean((1, 2), keepdim=True).expand_as(img)  # right colours, no layout
    other = natural_tensor(48, 40, seed=5)
    half = torch.cat([img[:, :24], img[:, :24]], 1)  # top half twice: bottom content missing
    scores = layout_mismatch(torch.stack([img, half, other, flat]), img)
    assert scores.shape == (4,)
    assert scores[0] < 1e-4  # float rounding of the distances only
    assert (scores[1:] > 100 * scores[0]).all()


def test_mismatch_takes_any_output_size():
    img = natural_tensor(64, 64)
    wide = torch.cat([img, img], 2)  # 64 x 128: the image's patches twice, and one seam
    noise = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = layout_mismatch(torch.cat([wide[None], noise]), img)
    assert scores.shape == (2,) and 0 < scores[0] < scores[1] / 10
    assert layout_mismatch(torch.zeros(1, 3, 20, 70), img).isfinite().all()


def test_mismatch_is_inf_below_two_coarse_patches():
    # A 20 px side is 5 px at a quarter: one 5 x 5 patch, no covariance to compare.
    img = natural_tensor(64, 64)
    assert layout_mismatch(torch.zeros(2, 3, 20, 20), img).isinf().all()
    assert layout_mismatch(img[None], img[:, :20, :20]).isinf().all()


def tiny_hybrid(**sampling) -> SinDiffusion:
    """The tiny network trained 2 steps, with the closed-form layout stage above sigma 0.7."""
    cfg = tiny_config()
    cfg.sampling.hybrid_sigma = 0.7
    cfg.sampling.sampler, cfg.sampling.steps = "heun", 6
    for key, value in sampling.items():
        setattr(cfg.sampling, key, value)
    return sindiffusion.train(natural_tensor(), config=cfg, steps=2, progress=False, device="cpu")


def variant(model: SinDiffusion, **sampling) -> SinDiffusion:
    """The same trained model with other sampling settings."""
    cfg = model.config.copy()
    for key, value in sampling.items():
        setattr(cfg.sampling, key, value)
    return SinDiffusion(cfg, model.image, model.checkpoint.ema, "cpu", model.checkpoint)


@pytest.fixture(scope="module")
def hybrid_model():
    return tiny_hybrid()


def test_candidates_choose_among_layouts_and_stay_seeded(hybrid_model):
    calls = []
    one = hybrid_model.sample(n=2, seed=3, candidates=1)
    a = hybrid_model.sample(n=2, seed=3, candidates=3, callback=lambda i: calls.append(i["i"]))
    b = hybrid_model.sample(n=2, seed=3, candidates=3)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, one)
    assert calls == list(range(6))  # one report per step, layout search included


def test_a_large_canvas_draws_its_candidates_a_few_at_a_time(hybrid_model, monkeypatch):
    # Row by row through the first stage (as a 12-megapixel canvas is): the same samples,
    # one report per step.
    whole = hybrid_model.sample(n=2, seed=3, candidates=3)
    monkeypatch.setattr(sindiffusion.sampling, "CANDIDATE_PIXELS", 32 * 32)
    calls = []
    rows = hybrid_model.sample(n=2, seed=3, candidates=3, callback=lambda i: calls.append(i["i"]))
    assert torch.equal(whole, rows) and calls == list(range(6))


def test_candidates_are_compared_before_the_last_layout_level():
    five = torch.tensor([80.0, 20.0, 5.0, 2.0, 1.0, 0.5, 0.1, 0.0])  # 5 levels above 0.7
    assert layout_cut(five, 0.7) == 4  # the 1.0 level runs once per sample
    assert layout_cut(torch.tensor([80.0, 2.0, 0.5, 0.0]), 0.7) == 2  # two: both
    assert layout_cut(torch.tensor([80.0, 0.5, 0.1, 0.0]), 0.7) == 0  # one: nothing to run
    assert layout_cut(torch.tensor([2.0, 1.0]), 0.7) == 0  # nothing below the switch


def test_one_candidate_is_the_plain_sampler(hybrid_model):
    plain = hybrid_model.sample(n=2, seed=1, candidates=1)
    four = variant(hybrid_model, candidates=4)
    assert torch.equal(four.sample(n=2, seed=1, candidates=1), plain)
    assert not torch.equal(four.sample(n=2, seed=1), plain)


def test_candidates_must_be_positive(hybrid_model):
    with pytest.raises(SinDiffusionError, match="at least 1"):
        hybrid_model.sample(candidates=0)


def test_cli_candidates_flag_matches_the_api(hybrid_model, tmp_path):
    import numpy as np
    from PIL import Image

    from sindiffusion.cli import main
    from sindiffusion.image import to_uint8

    hybrid_model.save(tmp_path / "run")
    args = ["sample", str(tmp_path / "run"), "--n", "1", "--seed", "2", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "three"), "--candidates", "3"]) == 0
    assert main([*args, "--out", str(tmp_path / "one"), "--candidates", "1"]) == 0
    three = np.asarray(Image.open(tmp_path / "three" / "sample-000.png"))
    want = to_uint8(hybrid_model.sample(n=1, seed=2, candidates=3))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(three, want)
    assert not np.array_equal(three, np.asarray(Image.open(tmp_path / "one" / "sample-000.png")))


def test_hybrid_routes_each_row_by_its_noise_level_with_its_extra_arguments():
    seen = {}

    def layout(x, sigma, shift=None):
        seen["layout"] = (x.shape[0], shift)
        return torch.full_like(x, 1.0)

    def network(x, sigma, **extra):  # the contract: extras it does not read are passed too
        seen["network"] = (x.shape[0], extra.get("shift"))
        return torch.full_like(x, -1.0)

    hyb = Hybrid(network, layout, switch=0.7)
    x = torch.zeros(3, 3, 4, 4)
    shift = torch.tensor([[0.0, 0.1], [0.0, 0.2], [0.0, 0.3]])
    out = hyb(x, torch.tensor([5.0, 0.1, 0.7]), shift=shift)  # above, below, at the switch
    assert out[0].eq(1).all() and out[1:].eq(-1).all()
    assert seen["layout"][0] == 1 and torch.equal(seen["layout"][1], shift[:1])
    assert seen["network"][0] == 3 and torch.equal(seen["network"][1], shift)
    assert hyb(x, 2.0, shift=shift).eq(1).all() and seen["layout"][0] == 3
    assert hyb(x, 0.1).eq(-1).all()


def test_renoised_layouts_are_seeded_and_report_every_step():
    model = tiny_hybrid(renoise_steps=5)
    midpath = model.sample(n=2, seed=3, candidates=2)
    calls = []
    a = model.sample(n=2, seed=3, candidates=2, renoise=1.0, callback=calls.append)
    b = model.sample(n=2, seed=3, candidates=2, renoise=1.0)
    one = model.sample(n=2, seed=3, candidates=1, renoise=1.0)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, midpath) and not torch.equal(a, one)
    # 5 closed-form steps, then the network from sigma 1: as many levels as the 6-step schedule
    # has below 1, the first of them at 1 exactly.
    below = int((model.sigmas(6)[:-1] < 1.0).sum())
    assert [c["i"] for c in calls] == list(range(5 + below))
    assert float(calls[5]["sigma"]) == pytest.approx(1.0)
    assert all(float(c["sigma"]) <= 1.0 for c in calls[5:])
    configured = variant(model, renoise=1.0)  # the config's setting is the default of sample()
    assert torch.equal(configured.sample(n=2, seed=3, candidates=2), a)
    assert torch.equal(configured.sample(n=2, seed=3, candidates=2, renoise=0), midpath)


def test_renoise_must_not_be_negative_and_is_ignored_without_a_hybrid(hybrid_model):
    with pytest.raises(SinDiffusionError, match="positive sigma"):
        hybrid_model.sample(renoise=-1)
    zero = sindiffusion.zero_training(natural_tensor(), steps=4)
    assert torch.equal(zero.sample(n=1, seed=0, renoise=1.0), zero.sample(n=1, seed=0))


def test_cli_renoise_flag_matches_the_api(hybrid_model, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from sindiffusion.cli import main
    from sindiffusion.image import to_uint8

    hybrid_model.save(tmp_path / "run")
    args = ["sample", str(tmp_path / "run"), "--n", "1", "--seed", "2", "--out", str(tmp_path)]
    assert main([*args, "--renoise", "0.5", "--device", "cpu"]) == 0
    got = np.asarray(Image.open(tmp_path / "sample-000.png"))
    want = to_uint8(hybrid_model.sample(n=1, seed=2, renoise=0.5))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)
    capsys.readouterr()
    assert main([*args, "--renoise", "-0.5"]) == 2
    assert "must be 0 or more" in capsys.readouterr().err


def test_the_patch_settings_reach_the_closed_form_denoiser_and_change_the_layouts(hybrid_model):
    from sindiffusion.config import PatchConfig

    assert (
        hybrid_model.patch.cfg == hybrid_model.config.sampling.patch == PatchConfig(**SMALL_PATCHES)
    )
    blended = variant(
        hybrid_model, patch=PatchConfig(**{**SMALL_PATCHES, "prior": 0.03, "topk": 8})
    )
    nearest = variant(
        hybrid_model, patch=PatchConfig(**{**SMALL_PATCHES, "prior": 0.03, "topk": 1})
    )
    assert (blended.patch.cfg.prior, blended.patch.cfg.topk, nearest.patch.cfg.topk) == (0.03, 8, 1)
    a, b = blended.sample(n=1, seed=3), nearest.sample(n=1, seed=3)
    assert torch.equal(nearest.sample(n=1, seed=3), b)  # still seeded
    assert (a - b).abs().mean() > 1e-3  # the nearest patch alone draws other layouts


def test_a_prior_per_call_is_the_model_built_with_it_and_leaves_the_model_as_it_was(hybrid_model):
    from sindiffusion.config import PatchConfig

    before = hybrid_model.patch.cfg
    wide = hybrid_model.sample(n=1, seed=3, prior=0.2)
    assert torch.equal(
        wide,
        variant(hybrid_model, patch=PatchConfig(**SMALL_PATCHES, prior=0.2)).sample(n=1, seed=3),
    )
    assert not torch.equal(wide, hybrid_model.sample(n=1, seed=3, prior=0.01))
    assert hybrid_model.patch.cfg == before  # nothing kept from the call
    with pytest.raises(SinDiffusionError, match="prior"):
        hybrid_model.sample(n=1, prior=-0.1)


def test_a_prior_for_a_model_without_a_layout_stage_is_refused(tmp_path):
    from sindiffusion.cli import main

    plain = sindiffusion.train(natural_tensor(), config=tiny_config(), steps=1, progress=False)
    with pytest.raises(SinDiffusionError, match="no closed-form layout stage"):
        plain.sample(n=1, prior=0.1)
    plain.save(tmp_path / "run")
    args = ["sample", str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--prior", "0.1"]
    assert main(args) == 2


def test_cli_prior_flag_matches_the_api(hybrid_model, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from sindiffusion.cli import main
    from sindiffusion.image import to_uint8

    hybrid_model.save(tmp_path / "run")
    args = ["sample", str(tmp_path / "run"), "--n", "1", "--seed", "2", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "wide"), "--prior", "0.2"]) == 0
    got = np.asarray(Image.open(tmp_path / "wide" / "sample-000.png"))
    want = to_uint8(hybrid_model.sample(n=1, seed=2, prior=0.2))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)
    assert main([*args, "--out", str(tmp_path / "bad"), "--prior", "0"]) == 2
    assert "--prior" in capsys.readouterr().err  # argparse: not a positive number
    # The applications keep their own layouts: no --prior there.
    outpaint = ["outpaint", str(tmp_path / "run"), "--out", str(tmp_path / "o"), "--prior", "0.2"]
    assert main(outpaint) == 2


def test_impossible_hybrid_settings_get_a_one_line_error(hybrid_model):
    from sindiffusion.config import PatchConfig

    # Above sigma_max: no levels for the layout.
    bad = variant(hybrid_model, hybrid_sigma=100.0, hybrid_steps=3)
    with pytest.raises(SinDiffusionError, match="hybrid_sigma .* below sigma_max"):
        bad.sample(n=1)
    # One schedule across both parts: the layout stage just never runs.
    assert variant(hybrid_model, hybrid_sigma=100.0).sample(n=1).shape == (1, 3, 32, 32)
    with pytest.raises(SinDiffusionError, match="topk is 0"):
        PatchConfig(topk=0)


def test_split_schedule_gives_the_layout_and_the_network_their_own_steps():
    model = tiny_hybrid(hybrid_steps=3, steps=4)
    sigmas = model.sigmas()
    lo, hi = model.config.sampling.sigma_min, model.config.sampling.sigma_max
    # 3 levels above the switch from sigma_max, then 4 from the switch itself down, then 0.
    assert torch.equal(sigmas, split_sigmas(lo, hi, 0.7, 3, 4))
    assert len(sigmas) == 3 + 4 + 1 and float(sigmas[-1]) == 0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert float(sigmas[0]) == pytest.approx(hi)
    assert int((sigmas > 0.7).sum()) == 3 and float(sigmas[3]) == pytest.approx(0.7)
    assert float(sigmas[-2]) == pytest.approx(lo)
    calls = []
    a = model.sample(n=2, seed=3, candidates=2, callback=lambda i: calls.append(i["i"]))
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, model.sample(n=2, seed=3, candidates=2))
    assert calls == list(range(7))  # one report per level, layout search included
    # hybrid_steps 0: one Karras schedule of `steps` levels across both parts.
    assert len(variant(model, hybrid_steps=0).sigmas(4)) == 5


def test_placed_schedule_keeps_the_given_layout_levels_above_the_switch():
    sigmas = placed_sigmas(0.006, 80.0, 0.15, [1.6, 6.5, 0.4, 0.1, 90.0], 3)
    top = [80.0, (80.0 * 6.5) ** 0.5, 6.5, 1.6, 0.4]  # 0.1 and 90 are outside (0.15, 80)
    torch.testing.assert_close(sigmas[:5], torch.tensor(top))
    assert torch.equal(sigmas[5:], karras_sigmas(3, 0.006, 0.15))


def test_layout_levels_place_one_level_on_each_named_pyramid_level(hybrid_model):
    levels = ((0, 0.65), (-1, 0.45), 0.45, 0.35)  # a number: a sigma of the canvas itself
    model = variant(hybrid_model, hybrid_sigma=0.3, layout_levels=levels)
    den, sigmas = model.patch, model.sigmas(4)
    coarse, fine = 0.65 / den.levels[0].gain, 0.45 / den.levels[-1].gain
    assert den.levels[-1].gain == 1  # so 0.45 twice is one level
    assert len(sigmas) == 2 + 3 + 4 + 1  # sigma_max and its mean with `coarse`, 3 placed, 4 + 0
    torch.testing.assert_close(sigmas[2:5], torch.tensor([coarse, fine, 0.35]))
    assert den.level_of(coarse) == 0 and den.level_of(fine) == len(den.levels) - 1
    x = model.sample(n=1, seed=0)
    assert x.shape == (1, 3, 32, 32) and not torch.equal(x, hybrid_model.sample(n=1, seed=0))
    with pytest.raises(SinDiffusionError, match="names pyramid level 9, but the layout has"):
        variant(hybrid_model, layout_levels=((9, 0.65),)).sample(n=1)
    for bad in ([[0]], [[0, -1.0]], "0.65", [[True, 0.5]], [-0.4], [True]):
        with pytest.raises(SinDiffusionError, match="layout_levels is"):
            sindiffusion.config.SamplingConfig(layout_levels=bad)
    cfg = model.config.copy()  # a JSON round trip gives the pairs back as tuples
    assert type(cfg).from_dict(cfg.to_dict()).sampling.layout_levels == levels


def test_placed_layout_starts_where_the_coarsest_level_sees_pure_noise(hybrid_model):
    # A large photo's coarsest level shrinks noise so much that sigma_max is not pure noise
    # to it: the schedule then starts at the patch denoiser's own top instead.
    levels = ((0, 0.65), (-1, 0.45))
    top = hybrid_model.patch.sigma_max
    assert top == hybrid_model.patch.cfg.start_noise / hybrid_model.patch.levels[0].gain
    low = variant(hybrid_model, hybrid_sigma=0.3, layout_levels=levels, sigma_max=top / 2)
    assert float(low.sigmas(4)[0]) == pytest.approx(top)
    high = variant(hybrid_model, hybrid_sigma=0.3, layout_levels=levels, sigma_max=top * 2)
    assert float(high.sigmas(4)[0]) == pytest.approx(top * 2)
    old = variant(hybrid_model, hybrid_sigma=0.3, hybrid_steps=3, sigma_max=top / 2)
    assert float(old.sigmas(4)[0]) == pytest.approx(top / 2)  # older runs' schedule unchanged


def test_a_shift_moves_the_position_prior_per_row(hybrid_model):
    den = hybrid_model.patch
    g = torch.Generator().manual_seed(0)
    x = natural_tensor()[None].repeat(3, 1, 1, 1) + 0.8 * torch.randn(3, 3, 32, 32, generator=g)
    plain = den(x, 0.8)
    shifted = den(x, 0.8, shift=torch.tensor([[0.0, 0.0], [0.0, 0.3], [0.3, 0.0]]))
    assert torch.equal(shifted[0], plain[0])  # a zero shift is no shift
    assert (shifted[1:] - plain[1:]).abs().mean((1, 2, 3)).min() > 0.01
    assert torch.equal(den(x, 0.8), plain)  # nothing stays behind


@pytest.mark.parametrize("renoise", [0.0, 0.5])
def test_layout_shift_is_seeded_and_keeps_each_chosen_layouts_shift(hybrid_model, renoise):
    before = hybrid_model.sample(n=2, seed=4, candidates=3, renoise=renoise)
    model = variant(hybrid_model, shift=(0.1, 0.3))
    # With 3 candidates the chosen rows carry their own shifts on past the choice (a shift
    # per drawn layout would not match the 2 rows left), and the seed repeats them.
    a = model.sample(n=2, seed=4, candidates=3, renoise=renoise)
    b = model.sample(n=2, seed=4, candidates=3, renoise=renoise)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, before)
    one = model.sample(n=2, seed=4, candidates=1, renoise=renoise)
    assert one.shape == (2, 3, 32, 32) and not torch.equal(one, a)


def test_two_calls_on_one_model_share_no_state(hybrid_model):
    # A call's wrappers are built afresh: a shifted call, then a plain one, gives the plain
    # one's images, and so does an autoguided or renoised call in between.
    model = variant(hybrid_model, shift=(0.1, 0.3))
    plain = hybrid_model.sample(n=2, seed=5)
    model.sample(n=2, seed=5)
    hybrid_model.sample(n=1, seed=9, renoise=0.5, candidates=2)
    assert torch.equal(hybrid_model.sample(n=2, seed=5), plain)


def test_the_saved_config_round_trips_and_old_checkpoints_load():
    import json

    from sindiffusion.config import Config, preset

    cfg = preset("fast")
    back = Config.from_dict(json.loads(cfg.to_json()))
    assert back == cfg and isinstance(back.sampling.shift, tuple)
    # The layout of checkpoints before 0.2: sampling fields inside `diffusion`.
    old = {
        "preset": "fast",
        "model": {**json.loads(json.dumps(cfg.to_dict()["model"])), "in_channels": 3, "patch": 1},
        "diffusion": {
            **cfg.to_dict()["diffusion"],
            "sigma_min": 0.006, "sigma_max": 80.0, "sampler": "heun", "sample_steps": 6,
            "clip_denoised": True, "hybrid_sigma": 0.7, "hybrid_steps": 5,
            "layout_candidates": 4, "layout_renoise": 0.0, "layout_steps": 20,
            "layout_prior": 0.027, "layout_shift": [0.03, 0.12], "layout_topk": 1,
            "autoguidance": 0.3, "autoguidance_sigmas": [0.04, 0.15],
        },
        "train": cfg.to_dict()["train"],
    }  # fmt: skip
    # The preset's switch, prior and layout patches then: a checkpoint keeps its own.
    cfg.sampling.patch.prior, cfg.sampling.patch.patch_size, cfg.sampling.patch.stride = 0.027, 7, 4
    cfg.sampling.hybrid_sigma, cfg.sampling.patch.finest = 0.7, None
    cfg.sampling.layout_levels = ()  # its 5 log-spaced layout levels
    cfg.sampling.autoguidance_max_pixels = None  # guided at every size
    cfg.sampling.hybrid_finest, cfg.sampling.reduced_steps = 0.0, 0  # the same at every size
    cfg.sampling.candidates, cfg.sampling.reduced_candidates = 4, 0  # 4 layouts at every size
    cfg.sampling.shift = (0.03, 0.12)  # its narrower layout offsets
    cfg.sampling.patch.max_refs = 16384  # a random subset of the reference patches
    assert Config.from_dict(old) == cfg
    old["diffusion"]["layout_prior"] = 0  # 0 meant "no prior"
    assert Config.from_dict(old).sampling.patch.prior is None


def test_concurrent_calls_on_one_model_draw_what_they_draw_alone(hybrid_model):
    # Two web-page events on one cached model: each call's shifts and wrappers are its own.
    from concurrent.futures import ThreadPoolExecutor

    model = variant(hybrid_model, shift=(0.1, 0.3), candidates=2)
    alone = [model.sample(n=2, seed=s) for s in (1, 2)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda s: model.sample(n=2, seed=s), (1, 2)))
    assert all(torch.equal(a, b) for a, b in zip(alone, together, strict=True))


def test_start_from_begins_a_schedule_at_a_level_and_keeps_the_levels_below():
    from sindiffusion.schedules import start_from

    sigmas = torch.tensor([80.0, 5.0, 2.0, 0.7, 0.1, 0.0])
    assert start_from(sigmas, 1.5).tolist() == pytest.approx([1.5, 0.7, 0.1, 0.0])
    assert start_from(sigmas, 2.0).tolist() == pytest.approx([2.0, 0.7, 0.1, 0.0])
    assert torch.equal(start_from(sigmas, 80.0), sigmas)


def test_a_variation_redraws_the_training_image_more_freely_the_higher_it_starts(hybrid_model):
    image = hybrid_model.image.float()
    steps = []
    near = variant(hybrid_model, variation=0.1)
    low = near.sample(n=4, seed=0, callback=lambda i: steps.append(i))
    high = variant(hybrid_model, variation=3.0).sample(n=4, seed=0)
    free = hybrid_model.sample(n=4, seed=0)
    assert low.shape == (4, 3, 32, 32) and low.min() >= -1 and low.max() <= 1
    dist = [(x - image).abs().mean().item() for x in (low, high, free)]
    assert dist[0] < 0.5 * dist[1] and dist[1] < dist[2], dist
    assert torch.equal(low, near.sample(n=4, seed=0))  # seeded
    assert 1 <= len(steps) < len(hybrid_model.sigmas()) - 1  # only the levels below 0.1 run
    # Any size: the image is resized to it first.
    assert near.sample(n=1, size=(32, 48), seed=0).shape == (1, 3, 32, 48)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(SinDiffusionError, match="variation"):
            variant(hybrid_model, variation=bad).sample(n=1)


def test_the_variety_dial_goes_from_a_variation_through_the_free_sample_to_a_wider_prior(
    hybrid_model,
):
    from sindiffusion.sampling import (
        VARIETY_FADE,
        VARIETY_SIGMA,
        VARIETY_SPREAD,
        variety_fade,
        variety_settings,
    )

    top = float(hybrid_model.sigmas()[0])
    assert variety_settings(0.0, top, 0.05) == (pytest.approx(VARIETY_SIGMA), 0.05)
    assert variety_settings(0.5, top, 0.05)[0] == pytest.approx((VARIETY_SIGMA * top) ** 0.5)
    assert variety_settings(1.0, top, 0.05) == (0.0, 0.05)
    assert variety_settings(2.0, top, (0.02, 0.05)) == (
        0.0,
        pytest.approx((0.02 * VARIETY_SPREAD, 0.05 * VARIETY_SPREAD)),
    )
    # Just below 1 the image fades out of the start and the layout offsets fade in, so the
    # dial has no jump at 1.
    fades = [variety_fade(v) for v in (0.5, VARIETY_FADE, 0.95, 0.99, 1.0, 1.5)]
    assert fades == [0.0, 0.0, pytest.approx(0.5), pytest.approx(0.9), 1.0, 1.0]
    shifted = variant(hybrid_model, shift=(0.04, 0.1))
    for v, want in ((0.5, (0.0, 0.0)), (0.95, (0.02, 0.05)), (1.0, (0.04, 0.1))):
        assert shifted.prepare(SamplingOptions(variety=v))[1].shift == pytest.approx(want)
    assert variant(shifted, variation=3.0).prepare()[1].shift == (0.0, 0.0)  # its own layout
    free = shifted.sample(n=2, seed=1, variety=1.0)
    near, below = (shifted.sample(n=2, seed=1, variety=v) for v in (0.9999, VARIETY_FADE))
    assert (near - free).abs().mean() < (below - free).abs().mean() / 5  # no jump at 1
    # The dial is these settings: the same images as setting them directly.
    sigma = variety_settings(0.4, top, None)[0]
    assert torch.equal(
        hybrid_model.sample(n=2, seed=1, variety=0.4),
        variant(hybrid_model, variation=sigma).sample(n=2, seed=1),
    )
    assert torch.equal(
        hybrid_model.sample(n=2, seed=1, variety=1), hybrid_model.sample(n=2, seed=1)
    )
    prior = hybrid_model.patch.cfg.prior
    wide = hybrid_model.sample(n=2, seed=1, variety=1.5, candidates=1)
    want = hybrid_model.sample(n=2, seed=1, prior=prior * VARIETY_SPREAD**0.5, candidates=1)
    assert torch.equal(wide, want)
    image = hybrid_model.image.float()
    dist = [(hybrid_model.sample(n=4, seed=0, variety=v) - image).abs().mean().item()
            for v in (0.0, 0.6, 1.0)]  # fmt: skip
    assert dist[0] < dist[1] < dist[2], dist
    for bad, match in ((2.5, "variety is 2.5"), (-0.1, "variety is -0.1")):
        with pytest.raises(SinDiffusionError, match=match):
            hybrid_model.sample(n=1, variety=bad)
    with pytest.raises(SinDiffusionError, match="not both"):
        hybrid_model.sample(n=1, variety=0.5, prior=0.1)
    with pytest.raises(SinDiffusionError, match="no position prior"):
        hybrid_model.with_patch(prior=None).sample(n=1, variety=1.5)


def test_cli_variety_flag_matches_the_api(hybrid_model, tmp_path):
    import numpy as np
    from PIL import Image

    from sindiffusion.cli import main
    from sindiffusion.image import to_uint8

    hybrid_model.save(tmp_path / "run")
    out = tmp_path / "var"
    args = ["sample", str(tmp_path / "run"), "--n", "1", "--seed", "2", "--device", "cpu"]
    assert main([*args, "--out", str(out), "--variety", "0.5"]) == 0
    got = np.asarray(Image.open(out / "sample-000.png"))
    want = to_uint8(hybrid_model.sample(n=1, seed=2, variety=0.5))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)


def test_a_photo_laid_out_from_a_reduced_copy_hands_over_earlier_in_fewer_steps(hybrid_model):
    from sindiffusion.config import PatchConfig

    reduced = PatchConfig(**{**SMALL_PATCHES, "finest": 16})  # the 32 px image's half-size copy
    full = variant(hybrid_model, hybrid_sigma=0.3, hybrid_steps=3, hybrid_finest=0.2)
    half = variant(full, patch=reduced)
    gain = half.patch.levels[-1].gain
    assert half.patch.factors[-1] == 0.5 and 0.2 / gain > 0.3
    # The switch rises to where the half-size level sees noise 0.2 of its own: the network's
    # levels start there; at full size (gain 1: 0.2 < 0.3) it stays where the config puts it.
    assert half.prepare()[1].hybrid_sigma == pytest.approx(0.2 / gain)
    assert full.prepare()[1].hybrid_sigma == 0.3
    for model, switch in ((half, 0.2 / gain), (full, 0.3)):
        sigmas = model.sigmas(4)
        torch.testing.assert_close(sigmas[-5], torch.tensor(switch))
        assert len(sigmas) == 3 + 4 + 1
    # 0 turns the rule off.
    assert variant(half, hybrid_finest=0.0).prepare()[1].hybrid_sigma == 0.3
    # Such a photo's network runs `reduced_steps` levels unless the call gives its own.
    cut = variant(half, reduced_steps=2)
    assert cut.prepare()[1].steps == 2 and len(cut.sigmas()) == 3 + 2 + 1
    assert cut.prepare(SamplingOptions(steps=4))[1].steps == 4
    assert variant(full, reduced_steps=2).prepare()[1].steps == full.config.sampling.steps
    # And draws `reduced_candidates` layouts unless the call gives its number.
    few = variant(half, candidates=8, reduced_candidates=4)
    assert few.prepare()[1].candidates == 4
    assert few.prepare(SamplingOptions(candidates=8))[1].candidates == 8
    assert variant(full, candidates=8, reduced_candidates=4).prepare()[1].candidates == 8
    assert variant(half, candidates=8).prepare()[1].candidates == 8  # 0 = off


def test_info_says_what_a_sample_of_a_reduced_photo_takes(hybrid_model, tmp_path, capsys):
    import dataclasses
    import json

    from sindiffusion.checkpoint import save_checkpoint
    from sindiffusion.cli import main
    from sindiffusion.config import PatchConfig

    def info(**sampling) -> dict:
        cfg = variant(hybrid_model, **sampling).config
        run = tmp_path / str(len(list(tmp_path.iterdir())))
        save_checkpoint(run, dataclasses.replace(hybrid_model.checkpoint, config=cfg))
        capsys.readouterr()
        assert main(["info", str(run), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    settings = dict(candidates=8, reduced_candidates=4, steps=6, reduced_steps=2)
    full = info(**settings)
    assert full["sampler"] == "heun (6 steps)"
    assert full["layout"] == "closed-form above sigma 0.7, the closest of 8 candidate layouts"
    # The 32 px image laid out from its 16 px copy: what `prepare` gives such a photo.
    reduced = PatchConfig(**{**SMALL_PATCHES, "finest": 16})
    half = info(**settings, patch=reduced, hybrid_finest=0.2)
    assert half["sampler"] == "heun (2 steps)"
    switch = variant(hybrid_model, **settings, patch=reduced, hybrid_finest=0.2).prepare()[1]
    assert half["layout"] == (
        f"closed-form above sigma {switch.hybrid_sigma:.3g}, the closest of 4 candidate "
        "layouts, from a 16 px copy of the image"
    )
