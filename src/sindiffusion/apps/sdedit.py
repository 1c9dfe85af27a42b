"""The SDEdit family (Meng et al. 2022): paint-to-image, harmonization, editing.

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
        mask = input_mask(mask, tuple(img.shape[-2:]))
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
