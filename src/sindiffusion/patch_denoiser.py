"""The closed-form patch denoiser: denoising from the patches of one image, with no training.

The patches of one image form a finite data set, so the optimal (MMSE) denoiser of a noisy
patch `y` at noise level sigma is a softmax-weighted average of the clean patches `p_i`,

    p_hat(y) = sum_i w_i p_i,   w_i ∝ exp(-||y - p_i||² / (2 sigma² T)),

close to non-local means (Efficient-SID, Qiu et al., CVPR 2026, arXiv 2606.04299; GPNN and GPDM
are related). `PatchDenoiser` denoises every patch of a noisy image this way, averages the
overlapping estimates pixel by pixel, and follows the denoiser contract
`denoiser(x, sigma) -> x0_hat`, so every sampler, guidance and application works with it.

Coarse to fine: the denoiser keeps a pyramid of the reference image. At high sigma it
denoises a downscaled copy of `x` with the patches of the downscaled reference (a 7 px patch of
a 32 px image sees a quarter of the scene, which gives the layout its global coherence), and
at low sigma the full-resolution patches fill in detail. Downscaling averages the noise, so
each level's sigma is the input sigma times that level's measured noise gain.

Zero-training mode (`sindiffusion.zero_training`) samples with this denoiser alone; the `fast`
preset's hybrid models use it for the layout above `sampling.hybrid_sigma` (`layout.Hybrid`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from .config import PatchConfig
from .contract import sigma_rows
from .errors import SinDiffusionError
from .image import resize
from .schedules import pyramid_sigmas

QUERY_CHUNK = 2048  # noisy patches per distance block: bounds memory at chunk x refs scores


class _Level:
    """One pyramid level: the reference patches (of every reference image, each shrunk by
    `factor`), their PCA coordinates, positions and the noise gain; `p` is the level's patch
    side."""

    def __init__(
        self,
        refs: list[torch.Tensor],
        factor: float,
        p: int,
        cfg: PatchConfig,
        device: torch.device,
    ):
        self.factor, self.p = factor, p
        grids = [(rh - p + 1, rw - p + 1) for rh, rw in (ref.shape[-2:] for ref in refs)]
        total = sum(ny * nx for ny, nx in grids)
        keep = None  # indices into all patches, in unfold's order, image after image
        if total > cfg.max_refs:
            g = torch.Generator().manual_seed(cfg.seed)
            keep = torch.randperm(total, generator=g)[: cfg.max_refs]
        # Only the kept patches are cut out: a 4000 x 3000 photo has 12 M patches of 675
        # values (32 GB), of which 16 384 are kept.
        patches, pos = _cut(refs, grids, p, keep)
        self.patches = patches.to(device)
        self.mean = self.patches.mean(0)
        centred = self.patches - self.mean
        dim = centred.shape[1]
        if cfg.pca_dim is not None and cfg.pca_dim < dim:
            # Dropped components hold little of the reference's variance; the noise in them
            # adds the same amount to every distance of a query, so the softmax ignores it.
            _, vecs = torch.linalg.eigh(centred.T @ centred)
            self.basis = vecs[:, -cfg.pca_dim :].flip(1).contiguous()
        else:
            self.basis = torch.eye(dim, device=device)
        self.coords = centred @ self.basis  # (R, d)
        self.pos = pos.to(device)  # (R, 2)
        self.gain = noise_gain(factor)


def _cut(
    refs: list[torch.Tensor], grids: list[tuple[int, int]], p: int, keep: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The p x p patches (R, 3 p p) of `refs` numbered by `keep` (R,), in its order, where
    patches are numbered in `F.unfold`'s order image after image (None: all of them); and
    their centres (R, 2) as fractions of their own image's height and width (so every
    image's layout counts). `grids`: each image's (rows, columns) of patches."""
    counts = torch.tensor([ny * nx for ny, nx in grids])
    if keep is None:
        keep = torch.arange(int(counts.sum()))
    firsts = counts.cumsum(0) - counts
    image_of = torch.searchsorted(counts.cumsum(0), keep, right=True)
    patches = refs[0].new_empty(len(keep), 3 * p * p)
    pos = torch.empty(len(keep), 2)
    for i, (ref, (_, nx)) in enumerate(zip(refs, grids, strict=True)):
        rows = (image_of == i).nonzero()[:, 0]
        local = keep[rows] - firsts[i]
        ys, xs = local // nx, local % nx
        view = ref.unfold(1, p, 1).unfold(2, p, 1)  # (3, ny, nx, p, p), no copy
        patches[rows] = view[:, ys, xs].transpose(0, 1).reshape(len(rows), -1)
        h, w = ref.shape[-2:]
        pos[rows] = _positions(ys, xs, p, h, w, pairs=True)
    return patches, pos


def _positions(
    ys: torch.Tensor, xs: torch.Tensor, p: int, h: int, w: int, pairs: bool = False
) -> torch.Tensor:
    """Centres (len(ys) * len(xs), 2) of patches with these top-left corners, as fractions of
    the image's height and width, in unfold's row-major order; `pairs`: of the patches at
    (ys[i], xs[i]) only, (len(ys), 2)."""
    cy, cx = (ys.float() + p / 2) / h, (xs.float() + p / 2) / w
    if pairs:
        return torch.stack([cy, cx], 1)
    return torch.stack(torch.meshgrid(cy, cx, indexing="ij"), -1).reshape(-1, 2)


def finest_factor(cfg: PatchConfig, sizes: Sequence[Sequence[int]]) -> float:
    """The scale of the pyramid's finest level for reference images of these (h, w) sizes:
    1, or less where `cfg.finest` caps its long side (a large photo laid out from its reduced
    copy), though never below one patch wide."""
    if cfg.finest is None:
        return 1.0
    side = min(min(size) for size in sizes)
    long = max(max(size) for size in sizes)
    return min(1.0, max(cfg.finest / long, (cfg.patch_sizes(1)[0] + 1) / side))


@functools.lru_cache(maxsize=64)
def noise_gain(factor: float, side: int = 512) -> float:
    """Standard deviation of unit white noise after `image.resize` by `factor` (measured)."""
    if factor >= 1:
        return 1.0
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((1, 1, side, side), generator=g)
    small = round(side * factor)
    return float(resize(noise, (small, small)).std())


def patch_config(**knobs) -> PatchConfig:
    """A `PatchConfig` from keyword knobs; an unknown knob is a one-sentence error."""
    unknown = sorted(set(knobs) - set(PatchConfig.__dataclass_fields__))
    if unknown:
        names = ", ".join(PatchConfig.__dataclass_fields__)
        raise SinDiffusionError(f"unknown patch-denoiser knob {', '.join(unknown)}; use {names}.")
    return PatchConfig(**knobs)


class PatchDenoiser(nn.Module):
    """`denoiser(x, sigma, shift=None, grid_seed=None, **extra) -> x0_hat` from one image's
    patches (`contract.Denoise`; other extra arguments are ignored).

    image: the reference (3, H, W) in [-1, 1], or a list of them (one patch set of all their
    patches, each positioned within its own image); config: a `PatchConfig`, or its fields as
    keyword knobs. Call with x (N, 3, h, w) = x0 + sigma * noise, any h, w >= patch_size, and
    sigma a float or (N,); returns x0_hat (N, 3, h, w) float32. `shift` (N, 2): row i prefers
    reference patches from `shift[i]` (y, x, in image sides) away from its own position, so a
    sample's whole layout moves with its shift (no effect without a position prior).
    `grid_seed` (N,) int64: row i's per-call randomness (the patch grid's offset, dropout)
    comes from grid_seed[i] and sigma instead of from x, so nearby inputs (the frames of an
    animation) get the same grid and change smoothly.
    `sampling_sigmas(steps)`, `sigma_min` and `sigma_max` give its own schedule.
    """

    def __init__(
        self,
        image: torch.Tensor | list[torch.Tensor],
        config: PatchConfig | None = None,
        **knobs,
    ):
        super().__init__()
        cfg = config if config is not None else patch_config(**knobs)
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        # The finest level's patch must fit the image; `coarsest` below keeps every shrunk
        # reference larger than the largest patch of the coarser levels.
        smallest = cfg.patch_sizes(1)[0]
        if min(min(img.shape[-2:]) for img in images) < smallest:
            raise SinDiffusionError(
                f"an image is smaller than one {smallest} px patch; give a larger image."
            )
        self.cfg = cfg
        self.image = images[0]
        # The pyramid's factors come from the smallest side of all: every image keeps
        # at least `coarsest` px at the coarsest level.
        side = min(min(img.shape[-2:]) for img in images)
        top = finest_factor(cfg, [img.shape[-2:] for img in images])
        coarsest = min(top, max(cfg.coarsest, cfg.largest_patch + 1) / side)
        n = cfg.levels
        # Geometric factors from coarsest to top (finest last); an image not much larger than
        # `coarsest` gets fewer, distinct levels (equal levels would repeat noise levels).
        ratio = coarsest / top
        factors = [top * ratio ** ((n - 1 - i) / (n - 1)) if n > 1 else top for i in range(n)]
        self.factors = sorted({round(f, 6) for f in factors})
        sizes = cfg.patch_sizes(len(self.factors))
        self.levels = [
            _Level(
                [resize(img, _scaled(img.shape[-2:], f)) for img in images],
                f,
                p,
                cfg,
                images[0].device,
            )  # fmt: skip
            for f, p in zip(self.factors, sizes, strict=True)
        ]

    # Knobs read when building the pyramid; the others are read at each call.
    BUILD_KNOBS = ("patch_size", "levels", "coarsest", "finest", "max_refs", "pca_dim", "seed")

    def with_knobs(self, **knobs) -> PatchDenoiser:
        """A copy with other call-time knobs (prior, topk, temperature, dropout, ...) that
        shares this one's pyramid, so nothing is rebuilt and this one is unchanged."""
        fixed = sorted(set(knobs) & set(self.BUILD_KNOBS))
        if fixed:
            raise SinDiffusionError(
                f"{', '.join(fixed)} shape the patch pyramid; build a new model to change them."
            )
        patch_config(**knobs)  # an unknown knob is a one-sentence error
        new = copy.copy(self)
        new.cfg = dataclasses.replace(self.cfg, **knobs)
        return new

    @property
    def sigma_min(self) -> float:
        return self.cfg.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.cfg.sigma_max or self.cfg.start_noise / self.levels[0].gain

    def sampling_sigmas(self, steps: int) -> torch.Tensor:
        """`steps` decreasing noise levels from sigma_max to sigma_min, then 0: coarse to fine,
        an equal share of the steps per pyramid level (`schedules.pyramid_sigmas`, with the
        sigmas where `level_of` hands over from one level to the next)."""
        handovers = [self.cfg.handover / lev.gain for lev in self.levels[:-1]]
        return pyramid_sigmas(steps, self.sigma_min, self.sigma_max, handovers)

    def level_sigmas(self, entries: Sequence[float | tuple[int, float]]) -> list[float]:
        """The sigma of each entry: a number is a sigma already; a (level, own) pair is where
        pyramid level `level` (0 = coarsest, -1 = finest) sees noise `own` of its own (sigma
        times its noise gain); `level_of` picks that level there when `own` is at least
        `handover` and no coarser level sees as much."""
        n = len(self.levels)
        sigmas = []
        for entry in entries:
            if not isinstance(entry, (tuple, list)):
                sigmas.append(float(entry))
                continue
            level, own = entry
            if not -n <= level < n:
                raise SinDiffusionError(
                    f"sampling.layout_levels names pyramid level {level}, but the layout has "
                    f"{n} levels; name levels from 0 (coarsest) to {n - 1}, or -1 (finest)."
                )
            sigmas.append(own / self.levels[level].gain)
        return sigmas

    def level_of(self, sigma: float) -> int:
        """Index of the pyramid level (0 = coarsest) that denoises at this sigma: the coarsest
        level whose own noise level, sigma times its noise gain, is still above `handover`."""
        for i, lev in enumerate(self.levels):
            if sigma * lev.gain >= self.cfg.handover:
                return i
        return len(self.levels) - 1

    @torch.no_grad()
    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor | float,
        shift: torch.Tensor | None = None,
        grid_seed: torch.Tensor | None = None,
        **extra,
    ) -> torch.Tensor:
        sigma = sigma_rows(sigma, x)
        assert shift is None or len(shift) == x.shape[0], (len(shift), x.shape)
        out = torch.empty_like(x, dtype=torch.float32)
        for i in range(x.shape[0]):
            x_i, sigma_i = x[i].float(), float(sigma[i])
            if grid_seed is None:
                seed = _call_seed(self.cfg.seed, sigma_i, x_i)
            else:
                seed = _call_seed(self.cfg.seed, sigma_i, grid_seed[i])
            out[i] = self._denoise_one(x_i, sigma_i, seed, None if shift is None else shift[i])
        return out

    def _denoise_one(
        self, x: torch.Tensor, sigma: float, seed: int, shift: torch.Tensor | None = None
    ) -> torch.Tensor:
        h, w = x.shape[-2:]
        lev = self.levels[self.level_of(sigma)]
        # A small canvas shrunk to a coarse level can fall below one patch: it is shrunk only
        # to one patch there (a 16 px sample at the 0.1 level is 7 px, not 2).
        p = lev.p
        sh, sw = _scaled((h, w), lev.factor)
        size = (max(p, sh), max(p, sw))
        xs = resize(x, size)
        s = max(sigma, self.cfg.sigma_floor) * lev.gain
        x0 = self._denoise_patches(xs, s, lev, seed, shift)
        return resize(x0, (h, w))

    def _denoise_patches(
        self,
        x: torch.Tensor,
        sigma: float,
        lev: _Level,
        seed: int,
        shift: torch.Tensor | None = None,
    ):
        """Closed-form denoising of every `stride`-spaced patch of x (3, h, w), votes averaged;
        `shift` (2,) moves the patches' positions for the position prior."""
        cfg = self.cfg
        # The stride is a call-time knob (`with_knobs`), so it is read here; `strides` already
        # caps it at the level's patch (patch_size is a build knob, so that is `lev.p`).
        p = lev.p
        st = cfg.strides(len(self.levels))[self.levels.index(lev)]
        g = torch.Generator().manual_seed(seed)
        # A random grid offset per call, so that patch seams never sit in the same place twice;
        # the first and last rows/columns always get a patch, so every pixel gets votes and
        # every query is a true patch of x (no padding: x's own patches are found exactly).
        off = torch.randint(0, st, (2,), generator=g)
        h, w = x.shape[-2:]
        ys, xs = _starts(h, p, st, int(off[0])), _starts(w, p, st, int(off[1]))
        grid = x.unfold(1, p, 1).unfold(2, p, 1)[:, ys][:, :, xs]  # (3, ny, nx, p, p), a view
        queries = grid.permute(1, 2, 0, 3, 4).reshape(len(ys) * len(xs), -1)  # (Q, D)
        qpos = _positions(ys, xs, p, h, w).to(x.device)  # (Q, 2)
        if shift is not None:
            qpos = qpos + shift.to(qpos)
        refs = _Refs(lev, sigma, cfg, g)
        est = torch.cat(
            [
                self._weighted_patches(q, qp, refs)
                for q, qp in zip(queries.split(QUERY_CHUNK), qpos.split(QUERY_CHUNK), strict=True)
            ]
        )
        # Weighted votes, all at once: flat pixel index of every (patch, dy, dx).
        win = _vote_window(p, cfg.vote_width).to(x.device)
        r = torch.arange(p, device=x.device)
        iy = (ys.to(x.device)[:, None] + r)[:, None, :, None]  # (ny, 1, p, 1)
        ix = (xs.to(x.device)[:, None] + r)[None, :, None, :]  # (1, nx, 1, p)
        flat = (iy * w + ix).reshape(-1)
        est = est.view(len(ys), len(xs), 3, p, p).permute(2, 0, 1, 3, 4) * win
        votes = _vote_sum(flat, est.reshape(3, -1).T, h * w).T  # (3, h*w)
        count = _vote_sum(flat, win.expand(len(ys), len(xs), p, p).reshape(-1, 1), h * w)
        return votes.reshape(3, h, w) / count.reshape(1, h, w)

    def _weighted_patches(self, q: torch.Tensor, qpos: torch.Tensor, refs: _Refs) -> torch.Tensor:
        """MMSE estimates (c, D) of noisy patches q (c, D) at positions qpos (c, 2)."""
        qc = torch.cat([(q - refs.mean) @ refs.basis, qpos * refs.pos_scale], 1)  # (c, d + 2)
        k = self.cfg.topk
        if k is None or k >= refs.coords.shape[0]:
            d2 = qc.pow(2).sum(1, keepdim=True) - 2 * qc @ refs.coords.T + refs.coords.pow(2).sum(1)
            return torch.softmax(-d2 / refs.denom, dim=1) @ refs.patches
        # Screen all references in bf16 (one matmul + top-k), then weigh the k candidates with
        # exact float32 distances: bf16 rounding must not decide the sharp low-sigma weights.
        qa = torch.cat([qc, torch.ones_like(qc[:, :1])], 1).to(refs.screen.dtype)
        idx = (qa @ refs.screen).topk(k, dim=1).indices  # (c, k)
        d2 = (qc[:, None, :] - refs.coords[idx]).pow(2).sum(-1)  # (c, k)
        wts = torch.softmax(-d2 / refs.denom, dim=1)
        return torch.einsum("ck,ckd->cd", wts, refs.patches[idx])


class _Refs:
    """The reference patches one call searches: a level's patches (minus the dropped ones),
    with the position prior folded in as two scaled extra coordinates."""

    def __init__(self, lev: _Level, sigma: float, cfg: PatchConfig, g: torch.Generator):
        self.mean, self.basis = lev.mean, lev.basis
        coords, patches, pos = lev.coords, lev.patches, lev.pos
        if cfg.dropout > 0:
            keep = (torch.rand(patches.shape[0], generator=g) >= cfg.dropout).nonzero()[:, 0]
            keep = keep.to(patches.device)
            coords, patches, pos = coords[keep], patches[keep], pos[keep]
        self.denom = 2 * sigma**2 * cfg.temperature
        # exp(-|y-p|²/(2σ²T) - |u-v|²/(2ℓ²)) = exp(-(|y-p|² + (σ²T/ℓ²)|u-v|²) / (2σ²T)).
        if cfg.prior:
            py, px = cfg.prior_pair  # a wider horizontal prior lets content move sideways
            s = sigma * math.sqrt(cfg.temperature)
            self.pos_scale: torch.Tensor | float = torch.tensor([s / py, s / px], device=pos.device)
        else:
            self.pos_scale = 0.0
        self.coords = torch.cat([coords, pos * self.pos_scale], 1)  # (R, d + 2)
        self.patches = patches
        if cfg.topk is not None and cfg.topk < coords.shape[0]:
            # Screening scores a·b - |b|²/2 as one matmul: queries get a 1, refs -|b|²/2.
            sq = self.coords.pow(2).sum(1, keepdim=True)
            screen = torch.cat([self.coords, -0.5 * sq], 1).T.contiguous()
            self.screen = screen.bfloat16() if cfg.bf16 else screen


def _vote_window(p: int, width: float | None) -> torch.Tensor:
    """(p, p) weights of a patch's pixel votes: a Gaussian of std `width` * p around the
    centre (the centre of a patch matched best), or all ones for None (plain average)."""
    if width is None:
        return torch.ones(p, p)
    r = torch.arange(p, dtype=torch.float32) - (p - 1) / 2
    g = torch.exp(-(r**2) / (2 * (width * p) ** 2))
    # A floor, so that a narrow window's corners do not underflow to 0: a pixel that only
    # patch corners cover would get no weight at all (0 / 0). 0.12's corners are ~1e-7.
    return (g[:, None] * g[None, :]).clamp_min(1e-12)


def _vote_sum(index: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """Sums of the rows of `values` (V, c) that share an `index` (V,) in [0, n): (n, c).

    Deterministic on every device, so that a seeded sample repeats exactly: CUDA's index_add_
    adds with atomics in no fixed order, its sorting index_put_ does not; on the CPU
    index_add_ is the deterministic (and faster) one."""
    out = values.new_zeros(n, values.shape[1])
    if out.device.type == "cpu":
        return out.index_add_(0, index, values)
    return out.index_put_((index,), values, accumulate=True)


def _starts(n: int, p: int, st: int, offset: int) -> torch.Tensor:
    """Top-left corners of patches along one axis: every `st` px from `offset`, plus both ends."""
    last = n - p
    starts = set(range(min(offset, last), last + 1, st)) | {0, last}
    return torch.tensor(sorted(starts))


def _scaled(size: Sequence[int], factor: float) -> tuple[int, int]:
    return max(1, round(size[0] * factor)), max(1, round(size[1] * factor))


def _call_seed(seed: int, sigma: float, x: torch.Tensor) -> int:
    """A seed from the knob seed, sigma and a coarse fingerprint of x: reproducible per call.
    A one-element x (a row's `grid_seed`) is its own fingerprint."""
    flat = x.flatten()
    probe = (flat[:: max(1, flat.numel() // 256)] * 1000).round().to(torch.int64)
    key = f"{seed}:{sigma:.8e}:{int(probe.sum())}:{tuple(x.shape)}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1
