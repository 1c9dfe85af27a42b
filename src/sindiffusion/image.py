"""Images in and out: load and validate images and masks, resize, convert, save atomically,
grids and contact sheets, folders of images, sizes typed on the command line.

Tensors are float `(3, H, W)` or `(N, 3, H, W)` with values in [-1, 1]; PIL images are RGB;
masks are `(H, W)` bool, True = regenerate. Sizes are `(height, width)` in the Python API, as
tensors are laid out, and `WIDTHxHEIGHT` on the command line, as in ImageMagick (`parse_size`).
"""

from __future__ import annotations

import os
import re
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError

from .errors import SinDiffusionError

MIN_SIDE = 16  # smallest side (px) the network is trained or sampled at
MAX_PIXELS = 100_000_000  # larger image files are refused before they are decoded
MAX_SIDE = 8192  # largest side (px) of an output: a 8192x8192 sample needs about 130 GB
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
IMAGE_KINDS = "PNG, JPEG, WebP, TIFF or BMP"
# The only decoders a file may reach, whatever its name: Pillow would otherwise pick one by
# content, and some (EPS) run external programs.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
MASK_THRESHOLD = 128  # mask pixels >= this (of 255, luminance) are regenerated
MASK_GREY_LIMIT = 0.05  # a mask with more mid-grey pixels than this is not a mask
# The bundled public-domain images (assets/, see assets/LICENSE.md). The demo's (and the web
# page's example) was chosen by measured quality and by eye (docs/benchmarks.md#the-demo-image);
# the rocket is the hard case the docs keep (thin towers against the sky).
BUNDLED_IMAGES = {"tibet": "tibet.jpg", "rocket": "rocket.jpg"}
DEMO_IMAGE = "tibet"


def bundled_image(name: str) -> Path:
    """Path of the bundled image `name` (a key of BUNDLED_IMAGES) inside the installed package."""
    return Path(str(resources.files("sindiffusion") / "assets" / BUNDLED_IMAGES[name]))


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

    Raises `SinDiffusionError` (one sentence) for a missing, unreadable or truncated file, and
    for an image of more than MAX_PIXELS pixels, refused from its header before it is decoded
    (a decompression bomb, or a photo far larger than a model can use).
    """
    path = Path(path)
    if not path.exists():
        raise SinDiffusionError(f"{path}: no such file; check the path.")
    if path.is_dir():
        raise SinDiffusionError(f"{path} is a folder; give an image file ({IMAGE_KINDS}).")
    try:
        with warnings.catch_warnings():  # MAX_PIXELS below decides, not Pillow's own warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path, formats=IMAGE_FORMATS)
        with img:
            if img.width * img.height > MAX_PIXELS:
                raise SinDiffusionError(
                    f"{path} is {img.width}x{img.height} px, more than "
                    f"{MAX_PIXELS // 10**6} megapixels; shrink it first (--max-size only "
                    "resizes after loading)."
                )
            img.load()
            return _to_rgb(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError:  # a header Pillow itself refuses to open
        raise SinDiffusionError(
            f"{path} is larger than {MAX_PIXELS // 10**6} megapixels; shrink it first "
            "(--max-size only resizes after loading)."
        ) from None
    except UnidentifiedImageError:
        raise SinDiffusionError(
            f"{path} is not an image Pillow can read; give a {IMAGE_KINDS} file."
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
        img = img.resize((w, h), Image.Resampling.LANCZOS)
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

    A crash mid-write leaves the previous file intact. A folder that cannot be made or written
    (permissions, a full disk) is a one-sentence `SinDiffusionError`, the previous file intact.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        raise SinDiffusionError(
            f"could not write {path} ({e.strerror or e}); check the folder's permissions and "
            "free space (an earlier file of that name is untouched)."
        ) from None
    except BaseException:
        _remove(tmp)
        raise


def _remove(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


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
    if not items:
        raise SinDiffusionError("a grid needs at least one image.")
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
    return check_size((h, w), what=f"size {text!r}")


def check_size(size: tuple[int, int], what: str = "the output size") -> tuple[int, int]:
    """`size` (height, width) as whole numbers, each side in [MIN_SIDE, MAX_SIDE] px, or a
    one-sentence `SinDiffusionError`."""
    try:
        h, w = int(size[0]), int(size[1])
    except (TypeError, ValueError, IndexError):
        raise SinDiffusionError(f"{what} {size!r} is not (height, width) in pixels.") from None
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise SinDiffusionError(
            f"{what} ({w}x{h} px) is out of range; each side must be between {MIN_SIDE} and "
            f"{MAX_SIDE} px."
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


def check_image_tensor(image: torch.Tensor, what: str = "image tensor") -> torch.Tensor:
    """A user's image tensor (3, H, W) in [-1, 1], checked and quantised to 8 bits as a file
    (and a checkpoint) holds it, so results repeat from a saved copy; a one-sentence
    `SinDiffusionError` for another shape, a side below MIN_SIDE, or NaN / infinite values."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise SinDiffusionError(
            f"{what} has shape {tuple(image.shape)}; give (3, H, W) in [-1, 1]."
        )
    if min(image.shape[-2:]) < MIN_SIDE:
        raise SinDiffusionError(
            f"{what} is too small ({image.shape[-1]}x{image.shape[-2]} px); each side must be "
            f"at least {MIN_SIDE} px."
        )
    if not torch.isfinite(image).all():
        raise SinDiffusionError(f"{what} holds NaN or infinite values; give values in [-1, 1].")
    return from_uint8(to_uint8(image))


# --- masks -------------------------------------------------------------------------------------
def load_mask(path: str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """Read a mask file as (H, W) bool, True (white) = regenerate; `size` = (H, W) it must have.

    Policy: luminance >= 128 is white. Anti-aliased edges are fine, but a file with more than
    5% mid-grey pixels (16-239) is refused as not a black-and-white mask, and so is a mask
    that is all black (nothing to do) or all white (nothing kept: sample instead).
    """
    img = open_image(path).convert("L")
    if (img.height, img.width) != tuple(size):
        raise SinDiffusionError(
            f"{path} is {img.width}x{img.height} px but the image is {size[1]}x{size[0]}; "
            "give a mask of the image's size."
        )
    a = np.asarray(img)
    grey = float(((a >= 16) & (a <= 239)).mean())
    if grey > MASK_GREY_LIMIT:
        raise SinDiffusionError(
            f"{path} is not a black-and-white mask ({grey:.0%} of it is grey); paint the "
            "region to regenerate white and the rest black."
        )
    return check_mask(torch.from_numpy(a >= MASK_THRESHOLD), size, str(path))


def check_mask(mask: torch.Tensor, size: tuple[int, int], what: str = "the mask") -> torch.Tensor:
    """A user's mask as (H, W) bool on the CPU: of the image's `size` (H, W), neither all black
    (nothing to regenerate) nor all white (nothing kept); a one-sentence `SinDiffusionError`
    otherwise. Any dtype: non-zero is True."""
    if tuple(mask.shape) != tuple(size):
        raise SinDiffusionError(
            f"{what} has shape {tuple(mask.shape)} but the image is {tuple(size)}; give a "
            "mask of the image's size (H, W)."
        )
    mask = mask.detach().cpu().bool()
    if not mask.any():
        raise SinDiffusionError(f"{what} is all black; paint the region to regenerate white.")
    if mask.all():
        raise SinDiffusionError(
            f"{what} is all white, so nothing is kept; sample instead (`sindiffusion sample`)."
        )
    return mask


# --- folders and outputs -----------------------------------------------------------------------
def natural_key(path: Path) -> tuple:
    """Sort key that puts 2.jpg before 10.jpg."""
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", path.stem))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in `folder` (by suffix, see IMAGE_SUFFIXES), sorted by name;
    a one-sentence `SinDiffusionError` for a missing folder or one without images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SinDiffusionError(f"{folder} is not a folder; give a folder of images.")
    images = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not images:
        raise SinDiffusionError(
            f"{folder} holds no images ({IMAGE_KINDS}); give a folder of images."
        )
    return images


def check_folder(folder: str | os.PathLike, what: str = "the results") -> Path:
    """`folder` as a Path, or a one-sentence `SinDiffusionError` when it names a file (or sits
    under one): checked before any work is spent on results that could not be written."""
    folder = Path(folder)
    for existing in (folder, *folder.parents):
        if existing.exists():
            if not existing.is_dir():
                raise SinDiffusionError(
                    f"{existing} is a file, not a folder; give --out a folder for {what}."
                )
            break
    return folder


GRID_MAX = 64  # images on a grid.png at most (the first ones)


def write_sample_chunks(
    chunks: Iterable[torch.Tensor], out: str | os.PathLike, prefix: str = "sample"
) -> tuple[int, Path]:
    """`write_samples` for images that come in chunks (m, 3, H, W) in [-1, 1]: each written
    as it comes, so memory holds one chunk and the grid's first `GRID_MAX` images at most.
    Returns (images written, the grid's path)."""
    out = Path(out)
    kept: list[torch.Tensor] = []
    count = 0
    try:
        for chunk in chunks:
            for img in chunk:
                save_image(img, out / f"{prefix}-{count:03d}.png")
                if len(kept) < GRID_MAX:
                    kept.append(img)
                count += 1
    finally:  # a failed write ends a generator of chunks now (its progress bar with it)
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return count, save_image(make_grid(torch.stack(kept), nrow=4), out / "grid.png")


def write_samples(images: torch.Tensor, out: str | os.PathLike, prefix: str = "sample") -> Path:
    """Write each image of (N, 3, H, W) in [-1, 1] as out/PREFIX-NNN.png and the first
    `GRID_MAX` of them as out/grid.png (4 per row); returns the grid's path."""
    return write_sample_chunks([images], out, prefix)[1]


Cell = str | os.PathLike | torch.Tensor | Image.Image | None


def _cell_image(cell: Cell, height: int | None) -> Image.Image | None:
    if cell is None:
        return None
    if isinstance(cell, torch.Tensor):
        img = tensor_to_pil(cell)
    elif isinstance(cell, Image.Image):
        img = cell.convert("RGB")
    else:
        img = open_image(cell)
    if height is not None and img.height != height:
        img = img.resize(
            (max(1, round(img.width * height / img.height)), height), Image.Resampling.LANCZOS
        )
    return img


def contact_sheet(
    rows: Sequence[Sequence[Cell]],
    headers: Sequence[str] | None = None,
    labels: Sequence[Sequence[str | None]] | None = None,
    height: int | None = None,
) -> Image.Image:
    """Tile images into a grid on white: `rows` of cells, each an image file, a (3, H, W)
    tensor in [-1, 1], a PIL image or None (an empty grey cell); a header line of column
    names over the columns; `labels[i][j]`, if given, written in cell (i, j)'s corner. Cells
    are as large as the largest image; with `height`, images are first scaled to that height."""
    cells = [[_cell_image(c, height) for c in row] for row in rows]
    found = [im for row in cells for im in row if im is not None]
    if not found:
        raise SinDiffusionError("a contact sheet needs at least one image.")
    cw, ch = max(im.width for im in found), max(im.height for im in found)
    cols = max(len(row) for row in cells)
    pad, head = 4, 18 if headers else 0
    sheet = Image.new(
        "RGB", (pad + cols * (cw + pad), head + pad + len(cells) * (ch + pad)), "white"
    )
    draw = ImageDraw.Draw(sheet)
    for j, text in enumerate(headers or ()):
        draw.text((pad + j * (cw + pad) + 2, 3), text, fill="black")
    for i, row in enumerate(cells):
        for j, im in enumerate(row):
            x, y = pad + j * (cw + pad), head + pad + i * (ch + pad)
            if im is None:
                draw.rectangle((x, y, x + cw - 1, y + ch - 1), fill=(225, 225, 225))
                draw.text((x + 4, y + 4), "n/a", fill="black")
            else:
                sheet.paste(im, (x, y))
            label = labels[i][j] if labels is not None and j < len(labels[i]) else None
            if label:
                draw.rectangle((x, y, x + 8 + 7 * len(label), y + 14), fill="white")
                draw.text((x + 3, y + 2), label, fill="black")
    return sheet
