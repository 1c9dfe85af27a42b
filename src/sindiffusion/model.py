"""The model object: `SinDiffusion` (sample, save), `load()` a run, `zero_training()`.

    import sindiffusion
    model = sindiffusion.load("runs/photo")                  # or sindiffusion.train(...)
    images = model.sample(n=4, size=(256, 512), seed=0)       # (4, 3, 256, 512) in [-1, 1]
    model = sindiffusion.zero_training("photo.jpg")           # no training at all

Sizes are (height, width), as tensors are laid out (the command line writes WIDTHxHEIGHT).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import Config, DiffusionConfig, SamplingConfig, SamplingOptions
from .contract import Denoise, Guide
from .device import keep_freed_memory_on, resolve_device, seeded, use_bf16
from .diffusion import Denoiser
from .errors import CheckpointError, SinDiffusionError
from .image import check_image_tensor, check_size, fit_size, load_image, resize
from .patch_denoiser import PatchDenoiser, patch_config
from .sampling import (
    Parts,
    Plan,
    base_denoiser,
    build_plan,
    reduced_settings,
    run,
    run_chunks,
    schedule,
    settings,
    variety_fade,
    variety_settings,
)
from .unet import UNet, initial_weights


class SinDiffusion:
    """A single-image diffusion model: its training image, its denoisers and its config.

    A trained model (`train`, `load`) samples with its network's EMA weights and, when
    `config.sampling.hybrid_sigma` > 0 (the `fast` preset), the closed-form patch denoiser of
    the training image for the layout above that noise level; a zero-training model
    (`zero_training`) with the patch denoiser alone. `image` is the training image (3, H, W)
    in [-1, 1]; `denoiser(x, sigma, **extra) -> x0_hat` the denoiser with the config's settings.
    """

    def __init__(
        self,
        config: Config,
        image: torch.Tensor | list[torch.Tensor],
        weights: dict[str, torch.Tensor] | None = None,
        device: str | torch.device | None = None,
        checkpoint: Checkpoint | None = None,
    ):
        """image: the training image, or a list of them (a model of several images; `image`
        is then the first, `images` all); weights: the network's (EMA) weights, None =
        zero-training mode; checkpoint: what `save` writes (None: nothing to save)."""
        self.device = resolve_device(device)
        keep_freed_memory_on(self.device)
        self.config = config
        self.images = list(image) if isinstance(image, (list, tuple)) else [image]
        self.image = self.images[0]
        self.checkpoint = checkpoint
        self.step = checkpoint.step if checkpoint is not None else 0
        self.network = self._network(weights) if weights is not None else None
        s = config.sampling
        layout = self.network is None or s.hybrid_sigma > 0
        on_device = [img.to(self.device) for img in self.images]
        self.patch = PatchDenoiser(on_device, s.patch) if layout else None

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: str | torch.device | None = None
    ) -> SinDiffusion:
        """The model a checkpoint holds (its EMA weights)."""
        return cls(checkpoint.config, checkpoint.images, checkpoint.ema, device, checkpoint)

    def _network(self, weights: dict[str, torch.Tensor]) -> Denoiser:
        """The network with `weights`, frozen, on this model's device, as a denoiser."""
        unet = UNet(self.config.model)
        want = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
        if {k: tuple(v.shape) for k, v in weights.items()} != want:
            raise CheckpointError(
                "the network weights do not fit the network its config describes (names or "
                "shapes differ); the checkpoint is damaged: retrain or use an earlier copy."
            )
        unet.load_state_dict(weights)
        unet = unet.eval().requires_grad_(False).to(self.device)
        bf16 = use_bf16(self.config.train.bf16, self.device)
        return Denoiser(
            unet, self.config.diffusion, bf16=bf16, channels_last=self.config.train.channels_last
        ).to(self.device)

    @functools.cached_property
    def weak_network(self) -> Denoiser | None:
        """Autoguidance's weaker network: the run's starting weights (`train.init`), built on
        first use; None for a run from random weights or in zero-training mode."""
        if self.network is None:
            return None
        init = initial_weights(self.config.train.init, self.config.model)
        return None if init is None else self._network(init)

    @property
    def parts(self) -> Parts:
        """What this model brings to a sampling call (`sampling.build_plan`)."""
        return Parts(
            images=self.images,
            device=self.device,
            diffusion=self.config.diffusion,
            network=self.network,
            patch=self.patch,
            weak=lambda: self.weak_network,
            network_width=self.config.model.base_channels,
        )

    def with_patch(self, **knobs) -> SinDiffusion:
        """This model with other call-time knobs of its closed-form patch denoiser (e.g.
        `prior=None`: patches from anywhere in the image), sharing its network and patch
        pyramid; this model is unchanged. A model without a patch denoiser is returned as is."""
        if self.patch is None:
            return self
        new = copy.copy(self)
        new.patch = self.patch.with_knobs(**knobs)
        return new

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the training image."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    def prepare(self, options: SamplingOptions | None = None) -> tuple[Parts, SamplingConfig]:
        """What one sampling call with `options` runs on: this model's parts, the layout
        stage's position prior replaced by `options.prior` when given, and the config's
        sampling settings with the options applied (`sampling.settings`), checked, and the
        layout switch raised and the network's steps cut for a photo laid out from a reduced
        copy (`hybrid_finest`, `reduced_steps`, `reduced_candidates`);
        `options.variety` sets the variation, the share of the layout offsets
        (`variety_fade`) or the prior's width (`variety_settings`); a variation has no layout
        offsets otherwise.
        Autoguidance asked for explicitly needs a weaker network; the config's is off
        without one."""
        options = options if options is not None else SamplingOptions()
        opts = settings(self.config.sampling, options)
        if opts.autoguidance > 0 and self.weak_network is None:
            if options.autoguidance:
                raise SinDiffusionError(
                    "zero-training mode has no network to autoguide; drop the autoguidance weight."
                    if self.network is None
                    else "this run started from random weights, so autoguidance has no weaker "
                    "network to guide away from; leave it at 0."
                )
            opts.autoguidance = 0.0
        patch = self.patch if self.network is not None and opts.hybrid_sigma > 0 else None
        if patch is not None:
            opts = reduced_settings(opts, options, patch.factors[-1])
        parts = self.parts
        prior = options.prior
        if options.variety is not None:
            if prior is not None:
                raise SinDiffusionError(
                    "give either variety (the one dial) or prior (the layout's spread), not both."
                )
            own = self.patch.cfg.prior if self.patch is not None else None
            top = float(schedule(parts, opts)[0])
            if options.variety > 1 and own is None:
                raise SinDiffusionError(
                    "this model's layout has no position prior to widen, so variety above 1 "
                    "changes nothing; give 1 or less."
                )
            opts.variation, widened = variety_settings(options.variety, top, own)
            prior = widened if widened != own else None
            share = variety_fade(options.variety)
            opts.shift = (opts.shift[0] * share, opts.shift[1] * share)
        elif opts.variation > 0:
            opts.shift = (0.0, 0.0)  # a variation keeps its start image's layout
        if prior is not None:
            if self.patch is None:
                raise SinDiffusionError(
                    "this model has no closed-form layout stage (it samples with its network "
                    "alone), so a position prior changes nothing; leave prior unset."
                )
            parts = dataclasses.replace(parts, patch=self.patch.with_knobs(prior=prior))
        return parts, opts

    @property
    def denoiser(self) -> Denoise:
        """`denoiser(x, sigma, **extra) -> x0_hat` with the config's settings (before clipping)."""
        return base_denoiser(*self.prepare())

    def sigmas(self, steps: int | None = None) -> torch.Tensor:
        """The sampling schedule for `steps` (default: the config's): decreasing, then 0."""
        return schedule(*self.prepare(SamplingOptions(steps=steps)))

    def output_size(
        self, size: tuple[int, int] | None = None, scale: tuple[float, float] | None = None
    ) -> tuple[int, int]:
        """The (height, width) of a sample: `size`, or the training size times `scale` (sy, sx)."""
        if size is not None and scale is not None:
            raise SinDiffusionError("give either a size or a scale, not both.")
        if size is None:
            sy, sx = scale if scale is not None else (1.0, 1.0)
            size = (round(self.size[0] * sy), round(self.size[1] * sx))
        return check_size(size)

    def sample(
        self,
        n: int = 4,
        size: tuple[int, int] | None = None,
        scale: tuple[float, float] | None = None,
        *,
        options: SamplingOptions | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        guide: Guide | None = None,
        callback: Callable[[dict], None] | None = None,
        progress: bool = False,
        **overrides: Any,
    ) -> torch.Tensor:
        """Draw `n` new images; returns (n, 3, H, W) in [-1, 1] on the CPU.

        size: (height, width) of the output, any size from 16 to 8192 px (default: the
        training image's); scale: (sy, sx) factors of the training size instead;
        options, or the same as keywords (`steps=12`, `sampler="heun"`, ...): the call's
        `SamplingOptions` (steps, sampler, candidates, renoise, autoguidance, tile, mirror,
        variety, prior; see its fields), None = the config's; `variety` is the one dial from
        the training image redrawn (0; resized to `size`) through the run's own samples (1) to
        the widest layouts (2); seed or generator: the same seed and
        arguments give the same images; guide: a function wrapping the denoiser, e.g.
        `guidance.guide(class_name="volcano")`; callback(info) after every sampler step;
        progress: a progress bar.
        """
        return run(*self._call(n, size, scale, options, seed, generator, guide, overrides),
                   callback=callback, progress=progress)  # fmt: skip

    def sample_chunks(
        self,
        n: int = 4,
        size: tuple[int, int] | None = None,
        scale: tuple[float, float] | None = None,
        *,
        options: SamplingOptions | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        guide: Guide | None = None,
        callback: Callable[[dict], None] | None = None,
        progress: bool = False,
        **overrides: Any,
    ) -> Iterator[torch.Tensor]:
        """The images of `sample` with the same arguments, in chunks (m, 3, H, W) in [-1, 1]
        yielded as each is done (together, bit for bit `sample`'s): for many images, whose
        memory then does not grow with n."""
        return run_chunks(*self._call(n, size, scale, options, seed, generator, guide, overrides),
                          callback=callback, progress=progress)  # fmt: skip

    def _call(
        self, n, size, scale, options, seed, generator, guide, overrides
    ) -> tuple[Plan, int, tuple[int, int], torch.Generator, torch.device, torch.Tensor | None]:
        """The positional arguments of `sampling.run` for one `sample` call: plan, n, (h, w),
        generator, device, start (the training image at (h, w) for a variation, else None)."""
        h, w = self.output_size(size, scale)
        call = SamplingOptions.of(options, **overrides)
        parts, opts = self.prepare(call)
        plan = build_plan(parts, opts, guide=guide)
        generator = generator if generator is not None else seeded(seed, self.device)
        start = None
        if opts.variation > 0:
            image = self.image.float()
            start = image if image.shape[-2:] == (h, w) else resize(image, (h, w), mode="bicubic")
            start = start.clamp(-1, 1).to(self.device)
            if call.variety is not None:  # just below 1 the image fades out of the start
                start = start * (1 - variety_fade(call.variety))
        return plan, n, (h, w), generator, self.device, start

    def save(self, path: str | os.PathLike) -> Path:
        """Write this model as a run folder; returns the checkpoint file's path."""
        if self.checkpoint is None:
            raise SinDiffusionError(
                "a zero-training model has nothing to save; keep the image and its knobs instead."
            )
        path = Path(path)
        if path.suffix == ".safetensors":
            raise SinDiffusionError(f"{path}: save() takes a run folder, not a file name.")
        return save_checkpoint(path, self.checkpoint)


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> SinDiffusion:
    """Load a run folder (or its checkpoint.safetensors) written by `train` or `save`."""
    return SinDiffusion.from_checkpoint(load_checkpoint(path), device=device)


def zero_training(
    image: str | os.PathLike | torch.Tensor,
    max_size: int = 250,
    sampler: str = "dpmpp_2m",
    steps: int = 20,
    device: str | torch.device | None = None,
    **knobs,
) -> SinDiffusion:
    """A model that samples from `image` right away with the closed-form patch denoiser.

    image: a path (any format Pillow reads) or a tensor (3, H, W) in [-1, 1], or a list of
    them (one patch set of all); max_size: each reference's long side in px (never
    enlarged); sampler, steps: the defaults of `.sample`;
    device: default the CPU; knobs: `PatchConfig` fields (patch_size, stride, levels,
    temperature, prior, topk, dropout, ...).
    """
    images = [
        _reference(item, max_size) for item in (image if isinstance(image, list) else [image])
    ]
    config = Config(
        preset="zero-training",
        diffusion=DiffusionConfig(parameterization="edm"),
        sampling=SamplingConfig(
            sampler=sampler, steps=steps, clip_denoised=True, patch=patch_config(**knobs)
        ),
    )
    return SinDiffusion(config, images, device=device or "cpu")


def _reference(image: str | os.PathLike | torch.Tensor, max_size: int) -> torch.Tensor:
    """A zero-training reference (3, H, W) in [-1, 1], its long side at most `max_size`."""
    if isinstance(image, torch.Tensor):
        img = check_image_tensor(image)
        h, w = img.shape[-2:]
        return resize(img, fit_size(h, w, max_size)) if max(h, w) > max_size else img
    return load_image(image, max_size=max_size)
