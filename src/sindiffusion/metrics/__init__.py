"""Quality metrics for single-image generation: SIFID / SIFID-E, diversity, patch metrics.

`score(real, fakes)` computes them all; the modules hold the pieces: `backbones`
(EfficientNet-Lite0, InceptionV3 stem), `sifid` (per-fake SIFID: `sifid.sifid`), `diversity`,
`patches`, `structure` (seams, edge correlation, broken objects), `formats` (format-matched scoring: a fake
goes through the real file's own JPEG encoding), `evaluate` (`score`).
"""

from sindiffusion.metrics.backbones import (
    InceptionWeightsMissing,
    efficientnet_lite0,
    imagenet_classes,
    inception_stem,
)
from sindiffusion.metrics.diversity import lpips_e, pixel_diversity, texture_share
from sindiffusion.metrics.evaluate import METRICS, match_sizes, score
from sindiffusion.metrics.formats import JpegFormat, jpeg_format, round_trip
from sindiffusion.metrics.patches import (
    copy_fraction,
    copy_score,
    duplication,
    patch_nn_distance,
    patch_swd,
)
from sindiffusion.metrics.sifid import frechet_distance
from sindiffusion.metrics.structure import (
    broken_structure,
    edge_correlation,
    flicker,
    frame_change,
    seam_score,
    tile_seam_score,
)

__all__ = [
    "METRICS",
    "InceptionWeightsMissing",
    "JpegFormat",
    "broken_structure",
    "copy_fraction",
    "copy_score",
    "duplication",
    "edge_correlation",
    "efficientnet_lite0",
    "flicker",
    "frame_change",
    "frechet_distance",
    "imagenet_classes",
    "inception_stem",
    "jpeg_format",
    "lpips_e",
    "match_sizes",
    "patch_nn_distance",
    "patch_swd",
    "pixel_diversity",
    "round_trip",
    "score",
    "seam_score",
    "texture_share",
    "tile_seam_score",
]
