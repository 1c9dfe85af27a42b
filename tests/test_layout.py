"""Choosing among candidate layouts: the coarse-patch Fréchet distance and `sample(candidates=)`."""

from __future__ import annotations

import pytest
import torch
from conftest import natural_tensor, tiny_config

import sindiffusion
from sindiffusion.errors import SinDiffusionError
from sindiffusion.layout import layout_cut, layout_mismatch


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


@pytest.fixture
def hybrid_model():
    cfg = tiny_config()
    cfg.diffusion.hybrid_sigma = 0.7
    cfg.diffusion.sampler, cfg.diffusion.sample_steps = "heun", 6
    return sindiffusion.train(natural_tensor(), config=cfg, steps=2, progress=False)


def test_candidates_choose_among_layouts_and_stay_seeded(hybrid_model):
    calls = []
    one = hybrid_model.sample(n=2, seed=3, candidates=1)
    a = hybrid_model.sample(n=2, seed=3, candidates=3, callback=lambda i: calls.append(i["i"]))
    b = hybrid_model.sample(n=2, seed=3, candidates=3)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, one)
    assert calls == list(range(6))  # one report per step, layout search included


def test_candidates_are_compared_before_the_last_layout_level(hybrid_model):
    den = hybrid_model.denoiser
    sw = den.switch
    five = torch.tensor([80.0, 20.0, 5.0, 2.0, 1.0, 0.5, 0.1, 0.0])  # 5 levels above sw 0.7
    assert sw == 0.7 and layout_cut(den, five) == 4  # the 1.0 level runs once per sample
    assert layout_cut(den, torch.tensor([80.0, 2.0, 0.5, 0.0])) == 2  # two: both
    assert layout_cut(den, torch.tensor([80.0, 0.5, 0.1, 0.0])) == 0  # one: nothing to run
    assert layout_cut(den, torch.tensor([2.0, 1.0])) == 0  # nothing below the switch
    assert layout_cut(den.low, five) == 0  # not a hybrid


def test_one_candidate_is_the_plain_sampler(hybrid_model):
    plain = hybrid_model.sample(n=2, seed=1, candidates=1)
    hybrid_model.config.diffusion.layout_candidates = 4
    assert torch.equal(hybrid_model.sample(n=2, seed=1, candidates=1), plain)
    assert not torch.equal(hybrid_model.sample(n=2, seed=1), plain)


def test_candidates_must_be_positive(hybrid_model):
    with pytest.raises(SinDiffusionError, match="at least 1"):
        hybrid_model.sample(candidates=0)


def test_cli_candidates_flag_matches_the_api(hybrid_model, tmp_path):
    import numpy as np
    from PIL import Image

    from sindiffusion.cli import main
    from sindiffusion.image import to_uint8

    hybrid_model.save(tmp_path / "run")
    args = ["sample", str(tmp_path / "run"), "--n", "1", "--seed", "2", "--out"]
    assert main([*args, str(tmp_path / "three"), "--candidates", "3"]) == 0
    assert main([*args, str(tmp_path / "one"), "--candidates", "1"]) == 0
    three = np.asarray(Image.open(tmp_path / "three" / "sample-000.png"))
    want = to_uint8(hybrid_model.sample(n=1, seed=2, candidates=3))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(three, want)
    assert not np.array_equal(three, np.asarray(Image.open(tmp_path / "one" / "sample-000.png")))


def test_hybrid_only_routes_every_call_to_one_part(hybrid_model):
    hyb = hybrid_model.denoiser
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x = x.to(hybrid_model.device)
    high, low = hyb.high(x, 0.1), hyb.low(x, 5.0)
    assert not torch.equal(hyb(x, 0.1), high)  # below the switch: the network
    with hyb.only("high"):
        assert torch.equal(hyb(x, 0.1), high)
    with hyb.only("low"):
        assert torch.equal(hyb(x, 5.0), low)
    assert hyb.forced is None and torch.equal(hyb(x, 5.0), hyb.high(x, 5.0))
    with pytest.raises(ValueError, match="'high' or 'low'"), hyb.only("middle"):
        pass


def test_renoised_layouts_are_seeded_and_report_every_step(hybrid_model):
    cfg = hybrid_model.config.diffusion
    cfg.layout_steps = 5
    midpath = hybrid_model.sample(n=2, seed=3, candidates=2)
    calls = []
    a = hybrid_model.sample(n=2, seed=3, candidates=2, renoise=1.0, callback=calls.append)
    b = hybrid_model.sample(n=2, seed=3, candidates=2, renoise=1.0)
    one = hybrid_model.sample(n=2, seed=3, candidates=1, renoise=1.0)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, midpath) and not torch.equal(a, one)
    # 5 closed-form steps, then the network from sigma 1: as many levels as the 6-step schedule
    # has below 1, the first of them at 1 exactly.
    below = int((hybrid_model.denoiser.sampling_sigmas(6)[:-1] < 1.0).sum())
    assert [c["i"] for c in calls] == list(range(5 + below))
    assert float(calls[5]["sigma"]) == pytest.approx(1.0)
    assert all(float(c["sigma"]) <= 1.0 for c in calls[5:])
    cfg.layout_renoise = 1.0  # the config's setting is the default of sample()
    assert torch.equal(hybrid_model.sample(n=2, seed=3, candidates=2), a)
    assert torch.equal(hybrid_model.sample(n=2, seed=3, candidates=2, renoise=0), midpath)


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
    assert main([*args, "--renoise", "0.5"]) == 0
    got = np.asarray(Image.open(tmp_path / "sample-000.png"))
    want = to_uint8(hybrid_model.sample(n=1, seed=2, renoise=0.5))[0].permute(1, 2, 0).numpy()
    assert np.array_equal(got, want)
    capsys.readouterr()
    assert main([*args, "--renoise", "-0.5"]) == 2
    assert "must be 0 or more" in capsys.readouterr().err


def test_layout_prior_reaches_the_closed_form_denoiser(hybrid_model):
    from sindiffusion.api import SinDiffusion

    ckpt = hybrid_model._checkpoint
    assert hybrid_model.denoiser.high.cfg.layout == ckpt.config.diffusion.layout_prior == 0.05
    ckpt.config.diffusion.layout_prior = 0.03
    assert SinDiffusion(ckpt).denoiser.high.cfg.layout == 0.03
    ckpt.config.diffusion.layout_prior = 0
    assert SinDiffusion(ckpt).denoiser.high.cfg.layout is None  # 0 turns the prior off


def test_layout_topk_reaches_the_closed_form_denoiser_and_changes_the_layouts(hybrid_model):
    from sindiffusion.api import SinDiffusion

    ckpt = hybrid_model._checkpoint
    before = ckpt.config.diffusion.layout_topk
    try:
        ckpt.config.diffusion.layout_topk = 8
        blended = SinDiffusion(ckpt)
        ckpt.config.diffusion.layout_topk = 1
        nearest = SinDiffusion(ckpt)
    finally:
        ckpt.config.diffusion.layout_topk = before
    assert (blended.denoiser.high.cfg.topk, nearest.denoiser.high.cfg.topk) == (8, 1)
    a, b = blended.sample(n=1, seed=3), nearest.sample(n=1, seed=3)
    assert torch.equal(nearest.sample(n=1, seed=3), b)  # still seeded
    assert (a - b).abs().mean() > 1e-3  # the nearest patch alone draws other layouts


def test_impossible_hybrid_settings_get_a_one_line_error(hybrid_model):
    from sindiffusion.api import SinDiffusion

    dc = hybrid_model._checkpoint.config.diffusion
    before = dc.hybrid_sigma, dc.hybrid_steps, dc.layout_topk
    try:
        dc.hybrid_sigma, dc.hybrid_steps = 100.0, 3  # above sigma_max: no levels for the layout
        with pytest.raises(SinDiffusionError, match="hybrid_sigma .* below sigma_max"):
            SinDiffusion(hybrid_model._checkpoint)
        dc.hybrid_steps = 0  # one schedule across both parts: the layout just never runs
        assert SinDiffusion(hybrid_model._checkpoint).denoiser.switch == 100.0
        dc.hybrid_sigma, dc.layout_topk = 0.7, 0
        with pytest.raises(SinDiffusionError, match="layout_topk is 0"):
            SinDiffusion(hybrid_model._checkpoint)
    finally:
        dc.hybrid_sigma, dc.hybrid_steps, dc.layout_topk = before


def test_split_schedule_gives_the_layout_and_the_network_their_own_steps():
    cfg = tiny_config()
    cfg.diffusion.hybrid_sigma, cfg.diffusion.hybrid_steps = 0.7, 3
    cfg.diffusion.sampler, cfg.diffusion.sample_steps = "heun", 4
    model = sindiffusion.train(natural_tensor(), config=cfg, steps=2, progress=False)
    den = model.denoiser
    sigmas = den.sampling_sigmas(4)
    # 3 levels above the switch from sigma_max, then 4 from the switch itself down, then 0.
    assert len(sigmas) == 3 + 4 + 1 and float(sigmas[-1]) == 0
    assert bool((sigmas[1:] < sigmas[:-1]).all())
    assert float(sigmas[0]) == pytest.approx(den.sigma_max)
    assert int((sigmas > 0.7).sum()) == 3 and float(sigmas[3]) == pytest.approx(0.7)
    assert float(sigmas[-2]) == pytest.approx(den.sigma_min)
    calls = []
    a = model.sample(n=2, seed=3, candidates=2, callback=lambda i: calls.append(i["i"]))
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, model.sample(n=2, seed=3, candidates=2))
    assert calls == list(range(7))  # one report per level, layout search included
    den.high_steps = 0  # one Karras schedule of sample_steps levels across both parts
    assert len(den.sampling_sigmas(4)) == 5


def test_shifted_moves_the_position_prior_per_row(hybrid_model):
    den = hybrid_model.denoiser.high
    g = torch.Generator().manual_seed(0)
    x = natural_tensor()[None].repeat(3, 1, 1, 1) + 0.8 * torch.randn(3, 3, 32, 32, generator=g)
    plain = den(x, 0.8)
    with den.shifted(torch.tensor([[0.0, 0.0], [0.0, 0.3], [0.3, 0.0]])):
        shifted = den(x, 0.8)
    assert den.shifts is None  # restored after the block
    assert torch.equal(shifted[0], plain[0])  # a zero shift is no shift
    assert (shifted[1:] - plain[1:]).abs().mean((1, 2, 3)).min() > 0.01
    with pytest.raises(ValueError, match="2 layout shifts for a call on 3 rows"):
        with den.shifted(torch.zeros(2, 2)):
            den(x, 0.8)


@pytest.mark.parametrize("renoise", [0.0, 0.5])
def test_layout_shift_is_seeded_and_keeps_each_chosen_layouts_shift(hybrid_model, renoise):
    from sindiffusion.api import SinDiffusion

    ckpt = hybrid_model._checkpoint
    before = hybrid_model.sample(n=2, seed=4, candidates=3, renoise=renoise)
    ckpt.config.diffusion.layout_shift = (0.1, 0.3)
    model = SinDiffusion(ckpt)
    # With 3 candidates the chosen rows carry their own shifts on past the choice (a shift
    # per drawn layout would not match the 2 rows left), and the seed repeats them.
    a = model.sample(n=2, seed=4, candidates=3, renoise=renoise)
    b = model.sample(n=2, seed=4, candidates=3, renoise=renoise)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, before)
    one = model.sample(n=2, seed=4, candidates=1, renoise=renoise)
    assert one.shape == (2, 3, 32, 32) and not torch.equal(one, a)


def test_layout_shift_round_trips_through_the_saved_config():
    import json

    from sindiffusion.config import Config, preset

    cfg = preset("fast")
    back = Config.from_dict(json.loads(cfg.to_json()))
    assert back == cfg and isinstance(back.diffusion.layout_shift, tuple)
