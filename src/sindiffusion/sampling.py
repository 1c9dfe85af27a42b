"""One sampling call, composed from its parts: which denoisers, which noise levels, which
sampler, and how candidate layouts are chosen.

A model contributes its `Parts` (the network's denoiser, the closed-form patch denoiser, the
training images); a call contributes its settings (`settings`: the model's `SamplingConfig`
with the call's `SamplingOptions`). `build_plan` wraps the parts afresh for that call, so a
call never changes the model and two calls never share state:

    network --Autoguidance--> --Hybrid(layout = patch)--> --guide--> --clipped--> --KnownRegion-->

(each step only where it applies), and picks one of three kinds of plan (`Kind`). `run` draws
the noise and runs the plan's stages, in chunks that bound memory. `SinDiffusion.sample` and
every application (`apps`) are a `build_plan` and a `run`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from . import limits
from .config import DiffusionConfig, SamplingConfig, SamplingOptions
from .contract import Denoise, Guide
from .errors import SinDiffusionError
from .guidance import Autoguidance, KnownRegion, clipped
from .layout import Hybrid, closest, layout_cut, random_shifts
from .patch_denoiser import PatchDenoiser, noise_gain
from .samplers import Sampler, get_sampler, resampled, sample_dpmpp_2m
from .schedules import (
    at_or_below,
    network_sigmas,
    placed_sigmas,
    renoise_sigmas,
    resampled_steps,
    sigma_range,
    split_sigmas,
    start_at,
    start_from,
)
from .tiling import BLOCK, MIRRORS, Blocks, Tiled, mirrored

MAX_PIXELS_PER_BATCH = 1 << 20  # samples are drawn in chunks of about this many pixels
# Memory of a sampling call (`Plan.memory`), measured on a CPU: bytes per canvas pixel of each
# layout drawn (the sampler's copies), per pixel of the patch denoiser's finest level, per
# pixel of a network block (a 32-channel network), and Python with torch.
ROW_BYTES = 128
CANDIDATE_PIXELS = 1 << 23  # rows times pixels the first stage draws at once (`_denoise`)
PATCH_BYTES = 700
NETWORK_BYTES = 1400
BASE_BYTES = 600 * 2**20
# The variety dial (`variety`): below 1 a variation of the training image started at a noise
# level from VARIETY_SIGMA (at 0) up to the schedule's top (at 1); from VARIETY_FADE to 1 the
# image fades out of the start and the layout offsets (`shift`) fade in, so the dial has no
# jump at 1 (the coarsest layout level sees the image through noise even at the top level);
# above 1 the layout stage's position prior widened up to VARIETY_SPREAD times (at 2).
VARIETY_SIGMA = 0.1
VARIETY_FADE = 0.9
VARIETY_SPREAD = 6.0
MAX_VARIETY = 2.0


@dataclass(frozen=True)
class Parts:
    """What a model brings to sampling."""

    images: list[torch.Tensor]  # the training images (3, H, W) in [-1, 1]: candidates are
    # scored against their coarse patches
    device: torch.device  # where the denoisers run
    diffusion: DiffusionConfig  # the noise process the network was trained for
    network: Denoise | None  # the trained network's denoiser; None: zero-training
    patch: PatchDenoiser | None  # the closed-form patch denoiser; None: a network-only model
    weak: Callable[[], Denoise | None]  # autoguidance's weaker network (built on first use)
    network_width: int = 0  # the network's base channels, for the memory estimate

    @property
    def hybrid(self) -> bool:
        """Whether the patch denoiser lays out what the network details."""
        return self.network is not None and self.patch is not None


class Kind(enum.Enum):
    """How a plan runs."""

    ONE = "one"  # one stage: one denoiser over the whole schedule
    CANDIDATES = "candidates"  # several layouts per result through the schedule's top (the
    # layout stage), the one closest to the image kept and finished
    RENOISE = "renoise"  # several whole closed-form images per result, the closest kept,
    # noised afresh to `renoise` and finished by the network


@dataclass
class Stage:
    """A run of `sampler` with `denoiser` over the noise levels `sigmas` (decreasing)."""

    denoiser: Denoise
    sigmas: torch.Tensor
    sampler: Sampler
    steps: int  # sampler steps reported to the callback (more than len(sigmas) - 1 when resampled)


@dataclass
class Plan:
    """Everything one sampling call runs; built by `build_plan`, run by `run`."""

    kind: Kind
    stages: list[Stage]  # ONE: one; CANDIDATES and RENOISE: two, the choice between them
    images: list[torch.Tensor]  # the training images: candidate layouts are scored on them
    rows: int = 1  # rows per result through the first stage (candidates); the closest is kept
    shift: tuple[float, float] = (0.0, 0.0)  # std of each layout's random prior offset
    patch_scale: float = 0.0  # the patch denoiser's finest level, as a factor of the canvas
    # (0: no patch denoiser)
    network_width: int = 0  # the network's base channels (0: no network)

    @property
    def steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def memory(self, h: int, w: int) -> float:
        """About how many bytes drawing one h x w result takes at once (measured on the CPU,
        `fast` preset and zero-training, 1-4 megapixels): the sampler's copies of every
        layout, the patch denoiser's patches at its finest level, and the network on one
        block (`tiling.Blocks`) of the canvas."""
        pixels = h * w
        rows = min(self.rows, candidate_rows(pixels))  # at once (`_denoise`)
        need = pixels * (rows * ROW_BYTES + PATCH_BYTES * self.patch_scale**2)
        if self.network_width:
            block = min(pixels, BLOCK * BLOCK)
            need += block * NETWORK_BYTES * self.network_width / 32
        return need + BASE_BYTES


def candidate_rows(pixels: int) -> int:
    """How many candidate layouts of `pixels` pixels the first stage draws at once."""
    return max(1, CANDIDATE_PIXELS // pixels)


def variety_fade(variety: float) -> float:
    """How far the dial value `variety` is into its fade (0 up to VARIETY_FADE, rising
    linearly to 1 at variety 1, and 1 above): the training image's weight in a variation's
    start is 1 minus this, the share of the config's layout offsets this."""
    return min(1.0, max(0.0, (variety - VARIETY_FADE) / (1 - VARIETY_FADE)))


def variety_settings(
    variety: float, top: float, prior: float | tuple[float, float] | None
) -> tuple[float, float | tuple[float, float] | None]:
    """(variation, prior) for the dial value `variety` in [0, MAX_VARIETY], given the top
    noise level `top` of the model's schedule and its layout stage's position `prior`: below
    1 a variation from sigma VARIETY_SIGMA * (top / VARIETY_SIGMA) ** variety and the prior
    as it is (faded in and out by `variety_fade` near 1); 1 the free sample (variation 0);
    above 1 the prior times VARIETY_SPREAD ** (variety - 1)."""
    if not 0 <= variety <= MAX_VARIETY:
        raise SinDiffusionError(
            f"variety is {variety:g}; give a value from 0 (the image redrawn) to {MAX_VARIETY:g} "
            "(the widest layouts), 1 being the run's own samples."
        )
    if variety < 1:
        return VARIETY_SIGMA * (top / VARIETY_SIGMA) ** variety, prior
    if variety == 1 or prior is None:
        return 0.0, prior
    widen = VARIETY_SPREAD ** (variety - 1)
    if isinstance(prior, tuple):
        return 0.0, (prior[0] * widen, prior[1] * widen)
    return 0.0, prior * widen


def settings(config: SamplingConfig, options: SamplingOptions) -> SamplingConfig:
    """`config` with the call's `options` that are set (all but `prior` and `variety`, which
    `SinDiffusion.prepare` turns into the patch denoiser's prior and `variation`), checked: a
    one-sentence `SinDiffusionError` for a setting no sampler runs."""
    given = {k: v for k, v in options.given().items() if k not in ("prior", "variety")}
    opts = dataclasses.replace(config, **given)
    get_sampler(opts.sampler)  # an unknown name is a one-line error
    if not (isinstance(opts.steps, int) and opts.steps >= 1):
        raise SinDiffusionError(f"steps is {opts.steps}; give 1 or more sampler steps.")
    if not (isinstance(opts.candidates, int) and opts.candidates >= 1):
        raise SinDiffusionError(f"candidates must be at least 1, got {opts.candidates}.")
    if not opts.renoise >= 0:
        raise SinDiffusionError(f"renoise must be 0 (off) or a positive sigma, got {opts.renoise}.")
    if not opts.autoguidance >= 0:
        raise SinDiffusionError(f"autoguidance must be 0 (off) or more, got {opts.autoguidance}.")
    if not 0 <= opts.variation < float("inf"):
        raise SinDiffusionError(
            f"variation must be 0 (a free sample) or a positive noise level, got {opts.variation}."
        )
    if opts.mirror not in MIRRORS:
        raise SinDiffusionError(f"mirror is {opts.mirror!r}; use x, y or xy (or nothing).")
    lo, hi = opts.autoguidance_sigmas
    if opts.autoguidance and not 0 <= lo <= hi:
        raise SinDiffusionError(
            f"sampling.autoguidance_sigmas is ({lo:g}, {hi:g}); give (low, high) noise "
            "levels with 0 <= low <= high."
        )
    return opts


def reduced_settings(
    opts: SamplingConfig, options: SamplingOptions, finest: float
) -> SamplingConfig:
    """`opts` (changed in place) for a hybrid whose layout's finest pyramid level is `finest`
    of the canvas's size: below 1 (a photo laid out from a reduced copy, `patch.finest`) the
    switch rises to where that level sees noise `hybrid_finest` of its own, and
    `reduced_steps` / `reduced_candidates` stand in for steps / candidates the call's
    `options` leave unset; 0 leaves each as it is."""
    if finest >= 1:
        return opts
    if opts.hybrid_finest > 0:
        opts.hybrid_sigma = max(opts.hybrid_sigma, opts.hybrid_finest / noise_gain(finest))
    if opts.reduced_steps > 0 and options.steps is None:
        opts.steps = opts.reduced_steps
    if opts.reduced_candidates > 0 and options.candidates is None:
        opts.candidates = opts.reduced_candidates
    return opts


def schedule(parts: Parts, opts: SamplingConfig) -> torch.Tensor:
    """The call's noise levels, decreasing, then 0: the patch denoiser's own (zero-training),
    the network's, or, for a hybrid with `layout_levels` or `hybrid_steps` > 0, split at the
    switch (the layout's levels placed on the patch pyramid, or log-spaced)."""
    if parts.network is None:
        assert parts.patch is not None
        return parts.patch.sampling_sigmas(opts.steps)
    lo, hi = sigma_range(parts.diffusion, opts.sigma_min, opts.sigma_max)
    if parts.hybrid and (opts.layout_levels or opts.hybrid_steps > 0):
        if opts.hybrid_sigma >= hi:
            raise SinDiffusionError(
                f"sampling.hybrid_sigma ({opts.hybrid_sigma:g}) must be below sigma_max "
                f"({hi:g}) for a split schedule; lower it, or set hybrid_steps to 0 and "
                "layout_levels to []."
            )
        if opts.layout_levels:
            assert parts.patch is not None
            layout = parts.patch.level_sigmas(opts.layout_levels)
            # From where the coarsest pyramid level sees pure noise, if that is above
            # sigma_max: a large photo's coarsest level shrinks noise far more (at 4000 px,
            # sigma 80 is 0.4 of its own, and its layouts were the starting noise's blots).
            top = max(hi, parts.patch.sigma_max)
            return placed_sigmas(lo, top, opts.hybrid_sigma, layout, opts.steps)
        return split_sigmas(lo, hi, opts.hybrid_sigma, opts.hybrid_steps, opts.steps)
    return network_sigmas(parts.diffusion, opts.steps, lo, hi)


def network_denoiser(parts: Parts, opts: SamplingConfig) -> Denoise | None:
    """The network's denoiser, autoguided when `opts.autoguidance` > 0 (and the run has a
    weaker network to guide away from), in blocks on a large canvas (`tiling.Blocks`); None
    in zero-training mode. Autoguidance wraps the blocks, so it sees the whole canvas (and
    skips one of more than `opts.autoguidance_max_pixels`); its blend is linear, so guiding
    block by block would give the same."""
    if parts.network is None:
        return None
    # A canvas of more than a megapixel is denoised in blocks, so memory stays bounded.
    network: Denoise = Blocks(parts.network)
    if opts.autoguidance > 0:
        weak = parts.weak()
        if weak is not None:  # a run from random weights has nothing to guide away from
            network = Autoguidance(
                network, Blocks(weak), opts.autoguidance, opts.autoguidance_sigmas,
                opts.autoguidance_max_pixels,
            )  # fmt: skip
    return network


def base_denoiser(parts: Parts, opts: SamplingConfig) -> Denoise:
    """The model's denoiser for these settings, before guidance and clipping: the network
    (`network_denoiser`), routed through the layout stage for a hybrid; the patch denoiser
    alone in zero-training mode; tiled and mirrored when asked (`shaped`)."""
    network = network_denoiser(parts, opts)
    if network is None:
        assert parts.patch is not None
        return shaped(parts.patch, opts)
    if parts.patch is not None:
        return shaped(Hybrid(network, parts.patch, opts.hybrid_sigma), opts)
    return shaped(network, opts)


def shaped(denoiser: Denoise, opts: SamplingConfig) -> Denoise:
    """`denoiser` seamless (`opts.tile`) and symmetric (`opts.mirror`), or as it is."""
    return mirrored(Tiled(denoiser) if opts.tile else denoiser, opts.mirror)


def plan_kind(parts: Parts, opts: SamplingConfig, sigmas: torch.Tensor) -> Kind:
    """RENOISE for a hybrid asked to renoise (`opts.renoise` > 0) whose schedule starts above
    that level; CANDIDATES for a hybrid asked for more than one layout whose schedule crosses
    the switch (`layout.layout_cut`); ONE otherwise."""
    if parts.hybrid and opts.renoise > 0 and float(sigmas[0]) > opts.renoise:
        return Kind.RENOISE
    if parts.hybrid and opts.candidates > 1 and layout_cut(sigmas, opts.hybrid_sigma):
        return Kind.CANDIDATES
    return Kind.ONE


def build_plan(
    parts: Parts,
    opts: SamplingConfig,
    guide: Guide | None = None,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    strength: float = 1.0,
    resample: tuple[int, int] = (1, 1),
) -> Plan:
    """The stages of one call with settings `opts` (from `settings`).

    guide: wraps the denoiser (class or text guidance), under the clipping; called once per
    base denoiser (twice for a renoised layout), so it should build its scores outside the
    function it returns (as `guidance.guide` does) to keep one seeded sequence; known: (image
    (3, H, W), mask (H, W) bool, True = regenerate): keep the image outside the mask
    (`KnownRegion`, outermost); strength: start part-way down the schedule (`start_at`);
    resample: (times, jump) of RePaint resampling of the network's sampler. A variation
    (`opts.variation` > 0) starts at that level (`start_from`); `SinDiffusion.prepare` takes
    its layout offsets away (the run keeps its start image's layout) or, on the variety dial
    just below 1, scales them.
    """
    fn = resampled(get_sampler(opts.sampler), *resample)
    sigmas = start_at(schedule(parts, opts), strength)
    if opts.variation > 0:
        sigmas = start_from(sigmas, opts.variation)
    sigmas = sigmas.to(parts.device)

    def wrap(den: Denoise) -> Denoise:
        den = guide(den) if guide is not None else den
        den = clipped(den) if opts.clip_denoised else den
        return KnownRegion(den, *known) if known is not None else den

    def stage(den: Denoise, levels: torch.Tensor) -> Stage:
        return Stage(den, levels, fn, resampled_steps(len(levels) - 1, *resample))

    def plan(stages: list[Stage], rows: int) -> Plan:
        scale = parts.patch.factors[-1] if parts.patch is not None else 0.0  # for `memory`
        width = parts.network_width if parts.network is not None else 0
        return Plan(kind, stages, parts.images, rows, shift, scale, width)

    kind = plan_kind(parts, opts, sigmas)
    shift = opts.shift if parts.patch is not None else (0.0, 0.0)
    if kind is Kind.RENOISE:
        assert parts.patch is not None
        # The closed-form sampler draws whole images (from the start level down), which are
        # noised afresh to `renoise` and finished by the network.
        high = at_or_below(parts.patch.sampling_sigmas(opts.renoise_steps), float(sigmas[0]))
        lowest = sigma_range(parts.diffusion, opts.sigma_min, opts.sigma_max)[0]
        low = renoise_sigmas(sigmas, opts.renoise, lowest)
        network = network_denoiser(parts, opts)
        assert network is not None
        layouts = Stage(wrap(shaped(parts.patch, opts)), high.to(parts.device),
                        sample_dpmpp_2m, len(high) - 1)  # fmt: skip
        finish = stage(wrap(shaped(network, opts)), low.to(parts.device))
        return plan([layouts, finish], opts.candidates)
    den = wrap(base_denoiser(parts, opts))
    if kind is Kind.CANDIDATES:
        cut = layout_cut(sigmas, opts.hybrid_sigma)
        stages = [stage(den, sigmas[:cut]), stage(den, sigmas[cut - 1 :])]
        return plan(stages, opts.candidates)
    return plan([stage(den, sigmas)], 1)


def run(plan: Plan, n: int, size: tuple[int, int], *args, **kwargs) -> torch.Tensor:
    """All `n` results of `run_chunks` at once, (n, 3, h, w) in [-1, 1] on the CPU; the
    results are held in memory together, so their pixels count against `limits` "pixels"."""
    h, w = size
    pixels = n * h * w * plan.rows if isinstance(n, int) else 0
    limits.check(
        "pixels",
        pixels,
        f"the pixel count of {n} results of {w}x{h} px, {plan.rows} layout(s) each",
    )
    return torch.cat(list(run_chunks(plan, n, size, *args, **kwargs)))


def run_chunks(
    plan: Plan,
    n: int,
    size: tuple[int, int],
    generator: torch.Generator,
    device: torch.device,
    start: torch.Tensor | None = None,
    callback: Callable[[dict], None] | None = None,
    progress: bool = False,
    max_pixels: int | None = MAX_PIXELS_PER_BATCH,
    noise: torch.Tensor | None = None,
    extra: dict[str, torch.Tensor] | None = None,
) -> Iterator[torch.Tensor]:
    """Draw `n` results of `size` (h, w) with `plan`, yielding them in chunks (m, 3, h, w) in
    [-1, 1] on the CPU as each is done, so memory does not grow with n (`limits` "n").

    start: None draws from pure noise (x = sigma_0 * noise); an image (3, h, w) in [-1, 1]
    starts from it noised to the first level (x = start + sigma_0 * noise, SDEdit).
    noise (n, 3, h, w) and extra (per-row tensors of n rows, e.g. the layout's `shift` and
    `grid_seed`): given instead of drawn (an animation's path through the noise); only for a
    plan of one row per result (no candidates).
    max_pixels: results are drawn in chunks of about this many pixels (candidates counted);
    None draws all n at once. callback(info) after every sampler step: i (counted over the
    whole plan), x, sigma, sigma_next, denoised (of the last rows only where a large canvas's
    candidate layouts are drawn a few at a time, `CANDIDATE_PIXELS`).
    """
    if not (isinstance(n, int) and n >= 1):
        raise SinDiffusionError(f"n is {n}; ask for at least 1 image.")
    limits.check("n", n, "the number of results")
    if (noise is not None or extra is not None) and plan.rows > 1:
        raise SinDiffusionError("a given noise needs one layout per result; set candidates=1.")
    h, w = size
    limits.check(
        "memory",
        round(plan.memory(h, w) / 2**20),
        f"the memory (MB) one {w}x{h} px result with {plan.rows} layout(s) needs",
        "ask for a smaller size or fewer candidates",
    )
    chunk = n if max_pixels is None else max(1, max_pixels // (h * w * plan.rows))
    bar = tqdm(total=n * plan.steps, disable=not progress, unit="step", desc="sampling")

    def report(info: dict, offset: int, results: int) -> None:
        bar.update(results)
        if callback is not None:
            callback({**info, "i": info["i"] + offset})

    try:
        for first in range(0, n, chunk):
            rows = slice(first, min(first + chunk, n))
            m = rows.stop - rows.start

            # The shifts are drawn before the noise, always in this order: the same seed,
            # the same images.
            if extra is None:
                shift = random_shifts(m * plan.rows, plan.shift, generator, device)
                chunk_extra = {"shift": shift} if shift is not None else {}
            else:
                chunk_extra = {k: v[rows] for k, v in extra.items()}
            if noise is None:
                shape = (m * plan.rows, 3, h, w)
                chunk_noise = torch.randn(shape, generator=generator, device=generator.device)
            else:
                chunk_noise = noise[rows]
            x0 = chunk_noise.to(device) * plan.stages[0].sigmas[0]
            x = x0 if start is None else start[None] + x0
            step = functools.partial(report, results=m)
            yield _denoise(plan, x, chunk_extra, generator, step).clamp(-1, 1).cpu()
    finally:
        bar.close()


def _denoise(
    plan: Plan,
    x: torch.Tensor,
    extra: dict[str, torch.Tensor],
    generator: torch.Generator,
    report: Callable[[dict, int], None],
) -> torch.Tensor:
    """Run the plan's stages on x (rows * results, 3, h, w) at the first stage's first level;
    between two stages keep each result's closest candidate (and renoise it)."""
    first = plan.stages[0]
    # A large canvas's candidate layouts go through the first stage a few rows at a time:
    # the sampler's copies of four 12-megapixel layouts took 10.7 GB, where a sample's
    # network stage takes 7. Only the last chunk reports its steps (one report per step).
    # One layout per result (the whole schedule in this stage) stays in one batch.
    step = candidate_rows(x.shape[-2] * x.shape[-1]) if plan.rows > 1 else x.shape[0]
    chunks = []
    for a in range(0, x.shape[0], step):
        b = min(a + step, x.shape[0])
        last = b == x.shape[0]
        chunks.append(
            first.sampler(
                first.denoiser,
                x[a:b],
                first.sigmas,
                generator=generator,
                callback=(lambda info: report(info, 0)) if last else None,
                extra_args={k: v[a:b] for k, v in extra.items()},
            )
        )
    x = chunks[0] if len(chunks) == 1 else torch.cat(chunks)
    if plan.kind is Kind.ONE:
        return x
    second = plan.stages[1]
    if plan.rows > 1:
        # A renoised layout is a clean image already; mid-path, the estimate at the last level.
        clean = x if plan.kind is Kind.RENOISE else first.denoiser(x, first.sigmas[-1], **extra)
        chosen = closest(clean, plan.rows, plan.images)
        x, extra = x[chosen], {k: v[chosen] for k, v in extra.items()}
    if plan.kind is Kind.RENOISE:
        noise = torch.randn(x.shape, generator=generator, device=generator.device)
        x = x + second.sigmas[0] * noise.to(x.device)
    offset = len(first.sigmas) - 1
    return second.sampler(second.denoiser, x, second.sigmas, generator=generator,
                          callback=lambda info: report(info, offset), extra_args=extra)  # fmt: skip
