"""sindiffusion: learn a diffusion model from a single natural image, then sample new images
of any size, outpaint, inpaint, guide and edit with it (SinDiffusion, Wang et al. 2022)."""

__version__ = "0.1.0"

from .api import SinDiffusion, load, train  # noqa: E402
from .config import Config, preset  # noqa: E402
from .errors import SinDiffusionError  # noqa: E402
from .image import load_image, save_image  # noqa: E402
from .zero import PatchDenoiser, ZeroTraining, zero_training  # noqa: E402

__all__ = [
    "Config",
    "PatchDenoiser",
    "SinDiffusion",
    "SinDiffusionError",
    "ZeroTraining",
    "__version__",
    "load",
    "load_image",
    "preset",
    "save_image",
    "train",
    "zero_training",
]
