"""Outpainting and inpainting: one mechanism, `regenerate`.

A mask says which pixels to regenerate (True / white) and which to keep. At every sampler
step the known region is kept (noised to the current level, via `guidance.KnownRegion`) and
the rest is denoised; RePaint-style resampling (`samplers.resampled`) runs each stretch of
the schedule several times, re-noising in between, so that the new region and the known one
agree at every noise level and no seam shows. The SDEdit family (`apps.sdedit`) is the same
function started part-way down the schedule. Every sampling option of `SinDiffusion.sample`
works here too (`SamplingOptions`, and a guide).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from ..config import SamplingOptions
from ..contract import Guide
from ..device import seeded
from ..errors import SinDiffusionError
from ..image import MAX_SIDE, check_image_tensor, check_mask, load_image, load_mask
from ..sampling import build_plan, run

if TYPE_CHECKING:
    from ..model import SinDiffusion

MAX_GROWTH = 16  # an outpainted side may be at most this many times the input's
ANCHORS = {
    "center": (0.5, 0.5),
    "top": (0.0, 0.5),
    "bottom": (1.0, 0.5),
    "left": (0.5, 0.0),
    "right": (0.5, 1.0),
    "top-left": (0.0, 0.0),
    "top-right": (0.0, 1.0),
    "bottom-left": (1.0, 0.0),
    "bottom-right": (1.0, 1.0),
}


def regenerate(
    model: SinDiffusion,
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    strength: float = 1.0,
    n: int = 4,
    *,
    options: SamplingOptions | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    guide: Guide | None = None,
    resample: int = 2,
    jump: int = 2,
    exact: bool = True,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    **overrides: Any,
) -> torch.Tensor:
    """Noise `image` to the level `strength`, then denoise it, keeping it outside `mask`.

    model: a trained or zero-training `SinDiffusion`;
    image (3, H, W) in [-1, 1], any size (the network is fully convolutional);
    mask (H, W) bool, True = regenerate; None = the whole image (plain SDEdit);
    strength in (0, 1]: where on the sampler's schedule to start (1 = from pure noise);
    options (or the same as keywords), seed, generator, guide: as `sample`, but one layout
    per result by default (`candidates=1`, no renoise, no random layout shift): the kept
    region already pins the layout;
    resample, jump: RePaint resampling, each `jump` steps run `resample` times (1 = off);
    exact: paste the known pixels back at the end, so they are bit-identical in an 8-bit file.
    Returns (n, 3, H, W) in [-1, 1] on the CPU; the same seed gives the same images.
    """
    if not (isinstance(resample, int) and resample >= 1 and isinstance(jump, int) and jump >= 1):
        raise SinDiffusionError(
            f"resample ({resample}) and jump ({jump}) must be whole numbers of at least 1."
        )
    h, w = image.shape[-2:]
    if mask is None:
        mask = torch.ones(h, w, dtype=torch.bool)
    elif tuple(mask.shape) != (h, w):
        raise SinDiffusionError(
            f"the mask has shape {tuple(mask.shape)} but the image is {(h, w)}; give a mask "
            "of the image's size (H, W)."
        )
    mask = mask.bool().cpu()
    call = SamplingOptions.of(options, **overrides).filled(candidates=1, renoise=0.0)
    parts, opts = model.prepare(call)
    opts.shift = (0.0, 0.0)
    dev = model.device
    known = image.to(dev, torch.float32)
    keep = None if mask.all() else (known, mask.to(dev))
    plan = build_plan(parts, opts, guide, keep, strength, (resample, jump))
    if generator is None:
        generator = seeded(seed, dev)
    # All n at once (max_pixels None): one batch, so RePaint's re-noising draws as it always has.
    x = run(plan, n, (h, w), generator, dev, start=known, callback=callback,
            progress=progress, max_pixels=None)  # fmt: skip
    if exact:
        x = torch.where(mask.cpu(), x, image.cpu().float())
    return x


def input_image(
    model: SinDiffusion, image: torch.Tensor | str | os.PathLike | None
) -> torch.Tensor:
    """An application's input as (3, H, W) in [-1, 1]: a tensor (quantised to 8 bits like a
    file, so `exact` keeps exactly what a saved PNG would hold), a file, or None for the
    model's training image."""
    if image is None:
        return model.image.float().cpu()
    if isinstance(image, torch.Tensor):
        return check_image_tensor(image)
    return load_image(image)


def input_mask(mask: torch.Tensor | str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """An application's mask as (H, W) bool for an image of `size` (H, W): a tensor or a mask
    file (`image.load_mask`'s policy); a one-sentence error for a wrong size, all black or
    all white."""
    if isinstance(mask, torch.Tensor):
        return check_mask(mask, size)
    return load_mask(mask, size)


def parse_extend(text: str) -> dict[str, int]:
    """'left=64,right=128,top=0,bottom=32' (any subset) -> {side: pixels}."""
    out = {}
    for part in text.split(","):
        key, sep, val = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("left", "right", "top", "bottom") or key in out:
            raise SinDiffusionError(
                f"extension {text!r} is not SIDE=PX,...; write it like left=64,right=128."
            )
        try:
            out[key] = int(val)
        except ValueError:
            raise SinDiffusionError(
                f"extension {key}={val!r} is not a whole number of pixels."
            ) from None
    return out


def outpaint_canvas(
    image: torch.Tensor,
    extend: dict[str, int] | None = None,
    size: tuple[int, int] | None = None,
    anchor: str = "center",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Place `image` (3, h, w) on a larger canvas; returns (canvas (3, H, W), mask (H, W)).

    extend: pixels to add per side ({"left": 64, "right": 128, ...}); or size: the canvas
    (H, W) with the image at `anchor` (see `ANCHORS`). The new area is grey (0) in the canvas
    and True in the mask.
    """
    h, w = image.shape[-2:]
    if (extend is None) == (size is None):
        raise SinDiffusionError("give either an extension (--extend) or a size (--size).")
    if size is not None:
        if anchor not in ANCHORS:
            raise SinDiffusionError(
                f"unknown anchor {anchor!r}; choose one of {', '.join(ANCHORS)}."
            )
        H, W = size
        if H < h or W < w:
            raise SinDiffusionError(
                f"size {W}x{H} is smaller than the {w}x{h} image; outpainting only adds pixels."
            )
        fy, fx = ANCHORS[anchor]
        top, left = round((H - h) * fy), round((W - w) * fx)
        extend = {"top": top, "bottom": H - h - top, "left": left, "right": W - w - left}
    assert extend is not None
    ext = {k: int(extend.get(k, 0)) for k in ("left", "right", "top", "bottom")}
    if any(v < 0 for v in ext.values()):
        raise SinDiffusionError(
            f"extension {ext} has a negative side; outpainting only adds pixels."
        )
    if not any(ext.values()):
        raise SinDiffusionError("the extension adds no pixels; give at least one side > 0.")
    H, W = h + ext["top"] + ext["bottom"], w + ext["left"] + ext["right"]
    if max(H, W) > MAX_SIDE or H > MAX_GROWTH * h or W > MAX_GROWTH * w:
        raise SinDiffusionError(
            f"outpainting {w}x{h} to {W}x{H} is too large; keep each side under {MAX_SIDE} px "
            f"and {MAX_GROWTH}x the input."
        )
    canvas = torch.zeros(3, H, W)
    canvas[:, ext["top"] : ext["top"] + h, ext["left"] : ext["left"] + w] = image
    mask = torch.ones(H, W, dtype=torch.bool)
    mask[ext["top"] : ext["top"] + h, ext["left"] : ext["left"] + w] = False
    return canvas, mask


def outpaint(
    model: SinDiffusion,
    image: torch.Tensor | str | os.PathLike | None = None,
    extend: dict[str, int] | None = None,
    size: tuple[int, int] | None = None,
    anchor: str = "center",
    **kwargs,
) -> torch.Tensor:
    """Extend an image beyond its borders; returns (n, 3, H, W) in [-1, 1].

    image: (3, h, w) in [-1, 1], a file path, or None for the training image;
    extend {"left": px, "right": px, "top": px, "bottom": px} or size (H, W) + anchor (see
    `outpaint_canvas`); other keyword arguments as `regenerate` (n, steps, sampler, seed,
    candidates, autoguidance, guide, resample, jump, exact, ...).
    """
    canvas, mask = outpaint_canvas(input_image(model, image), extend, size, anchor)
    return regenerate(model, canvas, mask, **kwargs)


def inpaint(
    model: SinDiffusion,
    mask: torch.Tensor | str | os.PathLike,
    image: torch.Tensor | str | os.PathLike | None = None,
    **kwargs,
) -> torch.Tensor:
    """Regenerate the white (True) part of `mask`; returns (n, 3, H, W) in [-1, 1].

    mask: (H, W) bool or a mask file (`image.load_mask`); image as in `outpaint`; other
    keyword arguments as `regenerate`.
    """
    img = input_image(model, image)
    return regenerate(model, img, input_mask(mask, (img.shape[-2], img.shape[-1])), **kwargs)
