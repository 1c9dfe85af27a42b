"""sindiffusion: learn a diffusion model from a single natural image, then sample new images
of any size, outpaint, inpaint, guide and edit with it (SinDiffusion, Wang et al. 2022).

    import sindiffusion
    model = sindiffusion.train("photo.jpg", minutes=5, out="runs/photo")
    images = model.sample(n=4, size=(256, 512), seed=0)      # (4, 3, 256, 512) in [-1, 1]
    sindiffusion.save_image(images[0], "sample.png")

The data's path, module by module: config, image -> unet, diffusion, patch_denoiser ->
samplers, guidance, layout, sampling -> model, trainer, checkpoint, apps, metrics, many ->
cli, ui (docs/architecture.md has the picture).
"""

import os
import sys

# OpenMP threads waiting at a barrier spin (GNU libgomp: about 300k iterations) and, on a few
# cores shared with another busy process, take the cores the working threads need; 10k spins
# cost nothing on an idle machine (docs/benchmarks.md). libgomp reads this when torch loads,
# so it applies only when sindiffusion is imported first (always for the command line); a
# value the user set is kept.
if "torch" not in sys.modules:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from .config import Config, preset  # noqa: E402
from .errors import SinDiffusionError  # noqa: E402
from .image import load_image, save_image  # noqa: E402
from .model import SinDiffusion, load, zero_training  # noqa: E402
from .patch_denoiser import PatchDenoiser  # noqa: E402
from .trainer import train  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = [
    "Config",
    "PatchDenoiser",
    "SinDiffusion",
    "SinDiffusionError",
    "__version__",
    "load",
    "load_image",
    "preset",
    "save_image",
    "train",
    "zero_training",
]
