"""Shared fixtures: tiny images made on the fly and a tiny config, so tests run in seconds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sindiffusion.config import (
    Config,
    DiffusionConfig,
    ModelConfig,
    PatchConfig,
    SamplingConfig,
    TrainConfig,
)

# Tiny networks gain nothing from a second thread, and one thread keeps timings steady when
# the machine is shared.
torch.set_num_threads(1)


def natural_like(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """A small uint8 RGB image with a sky-like gradient, blobs and texture, (h, w, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    img[..., 0] = 0.3 + 0.4 * y
    img[..., 1] = 0.5 + 0.2 * np.sin(6 * x)
    img[..., 2] = 0.9 - 0.6 * y
    for _ in range(4):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.2)
        blob = ((y - cy) ** 2 + (x - cx) ** 2) < r**2
        img[blob] = rng.uniform(0, 1, 3)
    img += rng.normal(0, 0.03, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def natural_tensor(h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    """`natural_like` as a (3, h, w) tensor in [-1, 1]."""
    from sindiffusion.image import from_uint8

    return from_uint8(torch.from_numpy(natural_like(h, w, seed)).permute(2, 0, 1))


@pytest.fixture
def no_inception_download(monkeypatch):
    """Forbid fetching the InceptionV3 weights: set the package's SINDIFFUSION_NO_DOWNLOAD
    switch, and fail the test (rather than download 100 MB) should the switch be ignored."""
    from sindiffusion.metrics import backbones

    def refuse(cache):
        pytest.fail(f"tried to download the Inception weights into {cache}")

    monkeypatch.setenv("SINDIFFUSION_NO_DOWNLOAD", "1")
    monkeypatch.setattr(backbones, "_download_inception", refuse)


@pytest.fixture
def image_file(tmp_path):
    """Path to a 32x32 RGB PNG."""
    path = tmp_path / "tiny.png"
    Image.fromarray(natural_like(32, 32)).save(path)
    return path


# The patch denoiser's knobs in proportion to the tests' 24-48 px images (the defaults' 15-19 px
# patches are for 250 px ones and would cover most of a tiny image).
SMALL_PATCHES = {"patch_size": 7, "stride": 4, "topk": 8}


def tiny_config(**train) -> Config:
    """A UNet with a few thousand parameters, fp32, fast checkpoints: for tests only."""
    t = dict(
        steps=20,
        batch_size=2,
        lr=2e-3,
        ema_decay=0.9,
        checkpoint_every=10,
        preview_every=0,
        preview_steps=3,
        max_size=32,
    )
    t.update(train)
    return Config(
        preset="tiny",
        model=ModelConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4),
        diffusion=DiffusionConfig(parameterization="edm"),
        sampling=SamplingConfig(sampler="dpmpp_2m", steps=4, patch=PatchConfig(**SMALL_PATCHES)),
        train=TrainConfig(**t),
    )


@pytest.fixture
def tiny():
    return tiny_config()


@pytest.fixture
def tiny_config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(tiny_config().to_json())
    return path
