"""The public Python API: `train()`, `load()` and the `SinDiffusion` model object.

import sindiffusion
model = sindiffusion.train("photo.jpg", preset="fast", minutes=5, out="runs/photo")
images = model.sample(n=4, size=(256, 512), seed=0)   # (4, 3, 256, 512) in [-1, 1]
model.save("runs/photo")
model = sindiffusion.load("runs/photo")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import Checkpoint, checkpoint_path, load_checkpoint, save_checkpoint
from .config import Config, preset
from .diffusion import Denoiser, HybridDenoiser, karras_sigmas
from .errors import SinDiffusionError
from .image import MIN_SIDE, from_uint8, load_image, to_uint8
from .layout import layout_cut, layout_mismatch
from .samplers import clipped, get_sampler, sample_dpmpp_2m
from .train import Trainer, bf16_fast, default_device, initial_weights, keep_freed_memory_on
from .unet import UNet, stride

MAX_PIXELS_PER_BATCH = 1 << 20  # samples are drawn in chunks of about this many pixels


def _check_hybrid(switch: float, high_steps: int, topk: int | None, low: Denoiser) -> None:
    """One-sentence errors for hybrid sampling settings a checkpoint's config may carry."""
    if high_steps > 0 and switch >= low.sigma_max:
        raise SinDiffusionError(
            f"diffusion.hybrid_sigma ({switch:g}) must be below sigma_max ({low.sigma_max:g}) "
            "when diffusion.hybrid_steps is above 0; lower it or set hybrid_steps to 0."
        )
    if topk is not None and topk < 1:
        raise SinDiffusionError(
            f"diffusion.layout_topk is {topk}; give at least 1 (or null for every patch)."
        )


def _check_autoguidance(sigmas: tuple[float, float]) -> None:
    """A one-sentence error for guided noise levels a checkpoint's config may carry."""
    lo, hi = sigmas
    if not 0 <= lo <= hi:
        raise SinDiffusionError(
            f"diffusion.autoguidance_sigmas is ({lo:g}, {hi:g}); give (low, high) noise "
            "levels with 0 <= low <= high."
        )


class SinDiffusion:
    """A trained single-image diffusion model (EMA weights) and its training image.

    `image` is the training image (3, H, W) in [-1, 1]; `denoiser(x, sigma) -> x0_hat` is the
    denoiser every sampler, guidance and application uses.
    """

    def __init__(self, checkpoint: Checkpoint, device: str | torch.device | None = None):
        self.device = torch.device(device) if device is not None else default_device()
        keep_freed_memory_on(self.device)
        self._checkpoint = checkpoint
        self.config: Config = checkpoint.config
        self.image: torch.Tensor = checkpoint.image
        self.step: int = checkpoint.step
        tc = self.config.train
        bf16 = tc.bf16 and bf16_fast(self.device)
        self.denoiser = Denoiser(
            self._frozen_unet(checkpoint.ema),
            self.config.diffusion,
            bf16=bf16,
            channels_last=tc.channels_last,
        ).to(self.device)
        self._network: Denoiser = self.denoiser  # the network's denoiser, inside any hybrid
        dc = self.config.diffusion
        if dc.autoguidance:
            self._set_autoguidance(dc.autoguidance)  # off for a run from random weights
        if dc.hybrid_sigma > 0:
            from .zero import PatchDenoiser  # zero.py builds on this module

            _check_hybrid(dc.hybrid_sigma, dc.hybrid_steps, dc.layout_topk, self.denoiser)

            layout = PatchDenoiser(
                self.image.to(self.device), layout=dc.layout_prior or None, topk=dc.layout_topk
            )
            self.denoiser = HybridDenoiser(
                self.denoiser, layout, dc.hybrid_sigma, high_steps=dc.hybrid_steps
            )

    def _frozen_unet(self, weights: dict[str, torch.Tensor]) -> UNet:
        """This model's network with `weights`, for inference only, on this model's device."""
        unet = UNet(self.config.model)
        unet.load_state_dict(weights)
        return unet.eval().requires_grad_(False).to(self.device)

    def _set_autoguidance(self, weight: float) -> bool:
        """Autoguide the network at `weight` (0 = off) within `diffusion.autoguidance_sigmas`.
        Its weaker model is the network at the run's starting weights (`train.init`), built on
        first use; returns False (and changes nothing) for a run from random weights, which has
        nothing to guide away from."""
        net = self._network
        if weight and net.weak is None:
            _check_autoguidance(self.config.diffusion.autoguidance_sigmas)
            init = initial_weights(self.config)
            if init is None:
                return False
            net.guide_away_from(
                self._frozen_unet(init), weight, self.config.diffusion.autoguidance_sigmas
            )
        net.guide_weight = float(weight)
        return True

    @contextmanager
    def _autoguided(self, weight: float | None) -> Iterator[None]:
        """Autoguidance at `weight` inside this block (None: the config's), then as before."""
        if weight is None:
            yield
            return
        before = self._network.guide_weight
        if not weight >= 0:
            raise SinDiffusionError(f"autoguidance must be 0 (off) or more, got {weight}.")
        if not self._set_autoguidance(weight):
            raise SinDiffusionError(
                "this run started from random weights, so autoguidance has no weaker "
                "network to guide away from; leave it at 0."
            )
        try:
            yield
        finally:
            self._network.guide_weight = before

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, device: str | torch.device | None = None
    ) -> SinDiffusion:
        return cls(checkpoint, device=device)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the training image."""
        return tuple(self.image.shape[-2:])

    def output_size(
        self, size: tuple[int, int] | None = None, scale: tuple[float, float] | None = None
    ) -> tuple[int, int]:
        """The (height, width) of a sample: `size`, or the training size times `scale` (sy, sx)."""
        if size is not None and scale is not None:
            raise SinDiffusionError("give either a size or a scale, not both.")
        if size is None:
            sy, sx = scale if scale is not None else (1.0, 1.0)
            size = (round(self.size[0] * sy), round(self.size[1] * sx))
        h, w = int(size[0]), int(size[1])
        if min(h, w) < MIN_SIDE:
            raise SinDiffusionError(
                f"output size {w}x{h} is too small; each side must be at least {MIN_SIDE} px."
            )
        return h, w

    def sample(
        self,
        n: int = 1,
        size: tuple[int, int] | None = None,
        scale: tuple[float, float] | None = None,
        steps: int | None = None,
        sampler: str | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        denoiser: Callable | None = None,
        callback: Callable[[dict], None] | None = None,
        progress: bool = False,
        candidates: int | None = None,
        renoise: float | None = None,
        autoguidance: float | None = None,
    ) -> torch.Tensor:
        """Draw `n` new images; returns (n, 3, H, W) in [-1, 1] on the CPU.

        size: (height, width) of the output, any size (default: the training image's);
        scale: (sy, sx) factors of the training size instead of `size`;
        steps, sampler: override the config's sampler (see `samplers.SAMPLERS`);
        seed or generator: the same seed with the same arguments gives the same images;
        denoiser: a wrapped denoiser (e.g. guidance) to use instead of the model's own;
        candidates: layouts drawn per image by a hybrid model's closed-form denoiser, of which
        the one closest to the training image's coarse patches goes on (see `layout.py`;
        default: the config's `layout_candidates`; ignored by network-only models);
        renoise: a hybrid model's layout is a whole closed-form image, noised afresh to this
        sigma and finished by the network; 0 hands over mid-path at `hybrid_sigma` instead
        (default: the config's `layout_renoise`);
        autoguidance: weight of the push away from the run's starting weights at the noise
        levels `diffusion.autoguidance_sigmas` (0 = off, each guided network call costs a
        second pass; default: the config's `autoguidance`; an error for a run from random
        weights).
        """
        h, w = self.output_size(size, scale)
        steps = steps or self.config.diffusion.sample_steps
        fn = get_sampler(sampler or self.config.diffusion.sampler)
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        den = denoiser or self.denoiser
        if self.config.diffusion.clip_denoised:
            den = clipped(den)
        sigmas = self.denoiser.sampling_sigmas(steps).to(self.device)
        cands = self.config.diffusion.layout_candidates if candidates is None else candidates
        if cands < 1:
            raise SinDiffusionError(f"candidates must be at least 1, got {cands}.")
        level = self.config.diffusion.layout_renoise if renoise is None else renoise
        if level < 0:
            raise SinDiffusionError(f"renoise must be 0 (off) or a positive sigma, got {level}.")
        plan = self._renoise_plan(sigmas, level)
        cut = layout_cut(self.denoiser, sigmas) if cands > 1 and plan is None else 0
        searched = cands if cut or plan is not None else 1
        chunk = max(1, MAX_PIXELS_PER_BATCH // (h * w * searched))
        total = len(sigmas) - 1 if plan is None else len(plan[0]) + len(plan[1]) - 2
        with self._autoguided(autoguidance):
            out = []
            bar = tqdm(total=n * total, disable=not progress, unit="step", desc="sampling")
            for start in range(0, n, chunk):
                m = min(chunk, n - start)

                def step_cb(info, m=m, offset=0):
                    bar.update(m)
                    if callback is not None:
                        callback({**info, "i": info["i"] + offset})

                if plan is not None:
                    x = self._sample_renoised(fn, den, m, cands, (h, w), plan, generator, step_cb)
                elif cut:
                    shifts = self._layout_shifts(m * cands, generator)
                    with self._shifted(shifts):
                        x, chosen = self._choose_layouts(
                            fn, den, m, cands, (h, w), sigmas[:cut], generator, step_cb
                        )
                    with self._shifted(None if shifts is None else shifts[chosen]):
                        x = fn(den, x, sigmas[cut - 1 :], generator=generator,
                               callback=partial(step_cb, offset=cut - 1))  # fmt: skip
                else:
                    shifts = self._layout_shifts(m, generator)
                    noise = torch.randn((m, 3, h, w), generator=generator, device=generator.device)
                    with self._shifted(shifts):
                        x = fn(den, noise.to(self.device) * sigmas[0], sigmas, generator=generator,
                               callback=step_cb)  # fmt: skip
                out.append(x.clamp(-1, 1).cpu())
            bar.close()
            return torch.cat(out)

    def _renoise_plan(
        self, sigmas: torch.Tensor, level: float
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The two schedules of a layout renoised to `level`, or None (level 0, or not a
        hybrid): the closed-form sampler's `layout_steps` levels, and the network's: as many
        levels as the `sigmas` schedule has below `level`, respaced to start there."""
        if level <= 0 or not isinstance(self.denoiser, HybridDenoiser):
            return None
        high = self.denoiser.high.sampling_sigmas(self.config.diffusion.layout_steps)
        below = max(1, int((sigmas[:-1] < level).sum()))
        low = karras_sigmas(below, self.denoiser.sigma_min, level)
        return high.to(self.device), low.to(self.device)

    def _sample_renoised(self, fn, den, m, cands, size, plan, generator, step_cb) -> torch.Tensor:
        """Draw `cands` whole closed-form images per sample, keep the one closest to the
        training image's coarse patches, and finish it with the network (`plan` from
        `_renoise_plan`)."""
        high, low = plan
        x = self.draw_layouts(den, m * cands, size, high, generator,
                              callback=lambda info: step_cb(info, m=m))  # fmt: skip
        if cands > 1:
            x = x[self._closest(x, cands)]
        return self.finish_layouts(fn, den, x, low, generator,
                                   callback=partial(step_cb, offset=len(high) - 1))  # fmt: skip

    def draw_layouts(
        self,
        den: Callable,
        n: int,
        size: tuple[int, int],
        sigmas: torch.Tensor,
        generator: torch.Generator,
        callback: Callable[[dict], None] | None = None,
    ) -> torch.Tensor:
        """n whole images (n, 3, h, w) from the hybrid's closed-form part alone (DPM-Solver++
        2M over `sigmas`, each with its random prior offset, `diffusion.layout_shift`), seen
        through `den` (the hybrid or a wrapper of it)."""
        shifts = self._layout_shifts(n, generator)
        noise = torch.randn((n, 3, *size), generator=generator, device=generator.device)
        with self.denoiser.only("high"), self._shifted(shifts):
            x = noise.to(self.device) * sigmas[0]
            return sample_dpmpp_2m(den, x, sigmas, generator=generator, callback=callback)

    def finish_layouts(
        self,
        fn: Callable,
        den: Callable,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        generator: torch.Generator,
        callback: Callable[[dict], None] | None = None,
    ) -> torch.Tensor:
        """Noise the clean layouts x (n, 3, h, w) afresh to sigmas[0] and denoise them with the
        hybrid's network alone (sampler `fn`), seen through `den`."""
        noise = torch.randn(x.shape, generator=generator, device=generator.device)
        with self.denoiser.only("low"):
            x = x + sigmas[0] * noise.to(self.device)
            return fn(den, x, sigmas, generator=generator, callback=callback)

    def _choose_layouts(
        self, fn, den, m, cands, size, high, generator, step_cb
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run `cands` layouts per image through the noise levels `high` (all but the last
        level above the switch, see `layout_cut`); return the (m, 3, h, w) states at high[-1]
        whose clean estimates match the training image's coarse patches best, and their row
        indices (m,) among the m * cands."""
        noise = torch.randn((m * cands, 3, *size), generator=generator, device=generator.device)
        x = fn(den, noise.to(self.device) * high[0], high, generator=generator,
               callback=lambda info: step_cb(info, m=m))  # fmt: skip
        chosen = self._closest(den(x, high[-1]), cands)
        return x[chosen], chosen

    def _closest(self, clean: torch.Tensor, cands: int) -> torch.Tensor:
        """Row indices (m,): of each run of `cands` rows of `clean` (m * cands, 3, h, w), the
        one that matches the training image's coarse patches best."""
        scores = layout_mismatch(clean, self.image).view(-1, cands)
        return scores.argmin(1) + torch.arange(len(scores), device=scores.device) * cands

    def _layout_shifts(self, rows: int, generator: torch.Generator) -> torch.Tensor | None:
        """Random offsets (rows, 2) of a hybrid's position prior, one per layout drawn
        (`diffusion.layout_shift`), or None: not a hybrid, or no shift."""
        sy, sx = self.config.diffusion.layout_shift
        if not isinstance(self.denoiser, HybridDenoiser) or (sy, sx) == (0, 0):
            return None
        r = torch.randn((rows, 2), generator=generator, device=generator.device)
        # On the model's device, like the row indices `_closest` picks the chosen shifts with.
        return r.to(self.device) * torch.tensor([float(sy), float(sx)], device=self.device)

    def _shifted(self, shifts: torch.Tensor | None):
        """The hybrid's closed-form part offset by `shifts` inside the block (None: as is)."""
        return nullcontext() if shifts is None else self.denoiser.high.shifted(shifts)

    def save(self, path: str | os.PathLike) -> Path:
        """Write this model as a run folder (or a .safetensors file path); returns the file."""
        path = Path(path)
        if path.suffix == ".safetensors":
            raise SinDiffusionError(f"{path}: save() takes a run folder, not a file name.")
        return save_checkpoint(path, self._checkpoint)


def load(path: str | os.PathLike, device: str | torch.device | None = None) -> SinDiffusion:
    """Load a run folder (or its checkpoint.safetensors) written by `train` or `save`."""
    return SinDiffusion(load_checkpoint(path), device=device)


def train(
    image: str | os.PathLike | torch.Tensor,
    preset: str = "fast",
    out: str | os.PathLike | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    seed: int = 0,
    max_size: int | None = None,
    config: Config | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> SinDiffusion:
    """Learn a diffusion model from one image; returns the trained `SinDiffusion`.

    image: a path (any format Pillow reads) or a tensor (3, H, W) in [-1, 1];
    preset: "fast" (default, minutes on a CPU) or "paper" (the published recipe);
    out: run folder for checkpoints, previews and logs (None: keep nothing on disk);
    steps / minutes: stop after this many steps or this much training time in total;
    max_size: long side of the training image (default: the config's, 250 px);
    config: a full `Config` instead of a preset; resume: continue from `out`'s checkpoint.
    """
    cfg = config if config is not None else _preset(preset)
    if max_size is not None:
        cfg.train.max_size = max_size
    resume_ckpt = None
    if resume:
        if out is None or not checkpoint_path(out).exists():
            raise SinDiffusionError(f"nothing to resume in {out}; train without --resume first.")
        resume_ckpt = load_checkpoint(out)
        cfg, img = resume_ckpt.config, resume_ckpt.image
    elif isinstance(image, torch.Tensor):
        img = _check_tensor(image)
    else:
        img = load_image(image, max_size=cfg.train.max_size, multiple=stride(cfg.model))
    trainer = Trainer(img, cfg, seed=seed, run_dir=out, device=device, resume=resume_ckpt)
    trainer.run(steps=steps, minutes=minutes, progress=progress, callback=callback)
    return SinDiffusion(trainer.checkpoint(), device=trainer.device)


def _preset(name: str) -> Config:
    try:
        return preset(name)
    except ValueError as e:
        raise SinDiffusionError(str(e) + ".") from None


def _check_tensor(image: torch.Tensor) -> torch.Tensor:
    if image.dim() != 3 or image.shape[0] != 3:
        raise SinDiffusionError(
            f"image tensor has shape {tuple(image.shape)}; give (3, H, W) in [-1, 1]."
        )
    if min(image.shape[-2:]) < MIN_SIDE:
        raise SinDiffusionError(f"image is too small; each side must be at least {MIN_SIDE} px.")
    if not torch.isfinite(image).all():
        raise SinDiffusionError(
            "image tensor holds NaN or infinite values; give values in [-1, 1]."
        )
    # Quantised to 8 bits as in the checkpoint, so a resumed run sees the very same image.
    return from_uint8(to_uint8(image))
