"""The SDEdit family (Meng et al. 2022): paint-to-image, harmonization, editing, retargeting,
structural analogy and super-resolution.

One mechanism: noise the input to the level sigma(t0) given by `strength` (a position on the
sampler's own schedule: 1 = pure noise, 0.5 = half-way down), then denoise it with the
single-image model, optionally keeping the input outside a mask. Larger strengths move further
from the input towards the training image's patch statistics. It is `outpaint.regenerate`
started part-way down the schedule.

Inputs are used at their own size (the network is fully convolutional, so any size works);
give them at the training image's scale, since the model knows patches of that scale.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from ..errors import SinDiffusionError
from ..guidance import CoarseContent
from ..image import check_image_tensor, check_size, load_image, resize
from .outpaint import input_image, input_mask, regenerate

if TYPE_CHECKING:
    from ..model import SinDiffusion


def sdedit(
    model: SinDiffusion,
    image: torch.Tensor | str | os.PathLike | None,
    strength: float = 0.5,
    mask: torch.Tensor | str | os.PathLike | None = None,
    **kwargs,
) -> torch.Tensor:
    """Noise `image` to level `strength` and denoise it; returns (n, 3, H, W) in [-1, 1].

    image: (3, H, W) in [-1, 1] or a file (None: the training image); strength in (0, 1];
    mask: (H, W) bool or a mask file, True / white = may change, the rest is kept (None: the
    whole image may change); other keyword arguments as `outpaint.regenerate` (n, steps,
    sampler, seed, candidates, autoguidance, guide, resample, exact, ...).
    """
    img = input_image(model, image)
    if mask is not None:
        mask = input_mask(mask, (img.shape[-2], img.shape[-1]))
    return regenerate(model, img, mask, strength=strength, **kwargs)


def paint(model: SinDiffusion, sketch, strength: float = 0.6, **kwargs) -> torch.Tensor:
    """Paint-to-image: a coarse colour sketch becomes an image in the training image's style."""
    return sdedit(model, sketch, strength=strength, **kwargs)


def harmonize(model: SinDiffusion, image, mask, strength: float = 0.4, **kwargs) -> torch.Tensor:
    """Harmonization: the pasted object (white in `mask`) takes on the image's colours and
    texture; everything outside the mask is kept."""
    return sdedit(model, image, strength=strength, mask=mask, **kwargs)


def edit(model: SinDiffusion, image, mask=None, strength: float = 0.5, **kwargs) -> torch.Tensor:
    """Editing: a hand-edited image (cut / pasted regions) is made seamless again; with a mask,
    only the edited region (white) changes."""
    return sdedit(model, image, strength=strength, mask=mask, **kwargs)


def retarget(
    model: SinDiffusion,
    size: tuple[int, int],
    strength: float = 0.6,
    image: torch.Tensor | str | os.PathLike | None = None,
    **kwargs,
) -> torch.Tensor:
    """Retargeting: the image (default the training image) resized to `size` (H, W) and
    noised to `strength`, then denoised by the model: the scene keeps its structure (a beach
    made twice as wide keeps its horizon) while the model redraws the stretched patches as
    the image's own. The patch denoiser's position prior is in fractions of the canvas, so it
    stretches with it. Returns (n, 3, H, W) in [-1, 1]; keyword arguments as `regenerate`."""
    img = input_image(model, image)
    target = check_size(size, what="the retargeted size")
    stretched = resize(img, target, mode="bicubic").clamp(-1, 1)
    return regenerate(model, stretched, None, strength=strength, **kwargs)


def analogy(
    layout: torch.Tensor | str | os.PathLike,
    texture: SinDiffusion | torch.Tensor | str | os.PathLike,
    strength: float = 0.6,
    max_size: int = 250,
    **kwargs,
) -> torch.Tensor:
    """Structural analogy: the layout of one image painted with the patches of another. The
    `layout` image (a file or (3, H, W) in [-1, 1], used at its size, long side at most
    `max_size`) is noised to `strength` and denoised by a model of the `texture` image: a
    trained run, or, given an image, its zero-training model (the closed-form denoiser over
    its patches). The patch denoiser's position prior is off: the layout is A's, so B's
    patches may come from anywhere in B (with it, B's own layout came back). Returns
    (n, 3, H, W) in [-1, 1]; keyword arguments as `regenerate`."""
    from ..model import SinDiffusion, zero_training

    model = texture if isinstance(texture, SinDiffusion) else zero_training(texture, max_size)
    model = model.with_patch(prior=None)
    if isinstance(layout, torch.Tensor):
        img = check_image_tensor(layout, what="the layout image")
    else:
        img = load_image(layout, max_size=max_size)
    return regenerate(model, img, None, strength=strength, **kwargs)


def upscale(
    model: SinDiffusion,
    factor: float = 2.0,
    image: torch.Tensor | str | os.PathLike | None = None,
    strength: float = 0.6,
    **kwargs,
) -> torch.Tensor:
    """Super-resolution from the image's own patches: the image (default the training image)
    enlarged `factor` times (bicubic), noised to `strength` and denoised with its coarse
    content held (`guidance.CoarseContent`: every estimate, shrunk back by `factor`, is the
    input), so the model only draws the detail the enlargement lacks, with the patches it
    learned. Returns (n, 3, factor H, factor W) in [-1, 1]; keyword arguments as
    `regenerate` (a `guide` is applied over the constraint)."""
    if not 1 < factor <= 8:
        raise SinDiffusionError(f"factor is {factor:g}; give an enlargement between 1 and 8.")
    img = input_image(model, image)
    h, w = img.shape[-2:]
    size = check_size((round(h * factor), round(w * factor)), what="the enlarged size")
    enlarged = resize(img, size, mode="bicubic").clamp(-1, 1)
    user = kwargs.pop("guide", None)

    def held(den):
        den = CoarseContent(den, img.to(model.device))
        return user(den) if user is not None else den

    return regenerate(model, enlarged, None, strength=strength, guide=held, **kwargs)
