"""Choosing among candidate layouts of a hybrid model.

Above `diffusion.hybrid_sigma` a hybrid model's closed-form patch denoiser draws the coarse
layout. Some draws put content where the image never has it (a patch of sky in a meadow) or
leave content out; the network below the switch keeps whatever layout it is handed. So
`SinDiffusion.sample` can draw several layouts per sample and continue the one whose coarse
patches best match the training image's, in both directions (Simakov et al.'s bidirectional
similarity): every candidate patch should exist in the image (coherence) and every image
patch should appear in the candidate (completeness).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .diffusion import HybridDenoiser

SCALE = 0.25  # layouts are compared at a quarter of their size: coarse content, not detail
PATCH = 5  # side of the compared patches, in pixels of the quarter-size images
CHUNK = 4096  # candidate patches per distance block (bounds memory at CHUNK x image patches)


def _coarse_patches(x: torch.Tensor) -> torch.Tensor:
    """(N, L, 3 * PATCH^2) patches of x (N, 3, h, w) shrunk by SCALE (area average)."""
    h, w = x.shape[-2:]
    size = (max(PATCH, round(h * SCALE)), max(PATCH, round(w * SCALE)))
    small = F.interpolate(x.float(), size=size, mode="area")
    return F.unfold(small, PATCH).transpose(1, 2)


def layout_cut(denoiser, sigmas: torch.Tensor) -> int:
    """Number of leading noise levels of `sigmas` above a hybrid denoiser's switch (the
    closed-form layout's share of the schedule), or 0 when there is no layout stage to choose
    from: not a hybrid, or no level on one side of the switch."""
    if not isinstance(denoiser, HybridDenoiser):
        return 0
    cut = int((sigmas > denoiser.switch).sum())
    return cut if 2 <= cut < len(sigmas) else 0


@torch.no_grad()
def layout_mismatch(x0: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Bidirectional patch distance (N,) of layouts x0 (N, 3, h, w) to `image` (3, H, W), both
    in [-1, 1]: mean squared distance of each candidate patch to its nearest image patch, plus
    of each image patch to its nearest candidate patch. Lower is closer; 0 = same patch sets.
    Any h, w (the sample size need not be the image's)."""
    ref = _coarse_patches(image[None].to(x0.device))[0]  # (R, D)
    scores = []
    for cand in _coarse_patches(x0):  # (L, D) per layout
        coherence = cand.new_zeros(())
        completeness = torch.full((ref.shape[0],), float("inf"), device=cand.device)
        for block in cand.split(CHUNK):
            d2 = torch.cdist(block, ref).pow(2)  # (c, R)
            coherence = coherence + d2.min(1).values.sum()
            completeness = torch.minimum(completeness, d2.min(0).values)
        scores.append(coherence / cand.shape[0] + completeness.mean())
    return torch.stack(scores)
