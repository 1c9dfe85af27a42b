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


def _sobel(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical Sobel gradients of grey (N, 1, H, W), edges replicated."""
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None] / 8
    padded = F.pad(grey, (1, 1, 1, 1), mode="replicate")
    return F.conv2d(padded, kx), F.conv2d(padded, kx.transpose(-1, -2))


def _edges(x: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude (H/2, W/2) of the greyscale of x (3, H, W), at half size (the
    structure, not the fine texture)."""
    grey = x.float().mean(0, keepdim=True)[None]
    grey = F.avg_pool2d(grey, 2) if min(grey.shape[-2:]) >= 8 else grey
    gx, gy = _sobel(grey)
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


BROKEN_SIDE = 128  # images are compared with their short side at this many px
BROKEN_WINDOW = 32  # window side there: a quarter of the short side, object-sized
BROKEN_THRESHOLD = 0.5  # a window whose edges differ by more than this from every real
# window's is broken (the normalised distance of `_window_distance`: 0 = the same edges,
# about 1 = unrelated ones)


def _gradients(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Horizontal and vertical gradients (N, 2, h, w) of the greyscale of x (N, 3, H, W)
    resized to `size`, lightly blurred first, so that JPEG blocks and grain do not count."""
    grey = x.float().mean(1, keepdim=True)
    grey = F.interpolate(grey, size=size, mode="area" if grey.shape[-1] > size[1] else "bilinear")
    blur = torch.tensor([1.0, 2.0, 1.0]) / 4
    grey = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), (blur[:, None] * blur)[None, None])
    return torch.cat(_sobel(grey), 1)


def _window_distance(queries: torch.Tensor, refs: torch.Tensor) -> torch.Tensor:
    """For each query window (Q, D), the smallest normalised distance to a reference window
    (R, D): |a - b|² / (|a|² + |b|² + eps), 0 for equal edges, 1 for orthogonal ones, 2 for
    opposite ones; two flat windows are close (eps keeps them from dividing 0 by 0)."""
    eps = 1e-3 * queries.shape[1] * (0.01**2)  # a gradient of 0.01 per pixel counts as flat
    qq = queries.pow(2).sum(1, keepdim=True)
    best = torch.full((queries.shape[0],), float("inf"))
    for chunk in refs.split(4096):
        cc = chunk.pow(2).sum(1)
        d = (qq + cc - 2 * queries @ chunk.T) / (qq + cc + eps)
        best = torch.minimum(best, d.min(1).values.clamp_min(0))
    return best


@torch.no_grad()
def broken_structure(
    real: torch.Tensor, fakes: torch.Tensor, threshold: float = BROKEN_THRESHOLD
) -> torch.Tensor:
    """Share of each fake's structured windows whose edges appear nowhere in the real image:
    broken objects (a facade in pieces, a wall that stops mid-air, a seam through a window).

    Both images are compared with their short side at `BROKEN_SIDE` px, as greyscale
    gradients, in windows of a quarter of the short side (object-sized): each of a fake's
    windows (every 8 px) is matched to the closest of all the real image's windows (every 2
    px, any position: objects may move), and is broken when even that one's edges differ by
    more than `threshold` (normalised: 0 the same, about 1 unrelated). Only structured windows
    count, those with more edge energy than the real image's median window (flat sky and
    smooth walls have nothing to break). real (3, H, W), fakes (N, 3, H, W), in [-1, 1], the
    same size -> (N,) in [0, 1]: 0 for the real image itself and any crop of it; higher when
    windows hold edge layouts the image never has, as a tile-shuffled image or a region
    pasted over another does.
    """
    h, w = real.shape[-2:]
    scale = BROKEN_SIDE / min(h, w)
    size = (max(BROKEN_WINDOW, round(h * scale)), max(BROKEN_WINDOW, round(w * scale)))
    win = BROKEN_WINDOW
    ref = _gradients(real[None], size)
    refs = F.unfold(ref, win, stride=2)[0].T  # (R, 2 win²)
    energy = refs.pow(2).sum(1)
    structured = energy.median()
    grads = _gradients(fakes, size)
    values = []
    for g in grads:
        q = F.unfold(g[None], win, stride=8)[0].T
        keep = q.pow(2).sum(1) > structured
        if not bool(keep.any()):
            values.append(0.0)
            continue
        d = _window_distance(q[keep], refs)
        values.append(float((d > threshold).float().mean()))
    return torch.tensor(values, dtype=torch.float64)
