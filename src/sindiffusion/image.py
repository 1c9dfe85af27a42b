"""Images in and out: load and validate, resize, convert, save atomically, grids.

Tensors are float `(3, H, W)` or `(N, 3, H, W)` with values in [-1, 1]; PIL images are RGB.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import SinDiffusionError

MIN_SIDE = 16  # smallest side (px) the network is trained or sampled at
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode (RGBA, LA, P, L, 1, CMYK, 16-bit, float) to 8-bit RGB."""
    if img.mode in SIXTEEN_BIT_MODES or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        # 16-bit and 32-bit integer images are scaled by their type's range, floats by their max.
        top = 65535.0 if img.mode != "F" else max(float(a.max()), 1e-8)
        if img.mode != "F" and a.max() <= 255:
            top = 255.0
        a = np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        img = Image.fromarray(a, mode="L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        # Like SinGAN, the alpha channel is dropped: colours are kept as painted.
        img = img.convert("RGBA").convert("RGB")
    return img.convert("RGB")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as an RGB PIL image, with EXIF orientation applied.

    Raises `SinDiffusionError` (one sentence) for a missing, unreadable or truncated file.
    """
    path = Path(path)
    if not path.exists():
        raise SinDiffusionError(f"{path}: no such file; check the path.")
    if path.is_dir():
        raise SinDiffusionError(
            f"{path} is a folder; give an image file (PNG, JPEG, WebP, TIFF, BMP)."
        )
    try:
        with Image.open(path) as img:
            img.load()
            img = ImageOps.exif_transpose(img)
            return _to_rgb(img)
    except UnidentifiedImageError:
        raise SinDiffusionError(
            f"{path} is not an image Pillow can read; give a PNG, JPEG, WebP, TIFF or BMP file."
        ) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise SinDiffusionError(
            f"{path} is truncated or corrupt ({e}); re-export or re-download the image."
        ) from None


def fit_size(height: int, width: int, max_size: int | None, multiple: int = 1) -> tuple[int, int]:
    """The (height, width) an image is resized to: long side at most `max_size` (never upscaled),
    each side rounded down to a multiple of `multiple` (at least `multiple`)."""
    scale = 1.0
    if max_size is not None and max(height, width) > max_size:
        scale = max_size / max(height, width)
    h = max(multiple, int(round(height * scale)) // multiple * multiple)
    w = max(multiple, int(round(width * scale)) // multiple * multiple)
    return h, w


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float tensor (3, H, W) in [-1, 1]."""
    a = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(a).permute(2, 0, 1).contiguous() / 127.5 - 1.0


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> RGB PIL image (values clamped, rounded)."""
    return Image.fromarray(to_uint8(x).permute(1, 2, 0).numpy(), mode="RGB")


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] floats -> uint8 in [0, 255], any shape."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 in [0, 255] -> float in [-1, 1], any shape."""
    return x.float() / 127.5 - 1.0


def load_image(
    path: str | os.PathLike,
    max_size: int | None = None,
    multiple: int = 1,
    min_side: int = MIN_SIDE,
) -> torch.Tensor:
    """Load an image file as a float tensor (3, H, W) in [-1, 1].

    The long side is reduced to `max_size` (never enlarged), and each side is rounded down to
    a multiple of `multiple`. An image whose short side would fall below `min_side` is an error.
    """
    img = open_image(path)
    w0, h0 = img.size
    h, w = fit_size(h0, w0, max_size, multiple)
    if min(h, w) < min_side or min(h0, w0) < min_side:
        raise SinDiffusionError(
            f"{path} is too small ({w0}x{h0} px, {w}x{h} after resizing); "
            f"give an image whose short side is at least {min_side} px."
        )
    if (h, w) != (h0, w0):
        img = img.resize((w, h), Image.LANCZOS)
    return pil_to_tensor(img)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (N, 3, H, W) or (3, H, W) to `size` = (height, width), antialiased when
    shrinking; mode "bilinear" or "bicubic" (sharper; it can overshoot [-1, 1] a little)."""
    squeeze = x.dim() == 3
    if squeeze:
        x = x[None]
    if tuple(x.shape[-2:]) != tuple(size):
        down = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=down)
    return x[0] if squeeze else x


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call `write(tmp_path)`, then rename the temporary file over `path`.

    A crash mid-write leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_image(x: torch.Tensor | Image.Image, path: str | os.PathLike) -> Path:
    """Save a (3, H, W) tensor in [-1, 1] (or a PIL image) atomically; the format follows the
    file extension (PNG recommended)."""
    img = tensor_to_pil(x) if isinstance(x, torch.Tensor) else x
    fmt = Image.registered_extensions().get(Path(path).suffix.lower(), "PNG")
    atomic_write(path, lambda tmp: img.save(tmp, format=fmt))
    return Path(path)


def make_grid(
    images: torch.Tensor | Sequence[torch.Tensor], nrow: int = 4, pad: int = 2
) -> torch.Tensor:
    """Tile images (N, 3, H, W) of one size (or a list of (3, h, w) of any sizes) into one
    (3, H', W') tensor in [-1, 1] on a white background, `nrow` images per row."""
    items = list(images)
    assert items, "make_grid needs at least one image"
    nrow = max(1, min(nrow, len(items)))
    rows = (len(items) + nrow - 1) // nrow
    cell_h = max(t.shape[-2] for t in items)
    cell_w = max(t.shape[-1] for t in items)
    grid = torch.ones(3, rows * (cell_h + pad) + pad, nrow * (cell_w + pad) + pad)
    for i, t in enumerate(items):
        r, c = divmod(i, nrow)
        y, x = pad + r * (cell_h + pad), pad + c * (cell_w + pad)
        grid[:, y : y + t.shape[-2], x : x + t.shape[-1]] = t.detach().float().cpu()
    return grid


def vstack(images: Sequence[torch.Tensor], pad: int = 2) -> torch.Tensor:
    """Stack (3, h, w) images of any sizes top to bottom, left-aligned, on white; each row
    keeps its own height (unlike `make_grid`, whose cells share the tallest height)."""
    width = max(t.shape[-1] for t in images)
    rows = [torch.ones(3, t.shape[-2], width) for t in images]
    for row, t in zip(rows, images, strict=True):
        row[:, :, : t.shape[-1]] = t.detach().float().cpu()
    gap = torch.ones(3, pad, width)
    return torch.cat([r for row in rows for r in (row, gap)][:-1], dim=1)


def parse_size(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' (as in ImageMagick) -> (height, width)."""
    parts = text.lower().split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise SinDiffusionError(
            f"size {text!r} is not WIDTHxHEIGHT; write it like 512x256."
        ) from None
    if w < MIN_SIDE or h < MIN_SIDE or w > 8192 or h > 8192:
        raise SinDiffusionError(
            f"size {text!r} is out of range; each side must be between {MIN_SIDE} and 8192 px."
        )
    return h, w


def parse_scale(text: str) -> tuple[float, float]:
    """'SXxSY' (width factor x height factor, e.g. '1.5x1') or one factor '2' -> (sy, sx)."""
    parts = text.lower().split("x")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(0.1 <= v <= 16 for v in vals):
        raise SinDiffusionError(
            f"scale {text!r} is not WIDTHFACTORxHEIGHTFACTOR between 0.1 and 16; write it like 1.5x1."
        )
    return vals[1], vals[0]
