"""Outpainting and inpainting: one mechanism, `regenerate`.

A mask says which pixels to regenerate (True / white) and which to keep. At every sampler
step the known region is kept (noised to the current level, via `guidance.KnownRegion`) and
the rest is denoised; RePaint-style resampling (`resampled`) runs each stretch of the
schedule several times, re-noising in between, so that the new region and the known one
agree at every noise level and no seam shows. The SDEdit family (`apps.sdedit`) is the same
function started part-way down the schedule.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import SinDiffusionError
from ..guidance import KnownRegion
from ..image import MIN_SIDE, from_uint8, open_image, to_uint8
from ..samplers import clipped, get_sampler

MAX_SIDE = 8192  # largest output side, as for `sindiffusion sample --size`
MAX_GROWTH = 16  # an outpainted side may be at most this many times the input's
MASK_THRESHOLD = 128  # mask pixels >= this (of 255, luminance) are regenerated
MASK_GREY_LIMIT = 0.05  # a mask with more mid-grey pixels than this is not a mask
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


def resampled(sampler: Callable, times: int = 2, jump: int = 2) -> Callable:
    """Wrap a sampler so that each stretch of `jump` steps is run `times` times (RePaint).

    Between runs x is taken back from the stretch's last noise level s_b to its first s_a by
    adding fresh noise of variance s_a^2 - s_b^2 (x = x0 + sigma * noise makes this exact), so
    the generated region is re-harmonised with the known one. The last stretch (ending at
    sigma = 0) runs once. `times` = 1 returns `sampler` itself. Same signature as a sampler.
    """
    if times <= 1:
        return sampler

    def sample(denoiser, x, sigmas, generator=None, callback=None):
        n = len(sigmas) - 1
        for a in range(0, n, jump):
            chunk = sigmas[a : min(a + jump, n) + 1]
            cb = None
            if callback is not None:

                def cb(info, a=a):
                    callback({**info, "i": info["i"] + a})

            for r in range(times if chunk[-1] > 0 else 1):
                if r:
                    dev = generator.device if generator is not None else x.device
                    noise = torch.randn(x.shape, generator=generator, device=dev).to(x.device)
                    x = x + (chunk[0] ** 2 - chunk[-1] ** 2).sqrt() * noise
                x = sampler(denoiser, x, chunk, generator=generator, callback=cb)
        return x

    return sample


def schedule(model, steps: int, strength: float = 1.0) -> torch.Tensor:
    """The model's `steps`-level schedule cut to its last ceil(strength * steps) levels, then 0.

    strength in (0, 1]: 1 starts from pure noise (sigma_max); 0.5 from the level half-way down
    the schedule (the SDEdit t0), so only that many steps run.
    """
    if not 0 < strength <= 1:
        raise SinDiffusionError(f"strength {strength:g} is out of range; give a value in (0, 1].")
    sigmas = model.denoiser.sampling_sigmas(steps)
    k = max(1, math.ceil(strength * (len(sigmas) - 1) - 1e-9))
    return sigmas[len(sigmas) - 1 - k :]


def regenerate(
    model,
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    strength: float = 1.0,
    n: int = 1,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    generator: torch.Generator | None = None,
    denoiser: Callable | None = None,
    resample: int = 2,
    jump: int = 2,
    exact: bool = True,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Noise `image` to the level `strength`, then denoise it, keeping it outside `mask`.

    model: a loaded model (`.denoiser`, `.config.diffusion`, `.device`);
    image (3, H, W) in [-1, 1], any size (the network is fully convolutional);
    mask (H, W) bool, True = regenerate; None = the whole image (plain SDEdit);
    strength in (0, 1]: where on the sampler's schedule to start (1 = from pure noise);
    resample, jump: RePaint resampling, each `jump` steps run `resample` times (1 = off);
    exact: paste the known pixels back at the end, so they are bit-identical in an 8-bit file;
    denoiser: a wrapped denoiser (e.g. guidance) instead of the model's own.
    Returns (n, 3, H, W) in [-1, 1] on the CPU; the same seed gives the same images.
    """
    cfg = model.config.diffusion
    h, w = image.shape[-2:]
    if mask is None:
        mask = torch.ones(h, w, dtype=torch.bool)
    assert mask.shape == (h, w) and mask.dtype == torch.bool, (mask.shape, image.shape)
    dev = model.device
    steps = steps or cfg.sample_steps
    sigmas = schedule(model, steps, strength).to(dev)
    fn = resampled(get_sampler(sampler or cfg.sampler), resample, max(1, jump))
    den = denoiser or model.denoiser
    if cfg.clip_denoised:
        den = clipped(den)
    known = image.to(dev, torch.float32)
    if not mask.all():
        den = KnownRegion(den, known, mask.to(dev))
    if generator is None:
        generator = torch.Generator(device=dev).manual_seed(seed)
    noise = torch.randn((n, 3, h, w), generator=generator, device=generator.device).to(dev)
    x = known[None] + sigmas[0] * noise
    bar = tqdm(disable=not progress, unit="step", desc="sampling")

    def step_cb(info):
        bar.update(1)
        if callback is not None:
            callback(info)

    x = fn(den, x, sigmas, generator=generator, callback=step_cb).clamp(-1, 1).cpu()
    bar.close()
    if exact:
        x = torch.where(mask.cpu(), x, image.cpu().float())
    return x


def load_mask(path: str | os.PathLike, size: tuple[int, int]) -> torch.Tensor:
    """Read a mask file as (H, W) bool, True (white) = regenerate; `size` = (H, W) it must have.

    Policy: luminance >= 128 is white. Anti-aliased edges are fine, but a file with more than
    5% mid-grey pixels (16-239) is refused as not a black-and-white mask, and so is a mask
    that is all black (nothing to do) or all white (nothing kept: use `sample`).
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
    return check_mask(torch.from_numpy(a >= MASK_THRESHOLD), str(path))


def check_mask(mask: torch.Tensor, what: str = "mask") -> torch.Tensor:
    """Refuse an all-black (nothing to regenerate) or all-white (nothing kept) mask."""
    if not mask.any():
        raise SinDiffusionError(f"{what} is all black; paint the region to regenerate white.")
    if mask.all():
        raise SinDiffusionError(
            f"{what} is all white, so nothing is kept; use `sindiffusion sample` instead."
        )
    return mask


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


def _image(model, image: torch.Tensor | str | os.PathLike | None) -> torch.Tensor:
    """The input image as (3, H, W) in [-1, 1]: a tensor, a file, or the training image."""
    if image is None:
        return model.image.float().cpu()
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] != 3 or min(image.shape[-2:]) < MIN_SIDE:
            raise SinDiffusionError(
                f"image tensor has shape {tuple(image.shape)}; give (3, H, W) with sides >= {MIN_SIDE}."
            )
        # 8-bit quantised like a file, so `exact` keeps exactly what a saved PNG would hold.
        return from_uint8(to_uint8(image))
    from ..image import load_image

    return load_image(image)


def outpaint(
    model,
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
    denoiser, resample, jump, exact, ...).
    """
    canvas, mask = outpaint_canvas(_image(model, image), extend, size, anchor)
    return regenerate(model, canvas, mask, **kwargs)


def inpaint(
    model,
    mask: torch.Tensor | str | os.PathLike,
    image: torch.Tensor | str | os.PathLike | None = None,
    **kwargs,
) -> torch.Tensor:
    """Regenerate the white (True) part of `mask`; returns (n, 3, H, W) in [-1, 1].

    mask: (H, W) bool or a mask file (see `load_mask`); image as in `outpaint`; other keyword
    arguments as `regenerate`.
    """
    img = _image(model, image)
    if isinstance(mask, torch.Tensor):
        if mask.shape != img.shape[-2:]:
            raise SinDiffusionError(
                f"mask has shape {tuple(mask.shape)} but the image is {tuple(img.shape[-2:])}; "
                "give a mask of the image's size."
            )
        mask = check_mask(mask.bool().cpu())
    else:
        mask = load_mask(mask, tuple(img.shape[-2:]))
    return regenerate(model, img, mask, **kwargs)
