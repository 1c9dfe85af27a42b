"""Structure metrics: seams (of a regenerated region, of a tiled texture), how much of an
input's structure a result keeps, and how an animation moves. Weight-free; images
(3, H, W) in [-1, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def seam_score(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean squared neighbour difference across the mask's boundary / everywhere else.

    image (3, H, W), mask (H, W) bool. About 1 when the boundary is invisible; a seam (an edge
    along the boundary) raises it.
    """
    seam, rest = [], []
    for dim in (1, 2):  # vertical and horizontal neighbours
        n = image.shape[dim] - 1
        d = (image.narrow(dim, 1, n) - image.narrow(dim, 0, n)).pow(2).sum(0)
        cross = mask.narrow(dim - 1, 1, n) != mask.narrow(dim - 1, 0, n)
        seam.append(d[cross])
        rest.append(d[~cross])
    return (torch.cat(seam).mean() / torch.cat(rest).mean().clamp_min(1e-12)).item()


def tile_seam_score(image: torch.Tensor) -> float:
    """The seam score of a texture laid 2 x 2: neighbour differences across the borders where
    the copies meet (right edge against left, bottom against top) / inside the image. About 1
    for a seamless tile; a photo's own edges usually score several times more."""
    h, w = image.shape[-2:]
    tiled = image.repeat(1, 2, 2)
    rows = torch.zeros(2 * h, 2 * w, dtype=torch.bool)
    rows[h:] = True
    cols = torch.zeros(2 * h, 2 * w, dtype=torch.bool)
    cols[:, w:] = True
    return (seam_score(tiled, rows) + seam_score(tiled, cols)) / 2


def _edges(x: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude (H/2, W/2) of the greyscale of x (3, H, W), at half size (the
    structure, not the fine texture)."""
    grey = x.float().mean(0, keepdim=True)[None]
    grey = F.avg_pool2d(grey, 2) if min(grey.shape[-2:]) >= 8 else grey
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None] / 8
    gx = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kx)
    gy = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kx.transpose(-1, -2))
    return (gx.square() + gy.square()).sqrt()[0, 0]


def edge_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of the edge maps of a and b (3, H, W), same size: 1 = the same
    structure (edges where the other has edges), about 0 = unrelated layouts."""
    ea, eb = _edges(a).flatten(), _edges(b).flatten()
    ea, eb = ea - ea.mean(), eb - eb.mean()
    return float((ea * eb).sum() / (ea.norm() * eb.norm()).clamp_min(1e-12))


def frame_change(frames: torch.Tensor) -> float:
    """Mean absolute difference between consecutive frames (N, 3, H, W): how much an
    animation moves per frame, in [-1, 1] pixel units."""
    return (frames[1:] - frames[:-1]).abs().mean().item()


def flicker(frames: torch.Tensor) -> float:
    """How much of an animation's change per frame is back-and-forth: the mean absolute
    second difference f[t+1] - 2 f[t] + f[t-1] over the mean absolute first difference. Near
    0 for smooth motion; about 1.7 for independent frames (noise)."""
    second = (frames[2:] - 2 * frames[1:-1] + frames[:-2]).abs().mean()
    first = (frames[1:] - frames[:-1]).abs().mean()
    return (second / first.clamp_min(1e-12)).item()
