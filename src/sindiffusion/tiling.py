"""Tileable and mirror-symmetric outputs: two denoiser wrappers.

- `Tiled`: every call sees the canvas wrapped around (padded circularly, denoised, cropped),
  so the sample's right edge continues its left one and its bottom its top: laid 2 x 2, the
  copies meet without a seam (`metrics.tile_seam_score`).
- `Mirrored`: every estimate is averaged with itself flipped; the part of x that is not
  symmetric then shrinks with sigma, and every sampler ends on an exactly symmetric image.

Both keep the denoiser contract `denoiser(x, sigma, **extra) -> x0_hat` and compose with every
sampler, guidance and application (`sampling.build_plan` puts them right around the model's
denoiser). `Tiled` costs the padded pixels; `Mirrored` costs nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .contract import Denoise
from .errors import SinDiffusionError

TILE_PAD = 64  # px of wrapped context on each side: about half the network's receptive field
MIRRORS = ("", "x", "y", "xy")  # left-right, up-down, both


class Tiled:
    """Periodic outputs: `denoiser` on x padded circularly by `pad` px, cropped back."""

    def __init__(self, denoiser: Denoise, pad: int = TILE_PAD):
        self.denoiser, self.pad = denoiser, int(pad)

    def __call__(self, x: torch.Tensor, sigma, **extra) -> torch.Tensor:
        h, w = x.shape[-2:]
        py, px = min(self.pad, h), min(self.pad, w)  # circular padding needs pad <= side
        wrapped = F.pad(x, (px, px, py, py), mode="circular")
        return self.denoiser(wrapped, sigma, **extra)[..., py : py + h, px : px + w]


class Mirrored:
    """A symmetric estimate: the estimate averaged with itself flipped along `axis` ("x":
    left-right, "y": up-down). x's part that is not symmetric then shrinks as sigma falls
    (x - x0_hat carries it, scaled by sigma_next / sigma each step), and every sampler's last
    step, at sigma 0, returns the symmetric estimate itself."""

    def __init__(self, denoiser: Denoise, axis: str):
        assert axis in ("x", "y"), axis
        self.denoiser, self.dim = denoiser, -1 if axis == "x" else -2

    def __call__(self, x: torch.Tensor, sigma, **extra) -> torch.Tensor:
        out = self.denoiser(x, sigma, **extra)
        return (out + out.flip(self.dim)) / 2


def mirrored(denoiser: Denoise, axes: str) -> Denoise:
    """`denoiser` made symmetric along `axes` ("", "x", "y" or "xy")."""
    if axes not in MIRRORS:
        raise SinDiffusionError(f"mirror is {axes!r}; use x, y or xy (or nothing).")
    for axis in axes:
        denoiser = Mirrored(denoiser, axis)
    return denoiser
