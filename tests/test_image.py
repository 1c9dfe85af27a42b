"""Loading, converting, resizing and saving images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import natural_like
from PIL import Image

from sindiffusion.errors import SinDiffusionError
from sindiffusion.image import (
    fit_size,
    load_image,
    make_grid,
    parse_scale,
    parse_size,
    pil_to_tensor,
    save_image,
    tensor_to_pil,
    vstack,
)

RGB = natural_like(40, 60)


@pytest.mark.parametrize(
    "mode,ext",
    [
        ("RGB", ".png"),
        ("RGB", ".jpg"),
        ("RGB", ".webp"),
        ("RGB", ".tiff"),
        ("RGB", ".bmp"),
        ("RGBA", ".png"),
        ("LA", ".png"),
        ("L", ".png"),
        ("P", ".png"),
        ("CMYK", ".jpg"),
        ("1", ".png"),
    ],
)
def test_every_mode_and_format_loads_as_rgb_in_range(tmp_path, mode, ext):
    path = tmp_path / f"img{ext}"
    Image.fromarray(RGB).convert(mode).save(path)
    x = load_image(path)
    assert x.shape == (3, 40, 60)
    assert x.dtype == torch.float32
    assert -1 <= x.min() and x.max() <= 1


def test_sixteen_bit_grayscale_keeps_its_range(tmp_path):
    a = (np.linspace(0, 65535, 40 * 60).reshape(40, 60)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(a).save(path)
    x = load_image(path)
    assert x.shape == (3, 40, 60)
    assert x.min() == -1 and x.max() == 1  # not clipped to white by a naive conversion


def test_rgba_drops_alpha_but_keeps_colours(tmp_path):
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 10, np.uint8)])
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    assert torch.equal(load_image(path), pil_to_tensor(Image.fromarray(RGB)))


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(RGB).save(path, exif=exif)
    stored = np.asarray(Image.open(path).convert("RGB"))  # the JPEG's pixels as stored, 40x60
    shown = np.ascontiguousarray(np.rot90(stored, k=-1))  # turned clockwise: 60 rows, 40 cols
    # Not just the shape: a transpose or a turn the other way has it too.
    assert torch.equal(load_image(path), pil_to_tensor(Image.fromarray(shown)))


def test_max_size_shrinks_never_enlarges_and_rounds_to_multiple(tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(RGB).save(path)
    assert load_image(path, max_size=30, multiple=4).shape == (3, 20, 28)
    assert load_image(path, max_size=500).shape == (3, 40, 60)
    assert fit_size(188, 250, 250, 4) == (188, 248)
    assert fit_size(500, 1000, 250, 1) == (125, 250)


def test_not_an_image_is_a_one_line_error(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(SinDiffusionError, match="not an image"):
        load_image(path)


def test_truncated_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(natural_like(64, 64)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SinDiffusionError, match="truncated or corrupt"):
        load_image(path)


def test_missing_file_and_folder_errors(tmp_path):
    with pytest.raises(SinDiffusionError, match="no such file"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(SinDiffusionError, match="is a folder"):
        load_image(tmp_path)


def test_too_small_image_is_an_error(tmp_path):
    path = tmp_path / "small.png"
    Image.fromarray(natural_like(8, 40)).save(path)
    with pytest.raises(SinDiffusionError, match="too small"):
        load_image(path)


def test_tensor_pil_round_trip_is_exact():
    img = Image.fromarray(RGB)
    assert np.array_equal(np.asarray(tensor_to_pil(pil_to_tensor(img))), RGB)


def test_save_image_is_atomic_and_leaves_no_temporary_files(tmp_path):
    x = pil_to_tensor(Image.fromarray(RGB))
    save_image(x, tmp_path / "out" / "a.png")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]
    assert torch.equal(load_image(tmp_path / "out" / "a.png"), x)


def test_grid_places_images_in_rows():
    # Five images of five greys (and a ramp inside each) on 2 rows of 3, row by row, 2 px apart
    # on white; the sixth cell stays white.
    ramp = torch.linspace(-0.1, 0.1, 12)
    images = torch.linspace(-0.8, 0.8, 5)[:, None, None, None] + ramp.expand(5, 3, 10, 12)
    grid = make_grid(images, nrow=3, pad=2)
    assert grid.shape == (3, 2 * 12 + 2, 3 * 14 + 2)
    white = torch.ones_like(grid, dtype=torch.bool)
    for i, image in enumerate(images):
        row, col = divmod(i, 3)
        y, x = 2 + row * 12, 2 + col * 14
        assert torch.equal(grid[:, y : y + 10, x : x + 12], image), i
        white[:, y : y + 10, x : x + 12] = False
    assert (grid[white] == 1).all()


def test_size_and_scale_parsing():
    assert parse_size("512x256") == (256, 512)
    assert parse_scale("1.5x1") == (1.0, 1.5)
    assert parse_scale("2") == (2.0, 2.0)
    for bad in ["512", "axb", "8x8", "100000x10"]:
        with pytest.raises(SinDiffusionError, match="size"):
            parse_size(bad)
    for bad in ["0x1", "x", "1x2x3"]:
        with pytest.raises(SinDiffusionError, match="scale"):
            parse_scale(bad)


def test_vstack_keeps_each_rows_height():
    out = vstack([torch.zeros(3, 10, 30), torch.zeros(3, 20, 12)], pad=2)
    assert out.shape == (3, 32, 30)
    assert out[:, 10:12].min() == 1 and out[:, 12:, 12:].min() == 1  # white gap and margin
