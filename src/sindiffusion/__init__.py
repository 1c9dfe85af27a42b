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

from .config import Config, preset
from .errors import SinDiffusionError
from .image import load_image, save_image
from .model import SinDiffusion, load, zero_training
from .patch_denoiser import PatchDenoiser
from .trainer import train
from .version import __version__

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
