"""Diversity between generated samples: SinGAN's pixel diversity and LPIPS-E.

Both need at least two samples of the same size; higher means more diverse. Neither says
anything about quality (noise is very diverse), so read them beside SIFID and the patch metrics.
"""

from __future__ import annotations

import itertools

import torch

from sindiffusion.errors import SinDiffusionError
from sindiffusion.metrics.backbones import cached_backbone

# EfficientNet-Lite0 blocks read by LPIPS-E: the last block of stages 1-5 (strides 2, 4, 8,
# 16, 16; 16-112 channels), the counterpart of LPIPS's five AlexNet/VGG stages.
LPIPS_E_BLOCKS = (0, 2, 4, 7, 10)

_BATCH = 8  # images per backbone call: bounds memory on large images


def _check_pairs(fakes: torch.Tensor) -> None:
    if fakes.shape[0] < 2:
        raise SinDiffusionError(
            f"diversity compares samples, and {fakes.shape[0]} was given; give two or more."
        )


def pixel_diversity(real: torch.Tensor, fakes: torch.Tensor) -> float:
    """SinGAN's diversity: the std over samples of each pixel value, averaged over pixels and
    channels, divided by the std of the real image's values.

    `real` `(3, H, W)`, `fakes` `(N >= 2, 3, H2, W2)`, both in [-1, 1]. Population std (ddof 0),
    as numpy-based implementations (GPDM) compute it. 0 for identical samples.
    """
    _check_pairs(fakes)
    spread = fakes.double().std(dim=0, correction=0).mean()
    return (spread / real.double().std(correction=0).clamp(min=1e-12)).item()


def texture_share(real: torch.Tensor, scale: float = 8.0) -> float:
    """How much of an image's contrast lies in detail finer than `scale` px: the local RMS of
    the image minus its Gaussian blur (std `scale` px), averaged over pixels and channels,
    divided by the std of the image's values (as `pixel_diversity` divides).

    It is about the pixel diversity of samples that keep the image's layout at `scale` px and
    redraw everything finer: each pixel then varies over samples as the detail around it
    does. A scene of large even regions (sky above a field) scores low, and only samples that
    move its regions score a higher diversity. `real` `(3, H, W)` in [-1, 1]; 0 for a flat
    image; a few tenths for photos (Places50: 0.13-0.61).
    """
    if real.dim() != 3:
        raise SinDiffusionError(
            f"texture_share takes one image (3, H, W), not {tuple(real.shape)}."
        )
    if not scale > 0:
        raise SinDiffusionError(f"scale is {scale}; give a positive blur width in px.")
    x = real.double()
    detail = x - _blur(x, scale)
    local_rms = _blur(detail.square(), scale).clamp(min=0).sqrt()
    return (local_rms.mean() / x.std(correction=0).clamp(min=1e-12)).item()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (C, H, W) with std `sigma` px, edges replicated."""
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    c = x.shape[0]
    y = torch.nn.functional.pad(x[None], (radius,) * 4, mode="replicate")
    y = torch.nn.functional.conv2d(y, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = torch.nn.functional.conv2d(y, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


def _unit_normalize(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each spatial position's feature vector by its L2 norm over channels (LPIPS)."""
    return f / (f.square().sum(dim=1, keepdim=True).sqrt() + eps)


@torch.no_grad()
def lpips_e(fakes: torch.Tensor, device: str | torch.device = "cpu") -> float:
    """LPIPS-E: mean pairwise perceptual distance between samples, on EfficientNet-Lite0.

    For each pair: at each block of `LPIPS_E_BLOCKS`, unit-normalise the features over
    channels, take the squared difference summed over channels and averaged over positions;
    sum over blocks. That is LPIPS with all linear weights 1 (no learned layer exists for this
    network), so it is not comparable with published LPIPS values. `fakes` `(N >= 2, 3, H, W)` in
    [-1, 1]; 0 for identical samples; each block adds at most 4.
    """
    _check_pairs(fakes)
    model = cached_backbone("efficientnet", device)
    feats: list[list[torch.Tensor]] = [[] for _ in LPIPS_E_BLOCKS]
    for batch in fakes.split(_BATCH):
        outs = model.forward_features(batch.to(device, torch.float32), LPIPS_E_BLOCKS)
        for acc, f in zip(feats, outs, strict=True):
            acc.append(_unit_normalize(f))
    layers = [torch.cat(acc) for acc in feats]
    pairs = list(itertools.combinations(range(fakes.shape[0]), 2))
    total = 0.0
    for i, j in pairs:
        total += sum((f[i] - f[j]).square().sum(dim=0).mean().item() for f in layers)
    return total / len(pairs)
