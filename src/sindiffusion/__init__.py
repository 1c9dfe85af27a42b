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

# OpenMP threads that wait at a barrier spin for a while before sleeping (GNU libgomp, which
# the pip builds of torch use, spins about 300k iterations). On 2 cores shared with any other
# busy process the spinning threads steal the cores the working ones need: measured on a
# 2-core Intel Xeon beside one other 2-thread torch job, a zero-training sample took 4.4 s
# instead of 0.31, a trained sample 22 s instead of 0.63, 20 training steps 78 s instead of
# 4.4. With 10k spins: 0.71 s, 2.1 s and 31 s there, and the same speed on an idle machine
# (0.32 s, 0.67 s, 4.4 s). libgomp reads this when torch loads, so it only applies when
# sindiffusion is imported before torch (always so for the command line); a value the user
# set is kept. See docs/benchmarks.md.
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
