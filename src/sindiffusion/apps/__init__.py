"""Applications of a trained single-image model, all built on the denoiser contract.

- `outpaint`, `inpaint`: regenerate a masked region, keeping the rest (`apps.outpaint`);
- `sdedit`, `paint`, `harmonize`, `edit`: noise an input part-way, denoise (`apps.sdedit`).

Each takes a model (anything with `.denoiser`, `.image`, `.config.diffusion`, `.device`) and
composes with any sampler and any guidance wrapper (`sindiffusion.guidance`) via `denoiser=`.
"""

from .outpaint import (
    inpaint,
    load_mask,
    outpaint,
    outpaint_canvas,
    parse_extend,
    regenerate,
    resampled,
)
from .sdedit import edit, harmonize, paint, sdedit

__all__ = [
    "edit",
    "harmonize",
    "inpaint",
    "load_mask",
    "outpaint",
    "outpaint_canvas",
    "paint",
    "parse_extend",
    "regenerate",
    "resampled",
    "sdedit",
]
