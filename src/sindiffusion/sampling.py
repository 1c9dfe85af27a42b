"""One sampling call, composed from its parts: which denoisers, which noise levels, which
sampler, and how the candidate layouts are chosen.

A model contributes its `Parts` (the network's denoiser, the closed-form patch denoiser, the
training image); a call contributes its `SamplingConfig` (the model's, with per-call
overrides). `build_plan` wraps the parts afresh for that call, so a call never changes the
model and two calls never share state:

    network --Autoguidance--> --Hybrid(layout = patch)--> --guide--> --clipped--> --KnownRegion-->

(each step only where it applies), and splits the schedule into stages: one stage; or two
with a choice among candidate layouts between them (`layout.layout_cut`); or, for a renoised
layout, the closed-form sampler's whole image noised afresh and finished by the network.
`run` then draws the noise and runs the stages, in chunks that bound memory. `SinDiffusion.sample`
and every application (`apps`) are a `build_plan` and a `run`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .config import DiffusionConfig, SamplingConfig
from .diffusion import karras_sigmas, network_sigmas, sigma_range
from .errors import SinDiffusionError
from .guidance import Autoguidance, Denoise, Guide, KnownRegion, clipped
from .layout import Hybrid, closest, layout_cut, random_shifts, split_sigmas
from .patch_denoiser import PatchDenoiser
from .samplers import Sampler, get_sampler, resampled, sample_dpmpp_2m
from .tiling import MIRRORS, Tiled, mirrored

MAX_PIXELS_PER_BATCH = 1 << 20  # samples are drawn in chunks of about this many pixels
OVERRIDES = ("steps", "sampler", "candidates", "renoise", "autoguidance", "tile", "mirror")


@dataclass(frozen=True)
class Parts:
    """What a model brings to sampling."""

    images: list[torch.Tensor]  # the training images (3, H, W) in [-1, 1]: candidates are
    # scored against their coarse patches
    device: torch.device  # where the denoisers run
    diffusion: DiffusionConfig  # the noise process the network was trained for
    network: Denoise | None  # the trained network's denoiser (x, sigma); None: zero-training
    patch: PatchDenoiser | None  # the closed-form patch denoiser; None: a network-only model
    weak: Callable[[], Denoise | None]  # autoguidance's weaker network (built on first use)

    @property
    def hybrid(self) -> bool:
        """Whether the patch denoiser lays out what the network details."""
        return self.network is not None and self.patch is not None


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

    stages: list[Stage]  # one; or two, with a choice among candidates (and a renoise) between
    images: list[torch.Tensor]  # the training images: candidate layouts are scored on them
    candidates: int = 1  # rows per result through the first of two stages; the closest is kept
    renoise: bool = False  # noise the first stage's clean images afresh for the second stage
    shift: tuple[float, float] = (0.0, 0.0)  # std of each layout's random prior offset

    @property
    def steps(self) -> int:
        return sum(stage.steps for stage in self.stages)


def merged(config: SamplingConfig, **overrides) -> SamplingConfig:
    """`config` with the per-call `overrides` (OVERRIDES; None = keep) applied, checked: a
    one-sentence `SinDiffusionError` for a setting no sampler can run."""
    unknown = set(overrides) - set(OVERRIDES)
    assert not unknown, unknown
    opts = dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})
    get_sampler(opts.sampler)  # an unknown name is a one-line error
    if not (isinstance(opts.steps, int) and opts.steps >= 1):
        raise SinDiffusionError(f"steps is {opts.steps}; give 1 or more sampler steps.")
    if not (isinstance(opts.candidates, int) and opts.candidates >= 1):
        raise SinDiffusionError(f"candidates must be at least 1, got {opts.candidates}.")
    if not opts.renoise >= 0:
        raise SinDiffusionError(f"renoise must be 0 (off) or a positive sigma, got {opts.renoise}.")
    if not opts.autoguidance >= 0:
        raise SinDiffusionError(f"autoguidance must be 0 (off) or more, got {opts.autoguidance}.")
    if opts.mirror not in MIRRORS:
        raise SinDiffusionError(f"mirror is {opts.mirror!r}; use x, y or xy (or nothing).")
    lo, hi = opts.autoguidance_sigmas
    if opts.autoguidance and not 0 <= lo <= hi:
        raise SinDiffusionError(
            f"sampling.autoguidance_sigmas is ({lo:g}, {hi:g}); give (low, high) noise "
            "levels with 0 <= low <= high."
        )
    return opts


def schedule(parts: Parts, opts: SamplingConfig) -> torch.Tensor:
    """The call's noise levels, decreasing, then 0: the patch denoiser's own (zero-training),
    the network's, or, for a hybrid with `hybrid_steps` > 0, split at the switch."""
    if parts.network is None:
        return parts.patch.sampling_sigmas(opts.steps)
    lo, hi = sigma_range(parts.diffusion, opts.sigma_min, opts.sigma_max)
    if parts.hybrid and opts.hybrid_steps > 0:
        if opts.hybrid_sigma >= hi:
            raise SinDiffusionError(
                f"sampling.hybrid_sigma ({opts.hybrid_sigma:g}) must be below sigma_max "
                f"({hi:g}) when sampling.hybrid_steps is above 0; lower it or set "
                "hybrid_steps to 0."
            )
        return split_sigmas(lo, hi, opts.hybrid_sigma, opts.hybrid_steps, opts.steps)
    return network_sigmas(parts.diffusion, opts.steps, lo, hi)


def start_at(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """The last ceil(strength * steps) levels of `sigmas` (then its final 0): strength in
    (0, 1] is where on the schedule to start, 1 = from pure noise, 0.5 = half-way down (the
    SDEdit t0), so only that many steps run."""
    if not 0 < strength <= 1:
        raise SinDiffusionError(f"strength {strength:g} is out of range; give a value in (0, 1].")
    k = max(1, math.ceil(strength * (len(sigmas) - 1) - 1e-9))
    return sigmas[len(sigmas) - 1 - k :]


def network_denoiser(parts: Parts, opts: SamplingConfig) -> Denoise | None:
    """The network's denoiser, autoguided when `opts.autoguidance` > 0 (and the run has a
    weaker network to guide away from); None in zero-training mode."""
    network = parts.network
    if network is not None and opts.autoguidance > 0:
        weak = parts.weak()
        if weak is not None:  # a run from random weights has nothing to guide away from
            network = Autoguidance(network, weak, opts.autoguidance, opts.autoguidance_sigmas)
    return network


def base_denoiser(parts: Parts, opts: SamplingConfig) -> Denoise:
    """The model's denoiser for these settings, before guidance and clipping: the network
    (`network_denoiser`), routed through the layout stage for a hybrid; the patch denoiser
    alone in zero-training mode; tiled and mirrored when asked (`shaped`)."""
    network = network_denoiser(parts, opts)
    if parts.hybrid:
        return shaped(Hybrid(network, parts.patch, opts.hybrid_sigma), opts)
    return shaped(network if network is not None else parts.patch, opts)


def shaped(denoiser: Denoise, opts: SamplingConfig) -> Denoise:
    """`denoiser` seamless (`opts.tile`) and symmetric (`opts.mirror`), or as it is."""
    return mirrored(Tiled(denoiser) if opts.tile else denoiser, opts.mirror)


def build_plan(
    parts: Parts,
    opts: SamplingConfig,
    guide: Guide | None = None,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    strength: float = 1.0,
    resample: tuple[int, int] = (1, 1),
) -> Plan:
    """The stages of one call with settings `opts` (from `merged`).

    guide: wraps the denoiser (class or text guidance), under the clipping; called once per
    base denoiser (twice for a renoised layout), so it should build its scores outside the
    function it returns (as `guidance.guide` does) to keep one seeded sequence; known: (image
    (3, H, W), mask (H, W) bool, True = regenerate): keep the image outside the mask
    (`KnownRegion`, outermost); strength: start part-way down the schedule (`start_at`);
    resample: (times, jump) of RePaint resampling of the network's sampler.
    """
    fn = resampled(get_sampler(opts.sampler), *resample)
    sigmas = start_at(schedule(parts, opts), strength).to(parts.device)

    def wrap(den: Denoise) -> Denoise:
        den = guide(den) if guide is not None else den
        den = clipped(den) if opts.clip_denoised else den
        return KnownRegion(den, *known) if known is not None else den

    def stage(den: Denoise, levels: torch.Tensor, sampler: Sampler = fn) -> Stage:
        repeats = resample if sampler is fn else (1, 1)
        return Stage(den, levels, sampler, resampled_steps(len(levels) - 1, *repeats))

    shift = opts.shift if parts.patch is not None else (0.0, 0.0)
    common = dict(images=parts.images, candidates=opts.candidates, shift=shift)
    if parts.hybrid and opts.renoise > 0 and float(sigmas[0]) > opts.renoise:
        # The closed-form sampler draws whole layouts (from the start level down), which are
        # noised afresh to `renoise` and finished by the network over as many levels as the
        # schedule has below it.
        high = parts.patch.sampling_sigmas(opts.renoise_steps)
        high = torch.cat([high[:-1][high[:-1] <= float(sigmas[0])], high[-1:]])
        below = max(1, int((sigmas[:-1] < opts.renoise).sum()))
        lowest = sigma_range(parts.diffusion, opts.sigma_min, opts.sigma_max)[0]
        low = karras_sigmas(below, lowest, opts.renoise)
        stages = [
            stage(wrap(shaped(parts.patch, opts)), high.to(parts.device), sample_dpmpp_2m),
            stage(wrap(shaped(network_denoiser(parts, opts), opts)), low.to(parts.device)),
        ]
        return Plan(stages, renoise=True, **common)
    den = wrap(base_denoiser(parts, opts))
    cut = layout_cut(sigmas, opts.hybrid_sigma) if parts.hybrid and opts.candidates > 1 else 0
    if cut:
        return Plan([stage(den, sigmas[:cut]), stage(den, sigmas[cut - 1 :])], **common)
    return Plan([stage(den, sigmas)], **common)


def resampled_steps(steps: int, times: int, jump: int) -> int:
    """Sampler steps that `samplers.resampled(sampler, times, jump)` runs over `steps` levels:
    every stretch of `jump` steps `times` times, but the last stretch once."""
    if times <= 1 or steps == 0:
        return steps
    last = (steps - 1) % jump + 1
    return (steps - last) * times + last


def run(
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
) -> torch.Tensor:
    """Draw `n` results of `size` (h, w) with `plan`; returns (n, 3, h, w) in [-1, 1] on the CPU.

    start: None draws from pure noise (x = sigma_0 * noise); an image (3, h, w) in [-1, 1]
    starts from it noised to the first level (x = start + sigma_0 * noise, SDEdit).
    noise (n, 3, h, w) and extra (per-row tensors of n rows, e.g. the layout's `shift` and
    `grid_seed`): given instead of drawn (an animation's path through the noise); only for a
    plan of one row per result (no candidates).
    max_pixels: results are drawn in chunks of about this many pixels (candidates counted);
    None draws all n at once. callback(info) after every sampler step: i (counted over the
    whole plan), x, sigma, sigma_next, denoised.
    """
    if not (isinstance(n, int) and n >= 1):
        raise SinDiffusionError(f"n is {n}; ask for at least 1 image.")
    h, w = size
    rows = plan.candidates if len(plan.stages) > 1 else 1
    if (noise is not None or extra is not None) and rows > 1:
        raise SinDiffusionError("a given noise needs one layout per result; set candidates=1.")
    chunk = n if max_pixels is None else max(1, max_pixels // (h * w * rows))
    bar = tqdm(total=n * plan.steps, disable=not progress, unit="step", desc="sampling")
    out = []
    try:
        for first in range(0, n, chunk):
            m = min(chunk, n - first)
            given = (
                None if noise is None else noise[first : first + m],
                None if extra is None else {k: v[first : first + m] for k, v in extra.items()},
            )
            x = _run_chunk(plan, m, rows, size, generator, device, start, bar, callback, given)
            out.append(x.clamp(-1, 1).cpu())
    finally:
        bar.close()
    return torch.cat(out)


def _run_chunk(plan, m, rows, size, generator, device, start, bar, callback, given) -> torch.Tensor:
    """m results: m * rows candidates through the first stage, the closest m through the rest;
    `given` (noise, extra) replaces what would be drawn."""
    offset = 0

    def report(info: dict) -> None:
        bar.update(m)
        if callback is not None:
            callback({**info, "i": info["i"] + offset})

    # The shifts are drawn before the noise, always in this order: the same seed, the same images.
    noise, extra = given
    if extra is None:
        shift = random_shifts(m * rows, plan.shift, generator, device)
        extra = {} if shift is None else {"shift": shift}
    first = plan.stages[0]
    if noise is None:
        noise = torch.randn((m * rows, 3, *size), generator=generator, device=generator.device)
    noise = noise.to(device)
    x = noise * first.sigmas[0] if start is None else start[None] + first.sigmas[0] * noise
    x = first.sampler(first.denoiser, x, first.sigmas, generator=generator, callback=report,
                      extra_args=extra)  # fmt: skip
    if len(plan.stages) == 1:
        return x
    second = plan.stages[1]
    if rows > 1:
        # A renoised layout is a clean image already; mid-path, the estimate at the last level.
        clean = x if plan.renoise else first.denoiser(x, first.sigmas[-1], **extra)
        chosen = closest(clean, rows, plan.images)
        x, extra = x[chosen], {k: v[chosen] for k, v in extra.items()}
    if plan.renoise:
        noise = torch.randn(x.shape, generator=generator, device=generator.device)
        x = x + second.sigmas[0] * noise.to(device)
        extra = {}  # the network alone finishes a renoised layout
    offset = len(first.sigmas) - 1
    return second.sampler(second.denoiser, x, second.sigmas, generator=generator,
                          callback=report, extra_args=extra)  # fmt: skip
