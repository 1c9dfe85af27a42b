"""Format-matched scoring: a JPEG's quality read back from its tables, the round trip, and
`score` / `sindiffusion score` comparing images rather than file formats."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import natural_like, natural_tensor
from PIL import Image

from sindiffusion.cli import main
from sindiffusion.errors import SinDiffusionError
from sindiffusion.image import load_image
from sindiffusion.metrics import JpegFormat, jpeg_format, round_trip, score


@pytest.mark.parametrize("quality", [5, 30, 50, 75, 80, 95, 99, 100])
@pytest.mark.parametrize("subsampling", [0, 2])
def test_a_jpeg_files_quality_and_subsampling_are_read_back(tmp_path, quality, subsampling):
    path = tmp_path / "x.jpg"
    Image.fromarray(natural_like(32, 48)).save(path, quality=quality, subsampling=subsampling)
    assert jpeg_format(path) == JpegFormat(quality, subsampling)


def test_other_formats_have_nothing_to_match_and_a_broken_file_is_one_sentence(tmp_path):
    png = tmp_path / "x.png"
    Image.fromarray(natural_like(32, 48)).save(png)
    assert jpeg_format(png) is None
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(SinDiffusionError, match="cannot read this image"):
        jpeg_format(bad)


def test_the_round_trip_is_the_encoders_and_none_is_the_identity(tmp_path):
    x = natural_tensor(32, 48)[None]
    fmt = JpegFormat(40, 2)
    path = tmp_path / "ref.jpg"
    Image.fromarray(natural_like(32, 48)).save(path, quality=40, subsampling=2)
    assert torch.equal(round_trip(x, fmt)[0], load_image(path))
    assert round_trip(x, None) is x
    assert (round_trip(x, fmt) - x).abs().mean() > 0.005  # it really changes the pixels


@pytest.fixture
def jpeg_real(tmp_path):
    """A quality-30 JPEG real image and the PNG it was encoded from (a fake that differs from
    the real only by the real's own compression)."""
    pixels = natural_like(48, 64)
    real, fake = tmp_path / "real.jpg", tmp_path / "fake.png"
    Image.fromarray(pixels).save(real, quality=30)
    Image.fromarray(pixels).save(fake)
    return str(real), str(fake)


def test_a_format_matched_fake_is_scored_as_the_image_it_is(jpeg_real):
    real, fake = (load_image(p) for p in jpeg_real)
    plain = score(real, fake[None])
    matched = score(real, fake[None], fake_format=jpeg_format(jpeg_real[0]))
    assert matched["sifid_e"] < 1e-3 < plain["sifid_e"]  # encoded alike, it *is* the real
    assert matched["patch_nn"] < plain["patch_nn"]


def test_score_command_matches_the_format_by_default_and_says_so(jpeg_real, capsys):
    real, fake = jpeg_real
    assert main(["score", real, fake, fake, "--json"]) == 0
    captured = capsys.readouterr()
    assert "JPEG quality 30 (4:2:0)" in captured.err and "--no-format-match" in captured.err
    matched = json.loads(captured.out)
    assert matched["format_match"] == "JPEG quality 30 (4:2:0)"
    assert main(["score", real, fake, fake, "--json", "--no-format-match"]) == 0
    captured = capsys.readouterr()
    plain = json.loads(captured.out)
    assert captured.err == "" and plain["format_match"] is None
    assert matched["metrics"]["sifid_e"] < plain["metrics"]["sifid_e"]
