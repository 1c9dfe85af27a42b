"""Format-matched scoring: a fake goes through the real image's own JPEG encoding first.

Features such as SIFID's see JPEG block artefacts. A real image stored as a quality-80 JPEG
has them and a PNG sample has not, so the sample scores far from the image for its file
format alone (measured: one LSUN scene's PNG sample 547 SIFID-E, the same sample saved at
quality 75 146), and the other way round for a quality-99 real. Scoring every fake, ours and
a baseline's, after a round trip at the real image's own quality and chroma subsampling
compares the images, not their formats.

- `jpeg_format(path)`: the quality (estimated from the file's quantisation tables, as the IJG
  encoder scales its standard tables) and the chroma subsampling of a JPEG file; None for
  any other format (lossless: nothing to match);
- `round_trip(images, fmt)`: the images encoded and decoded that way.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import torch
from PIL import Image, JpegImagePlugin

from sindiffusion.errors import SinDiffusionError
from sindiffusion.image import IMAGE_FORMATS, pil_to_tensor, tensor_to_pil

# The IJG (libjpeg) standard luminance table (JPEG Annex K), row by row, as Pillow lists it.
_IJG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61,
    12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77,
    24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101,
    72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


@dataclass(frozen=True)
class JpegFormat:
    """How a JPEG file was encoded, as far as it changes the pixels."""

    quality: int  # the IJG quality, 1-100
    subsampling: int  # Pillow's chroma subsampling: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0

    def __str__(self) -> str:
        names = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
        return f"JPEG quality {self.quality} ({names.get(self.subsampling, '?')})"


def ijg_table(quality: int) -> list[int]:
    """The luminance quantisation table the IJG encoder writes at `quality` (1-100)."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(255, max(1, (q * scale + 50) // 100)) for q in _IJG_LUMA]


def jpeg_quality(luma: list[int] | tuple[int, ...]) -> int:
    """The IJG quality whose luminance table is closest to `luma` (64 values, row by row)."""
    table = list(luma)
    if len(table) != 64:
        raise SinDiffusionError(f"a JPEG quantisation table has 64 values, not {len(table)}.")

    def distance(quality: int) -> int:
        return sum(abs(a - b) for a, b in zip(ijg_table(quality), table, strict=True))

    return min(range(1, 101), key=distance)


def jpeg_format(path: str | os.PathLike) -> JpegFormat | None:
    """The `JpegFormat` of an image file, or None when it is not a JPEG."""
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            if img.format != "JPEG":
                return None
            tables = getattr(img, "quantization", None) or {}
            if 0 not in tables:
                return None
            sampling = JpegImagePlugin.get_sampling(img)
    except OSError:
        raise SinDiffusionError(f"{path}: cannot read this image; check the file.") from None
    return JpegFormat(jpeg_quality(tables[0]), max(0, sampling))


def round_trip(images: torch.Tensor, fmt: JpegFormat | None) -> torch.Tensor:
    """Images (N, 3, H, W) in [-1, 1] encoded as `fmt` and decoded again (8-bit, as a file
    holds them); None returns them as they are."""
    if fmt is None:
        return images
    out = []
    for image in images:
        buf = io.BytesIO()
        tensor_to_pil(image).save(
            buf, format="JPEG", quality=fmt.quality, subsampling=fmt.subsampling
        )
        with Image.open(buf, formats=["JPEG"]) as decoded:
            out.append(pil_to_tensor(decoded))
    return torch.stack(out).to(images.device)
