"""Noise levels, preconditioning and samplers."""

from __future__ import annotations

import pytest
import torch

from sindiffusion.config import DiffusionConfig, ModelConfig
from sindiffusion.diffusion import Denoiser
from sindiffusion.errors import SinDiffusionError
from sindiffusion.guidance import clipped
from sindiffusion.samplers import SAMPLERS, get_sampler
from sindiffusion.schedules import ddpm_sigmas, karras_sigmas, network_sigmas
from sindiffusion.unet import UNet


def test_ddpm_sigmas_match_the_linear_beta_schedule():
    s = ddpm_sigmas(1000, 1e-4, 0.02)
    assert s.shape == (1000,)
    assert s[0] == pytest.approx((1e-4 / (1 - 1e-4)) ** 0.5, rel=1e-4)
    assert torch.all(s[1:] > s[:-1])
    assert 150 < s[-1] < 160  # alpha-bar_T ~ 4e-5


def test_karras_sigmas_run_from_max_to_min_then_zero():
    s = karras_sigmas(5, 0.002, 80.0)
    assert s.shape == (6,)
    assert s[0] == pytest.approx(80.0) and s[4] == pytest.approx(0.002) and s[5] == 0


def test_sigma_to_t_inverts_the_discrete_schedule():
    den = Denoiser(UNet(ModelConfig(8, (1, 2), 1, 4)), DiffusionConfig(parameterization="eps"))
    t = torch.tensor([0.0, 10.0, 500.0, 999.0])
    assert torch.allclose(den.sigma_to_t(den.sigmas[t.long()]), t, atol=1e-3)


def test_sampling_sigmas_use_all_discrete_levels_for_the_paper_sampler():
    den = Denoiser(UNet(ModelConfig(8, (1, 2), 1, 4)), DiffusionConfig(parameterization="eps"))
    s = network_sigmas(den.cfg, 1000, 0.002, 80.0)  # eps ignores the EDM range
    assert s.shape == (1001,) and torch.equal(s[:-1], den.sigmas.flip(0)) and s[-1] == 0
    edm = network_sigmas(DiffusionConfig(parameterization="edm"), 5, 0.002, 80.0)
    assert torch.equal(edm, karras_sigmas(5, 0.002, 80.0))


# Data x0 ~ N(MU, S^2) per pixel, with another mean and spread in each channel: its exact
# denoiser is known, and so is where the probability-flow ODE takes a noise x_T at sigma_T:
# MU + (x_T - MU) * S / sqrt(S^2 + sigma_T^2).
MU = torch.tensor([-0.4, 0.1, 0.5]).reshape(1, 3, 1, 1)
S = torch.tensor([0.3, 0.5, 0.2]).reshape(1, 3, 1, 1)
# max |error| against that solution at 40 steps; measured 0.104 (euler, 1st order) and
# 0.0097 (heun, dpmpp_2m, 2nd order) over 4 seeds. A 1st-order step in place of a 2nd-order
# one is 0.1 off, a sampler that stops after one denoiser call 2.0.
ODE_ERROR = {"euler": 0.2, "heun": 0.02, "dpmpp_2m": 0.02}


def gaussian_denoiser(calls: list[float]):
    def denoise(x, sigma, **extra):
        calls.append(float(sigma))
        return MU + S**2 / (S**2 + torch.as_tensor(sigma) ** 2) * (x - MU)

    return denoise


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_solves_the_gaussian_case_visiting_every_level_in_order(name):
    sigmas = karras_sigmas(40, 0.01, 20.0)
    x_t = MU + sigmas[0] * torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    calls: list[float] = []
    g = torch.Generator().manual_seed(1)
    out = SAMPLERS[name](gaussian_denoiser(calls), x_t.clone(), sigmas, g)
    if name == "ddpm":  # ancestral: each channel's 4096 samples have the data's mean and std
        mean, std = out.mean(dim=(0, 2, 3)), out.std(dim=(0, 2, 3))
        # measured over 4 seeds: means within 0.016, stds 1-11% high (fixed-large variance)
        assert (mean - MU.flatten()).abs().max() < 0.04, mean
        assert ((std / S.flatten()) - 1).abs().max() < 0.15, std
    else:
        exact = MU + (x_t - MU) * S / (S**2 + sigmas[0] ** 2) ** 0.5
        assert (out - exact).abs().max() < ODE_ERROR[name]
    levels = sigmas[:-1].tolist()
    if name == "heun":  # a second call at the next level, except before the last (sigma 0)
        levels = [v for i, level in enumerate(levels) for v in [level, *levels[i + 1 : i + 2]]]
    assert calls == pytest.approx(levels)  # every level, largest first


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_samplers_are_seeded_and_report_every_step(name):
    den = Denoiser(UNet(ModelConfig(8, (1, 2), 1, 4)), DiffusionConfig(parameterization="edm"))
    sigmas = karras_sigmas(4, 0.002, 80.0)
    seen = []

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 3, 16, 20, generator=g) * sigmas[0]
        return SAMPLERS[name](
            den, x, sigmas, generator=g, callback=lambda info: seen.append(info["i"])
        )

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (2, 3, 16, 20)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert seen[:4] == [0, 1, 2, 3]


def test_clipped_wrapper_bounds_the_estimate():
    assert clipped(lambda x, s: 3 * x)(torch.ones(1, 3, 4, 4), 1.0).max() == 1


def test_unknown_sampler_is_a_user_error():
    with pytest.raises(SinDiffusionError, match="unknown sampler"):
        get_sampler("euler_magic")


@pytest.mark.parametrize("param", ["eps", "edm"])
def test_denoiser_is_exact_at_tiny_noise_for_an_untrained_zero_net(param):
    # the output convolution starts at zero: eps-pred gives x, and EDM's c_skip -> 1 as sigma -> 0
    den = Denoiser(UNet(ModelConfig(8, (1, 2), 1, 4)), DiffusionConfig(parameterization=param))
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(den(x, 1e-4), x, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_extra_arguments_reach_every_denoiser_call_unchanged(name):
    shift = torch.tensor([[0.1, 0.2]])
    seen = []

    def den(x, sigma, shift=None):
        seen.append(shift)
        return x * 0

    x = torch.ones(1, 3, 4, 4) * 20
    SAMPLERS[name](den, x, karras_sigmas(3, 0.01, 20.0), torch.Generator(), None, {"shift": shift})
    assert seen and all(s is shift for s in seen)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("bad", [[1.0, 1.0, 0.0], [1.0, 2.0, 0.0], [1.0], [1.0, -0.5]])
def test_samplers_refuse_noise_levels_that_do_not_decrease(name, bad):
    x = torch.zeros(1, 3, 8, 8)
    with pytest.raises(SinDiffusionError, match="decrease strictly"):
        SAMPLERS[name](lambda x, s: x, x, torch.tensor(bad))
