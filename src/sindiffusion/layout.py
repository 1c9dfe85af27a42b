"""The layout stage of a hybrid model: the closed-form patch denoiser lays out each sample at
high noise, the network draws the detail below; several layouts can be drawn per sample and
the best kept.

- `Hybrid` routes each denoiser call by its noise level (a denoiser wrapper);
- `random_shifts` moves each sample's position prior a little (the `shift` extra argument);
- `layout_cut`, `layout_mismatch` and `closest` choose among candidate layouts.

Why candidates: some layouts put content where the image never has it (a patch of sky in a
meadow) or leave content out, and the network below the switch keeps whatever layout it is
handed. So a sample can draw several layouts and continue the one whose coarse patches are
distributed most like the training image's: the Fréchet distance between the Gaussians fitted
to the two sets of coarse patches (SIFID's statistic, on raw pixels at a quarter of the size
rather than on a network's features). It weighs how much of each kind of content a layout has
(too much sky, too few trunks), which is what SIFID-E punishes (docs/method.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .contract import Denoise, sigma_rows
from .metrics.sifid import frechet_distance, gaussian_stats

SCALE = 0.25  # layouts are compared at a quarter of their size: coarse content, not detail
PATCH = 5  # side of the compared patches, in pixels of the quarter-size images


class Hybrid:
    """Route each row by its noise level: `layout` above `switch`, `network` at and below it,
    each given its rows' extra arguments. The closed-form patch denoiser lays out the image (a
    patch-level network learns the high-noise regime last) while the network draws the
    detail."""

    def __init__(self, network: Denoise, layout: Denoise, switch: float):
        self.network, self.layout, self.switch = network, layout, float(switch)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **extra) -> torch.Tensor:
        sigma = sigma_rows(sigma, x)
        high = sigma > self.switch
        if bool(high.all()):
            return self.layout(x, sigma, **extra)
        if not bool(high.any()):
            return self.network(x, sigma, **extra)
        out = self.network(x, sigma, **extra)
        rows = {k: v[high] for k, v in extra.items()}
        out[high] = self.layout(x[high], sigma[high], **rows)
        return out


def random_shifts(
    rows: int, std: tuple[float, float], generator: torch.Generator, device: torch.device
) -> torch.Tensor | None:
    """Random offsets (rows, 2) of the position prior, one per layout drawn: normal with std
    `std` (vertical, horizontal) in image sides; None for std (0, 0)."""
    sy, sx = std
    if (sy, sx) == (0, 0):
        return None
    r = torch.randn((rows, 2), generator=generator, device=generator.device)
    return r.to(device) * torch.tensor([float(sy), float(sx)], device=device)


def layout_cut(sigmas: torch.Tensor, switch: float) -> int:
    """How many leading noise levels of `sigmas` every candidate layout runs through before
    one is chosen per sample, or 0 when there is no layout stage to choose from (no level on
    one side of the switch). All the levels above the switch but its last: that level is the
    finest and dearest closed-form one (0.6x of the size in the `fast` preset, where 4
    candidates through it cost a seventh of the sample's time), so it runs once per sample,
    and the candidates are compared on their clean estimates one level earlier. With only two
    levels above the switch, both (an estimate at the top level says nothing)."""
    above = int((sigmas > switch).sum())
    return max(2, above - 1) if 2 <= above < len(sigmas) else 0


def _coarse_patches(x: torch.Tensor) -> torch.Tensor:
    """(N, L, 3 * PATCH^2) patches of x (N, 3, h, w) shrunk by SCALE (area average)."""
    h, w = x.shape[-2:]
    size = (max(PATCH, round(h * SCALE)), max(PATCH, round(w * SCALE)))
    small = F.interpolate(x.float(), size=size, mode="area")
    return F.unfold(small, PATCH).transpose(1, 2)


@torch.no_grad()
def layout_mismatch(x0: torch.Tensor, image: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
    """Fréchet distance (N,) between the coarse-patch distributions of layouts x0 (N, 3, h, w)
    and of `image` (3, H, W) (or of a list of images, their patches pooled), all in [-1, 1];
    patches are PATCH x PATCH at SCALE of the size. Lower is closer; 0 = the same mean and
    covariance. Any h, w (the sample size need not be the image's); inf where a layout or
    the images are too small for two coarse patches."""
    images = image if isinstance(image, (list, tuple)) else [image]
    ref = torch.cat([_coarse_patches(img[None].to(x0.device))[0] for img in images])
    scores = torch.full((x0.shape[0],), float("inf"), device=x0.device)
    if ref.shape[0] < 2:
        return scores
    ref_stats = gaussian_stats(ref.T)
    for i, cand in enumerate(_coarse_patches(x0)):
        if cand.shape[0] >= 2:
            scores[i] = frechet_distance(*gaussian_stats(cand.T), *ref_stats)
    return scores


def closest(
    clean: torch.Tensor, candidates: int, image: torch.Tensor | list[torch.Tensor]
) -> torch.Tensor:
    """Row indices (m,): of each run of `candidates` rows of `clean` (m * candidates, 3, h, w),
    the one whose coarse patches match the image's (or images') best (`layout_mismatch`)."""
    scores = layout_mismatch(clean, image).view(-1, candidates)
    return scores.argmin(1) + torch.arange(len(scores), device=scores.device) * candidates
