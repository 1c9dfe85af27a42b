"""Applications of a single-image model, all built on one sampling call (`sampling.py`).

- `outpaint`, `inpaint`: regenerate a masked region, keeping the rest (`apps.outpaint`);
- `animate` (and `write_video`): a smooth walk through the noise (`apps.animate`);
- `sdedit`, `paint`, `harmonize`, `edit`, `retarget`, `analogy`, `upscale`: noise an input
  part-way, denoise (`apps.sdedit`).

Each takes a model (`SinDiffusion`, trained or zero-training) and the sampling options of
`SinDiffusion.sample` (sampler, steps, candidates, renoise, autoguidance, guide, seed, ...).
"""

from .animate import animate, check_video_path, write_video
from .outpaint import (
    ANCHORS,
    inpaint,
    input_image,
    input_mask,
    outpaint,
    outpaint_canvas,
    parse_extend,
    regenerate,
)
from .sdedit import analogy, edit, harmonize, paint, retarget, sdedit, upscale

__all__ = [
    "ANCHORS",
    "analogy",
    "animate",
    "check_video_path",
    "edit",
    "harmonize",
    "inpaint",
    "input_image",
    "input_mask",
    "outpaint",
    "outpaint_canvas",
    "paint",
    "parse_extend",
    "regenerate",
    "retarget",
    "sdedit",
    "upscale",
    "write_video",
]
