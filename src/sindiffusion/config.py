"""Configuration: one dataclass per part of a run, and the named presets.

A run's `Config` has four parts, each read by one stage of the data's path:

- `model` (`ModelConfig`): the UNet's shape (`unet.py`);
- `diffusion` (`DiffusionConfig`): the noise process the network is trained for (`diffusion.py`);
- `sampling` (`SamplingConfig`): how samples are drawn: sampler, schedule, the closed-form
  layout stage and its patch denoiser (`PatchConfig`), autoguidance (`sampling.py`). Changing
  it needs no retraining;
- `train` (`TrainConfig`): the optimisation (`trainer.py`).

Every checkpoint stores its `Config` as JSON, so a checkpoint alone is enough to sample. How
the `fast` preset's values were found is logged in docs/notebook/fast-preset.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import limits
from .errors import SinDiffusionError

PRESETS = ("fast", "paper")
UPSAMPLE_MODES = ("conv", "low_conv")
PARAMETERIZATIONS = ("eps", "edm")


def _whole_number(name: str, value: Any, low: int = 1) -> None:
    """A one-sentence error unless `value` is a whole number >= `low`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SinDiffusionError(f"{name} is {value!r}; give a whole number of at least {low}.")


def _is_number(value: Any) -> bool:
    """An int or a float, not a bool (True is an int to Python, not a number to a user)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "a string"}


def _check_types(config: Any, prefix: str = "") -> None:
    """A one-sentence error for a field of a plain type (int, float, bool or str, or one of them
    or None) that holds something else: a config may come from someone else's run folder, and
    a string where a number belongs must not reach a comparison or a formula."""
    for f in dataclasses.fields(config):
        kind, _, rest = str(f.type).partition(" | ")
        if kind not in _KINDS or rest not in ("", "None"):
            continue
        value = getattr(config, f.name)
        if value is None and rest == "None":
            continue
        ok = {
            "int": _is_number(value) and isinstance(value, int),
            "float": _is_number(value) and value == value,  # not NaN
            "bool": isinstance(value, bool),
            "str": isinstance(value, str),
        }[kind]
        if not ok:
            none = " (or null)" if rest else ""
            raise SinDiffusionError(f"{prefix}{f.name} is {value!r}; give {_KINDS[kind]}{none}.")


def _in_range(name: str, value: Any, high: float) -> None:
    """A one-sentence error unless `value` is a number above 0 and at most `high`."""
    if not (_is_number(value) and 0 < value <= high):
        raise SinDiffusionError(f"{name} is {value!r}; give a number above 0, at most {high:g}.")


@dataclass
class ModelConfig:
    """The patch-receptive-field UNet (`unet.py`)."""

    base_channels: int = 64  # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 4)  # channel multiplier per level; len = levels
    num_res_blocks: int = 1  # residual blocks per level in the encoder (the decoder has one more)
    groups: int = 32  # GroupNorm groups (clamped to divide each channel count)
    upsample: str = "conv"  # decoder upsampling: "conv" (the paper's: nearest, then a 3x3
    # conv) or "low_conv" (the conv at the coarse level, then nearest; an 18 % cheaper step)

    def __post_init__(self) -> None:
        # A config may come from someone else's run folder: check it before a network is built.
        _check_types(self, "model.")
        mults = self.channel_mults
        if not (isinstance(mults, (list, tuple)) and 1 <= len(mults) <= 8):
            raise SinDiffusionError("model.channel_mults must be a list of 1 to 8 whole numbers.")
        self.channel_mults = tuple(mults)
        for name in ("base_channels", "num_res_blocks", "groups"):
            _whole_number(f"model.{name}", getattr(self, name))
        for m in self.channel_mults:
            _whole_number("model.channel_mults", m)
        if self.upsample not in UPSAMPLE_MODES:
            raise SinDiffusionError(
                f"model.upsample is {self.upsample!r}; use one of {', '.join(UPSAMPLE_MODES)}."
            )
        limits.check("params", self.approx_params(), "the parameter count of this network")

    def approx_params(self) -> int:
        """About how many parameters the UNet of this shape has (3x3 convolutions dominate):
        enough to refuse a config too large to build, before building it."""
        total, cin = 0, self.base_channels
        for m in self.channel_mults:
            c = self.base_channels * m
            total += 9 * c * (cin + c) * (2 * self.num_res_blocks + 1) + 9 * c * c * 2
            cin = c
        return total * 3 // 2  # the decoder: one block more per level, and skip inputs


@dataclass
class DiffusionConfig:
    """The noise process the network is trained for (`diffusion.py`)."""

    parameterization: str = "eps"  # "eps": DDPM ε-prediction (the paper); "edm": Karras et al.
    timesteps: int = 1000  # eps: number of discrete DDPM steps T
    beta_start: float = 1e-4  # eps: first beta of the linear schedule
    beta_end: float = 0.02  # eps: last beta of the linear schedule
    sigma_data: float = 0.5  # edm: standard deviation of the data (pixels in [-1, 1])
    p_mean: float = -1.2  # edm: mean of log sigma of the training noise levels
    p_std: float = 1.2  # edm: std of log sigma of the training noise levels

    def __post_init__(self) -> None:
        _check_types(self, "diffusion.")
        if self.parameterization not in PARAMETERIZATIONS:
            raise SinDiffusionError(
                f"diffusion.parameterization is {self.parameterization!r}; use eps or edm."
            )


@dataclass
class PatchConfig:
    """The closed-form patch denoiser (`patch_denoiser.py`): the whole model in zero-training
    mode, the layout stage of a hybrid model. Sizes in pixels, noise levels in [-1, 1] units."""

    # Side of the square patches in px: one for every pyramid level, or one per level coarsest
    # first, whose last entries go to the finest levels and whose first repeats for coarser
    # ones: (19, 15) = 15 px at full resolution, 19 px at every coarser level.
    patch_size: int | tuple[int, ...] = (19, 15)
    stride: int | tuple[int, ...] = (10, 8)  # px between denoised patches, the same way;
    # < patch_size overlaps and averages votes
    vote_width: float | None = 0.12  # votes weighted by a Gaussian of this std (x patch_size)
    # around the patch centre, so disagreeing patch edges blur less; None = plain average
    levels: int = 5  # pyramid levels; 1 = full resolution only (no global coherence)
    coarsest: int = 24  # short side in px of the reference at the coarsest level
    finest: int | None = None  # long side in px of the reference at the finest level: a
    # larger image's pyramid stops there, and its estimates are enlarged to the canvas (a
    # hybrid's network draws the detail below); None = the image's own size
    handover: float = 0.5  # a level hands over to the next finer one when its own sigma
    # (sigma times its noise gain) falls below this
    temperature: float = 1.0  # softmax temperature T; > 1 blends more patches (diversity, blur)
    prior: float | tuple[float, float] | None = 0.1  # std, in image sides, of a Gaussian
    # prior on where a patch comes from: patches prefer references from about the same
    # relative position; a pair is (vertical, horizontal); None = off
    topk: int | None = 1  # nearest reference patches kept per noisy patch; None = all (exact)
    max_refs: int = 16384  # reference patches kept per level (a fixed random subset beyond)
    dropout: float = 0.0  # fraction of reference patches hidden at each call (diversity)
    pca_dim: int | None = 24  # distances in this many principal components; None = all
    sigma_floor: float = 0.0  # weights never sharper than at this sigma (less copying, softer)
    sigma_min: float = 0.01  # smallest noise level of its own sampling schedule
    sigma_max: float | None = None  # largest noise level of its own schedule; None: where
    # the coarsest level sees noise `start_noise` of its own
    start_noise: float = 20.0  # the coarsest level's own noise at the top of the schedule:
    # well above the distance between its patches, so the first estimates do not favour
    # patches close to mid-grey (at 2 they did, and a sample's share of sky, ground or trees
    # drifted from the image's: Places50 tune SIFID-E 30.8 -> 24.4 at the same diversity)
    bf16: bool = True  # bfloat16 for the candidate search; the weights are always float32
    seed: int = 0  # seeds the per-call randomness (grid offset, dropout)

    def __post_init__(self) -> None:
        _check_types(self)  # the knobs' own names: zero-training takes them as keywords
        stds = self.prior if isinstance(self.prior, (list, tuple)) else [self.prior]
        if self.prior is not None and not all(_is_number(v) for v in stds):
            raise SinDiffusionError(
                f"prior is {self.prior!r}; give one std or a (vertical, horizontal) pair."
            )
        if isinstance(self.prior, (list, tuple)):
            pair = tuple(float(v) for v in self.prior)
            if len(pair) != 2:
                raise SinDiffusionError(
                    f"prior is {pair}; give one std or a (vertical, horizontal) pair."
                )
            self.prior = (pair[0], pair[1])
        if self.prior is not None and min(self.prior_pair) <= 0:
            raise SinDiffusionError(
                f"prior is {self.prior}; give positive stds (or None for no prior)."
            )
        for name in ("patch_size", "stride"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if not 1 <= len(value) <= 16:
                    raise SinDiffusionError(
                        f"{name} is {value!r}; give one side or 1 to 16 of them (per level)."
                    )
                value = tuple(value)
                setattr(self, name, value[0] if len(value) == 1 else value)
            for v in _sides(getattr(self, name)):
                _whole_number(name, v)
        for name in ("levels", "max_refs", "coarsest"):
            _whole_number(name, getattr(self, name))
        if self.finest is not None:
            _whole_number("finest", self.finest)
        if self.largest_patch > 64 or self.levels > 16:
            raise SinDiffusionError(
                f"patch_size {self.patch_size} / levels {self.levels}: give at most 64 px and "
                "16 levels."
            )
        limits.check("refs", self.max_refs, "max_refs (reference patches per level)")
        if self.vote_width is not None:  # None: a plain average
            _in_range("vote_width", self.vote_width, 10)
        if not 0 <= self.dropout < 1:
            raise SinDiffusionError(f"dropout is {self.dropout}; give a fraction in [0, 1).")
        if self.temperature <= 0 or self.handover <= 0 or self.sigma_min <= 0:
            raise SinDiffusionError("temperature, handover and sigma_min must be positive.")
        if self.sigma_max is not None and self.sigma_max <= self.sigma_min:
            raise SinDiffusionError("sigma_max must be larger than sigma_min.")
        _in_range("start_noise", self.start_noise, 1e4)
        if self.topk is not None and self.topk < 1:
            raise SinDiffusionError(
                f"topk is {self.topk}; give at least 1 (or None for every patch)."
            )

    @property
    def largest_patch(self) -> int:
        """The largest patch side of any level."""
        return max(_sides(self.patch_size))

    def patch_sizes(self, levels: int) -> list[int]:
        """The patch side of each of `levels` pyramid levels, coarsest first."""
        return _per_level(self.patch_size, levels)

    def strides(self, levels: int) -> list[int]:
        """The stride of each of `levels` pyramid levels, coarsest first, at most its patch."""
        sizes = self.patch_sizes(levels)
        return [min(s, p) for s, p in zip(_per_level(self.stride, levels), sizes, strict=True)]

    @property
    def prior_pair(self) -> tuple[float, float]:
        """The position prior's (vertical, horizontal) std; only for a prior that is on."""
        assert self.prior is not None
        p = self.prior
        return (float(p), float(p)) if isinstance(p, (int, float)) else p


def _sides(value: int | tuple[int, ...]) -> tuple[int, ...]:
    """Every side (or stride) a `patch_size` (or `stride`) value gives."""
    return value if isinstance(value, tuple) else (value,)


def _per_level(value: int | tuple[int, ...], levels: int) -> list[int]:
    """`value` for each of `levels` levels, coarsest first: an int for all; a tuple's last
    entries for the finest levels, its first repeated for the coarser ones."""
    if isinstance(value, int):
        return [value] * levels
    tail = list(value[-levels:])
    return [value[0]] * (levels - len(tail)) + tail


@dataclass
class SamplingConfig:
    """How samples are drawn (`sampling.py`); read only when sampling, so changing it needs no
    retraining. Noise levels (sigma) are in [-1, 1] pixel units: x = x0 + sigma * noise."""

    sampler: str = "ddpm"  # sampler name, see samplers.SAMPLERS
    steps: int = 1000  # noise levels the sampler runs (below the switch when split, see below)
    sigma_min: float = 0.002  # edm: smallest noise level of the network's schedule
    sigma_max: float = 80.0  # edm: largest noise level of the network's schedule
    clip_denoised: bool = True  # clamp every clean-image estimate to [-1, 1]
    hybrid_sigma: float = 0.0  # above this sigma the closed-form patch denoiser of the training
    # image draws the layout (`layout.Hybrid`); 0 = the network only
    hybrid_finest: float = 0.0  # > 0: the switch rises (never falls) to the sigma where the
    # layout's finest pyramid level sees this much noise of its own, so a photo laid out from
    # a reduced copy (`patch.finest`) hands over to the network earlier; 0 = off
    reduced_steps: int = 0  # > 0: `steps` for such a photo when the call gives none: each of
    # its levels is a network call at full size, the bulk of a large sample's time; 0 = steps
    reduced_candidates: int = 0  # > 0: `candidates` for such a photo when the call gives none
    # (each candidate's layout levels run at full size); 0 = candidates
    hybrid_steps: int = 0  # > 0 splits the schedule at hybrid_sigma: this many levels
    # log-spaced from sigma_max down to the switch for the layout, then `steps` Karras levels
    # below it for the network; 0 = one schedule of `steps` levels across both
    layout_levels: tuple[float | tuple[int, float], ...] = ()  # the layout's levels placed
    # on the patch pyramid instead of `hybrid_steps` log-spaced ones: sigma_max (or the
    # higher sigma where the coarsest pyramid level sees pure noise), its geometric mean
    # with the next, then one level per entry: a (pyramid level, noise) pair at the sigma
    # where that pyramid level (0 = coarsest, -1 = finest) sees that much noise of its own, a
    # number at that sigma of the canvas itself; () = off
    candidates: int = 1  # layouts drawn per sample above hybrid_sigma, the one whose coarse
    # patches are closest to the training image's kept (`layout.py`)
    renoise: float = 0.0  # > 0: each layout is a whole closed-form image, noised afresh to
    # this sigma and finished by the network (SDEdit); 0 = the network takes over mid-path
    renoise_steps: int = 20  # levels of the closed-form sampler (DPM-Solver++ 2M) of a
    # renoised layout
    shift: tuple[float, float] = (0.0, 0.0)  # std (vertical, horizontal), in image sides, of a
    # random offset per sample of the patch denoiser's position prior: each layout is the
    # scene moved a little; (0, 0) = every layout centred
    patch: PatchConfig = field(default_factory=PatchConfig)  # the layout stage's patch denoiser
    autoguidance: float = 0.0  # weight w of D + w (D - D_init) at noise levels within
    # `autoguidance_sigmas`, D_init the network at its starting weights (`train.init`);
    # 0 = off, and off for runs from random weights
    autoguidance_sigmas: tuple[float, float] = (0.04, 0.15)  # (low, high) sigmas guided
    autoguidance_max_pixels: int | None = None  # a canvas of more pixels is not guided (its
    # weak network doubles half the network's calls); None = every canvas
    tile: bool = False  # seamless: every call sees the canvas wrapped around (`tiling.Tiled`)
    mirror: str = ""  # symmetric along "x" (left-right), "y" (up-down) or "xy"; "" = free
    variation: float = 0.0  # > 0: start from the training image noised to this sigma instead
    # of from pure noise, so a sample is the same scene redrawn (about 0.3: the detail, 1: the
    # objects' shapes, 3 and more: where they are); 0 = a free sample

    def __post_init__(self) -> None:
        _check_types(self, "sampling.")
        self.shift = (float(self.shift[0]), float(self.shift[1]))
        lo, hi = self.autoguidance_sigmas
        self.autoguidance_sigmas = (float(lo), float(hi))
        if isinstance(self.patch, dict):
            self.patch = PatchConfig(**self.patch)
        self.layout_levels = _layout_levels(self.layout_levels)
        # A call's options are checked where it uses them (`sampling.settings`); the config's
        # sizes here, so a config from someone else's run cannot ask for a billion steps.
        for name in ("steps", "hybrid_steps", "renoise_steps"):
            if isinstance(getattr(self, name), int):
                limits.check("steps", getattr(self, name), f"sampling.{name}")
        if self.autoguidance_max_pixels is not None:
            _whole_number("sampling.autoguidance_max_pixels", self.autoguidance_max_pixels)
        if isinstance(self.candidates, int):
            limits.check("candidates", self.candidates, "the candidate layouts per result")
        if isinstance(self.reduced_candidates, int):
            limits.check("candidates", self.reduced_candidates, "sampling.reduced_candidates")


def _layout_levels(value: Any) -> tuple[float | tuple[int, float], ...]:
    """`SamplingConfig.layout_levels` as a tuple of numbers and (int, float) pairs; a
    one-sentence error unless it is at most 16 entries, each a positive noise level or a pair
    of a pyramid level (-16 to 15) and a positive noise level."""

    def positive(v: Any) -> bool:
        return _is_number(v) and v > 0

    def pair(v: Any) -> bool:
        return (
            isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], int)
            and not isinstance(v[0], bool) and -16 <= v[0] < 16 and positive(v[1])
        )  # fmt: skip

    entries = value if isinstance(value, (list, tuple)) else None
    if entries is None or len(entries) > 16 or not all(positive(e) or pair(e) for e in entries):
        raise SinDiffusionError(
            f"sampling.layout_levels is {value!r}; give at most 16 noise levels or [pyramid "
            "level, noise] pairs, e.g. [[0, 0.65], [-1, 0.4], 0.4], or [] for log-spaced levels."
        )
    return tuple(float(e) if positive(e) else (int(e[0]), float(e[1])) for e in entries)


def _option(help: str, kind: str, **cli: Any) -> Any:
    """A `SamplingOptions` field: None by default, its command-line help and kind in metadata."""
    return field(default=None, metadata={"help": help, "kind": kind, **cli})


@dataclass(frozen=True)
class SamplingOptions:
    """The options one sampling call may change, for `SinDiffusion.sample`, every
    application, the command line and the web page; None keeps the model's setting (its
    `SamplingConfig`). The command line makes one flag per field from its metadata: `help`,
    and `kind` (count: a whole number >= 1; level: a number >= 0; std: a number > 0; flag;
    choice, with `choices`; sampler: a sampler's name); `apps` False keeps it off the
    applications' commands."""

    steps: int | None = _option(
        "sampler steps; below the layout switch for a split schedule", "count"
    )
    sampler: str | None = _option("the sampler", "sampler")
    candidates: int | None = _option(
        "layouts drawn per result by a hybrid model, the one closest to the image's coarse "
        "patches kept (applications: 1 unless given)",
        "count",
    )
    renoise: float | None = _option(
        "hybrid models: noise each closed-form layout afresh to SIGMA and finish it with the "
        "network; 0 hands over mid-path instead (applications: 0 unless given)",
        "level",
        metavar="SIGMA",
    )
    autoguidance: float | None = _option(
        "weight of the push away from the run's starting weights at low noise levels; 0 turns "
        "it off and saves a network pass per guided level",
        "level",
        metavar="W",
    )
    tile: bool | None = _option("a seamless texture: the canvas wraps around", "flag")
    mirror: str | None = _option(
        "symmetric left-right (x), up-down (y) or both", "choice", choices=("x", "y", "xy")
    )
    variety: float | None = _option(
        "one dial from the image redrawn to wild layouts: 0 keeps the image's layout and "
        "redraws its detail, 0.5 moves its objects a little, 0.9 to 1 lets go of it, 1 is the "
        "run's own free sample, 2 the widest layouts",
        "level",
        metavar="V",
        apps=False,
    )
    prior: float | tuple[float, float] | None = _option(
        "how far from its own place, in image sides (std; or a (vertical, horizontal) pair), "
        "the layout stage takes each patch: larger gives more varied, less faithful layouts "
        "(fast 0.065; 0.1 moves the horizon of a sky-over-field scene)",
        "std",
        metavar="STD",
        apps=False,
    )

    @classmethod
    def of(cls, options: SamplingOptions | None = None, **overrides: Any) -> SamplingOptions:
        """`options` (default: none set) with the keyword `overrides` that are not None; an
        unknown keyword is a one-sentence `SinDiffusionError`."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise SinDiffusionError(
                f"unknown sampling option {', '.join(unknown)}; use {', '.join(names)}."
            )
        given = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(options if options is not None else cls(), **given)

    def filled(self, **defaults: Any) -> SamplingOptions:
        """These options with `defaults` for the fields that are not set."""
        unset = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, **unset)

    def given(self) -> dict[str, Any]:
        """The fields that are set, as keyword arguments."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None
        }


@dataclass
class TrainConfig:
    """The optimisation loop (`trainer.py`)."""

    steps: int = 50_000  # optimiser steps (a --minutes budget may stop earlier)
    batch_size: int = 128  # images (crops or rescaled copies) per step
    crop_size: int | None = None  # side in px of random square crops; None = whole image
    scale_min: float = 0.75  # smallest random rescale factor of the image per step
    scale_max: float = 1.25  # largest random rescale factor of the image per step
    lr: float = 5e-4  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 0  # steps of linear learning-rate warm-up
    lr_decay: bool = False  # cosine decay to 0 over the run (by steps or by the time budget)
    ema_decay: float = 0.9999  # decay of the EMA of the weights that samples come from
    grad_clip: float = 1.0  # global gradient-norm clip; 0 = off
    bf16: bool = False  # bfloat16 autocast (CUDA, or a CPU with AVX-512 bf16 or AMX)
    channels_last: bool = False  # memory format that speeds up convolutions on a CPU
    max_size: int = 250  # the training image's long side in px (never enlarged)
    init: str | None = None  # starting weights: None = random (seeded); "generic" = the
    # network pretrained on nine public-domain photos and textures (`unet.initial_weights`)
    checkpoint_every: int = 1000  # steps between checkpoints
    checkpoint_minutes: float | None = 1.0  # and at most this much wall time between them, so
    # a run killed by the OOM killer or a crash loses at most that; None = by steps only
    preview_every: int = 1000  # steps between preview sample grids; 0 = only at the end
    preview_steps: int = 25  # sampler steps of the previews (the run's sampler, fewer steps)

    def __post_init__(self) -> None:
        _check_types(self, "train.")


@dataclass
class Config:
    """Everything that defines a run; saved inside every checkpoint."""

    preset: str = "fast"
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def copy(self) -> Config:
        """An independent copy (nested dataclasses included)."""
        return Config.from_dict(self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Rebuild a config, also from the layout of checkpoints before 0.2 (sampling fields in
        `diffusion`). An unknown key is a `SinDiffusionError`, so typos do not pass silently."""
        d = _upgrade(d)
        try:
            return cls(
                preset=d.get("preset", "custom"),
                model=ModelConfig(**d.get("model", {})),
                diffusion=DiffusionConfig(**d.get("diffusion", {})),
                sampling=SamplingConfig(**d.get("sampling", {})),
                train=TrainConfig(**d.get("train", {})),
            )
        except TypeError as e:  # an unknown or missing field
            raise SinDiffusionError(
                f"the config has a field this version does not know ({e})."
            ) from None


# Where each sampling field lived in checkpoints before 0.2 (all of them in `diffusion`).
_OLD_SAMPLING_KEYS = {
    "sampler": "sampler",
    "sample_steps": "steps",
    "sigma_min": "sigma_min",
    "sigma_max": "sigma_max",
    "clip_denoised": "clip_denoised",
    "hybrid_sigma": "hybrid_sigma",
    "hybrid_steps": "hybrid_steps",
    "layout_candidates": "candidates",
    "layout_renoise": "renoise",
    "layout_steps": "renoise_steps",
    "layout_shift": "shift",
    "autoguidance": "autoguidance",
    "autoguidance_sigmas": "autoguidance_sigmas",
}


_PATCH_BEFORE_0_2 = {"patch_size": 7, "stride": 4, "topk": 8}


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A config dict of the current layout from one written before 0.2: the sampling fields
    move from `diffusion` to `sampling`, `layout_prior` / `layout_topk` become the patch
    denoiser's `prior` / `topk`, and the model's dead knobs `in_channels` (3) and `patch` (1)
    go; a patch config written before `start_noise` gets the 2 of its time."""
    d = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    model = d.get("model", {})
    for key, only in (("in_channels", 3), ("patch", 1)):
        if key in model and model.pop(key) != only:
            raise SinDiffusionError(
                f"this run's network has model.{key} other than {only}, an experiment that "
                "this version no longer builds; retrain it."
            )
    diffusion = d.get("diffusion", {})
    moved = {new: diffusion.pop(old) for old, new in _OLD_SAMPLING_KEYS.items() if old in diffusion}
    patch = {}
    if "layout_prior" in diffusion:
        patch["prior"] = diffusion.pop("layout_prior") or None  # 0 meant "no prior"
    if "layout_topk" in diffusion:
        patch["topk"] = diffusion.pop("layout_topk")
    if moved or patch:
        sampling = dict(d.get("sampling", {}))
        sampling.update(moved)
        # The layout patches of that time, which are no longer the defaults.
        sampling["patch"] = {**_PATCH_BEFORE_0_2, **sampling.get("patch", {}), **patch}
        d["sampling"] = sampling
    saved = d.get("sampling")
    if isinstance(saved, dict) and isinstance(saved.get("patch"), dict):
        # Written before `start_noise`: its layout stage started where the coarsest level
        # sees noise 2 of its own.
        saved["patch"] = {"start_noise": 2.0, **saved["patch"]}
    return d


def load_config(path: str | os.PathLike) -> Config:
    """Read a `Config` from a JSON file (e.g. a run folder's config.json); a one-sentence
    `SinDiffusionError` for a file that cannot be read or is not a config."""
    try:
        data = json.loads(Path(path).read_text())
    except OSError:
        raise SinDiffusionError(f"{path}: cannot read this config file; check the path.") from None
    except ValueError as e:
        raise SinDiffusionError(
            f"{path} is not a valid sindiffusion config (not JSON: {e})."
        ) from None
    if not isinstance(data, dict):
        raise SinDiffusionError(f"{path} is not a sindiffusion config (a JSON object).")
    try:
        return Config.from_dict(data)
    except SinDiffusionError as e:
        raise SinDiffusionError(f"{path} is not a valid sindiffusion config: {e}") from None


SHORT_BUDGET_MINUTES = 1.0  # a `fast` run of at most this many minutes trains on small crops
SHORT_BUDGET_CROP = 64  # its crop side in px (96 otherwise): twice the steps per second


def preset(name: str = "fast", minutes: float | None = None) -> Config:
    """A fresh `Config` for a named preset (`PRESETS`); `minutes` is the training time budget
    it is for (None: a budget in steps, or not known).

    - ``paper``: the published recipe (`paper_preset`);
    - ``fast``: the default for a 2-core CPU (`fast_preset`).
    """
    if name == "paper":
        return paper_preset()
    if name == "fast":
        return fast_preset(minutes)
    raise SinDiffusionError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}.")


def paper_preset() -> Config:
    """The published recipe: DDPM, T = 1000, ε-prediction, the 64-channel (1, 2, 4) UNet,
    batch 128 of whole rescaled images, AdamW 5e-4, EMA 0.9999, 1000-step ancestral sampling
    with x0 clipping."""
    return Config(
        preset="paper",
        model=ModelConfig(base_channels=64, channel_mults=(1, 2, 4), num_res_blocks=1),
        diffusion=DiffusionConfig(parameterization="eps"),
        sampling=SamplingConfig(sampler="ddpm", steps=1000),
        train=TrainConfig(
            steps=50_000,
            batch_size=128,
            lr=5e-4,
            ema_decay=0.9999,
            checkpoint_every=1000,
            preview_every=5000,
            preview_steps=50,
        ),
    )


def fast_preset(minutes: float | None = None) -> Config:
    """The default for a 2-core CPU: a narrower UNet with the same patch-level receptive
    field, trained from the shipped `generic` weights on random crops (64 px for a budget of
    at most `SHORT_BUDGET_MINUTES`, else 96), EDM preconditioning, bf16 + channels_last; the
    closed-form patch denoiser draws each sample's layout and objects above sigma 0.15 and a
    few Heun steps with autoguidance draw the detail. How each value was chosen, with figures:
    docs/notebook/fast-preset.md."""
    short = minutes is not None and minutes <= SHORT_BUDGET_MINUTES
    return Config(
        preset="fast",
        model=ModelConfig(
            base_channels=32,
            channel_mults=(1, 2, 2),
            num_res_blocks=1,
            groups=8,
            upsample="low_conv",
        ),  # fmt: skip
        # Training noise centred on sigma 0.17, the levels the network draws below the switch.
        diffusion=DiffusionConfig(parameterization="edm", p_mean=-1.8, p_std=0.8),
        sampling=SamplingConfig(
            sampler="heun",
            steps=6,  # network levels 0.15 ... 0.006 (12 calls with the hand-over, 6 guided)
            sigma_min=0.006,
            clip_denoised=True,
            # The closed-form denoiser draws layout and objects, the network the detail: a
            # network taking over at 0.7 broke buildings into fragments (LSUN tune SIFID-E
            # 59 against 30 at 0.15).
            hybrid_sigma=0.15,
            # A photo laid out from a reduced copy hands over where that copy sees noise 0.046
            # of its own: 0.15 up to 1024 px, 0.53 at 4000 px. There the layout's last level,
            # at canvas sigma 0.4, snaps an all but clean copy into blots the network cannot
            # repair from 0.15 (fox2, tune photo: SIFID-E 117 at 0.15, 160 at 0.3, 36 at 0.6).
            hybrid_finest=0.046,
            # 8 network calls instead of 12 for such a photo: a 4000 px sample in 144 s, not
            # 214 s, for SIFID-E 41.2 against 40.4 (fox2, tune photo); 1024 px tune photo:
            # SIFID-E 33.3 either way, 13 s a sample, not 25 (4 samples).
            reduced_steps=4,
            reduced_candidates=4,  # the 8 below were chosen at 250 px; 4 keep a 4000 px
            # sample within 3 minutes (a 1024 px one: 8 cost 12-18 % more time)
            hybrid_steps=5,  # (read only where layout_levels is (): older runs)
            # One closed-form level per pyramid level drawn, where that level sees noise 0.65
            # (0.4 at the finest), skipping the second coarsest: each top-1 level snaps the
            # canvas to a mosaic of reference patches, and more snaps mix more seams (LSUN
            # tune SIFID-E 25.3 -> 18.4, broken windows 0.22 -> 0.10, at the same diversity).
            # The last at canvas sigma 0.4 too: the same level for a photo up to `finest`, a
            # second one for a larger photo's half-size layout (without it a 1024 px tune
            # photo mottled: SIFID-E 42 -> 137).
            layout_levels=((0, 0.65), (2, 0.65), (3, 0.65), (-1, 0.4), 0.4),
            # 8 layouts, the one whose coarse patches are closest kept: LSUN tune SIFID-E 19.6
            # -> 17.4 for 0.011 less diversity, a fifth fewer broken windows; on the least
            # diverse Places50 tune images the same SIFID-E, diversity and copying; 5 % longer
            # samples. 16 went further on LSUN (14.5) but cost diversity (0.38).
            candidates=8,
            # A scene moves sideways more than up and down. With 8 layouts to choose from,
            # wider offsets than (0.03, 0.12) buy diversity at the same fidelity (LSUN tune,
            # two seeds: +0.020 and +0.034 at SIFID-E +0.5 and -0.2).
            shift=(0.05, 0.2),
            # Zero-training's unblended 19 / 15 px patches: whole regions move, not fragments.
            # A photo larger than 512 px is laid out from its 512 px copy: at full size the
            # 16 384 reference patches of a megapixel mottle the layout (SIFID-E 83 -> 43 on
            # a 1024 px tune photo).
            # The schedule starts at the network's sigma_max (80, where a 250 px image's
            # coarsest level sees noise 5 to 8 of its own) or, for a photo so large that this is
            # below 2 there, at 2. Zero-training's 20 moved along the line here, not past it
            # (docs/zero-training.md, `start_noise`): the candidates already pick layouts by
            # their share of each kind of patch.
            # Every reference patch of a 250 px image (65 536 a level, not a random 16 384 as
            # zero-training keeps, where it did not pay): LSUN tune SIFID-E 16.6 -> 15.6 at the
            # same diversity, closer on 8 of 9; Places50 tune 1, 8, 14, 24 18.6 -> 18.9,
            # copy 32 0.172 -> 0.155.
            patch=PatchConfig(
                patch_size=(19, 15),
                stride=(10, 8),
                prior=0.065,
                topk=1,
                finest=512,
                max_refs=65536,
                start_noise=2.0,
            ),
            autoguidance=0.3,  # away from the generic starting weights
            # Not above half a megapixel: at 1024 x 1024 its weak network's 6 extra calls cost
            # 25 -> 17 s a sample for SIFID-E 49.0 -> 50.7 (tune photo 00142).
            autoguidance_max_pixels=1 << 19,
        ),
        train=TrainConfig(
            steps=1500,  # about 5 minutes on 2 CPU cores
            batch_size=6,
            crop_size=SHORT_BUDGET_CROP if short else 96,
            # Shrunk by 0.6-1, never enlarged: an enlarged image is a blurred one, and the
            # network learns and draws that blur.
            scale_min=0.6,
            scale_max=1.0,
            lr=3e-3,
            warmup_steps=50,
            lr_decay=True,
            ema_decay=0.995,
            init="generic",
            bf16=True,
            channels_last=True,
            checkpoint_every=250,
            preview_every=1000,
            preview_steps=6,  # the samples' own: 6 network levels below the switch
        ),
    )
