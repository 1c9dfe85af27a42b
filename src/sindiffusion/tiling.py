"""Denoiser wrappers that shape the canvas: tileable, mirror-symmetric, and in blocks.

- `Tiled`: every call sees the canvas wrapped around (padded circularly, denoised, cropped),
  so the sample's right edge continues its left one and its bottom its top: laid 2 x 2, the
  copies meet without a seam (`metrics.tile_seam_score`).
- `Mirrored`: every estimate is averaged with itself flipped; the part of x that is not
  symmetric then shrinks with sigma, and every sampler ends on an exactly symmetric image.
- `Blocks`: a canvas larger than one block is denoised in overlapping blocks, each with a
  margin of context, blended where they overlap, so a network's memory stays that of one
  block on a photo of any size.

All keep the denoiser contract `denoiser(x, sigma, **extra) -> x0_hat` and compose with every
sampler, guidance and application (`sampling.build_plan` puts them right around the model's
denoiser). `Tiled` costs the padded pixels; `Mirrored` costs nothing; `Blocks` the margins.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .contract import Denoise
from .errors import SinDiffusionError

TILE_PAD = 64  # px of wrapped context on each side: about half the network's receptive field
BLOCK = 1024  # side in px of the blocks a larger canvas is denoised in (`Blocks`): about 1.5 GB
# for the `fast` network on a CPU, and 4 times that at 2048
BLOCK_MARGIN = 64  # px of context around each block: about half the receptive field
BLOCK_BLEND = 32  # px over which two neighbouring blocks' estimates are cross-faded
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


class Blocks:
    """`denoiser` on a canvas of more than `block` x `block` px in overlapping blocks: each
    block is denoised with `margin` px of context on every side (cropped off again), and
    neighbouring blocks overlap by `blend` px, where their estimates are cross-faded. With a
    margin of half the receptive field a convolution sees what it would see on the whole
    canvas; only normalisation statistics (GroupNorm's, taken per block) differ, and the
    cross-fade hides that. A canvas of at most one block is denoised whole, as without it."""

    def __init__(
        self,
        denoiser: Denoise,
        block: int = BLOCK,
        margin: int = BLOCK_MARGIN,
        blend: int = BLOCK_BLEND,
    ):
        assert block > blend >= 1 and margin >= 0, (block, margin, blend)
        self.denoiser, self.block, self.margin, self.blend = denoiser, block, margin, blend

    def __call__(self, x: torch.Tensor, sigma, **extra) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h <= self.block and w <= self.block:
            return self.denoiser(x, sigma, **extra)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        total = torch.zeros((h, w), dtype=torch.float32, device=x.device)
        m = self.margin
        columns = _spans(w, self.block, self.blend, x.device)
        for y0, y1, wy in _spans(h, self.block, self.blend, x.device):
            for x0, x1, wx in columns:
                a, b = max(0, y0 - m), max(0, x0 - m)
                part = x[..., a : min(h, y1 + m), b : min(w, x1 + m)]
                est = self.denoiser(part, sigma, **extra)[..., y0 - a : y1 - a, x0 - b : x1 - b]
                weight = wy[:, None] * wx[None, :]
                out[..., y0:y1, x0:x1] += est.float() * weight
                total[y0:y1, x0:x1] += weight
        return out / total


def _spans(n: int, block: int, blend: int, device: torch.device):
    """(start, end, weights (end - start,)) of the blocks along a side of `n` px: as few
    blocks of at most `block` px as cover it with `blend` px overlaps, and each one's
    cross-fade weights (linear ramps over the overlaps, 1 elsewhere)."""
    if n <= block:
        return [(0, n, torch.ones(n, device=device))]
    count = math.ceil((n - blend) / (block - blend))
    size = math.ceil((n + (count - 1) * blend) / count)
    ramp = (torch.arange(blend, device=device) + 1) / (blend + 1)
    spans = []
    for i in range(count):
        start = min(i * (size - blend), n - size)
        weight = torch.ones(size, device=device)
        if i > 0:
            weight[:blend] = ramp
        if i < count - 1:
            weight[-blend:] = ramp.flip(0)
        spans.append((start, start + size, weight))
    return spans
