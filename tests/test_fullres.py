"""Photos at their own resolution (issue #40): the parts that keep time and memory bounded on
a large image, on tiny stand-ins (a "large" image here is 96 px and a block 32 px)."""

from __future__ import annotations

import pytest
import torch
from conftest import natural_tensor

from sindiffusion.errors import SinDiffusionError
from sindiffusion.image import resize
from sindiffusion.patch_denoiser import PatchDenoiser
from sindiffusion.tiling import Blocks, _spans
from sindiffusion.trainer import rescaled_crop


def test_a_rescaled_crop_is_the_crop_of_the_rescaled_image():
    img = natural_tensor(60, 80)
    # At scale 1 exactly the image's own pixels.
    assert torch.equal(rescaled_crop(img, (60, 80), (5, 7), (24, 32)), img[:, 5:29, 7:39])
    # Shrunk, within a sub-pixel shift of resizing the whole image and cropping.
    whole = resize(img, (45, 60), mode="bicubic")
    for at in ((0, 0), (10, 13), (21, 28)):
        crop = rescaled_crop(img, (45, 60), at, (24, 32))
        assert crop.shape == (3, 24, 32)
        want = whole[:, at[0] : at[0] + 24, at[1] : at[1] + 32]
        assert (crop - want).abs().mean() < 0.05


@pytest.mark.parametrize("n", [33, 64, 100, 1000])
def test_blocks_cover_every_pixel_with_weights_that_add_up(n):
    spans = _spans(n, 32, 8, torch.device("cpu"))
    total = torch.zeros(n)
    for start, end, weight in spans:
        assert 0 <= start < end <= n and end - start <= 32 and len(weight) == end - start
        total[start:end] += weight
    assert total.min() >= 1 - 1e-6


def test_blocks_give_a_local_denoiser_its_whole_canvas_result():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 9, padding=4)

    def denoiser(x, sigma, **extra):
        return conv(x).detach() * float(sigma)

    x = torch.randn(2, 3, 70, 90)
    whole = denoiser(x, 0.5)
    blocks = Blocks(denoiser, block=32, margin=4, blend=8)
    assert torch.allclose(blocks(x, 0.5), whole, atol=1e-5)
    # Without a margin a block's border sees zero padding instead of its neighbour.
    assert not torch.allclose(
        Blocks(denoiser, block=32, margin=0, blend=8)(x, 0.5), whole, atol=1e-3
    )
    # A canvas of one block is passed through as it is.
    small = torch.randn(1, 3, 32, 20)
    assert torch.equal(blocks(small, 0.5), denoiser(small, 0.5))


def test_the_finest_level_stops_at_finest_px():
    img = natural_tensor(64, 96)
    full = PatchDenoiser(img, patch_size=7, stride=4, levels=3, coarsest=12)
    capped = PatchDenoiser(img, patch_size=7, stride=4, levels=3, coarsest=12, finest=48)
    assert full.factors[-1] == 1.0
    assert capped.factors[-1] == pytest.approx(0.5)
    assert capped.factors[0] == pytest.approx(full.factors[0])  # the coarsest level is kept
    # Estimates are always the canvas's size; below the finest level's detail they are smooth.
    x = img[None] + 0.05 * torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    sharp, smooth = full(x, 0.05), capped(x, 0.05)
    assert smooth.shape == sharp.shape == (1, 3, 64, 96)
    detail = lambda y: (y[..., 1:, :] - y[..., :-1, :]).abs().mean()  # noqa: E731
    assert detail(smooth) < 0.8 * detail(sharp)
    # A finest level above the image's size changes nothing.
    same = PatchDenoiser(img, patch_size=7, stride=4, levels=3, coarsest=12, finest=500)
    assert same.factors == full.factors
    with pytest.raises(SinDiffusionError, match="finest"):
        PatchDenoiser(img, patch_size=7, finest=0)


def test_previews_of_a_large_image_hold_fewer_samples(monkeypatch):
    from sindiffusion import trainer, zero_training

    model = zero_training(natural_tensor(32, 48))
    grid = trainer.preview_grid(model, 4)
    assert grid.shape[-1] > 5 * 48 and grid.shape[-2] < 2 * 32  # image + 4 samples in a row
    monkeypatch.setattr(trainer, "PREVIEW_PIXELS", 2 * 32 * 48)  # as if the image were large
    fewer = trainer.preview_grid(model, 4)
    assert 3 * 48 < fewer.shape[-1] < 4 * 48  # image + 2 samples
    assert torch.equal(fewer[:, :36, :52], grid[:, :36, :52])  # the training image first


def test_a_preview_above_its_pixel_budget_is_one_smaller_canvas_beside_a_crop(monkeypatch):
    from sindiffusion import trainer, zero_training

    model = zero_training(natural_tensor(32, 48))
    monkeypatch.setattr(trainer, "PREVIEW_PIXELS", 24 * 36)  # the image holds more
    grid = trainer.preview_grid(model, 4)
    assert grid.shape == (3, 2 + 24 + 2, 2 + 2 * (36 + 2))  # crop | one 24 x 36 sample
    assert torch.equal(grid[:, 2:26, 2:38], model.image[:, 4:28, 6:42])  # the centre crop
    sample = model.sample(1, size=(24, 36), seed=0)[0]
    assert torch.equal(grid[:, 2:26, 40:76], sample)  # drawn at the reduced size, seed 0


def test_a_sample_that_does_not_fit_in_memory_is_refused_before_it_starts(monkeypatch):
    from sindiffusion import zero_training

    model = zero_training(natural_tensor(32, 48))
    monkeypatch.setenv("SINDIFFUSION_MAX_MEMORY", "1000")  # MB
    with pytest.raises(SinDiffusionError, match="SINDIFFUSION_MAX_MEMORY") as err:
        model.sample(1, size=(2048, 2048))  # about 3.5 GB: refused at once, nothing drawn
    assert "2048x2048 px" in str(err.value) and "smaller size" in str(err.value)
    model.sample(1, size=(64, 64))  # a small one still draws
    monkeypatch.setenv("SINDIFFUSION_MAX_MEMORY", "many")
    with pytest.raises(SinDiffusionError, match="whole number"):
        model.sample(1, size=(64, 64))


def test_previews_between_steps_stop_when_they_outgrow_their_share(monkeypatch, tmp_path):
    from conftest import tiny_config

    import sindiffusion
    from sindiffusion import trainer

    monkeypatch.setattr(trainer, "PREVIEW_SHARE", 0.0)  # as if every preview took minutes
    cfg = tiny_config(preview_every=2)
    sindiffusion.train(natural_tensor(32, 32), config=cfg, out=tmp_path, steps=6, progress=False)
    # The first is drawn (nothing spent yet), the next ones not, the last one always.
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == [
        "step-000002.png",
        "step-000006.png",
    ]
