"""Pinned values (diffusers-style): tiny seeded models on the CPU in float32, and a slice of
their output. A change of the numbers anywhere on the path (schedule, preconditioning,
sampler, layout stage, autoguidance, known region, patch denoiser) fails one of these; a
change that is meant must update the pinned values, and say so in the CHANGELOG. These train
a few steps first, so they pin the trainer too; `test_pinned_untrained.py` pins the sampling
path alone."""

from __future__ import annotations

import pytest
import torch
from conftest import natural_tensor, tiny_config

import sindiffusion
from sindiffusion import apps
from sindiffusion.patch_denoiser import PatchDenoiser

ATOL = 2e-3  # float32 convolutions differ by ~1e-6 between CPU kinds; a real change is > 1e-2


def close(got: torch.Tensor, want: list[float], atol: float = ATOL) -> None:
    torch.testing.assert_close(got.flatten(), torch.tensor(want), atol=atol, rtol=0)


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny network, random start (seed 0), 10 steps on a 32x32 image."""
    image = natural_tensor(32, 32)
    return sindiffusion.train(
        image, config=tiny_config(), steps=10, seed=0, progress=False, device="cpu"
    )


@pytest.fixture(scope="module")
def fast_model():
    """The `fast` preset in float32 (bf16 depends on the CPU), 2 steps from the generic
    weights: the hybrid layout stage, 8 candidates, shifts and autoguidance all on."""
    cfg = sindiffusion.preset("fast")
    cfg.train.bf16, cfg.train.max_size = False, 32
    image = natural_tensor(32, 32)
    return sindiffusion.train(image, config=cfg, steps=2, seed=0, progress=False, device="cpu")


def test_pinned_dpmpp_2m_sample(tiny_model):
    x = tiny_model.sample(n=1, seed=0, steps=4, sampler="dpmpp_2m")
    close(x[0, :, 12, 8:12], [0.7809, 1.0, 0.4871, -0.8047, -0.6679, 0.0040,
                              0.5545, -0.1872, -0.5001, -0.7971, 0.5036, 1.0])  # fmt: skip


def test_pinned_ancestral_ddpm_sample(tiny_model):
    x = tiny_model.sample(n=1, seed=0, steps=4, sampler="ddpm")
    close(x[0, :, 12, 8:12], [0.3686, -0.1311, 0.7849, 0.0555, 0.0882, -1.0,
                              -0.6626, -0.2821, 0.2651, -0.7857, -0.2202, 0.2445])  # fmt: skip


def test_pinned_fast_preset_sample(fast_model):
    x = fast_model.sample(n=1, seed=0)
    close(x[0, :, 12, 8:12], [0.0134, -0.1044, -0.0672, -0.0706, 0.3629, 0.3945,
                              0.4310, 0.3861, 0.4149, 0.4089, 0.3558, 0.3165])  # fmt: skip


def test_pinned_outpaint_with_candidates_and_autoguidance(fast_model):
    x = apps.outpaint(fast_model, extend={"right": 16}, n=1, seed=0, candidates=3,
                      autoguidance=0.3)  # fmt: skip
    close(x[0, :, 12, 34:38], [-0.4741, -0.2787, -0.3483, -0.3676, -0.1804, -0.1238,
                               -0.1270, -0.1062, 0.2416, 0.3072, 0.4656, 0.3264])  # fmt: skip


def test_pinned_patch_denoiser():
    image = natural_tensor(24, 32)
    g = torch.Generator().manual_seed(0)
    x = image[None] + 0.5 * torch.randn(1, 3, 24, 32, generator=g)
    close(PatchDenoiser(image)(x, 0.5)[0, :, 12, 8:12],
          [-0.1821, -0.1284, -0.1449, -0.1671, 0.4137, 0.3197,
           0.4719, 0.3108, 0.4271, 0.2539, 0.3328, 0.3204])  # fmt: skip


def test_pinned_zero_training_sample():
    x = sindiffusion.zero_training(natural_tensor(24, 32), steps=6).sample(n=1, seed=0)
    # Re-pinned when zero-training moved its start to noise 20 of the coarsest level, prior 0.1.
    close(x[0, :, 12, 8:12], [-0.0945, -0.1495, -0.1118, -0.1454, 0.4411, 0.4292,
                              0.346, 0.4542, 0.3464, 0.4432, 0.3018, 0.3372])  # fmt: skip
