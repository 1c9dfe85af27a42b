"""Pinned values from seeded *untrained* networks: no training in any fixture, so a change to
the trainer never moves these, and a change anywhere on the sampling path (schedule,
preconditioning, a sampler, the layout stage, candidates, autoguidance, the known region)
fails one of them. Every weight is drawn from a seeded generator, the zero-initialised last
layers included, so the preconditioning's c_skip, c_out, c_in and c_noise all act on the
output. Float32 on the CPU; ATOL as in `test_pinned.py`."""

from __future__ import annotations

import pytest
import torch
from conftest import natural_tensor
from test_pinned import close

import sindiffusion
from sindiffusion import apps
from sindiffusion.config import DiffusionConfig, ModelConfig
from sindiffusion.diffusion import Denoiser
from sindiffusion.samplers import SAMPLERS
from sindiffusion.schedules import karras_sigmas
from sindiffusion.unet import UNet

TINY = ModelConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4)


def seeded_weights(model: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every parameter of a UNet of shape `model` drawn from one seeded generator: weights
    normal with std 1/sqrt(fan-in), norms' scales 1 + 0.1 normal, biases 0.1 normal."""
    g = torch.Generator().manual_seed(seed)
    state = UNet(model).state_dict()
    out = {}
    for name in sorted(state):
        t = state[name]
        r = torch.randn(t.shape, generator=g)
        if t.dim() > 1:
            out[name] = r / t[0].numel() ** 0.5
        elif "norm" in name and name.endswith("weight"):
            out[name] = 1 + 0.1 * r
        else:
            out[name] = 0.1 * r
    return out


def untrained(parameterization: str) -> Denoiser:
    unet = UNet(TINY)
    unet.load_state_dict(seeded_weights(TINY))
    return Denoiser(unet.eval().requires_grad_(False), DiffusionConfig(parameterization))


def noisy(sigma: float, h: int = 16, w: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return natural_tensor(h, w)[None] + sigma * torch.randn(1, 3, h, w, generator=g)


def test_the_seeded_weights_leave_no_layer_at_zero():
    assert all(t.abs().sum() > 0 for t in seeded_weights(TINY).values())


@pytest.mark.parametrize(
    "parameterization, sigma, want",
    [
        ("edm", 0.3, [0.4804, -0.1155, -0.1242, -0.1096, 0.1206, -0.0080,
                       0.6701, 0.3695, -0.0126, 0.0012, 0.3861, -0.1416]),
        ("edm", 5.0, [0.2590, 0.0097, -0.3876, 0.4187, -0.1161, -0.2181,
                       0.5817, 0.1312, -0.0221, 0.2733, -0.5248, -0.2737]),
        ("eps", 0.3, [0.2075, -0.6126, -0.6483, -0.7496, 0.0888, -0.0695,
                       0.5610, 0.2447, 0.3438, 0.3976, 0.7438, -0.3197]),
        ("eps", 5.0, [2.8449, -6.9919, -3.6177, 0.2549, -3.2694, -5.2528,
                       1.9947, -1.8673, -2.7103, -4.8116, 10.1877, -5.4110]),
    ],
)  # fmt: skip
def test_pinned_denoiser(parameterization, sigma, want):
    out = untrained(parameterization)(noisy(sigma), sigma)
    close(out[0, :, 6, 4:8], want)


@pytest.mark.parametrize(
    "parameterization, want",
    [("edm", 1.57596), ("eps", 1.68756)],
)
def test_pinned_loss(parameterization, want):
    den = untrained(parameterization)
    x0 = torch.stack([natural_tensor(16, 16, seed) for seed in range(3)])
    loss = den.loss(x0, torch.Generator().manual_seed(0))
    assert float(loss) == pytest.approx(want, abs=1e-3)


@pytest.mark.parametrize(
    "name, want",
    [
        ("ddpm", [0.3308, -0.9298, -0.0733, 0.5023, 0.0374, -0.7977,
                  -0.1642, -0.7701, -0.1766, 1.3726, -0.8667, -0.5785]),
        ("euler", [-0.2546, 0.2057, 0.6059, 0.0607, 0.2475, 0.6527,
                   0.2464, -0.0277, 0.1391, -0.2377, -0.8677, 0.4597]),
        ("heun", [-1.8042, -0.7515, 0.7798, -0.5174, 0.4573, 1.6333,
                  0.1736, 0.7015, 0.3475, 0.2511, -1.9949, 2.1856]),
        ("dpmpp_2m", [-0.7011, -0.1087, 0.6070, -0.2108, 0.2382, 0.9814,
                      0.2504, 0.1600, 0.2453, -0.1412, -1.1273, 0.9776]),
    ],
)  # fmt: skip
def test_pinned_sampler(name, want):
    den = untrained("edm")
    sigmas = karras_sigmas(4, 0.01, 10.0)
    g = torch.Generator().manual_seed(0)
    x = sigmas[0] * torch.randn(1, 3, 16, 16, generator=g)
    out = SAMPLERS[name](den, x, sigmas, generator=g)
    close(out[0, :, 6, 4:8], want)


@pytest.fixture(scope="module")
def hybrid():
    """The `fast` preset's sampling (layout stage, 8 candidates, shifts, autoguidance from the
    generic weights) around a seeded untrained network of its shape, float32."""
    cfg = sindiffusion.preset("fast")
    cfg.train.bf16, cfg.train.channels_last = False, False
    weights = seeded_weights(cfg.model)
    return sindiffusion.SinDiffusion(cfg, natural_tensor(32, 32), weights=weights, device="cpu")


def test_pinned_hybrid_sample(hybrid):
    close(hybrid.sample(n=1, seed=0)[0, :, 12, 8:12],
          [0.2533, -0.7526, -0.1487, 0.1060, 0.1642, 0.7236,
          0.9502, 0.6300, 0.5918, 0.1882, 0.1277, 0.0306])  # fmt: skip


def test_pinned_renoised_hybrid_sample(hybrid):
    x = hybrid.sample(n=1, seed=0, renoise=0.3, candidates=2)
    close(x[0, :, 12, 8:12], [-0.0450, 0.4024, 0.0812, -1.0000, 0.6955, -0.0899,
          0.1487, 0.1791, 0.1333, 0.7601, 0.2713, 0.3473])  # fmt: skip


def test_pinned_eps_model_sample():
    cfg = sindiffusion.preset("paper")
    cfg.model = TINY
    model = sindiffusion.SinDiffusion(cfg, natural_tensor(16, 16), weights=seeded_weights(TINY))
    close(model.sample(n=1, seed=0, steps=5)[0, :, 6, 4:8],
          [-1.0000, -1.0000, -0.5034, -1.0000, -0.4142, -0.3585,
          -0.7247, 0.8963, -0.2228, 0.3748, -0.0562, 0.6216])  # fmt: skip


def test_pinned_inpaint(hybrid):
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:24, 4:20] = True
    x = apps.inpaint(hybrid, mask, n=1, seed=0, steps=3)
    close(x[0, :, 12, 8:12], [-0.0832, -0.3973, -0.4596, -0.4792, -0.1951, -0.2595,
          -0.3792, 0.3869, -0.1428, 0.1148, -0.4434, 0.3763])  # fmt: skip


def test_pinned_tiled_mirrored_sample(hybrid):
    x = hybrid.sample(n=1, seed=0, tile=True, mirror="x", candidates=1, size=(24, 40))
    # Tiling and the mirror's average carry float32 differences between CPU kinds further than
    # the other paths: 3.3e-3 on a Xeon without bf16 (a real change is > 1e-2).
    close(x[0, :, 12, 8:12], [-0.6639, -0.0422, -0.2404, 0.0359, 0.0889, 0.4925,
          -0.1252, 0.0402, 0.1318, 0.2472, -0.0795, 0.2479], atol=5e-3)  # fmt: skip
