"""Configuration dataclasses and named presets.

A `Config` bundles the three parts of a run: the network (`ModelConfig`), the noise
process and sampler (`DiffusionConfig`) and the optimisation (`TrainConfig`). Every
checkpoint stores its `Config` as JSON, so a checkpoint alone is enough to sample.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

PRESETS = ("fast", "paper")


@dataclass
class ModelConfig:
    """The patch-receptive-field UNet (see `unet.py`)."""

    base_channels: int = 64  # channels at full resolution
    channel_mults: tuple[int, ...] = (1, 2, 4)  # channel multiplier per level; len = levels
    num_res_blocks: int = 1  # residual blocks per level in the encoder (decoder has one more)
    groups: int = 32  # GroupNorm groups (clamped to divide the channel count)
    in_channels: int = 3  # RGB
    patch: int = 1  # pixel-unshuffle factor of the stem: 2 runs the whole net at half resolution
    upsample: str = "conv"  # decoder upsampling (unet.Upsample): "conv" (paper) or "low_conv"

    def __post_init__(self) -> None:
        if self.upsample not in ("conv", "low_conv"):
            raise ValueError(f"unknown upsample {self.upsample!r}; use 'conv' or 'low_conv'")


@dataclass
class DiffusionConfig:
    """Noise process, network parameterisation and default sampler (see `diffusion.py`)."""

    parameterization: str = "eps"  # "eps": DDPM ε-prediction; "edm": Karras et al. preconditioning
    timesteps: int = 1000  # eps: number of discrete DDPM steps
    beta_start: float = 1e-4  # eps: first beta of the linear schedule
    beta_end: float = 0.02  # eps: last beta of the linear schedule
    sigma_data: float = 0.5  # edm: standard deviation of the data
    p_mean: float = -1.2  # edm: mean of log-sigma during training
    p_std: float = 1.2  # edm: std of log-sigma during training
    sigma_min: float = 0.002  # edm: smallest sampling noise level
    sigma_max: float = 80.0  # edm: largest sampling noise level
    sampler: str = "ddpm"  # default sampler name, see samplers.SAMPLERS
    sample_steps: int = 1000  # default number of sampler steps
    clip_denoised: bool = True  # clamp the predicted clean image to [-1, 1] while sampling
    hybrid_sigma: float = 0.0  # above this noise level samplers use the closed-form patch
    # denoiser of the training image (zero-training mode) for the layout; 0 = network only
    hybrid_steps: int = 0  # hybrid only: > 0 splits the schedule at hybrid_sigma: this many
    # levels log-spaced from sigma_max down to the switch for the layout, then `sample_steps`
    # Karras levels from the switch down for the network; 0 = one Karras schedule of
    # `sample_steps` levels across both
    layout_candidates: int = 1  # hybrid only: layouts drawn per sample above hybrid_sigma;
    # the one closest to the training image's coarse patches goes on (see layout.py)
    layout_renoise: float = 0.0  # hybrid only: > 0 draws each layout as a whole closed-form
    # image (zero-training mode's sampler), noises it afresh to this sigma and lets the network
    # finish from there (SDEdit); 0 = the network takes over mid-path at hybrid_sigma
    layout_steps: int = 20  # steps of the closed-form sampler (DPM-Solver++ 2M) of a
    # renoised layout
    layout_prior: float = 0.05  # hybrid only: std of the closed-form denoiser's position
    # prior in image sides (`ZeroConfig.layout`); smaller keeps layouts closer to the
    # image's; 0 = no prior
    layout_shift: tuple[float, float] = (0.0, 0.0)  # hybrid only: std (vertical, horizontal)
    # in image sides of a random offset per sample of that prior's centre: each layout is the
    # scene moved a little (`PatchDenoiser.shifted`); (0, 0) = every layout centred
    layout_topk: int | None = 8  # hybrid only: reference patches the closed-form denoiser
    # blends per noisy patch (`ZeroConfig.topk`); 1 = each takes its nearest, None = all
    autoguidance: float = 0.0  # weight w of D + w (D - D_init) at noise levels within
    # `autoguidance_sigmas`, D_init the network at its `train.init` weights (the weaker model
    # of autoguidance, `Denoiser.guide_away_from`); 0 = off, and off for runs from random weights
    autoguidance_sigmas: tuple[float, float] = (0.04, 0.15)  # (low, high) noise levels guided


# DiffusionConfig fields read only when sampling: changing them needs no retraining.
SAMPLING_FIELDS = (
    "sigma_min",
    "sigma_max",
    "sampler",
    "sample_steps",
    "clip_denoised",
    "hybrid_sigma",
    "hybrid_steps",
    "layout_candidates",
    "layout_renoise",
    "layout_steps",
    "layout_prior",
    "layout_shift",
    "layout_topk",
    "autoguidance",
    "autoguidance_sigmas",
)


@dataclass
class TrainConfig:
    """The optimisation loop (see `train.py`)."""

    steps: int = 50_000  # optimiser steps (a --minutes budget may stop earlier)
    batch_size: int = 128  # images (crops or rescaled copies) per step
    crop_size: int | None = None  # side of random square crops; None = whole rescaled image
    scale_min: float = 0.75  # smallest random rescale factor per step
    scale_max: float = 1.25  # largest random rescale factor per step
    lr: float = 5e-4  # peak AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 0  # linear learning-rate warm-up
    lr_decay: bool = False  # cosine decay to 0 over the run (by steps or by the time budget)
    ema_decay: float = 0.9999  # EMA of the weights used for sampling
    grad_clip: float = 1.0  # global gradient-norm clip
    bf16: bool = False  # bfloat16 autocast (CPU with AVX-512 bf16/AMX, or CUDA)
    channels_last: bool = False  # memory format that speeds up convolutions on CPU
    max_size: int = 250  # the training image's long side in pixels (never upscaled)
    init: str | None = None  # starting weights: None = random (seeded); "generic" = the
    # network pretrained on nine public-domain and CC0 photos and textures, shipped with the package
    # (`assets/generic-init*.safetensors`, the `fast` network only; see `train.initial_weights`)
    checkpoint_every: int = 1000  # steps between checkpoints
    preview_every: int = 1000  # steps between preview sample grids
    preview_steps: int = 25  # sampler steps for previews (default sampler, fewer steps)


@dataclass
class Config:
    """Everything that defines a run; saved inside every checkpoint."""

    preset: str = "fast"
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """Rebuild a config; unknown keys are an error so that typos do not pass silently."""
        model = dict(d.get("model", {}))
        if "channel_mults" in model:
            model["channel_mults"] = tuple(model["channel_mults"])
        diffusion = dict(d.get("diffusion", {}))
        for key in ("layout_shift", "autoguidance_sigmas"):
            if key in diffusion:
                diffusion[key] = tuple(diffusion[key])
        return cls(
            preset=d.get("preset", "custom"),
            model=ModelConfig(**model),
            diffusion=DiffusionConfig(**diffusion),
            train=TrainConfig(**d.get("train", {})),
        )


def with_sampling(config: Config, source: Config) -> Config:
    """A copy of `config` whose sampling settings (`SAMPLING_FIELDS`) are `source`'s."""
    fields = {k: getattr(source.diffusion, k) for k in SAMPLING_FIELDS}
    return dataclasses.replace(config, diffusion=dataclasses.replace(config.diffusion, **fields))


def preset(name: str = "fast") -> Config:
    """Return a fresh `Config` for a named preset.

    - ``paper``: the published recipe (DDPM, T=1000, ε-prediction, the 64-channel
      (1, 2, 4) UNet, batch 128 of whole rescaled images, AdamW 5e-4, EMA 0.9999,
      1000-step ancestral sampling with x0 clipping).
    - ``fast``: the default for a 2-core CPU: a narrower UNet with the same patch-level
      receptive field, EDM preconditioning, bf16 + channels_last, a few-step sampler,
      training from the shipped `generic` weights (`train.init`).
    """
    if name == "paper":
        return Config(
            preset="paper",
            model=ModelConfig(base_channels=64, channel_mults=(1, 2, 4), num_res_blocks=1),
            diffusion=DiffusionConfig(parameterization="eps", sampler="ddpm", sample_steps=1000),
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
    if name == "fast":
        # Tuned for 2 CPU cores and a few minutes (benchmarks/time_to_quality.py): a narrow
        # full-resolution net with the paper's ~100 px receptive field; above sigma = 0.7 the
        # closed-form patch denoiser lays the image out, so the network trains only on the
        # lower noise levels, on random crops, where a few hundred steps already pay.
        # Heun beat DPM-Solver++ on fidelity and diversity. Training sigmas centre on 0.17
        # (log-normal -1.8, 0.8), the levels the network draws. The schedule is split at the
        # switch: 5 closed-form levels from sigma 80 (3 leave the layout unfinished: SIFID-E
        # 67), then 8 Heun levels (15 calls) for the network: one 12-level Karras schedule
        # gave the network only 5, and its detail gained from finer steps; fewer layout
        # levels made layouts more varied, which paid for 4 candidate layouts per sample
        # (the closest to the image's coarse patches kept, layout.py) and a tighter position
        # prior (0.045): SIFID-E 32.9 -> 28.4 at pixel diversity 0.462 -> 0.460 (Places50,
        # 10 images, the same trained models). Then candidates scored by the Fréchet distance
        # of their coarse patches (layout.py; 27.0 / 0.462) and a tighter prior (0.035) whose
        # lost diversity comes back from a random offset of each sample's prior, three times
        # wider sideways than up and down (a scene moves sideways, its horizon stays): 26.5.
        # Then unblended layouts (each noisy patch takes its nearest reference, topk 1), which
        # are more varied, with a tighter prior (0.03) and wider offsets (0.03, 0.12): 26.1 ->
        # 25.8 at diversity 0.462 -> 0.459, and on a second set of models (5-minute budget)
        # 27.1 -> 26.5 at 0.472 -> 0.469.
        # Training starts from the shipped `generic` weights (the same network pretrained on
        # nine public-domain photos and textures): 5-minute budget, 26.5 -> 24.2 at pixel
        # diversity 0.469 -> 0.466 (one retrain each; retraining moves the mean by about 1.5).
        # A peak learning rate of 3e-3 instead of 2e-3: 24.2 (and 24.4 from longer pretrained
        # weights) -> 23.6 at diversity 0.463, and 4 images fine-tuned back to back: 25.7 ->
        # 24.6 (one run each, the higher rate also fitted more steps on a faster machine).
        # The candidates are compared one level before the layout's last (layout.layout_cut), so
        # its finest, dearest level runs once per sample: a seventh less time per sample (a
        # square 250 px one 1.56 -> 1.36 s) for SIFID-E 23.6 -> 23.8 and 24.2 -> 24.2 on two
        # sets of trained models, pixel diversity unchanged; 8 or 16 candidates, cheap now,
        # bought 23.7 / 0.451 and 23.4 / 0.448 (diversity below the 0.45 target).
        # Then autoguidance (Karras et al. 2024) away from the generic starting weights at the
        # network's middle-low levels (sigma 0.04-0.15, weight 0.2), which sharpens what the
        # 5-minute run learned: 23.8 -> 23.1 and 24.1 -> 23.5 on two sets of trained models,
        # diversity unchanged; it pays for 6 network levels instead of 8 (11 calls + 2 guided,
        # against 15): 23.3 and 23.8, faster than before.
        # Then the network's last level at sigma 0.006 instead of 0.002 (`sigma_min`), which
        # moves its six Karras levels up (0.34, 0.15, 0.06, 0.021 instead of 0.30, 0.12, 0.038,
        # 0.010): 23.26 -> 23.05, 23.83 -> 23.42 and 22.81 -> 22.55 on three sets of models,
        # the same calls (0.01 and 0.015 did less; 0.004 as well as 0.006, but guiding two
        # levels). With the guided range now holding one level (0.06), weight 0.3: 23.05 -> 22.94,
        # 23.42 -> 23.34 and 22.55 -> 22.43 (at 0.002 it made no difference: 23.15 against 23.12).
        # Then a position prior of 0.027 instead of 0.03 (offsets unchanged), paired on the
        # same models on a slow machine (5-minute runs, 860-920 steps): 24.02 -> 23.48 and,
        # with other draws, 25.09 -> 24.49 and 24.55 -> 23.86; on the 0.75-1 rescale models
        # 26.87 -> 26.45; pixel diversity down by 0.004-0.011 (0.480 -> 0.476). 0.025 did no
        # better (23.51) and cost more diversity (0.464).
        # Then the decoder's upsampling conv at the coarse level, into the finer level's
        # channels (upsample "low_conv"; generic weights retrained): a training step 18 %
        # cheaper (315 -> 259 ms on the slow machine), 1067-1172 steps in 5 minutes instead
        # of 864-917: 23.5 -> 21.7 (seed 0) and 22.5 (seed 1), diversity 0.463 / 0.462.
        # Renoised layouts (layout_renoise 1.5, layout_prior 0.04) did not beat the mid-path
        # handover on the ten Places50 images (SIFID-E 45.8 / diversity 0.481 against
        # 44.6 / 0.460, models trained before the sharp rescales) and cost 0.3 s more per
        # sample, so they stay an option.
        return Config(
            preset="fast",
            model=ModelConfig(
                base_channels=32,
                channel_mults=(1, 2, 2),
                num_res_blocks=1,
                groups=8,
                upsample="low_conv",
            ),
            diffusion=DiffusionConfig(
                parameterization="edm",
                p_mean=-1.8,
                p_std=0.8,
                sigma_min=0.006,
                sampler="heun",
                sample_steps=6,
                clip_denoised=True,
                hybrid_sigma=0.7,
                hybrid_steps=5,
                layout_candidates=4,
                layout_prior=0.027,
                layout_shift=(0.03, 0.12),
                layout_topk=1,
                autoguidance=0.3,
            ),
            train=TrainConfig(
                steps=1500,  # about 5 minutes on 2 CPU cores
                batch_size=6,
                crop_size=96,
                # Rescaled by 0.6-1 only: an enlarged image is a blurred one, and the network
                # learns and draws that blur (SIFID-E is very sensitive to it). Shrinking down
                # to 0.6 rather than 0.75 scored better on Places50 (a slow machine, 5 min).
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
                preview_steps=12,
            ),
        )
    raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
