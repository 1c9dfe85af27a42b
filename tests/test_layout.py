"""Choosing among candidate layouts: the bidirectional patch distance and `sample(candidates=)`."""

from __future__ import annotations

import pytest
import torch
from conftest import natural_like, tiny_config

import sindiffusion
from sindiffusion.errors import SinDiffusionError
from sindiffusion.image import from_uint8
from sindiffusion.layout import layout_mismatch


def _image(h=32, w=32, seed=0) -> torch.Tensor:
    return from_uint8(torch.from_numpy(natural_like(h, w, seed)).permute(2, 0, 1))


def test_mismatch_is_zero_for_the_image_and_grows_with_foreign_or_missing_content():
    img = _image(48, 40)
    flat = img.mean((1, 2), keepdim=True).expand_as(img)  # right colours, no layout
    other = _image(48, 40, seed=5)
    half = torch.cat([img[:, :24], img[:, :24]], 1)  # top half twice: bottom content missing
    scores = layout_mismatch(torch.stack([img, half, other, flat]), img)
    assert scores.shape == (4,)
    assert scores[0] < 1e-4  # float rounding of the distances only
    assert (scores[1:] > 100 * scores[0]).all()


def test_mismatch_takes_any_output_size():
    img = _image()
    wide = torch.cat([img, img], 2)  # 32 x 64: the image's patches twice, and one seam
    noise = torch.rand(1, 3, 32, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = layout_mismatch(torch.cat([wide[None], noise]), img)
    assert scores.shape == (2,) and 0 < scores[0] < scores[1] / 4
    assert layout_mismatch(torch.zeros(1, 3, 20, 70), img).isfinite().all()


@pytest.fixture
def hybrid_model():
    cfg = tiny_config()
    cfg.diffusion.hybrid_sigma = 0.7
    cfg.diffusion.sampler, cfg.diffusion.sample_steps = "heun", 6
    return sindiffusion.train(_image(), config=cfg, steps=2, progress=False)


def test_candidates_choose_among_layouts_and_stay_seeded(hybrid_model):
    calls = []
    one = hybrid_model.sample(n=2, seed=3, candidates=1)
    a = hybrid_model.sample(n=2, seed=3, candidates=3, callback=lambda i: calls.append(i["i"]))
    b = hybrid_model.sample(n=2, seed=3, candidates=3)
    assert a.shape == (2, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, one)
    assert calls == list(range(6))  # one report per step, layout search included


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
