"""Training: `train()`, and the loop behind it (`Trainer`): one image, random rescales (and
crops), EMA, budgets, checkpoints, previews.

    model = sindiffusion.train("photo.jpg", preset="fast", minutes=5, out="runs/photo")

Each step rescales the training image by a random factor in [scale_min, scale_max] (sides
rounded to the network's stride), optionally takes random square crops, and minimises the
denoising loss (`diffusion.Denoiser.loss`). Training stops after `steps` optimiser steps or
when a wall-clock budget runs out, and in both cases saves a checkpoint; Ctrl-C saves one
too. Under `torchrun` the same loop runs data-parallel (see `distributed.py`): only rank 0
writes.
"""

from __future__ import annotations

import copy
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed
from .checkpoint import (
    Checkpoint,
    check_resumed_images,
    check_run_folder,
    checkpoint_path,
    load_checkpoint,
    read_log,
    remove_stale_temporaries,
    restore_generator,
    resumed_config,
    save_checkpoint,
    write_log,
)
from .config import Config
from .config import preset as preset_config
from .device import keep_freed_memory_on, seeded, use_bf16
from .diffusion import Denoiser
from .errors import SinDiffusionError, SinDiffusionWarning, TrainingDiverged
from .image import (
    MIN_SIDE,
    check_image_tensor,
    load_image,
    make_grid,
    resize,
    save_image,
)
from .model import SinDiffusion
from .unet import UNet, initial_weights, stride


def random_batch(
    image: torch.Tensor | list[torch.Tensor],
    config: Config,
    stride: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """One training batch (B, 3, h, w) from the image (3, H, W) in [-1, 1]: the image rescaled
    by a random factor, then B random crops of side `crop_size` (or B copies of it whole).
    From several images, each batch comes from one of them, picked at random (weighted by its
    pixels, so every pixel of the set is seen as often)."""
    if isinstance(image, (list, tuple)):
        if len(image) == 1:
            image = image[0]  # no draw: a one-image run's batches are as before
        else:
            areas = torch.tensor([float(img.shape[-2] * img.shape[-1]) for img in image])
            u = torch.rand((), generator=generator, device=generator.device).item()
            k = int(torch.searchsorted(areas.cumsum(0) / areas.sum(), torch.tensor(u)))
            image = image[min(k, len(image) - 1)]
    t = config.train
    _, h0, w0 = image.shape
    u = torch.rand((), generator=generator, device=generator.device).item()
    scale = t.scale_min + (t.scale_max - t.scale_min) * u
    whole = t.crop_size is None or (t.crop_size >= h0 * scale and t.crop_size >= w0 * scale)
    # A whole image must have sides that are multiples of the UNet's stride; crops need not
    # round the image, so scale 1 keeps the image's own pixels. Bicubic: bilinear resampling
    # blurs (at a 1 % size change it takes 20 % of the high frequencies away), and the network
    # learns that blur and draws it (samples had 30 % less Laplacian energy than the image).
    q = stride if whole else 1
    h = max(MIN_SIDE, int(round(h0 * scale / q)) * q)
    w = max(MIN_SIDE, int(round(w0 * scale / q)) * q)
    if whole:
        img = resize(image, (h, w), mode="bicubic").clamp(-1, 1)
        return img[None].expand(t.batch_size, -1, -1, -1).contiguous()
    assert t.crop_size is not None
    ch = max(stride, min(t.crop_size, h) // stride * stride)
    cw = max(stride, min(t.crop_size, w) // stride * stride)
    ys = torch.randint(0, h - ch + 1, (t.batch_size,), generator=generator, device=generator.device)
    xs = torch.randint(0, w - cw + 1, (t.batch_size,), generator=generator, device=generator.device)
    return torch.stack([
        rescaled_crop(image, (h, w), (y, x), (ch, cw)).clamp(-1, 1)
        for y, x in zip(ys.tolist(), xs.tolist(), strict=True)
    ])  # fmt: skip


def rescaled_crop(
    image: torch.Tensor, size: tuple[int, int], at: tuple[int, int], crop: tuple[int, int]
) -> torch.Tensor:
    """The crop (3, *crop) at `at` (y, x) of `image` (3, H, W) resized (bicubic) to `size`,
    resized from only the part of the image it needs: a 12-megapixel photo resized whole
    took 0.4 s a step on one core; a crop's part takes milliseconds. Within a fraction of a
    pixel's shift the same pixels as resizing the whole image and cropping."""
    (h0, w0), (h, w) = image.shape[-2:], size
    ry, rx = h0 / h, w0 / w  # image px per resized px
    margin = math.ceil(4 * max(ry, rx, 1.0))  # beyond the bicubic kernel's reach
    top, left = max(0, math.floor(at[0] * ry) - margin), max(0, math.floor(at[1] * rx) - margin)
    bottom = min(h0, math.ceil((at[0] + crop[0]) * ry) + margin)
    right = min(w0, math.ceil((at[1] + crop[1]) * rx) + margin)
    part_size = (max(crop[0], round((bottom - top) / ry)), max(crop[1], round((right - left) / rx)))
    part = resize(image[:, top:bottom, left:right], part_size, mode="bicubic")
    oy = min(round(at[0] - top / ry), part_size[0] - crop[0])
    ox = min(round(at[1] - left / rx), part_size[1] - crop[1])
    return part[:, oy : oy + crop[0], ox : ox + crop[1]]


class StopSignal:
    """Inside this block SIGTERM (a scheduler's or `kill`'s polite stop, torchrun's stop) sets
    `received` instead of ending the process, so training stops after the current step and
    saves. Only the main thread can take signals; elsewhere (the web page's training thread)
    it does nothing."""

    def __enter__(self) -> StopSignal:
        self.received = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def _on_sigterm(self, signum, frame) -> None:
        self.received = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


class Trainer:
    """The network, its EMA, the optimiser and the step loop of one run.

    `image` is (3, H, W) in [-1, 1], already resized to the training size, or a list of such
    images (one model of their shared patch statistics). Under `torchrun` its team
    (`distributed.team`) is data-parallel: each process trains its rows of every batch, and
    only rank 0 keeps `run_dir`.
    """

    def __init__(
        self,
        image: torch.Tensor | list[torch.Tensor],
        config: Config,
        seed: int = 0,
        run_dir: str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        resume: Checkpoint | None = None,
    ):
        tc = config.train
        self.config = config
        self.team = distributed.team(device, tc.batch_size)
        self.device = self.team.device
        keep_freed_memory_on(self.device)
        self.run_dir = Path(run_dir) if run_dir is not None and self.team.main else None
        self.seed = seed
        self.generator = seeded(seed, self.device)  # a seed torch cannot take: one sentence
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
            torch.manual_seed(seed)
            self.unet = UNet(config.model)
        # A resumed run brings its own weights.
        init = initial_weights(tc.init, config.model) if resume is None else None
        if init is not None:
            self.unet.load_state_dict(init)
        self.unet.to(self.device)
        self.ema = copy.deepcopy(self.unet).requires_grad_(False)
        bf16 = use_bf16(tc.bf16, self.device)
        self.denoiser = Denoiser(
            self.unet, config.diffusion, bf16=bf16, channels_last=tc.channels_last
        ).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.unet.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, betas=(0.9, 0.99)
        )
        images = list(image) if isinstance(image, (list, tuple)) else [image]
        self.images = [img.to(self.device) for img in images]
        self.image = self.images[0]
        self.step = 0
        self.elapsed = 0.0
        self.preview_seconds = 0.0  # time spent drawing previews
        self.last_preview_seconds = 0.0  # the last one's
        self.final_preview = 0.0  # time kept back from a budget for the last preview
        self.budget: float | None = None  # seconds; set by run(minutes=...)
        self.log: list[tuple[int, float, float, float]] = []  # step, loss, lr, elapsed (s)
        self.saved_step: int | None = None  # step of the last checkpoint written
        if resume is not None:
            self._restore(resume)
            self.saved_step = self.step
        # Every process must start from the same images, step and seed; the loss then runs
        # through the team's module (DDP averages the gradients), the EMA tracks the bare UNet.
        state: list[float] = [len(self.images)]
        state += [side for img in self.images for side in img.shape[-2:]]
        state += [img.double().sum().item() for img in self.images] + [self.step, self.seed]
        self.denoiser.unet = self.team.join(self.unet, state)
        if self.run_dir is not None and self.run_dir.is_dir():
            remove_stale_temporaries(self.run_dir)  # a killed writer's

    # --- state -----------------------------------------------------------------------------
    def _restore(self, ckpt: Checkpoint) -> None:
        self.unet.load_state_dict(ckpt.model)
        self.ema.load_state_dict(ckpt.ema)
        if ckpt.optimizer is not None:
            self.optimizer.load_state_dict(ckpt.optimizer)
        restore_generator(self.generator, ckpt)
        self.step, self.elapsed, self.seed = ckpt.step, ckpt.elapsed, ckpt.seed
        self.budget = ckpt.extra.get("budget")
        self.log = [row for row in read_log(self.run_dir) if row[0] <= self.step]

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            config=self.config,
            model={k: v.detach().cpu() for k, v in self.unet.state_dict().items()},
            ema={k: v.detach().cpu() for k, v in self.ema.state_dict().items()},
            image=self.image.cpu(),
            more_images=[img.cpu() for img in self.images[1:]],
            step=self.step,
            elapsed=self.elapsed,
            seed=self.seed,
            optimizer=self.optimizer.state_dict(),
            rng_state=self.generator.get_state(),
            extra={"budget": self.budget},
        )

    def save(self) -> None:
        """Write the checkpoint and the log (with its curve) into the run folder (if any)."""
        if self.run_dir is None:
            return
        save_checkpoint(self.run_dir, self.checkpoint())
        self.saved_step = self.step
        write_log(self.run_dir, self.log)

    # --- optimisation ----------------------------------------------------------------------
    def learning_rate(self, total_steps: int | None) -> float:
        """Warm-up, then a cosine decay over `total_steps` or the time budget, whichever is
        further along (a run with neither decays over nothing: the peak rate throughout)."""
        tc = self.config.train
        lr = tc.lr
        if tc.warmup_steps:
            lr *= min(1.0, (self.step + 1) / tc.warmup_steps)
        if tc.lr_decay:
            progress = self.step / max(1, total_steps) if total_steps is not None else 0.0
            if self.budget:
                progress = max(progress, self.elapsed / self.budget)
            lr *= 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return lr

    def train_step(self, lr: float) -> float:
        """One optimiser step; returns the loss. Raises `TrainingDiverged` on a non-finite loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = random_batch(self.images, self.config, self.unet.stride, self.generator)
        loss = self.denoiser.loss(batch, self.generator, rows=self.team.rows)
        global_loss = self.team.mean(loss)  # the same decision on every process
        if not torch.isfinite(global_loss):
            raise TrainingDiverged(
                f"training diverged at step {self.step + 1} (loss is {global_loss.item()}); "
                "the last good checkpoint is kept — lower the learning rate and --resume."
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.config.train.grad_clip)
        self.optimizer.step()
        self._update_ema()
        return global_loss.item()

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.config.train.ema_decay, (1 + self.step) / (10 + self.step))
        for e, p in zip(self.ema.parameters(), self.unet.parameters(), strict=True):
            e.lerp_(p.detach(), 1 - decay)

    def run(
        self,
        steps: int | None = None,
        minutes: float | None = None,
        progress: bool = True,
        callback: Callable[[dict], None] | None = None,
    ) -> dict:
        """Train until `steps` (default: the config's, or no step limit with `minutes`) or
        `minutes` of wall time in total, checkpoints and previews included (the last preview
        too, estimated from the one before).

        Saves a checkpoint every `checkpoint_every` steps or `checkpoint_minutes` of wall time,
        whichever comes first, at the end, on Ctrl-C and on SIGTERM
        (after the current step, every process the same); writes a preview grid every
        `preview_every` steps and at the end. `callback(info)` gets a dict (step, loss, lr,
        elapsed) after every step. Returns a summary dict.
        """
        if minutes is not None:
            self.budget = minutes * 60.0
        total = steps if steps is not None or minutes is not None else self.config.train.steps
        bar = tqdm(
            total=total,
            initial=self.step,
            disable=not (progress and self.team.main),
            unit="step",
            dynamic_ncols=True,
        )
        stopped_by: str | None = None  # "SIGTERM" or "Ctrl-C": a stop before the end
        try:
            with StopSignal() as sigterm:
                stopped_by = self._loop(total, bar, callback, sigterm)
        except KeyboardInterrupt:
            stopped_by = "Ctrl-C"
        except RuntimeError as e:
            lost = self.team.lost(e, self.step, self._kept())
            if lost is None:
                raise
            raise lost from e
        finally:
            bar.close()
        try:
            if stopped_by is None and self.run_dir is not None:
                # Drawn before the last save, so the run's time includes it: the time kept
                # for it, or what it took if longer, so a run stopped for its budget has spent
                # it (`train-many` and resumed runs see it finished).
                self.preview()
                self.elapsed += max(self.last_preview_seconds, self.final_preview)
        finally:
            self.save()
        if stopped_by == "SIGTERM":
            warnings.warn(
                f"training stopped by SIGTERM after step {self.step}; the checkpoint is saved: "
                "rerun the same command with --resume to go on.",
                SinDiffusionWarning,
                stacklevel=2,
            )
        return {
            "step": self.step,
            "loss": self.log[-1][1] if self.log else float("nan"),
            "elapsed": self.elapsed,
            "interrupted": stopped_by is not None,
        }

    def _loop(self, total: int | None, bar, callback, sigterm: StopSignal) -> str | None:
        """The steps of `run` (`total`: None = no step limit); returns "SIGTERM" when a
        SIGTERM stopped them (in any process, after the same step in every one), else None."""
        tc = self.config.train
        t_last = saved_at = time.perf_counter()
        # A budget is wall time: checkpoints and previews count (each step's time runs from the
        # end of the last one), and the run stops early enough for its last preview, which
        # takes about as long as the one before (a large photo's take tens of seconds).
        while (total is None or self.step < total) and not (
            self.budget and self.elapsed + self.final_preview >= self.budget
        ):
            lr = self.learning_rate(total)
            loss = self.train_step(lr)
            self.step += 1
            now = time.perf_counter()
            self.elapsed = self.team.clock(self.elapsed + now - t_last)
            t_last = now
            self.team.after_step(self.step)
            self.log.append((self.step, loss, lr, self.elapsed))
            bar.update(1)
            postfix = {"loss": f"{loss:.4f}"}
            if self.budget:
                postfix["left"] = f"{max(0.0, self.budget - self.elapsed) / 60:.1f}min"
            bar.set_postfix(postfix)
            if callback is not None:
                callback({"step": self.step, "loss": loss, "lr": lr, "elapsed": self.elapsed})
            by_time = tc.checkpoint_minutes and now - saved_at >= 60 * tc.checkpoint_minutes
            if by_time or (tc.checkpoint_every and self.step % tc.checkpoint_every == 0):
                self.save()
                saved_at = time.perf_counter()
            # The one at the end is always drawn (`run`).
            if tc.preview_every and self.step % tc.preview_every == 0:
                if self.preview_affordable:
                    self.preview()
                # Every process stops at the same step: rank 0's (the drawing one's) estimate.
                self.final_preview = self.team.clock(self.last_preview_seconds)
            if self.team.any(sigterm.received):
                return "SIGTERM"
        return None

    def _kept(self) -> str:
        """What a failed run leaves, for its error message."""
        if self.run_dir is None:
            return "rank 0 keeps the last checkpoint"
        if self.saved_step is None:
            return f"no checkpoint was written yet in {self.run_dir}"
        return f"the checkpoint of step {self.saved_step} in {self.run_dir} is kept"

    @property
    def preview_affordable(self) -> bool:
        """Whether a preview between steps keeps previews within PREVIEW_SHARE of the
        training time so far (each of a large photo's takes minutes)."""
        return self.preview_seconds <= PREVIEW_SHARE * self.elapsed

    def preview(self, n: int = 4) -> Path | None:
        """Write previews/step-NNNNNN.png: the training image, then up to `n` samples (seed
        0; `preview_grid`)."""
        if self.run_dir is None:
            return None
        t0 = time.perf_counter()
        model = SinDiffusion.from_checkpoint(self.checkpoint(), device=self.device)
        grid = preview_grid(model, n, steps=self.config.train.preview_steps)
        path = save_image(grid, self.run_dir / "previews" / f"step-{self.step:06d}.png")
        self.last_preview_seconds = time.perf_counter() - t0
        self.preview_seconds += self.last_preview_seconds
        return path


PREVIEW_PIXELS = 1 << 20  # a preview's samples hold at most about this many pixels
PREVIEW_SHARE = 0.1  # previews between steps take at most this share of the training time


def preview_grid(model: SinDiffusion, n: int = 4, steps: int | None = None) -> torch.Tensor:
    """A preview (3, H, W) in [-1, 1]: the model's (first) training image, then `n` of its
    samples at that size (seed 0, `steps` sampler steps), fewer for a large image (at most
    PREVIEW_PIXELS of samples: 4 up to 512 x 512 px, 1 at a megapixel), so previews of a
    large photo do not take more time than its training. Above PREVIEW_PIXELS the one sample
    is drawn on a canvas of about PREVIEW_PIXELS at the model's own scale (its detail at
    100 %), beside the centre crop of the image of that size."""
    h, w = model.size
    image = model.image.cpu()
    if h * w <= PREVIEW_PIXELS:
        n = max(1, min(n, PREVIEW_PIXELS // (h * w)))
        samples = model.sample(n=n, seed=0, steps=steps)
        return make_grid([image, *samples], nrow=n + 1)
    # A full-size sample of a 4000 px photo takes minutes and gigabytes inside the training
    # process (docs/notebook/2026-12-06-ninth-session.md); a megapixel canvas shows the detail.
    f = math.sqrt(PREVIEW_PIXELS / (h * w))
    ph, pw = max(MIN_SIDE, round(h * f)), max(MIN_SIDE, round(w * f))
    sample = model.sample(n=1, size=(ph, pw), seed=0, steps=steps)[0]
    top, left = (h - ph) // 2, (w - pw) // 2
    return make_grid([image[:, top : top + ph, left : left + pw], sample], nrow=2)


def train(
    image: str | os.PathLike | torch.Tensor | list,
    preset: str | None = None,
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

    image: a path (any format Pillow reads) or a tensor (3, H, W) in [-1, 1]; or a list of
    them: one model of their shared patch statistics (batches drawn from each in proportion
    to its pixels; samples default to the first one's size);
    preset: "fast" (the default, minutes on a CPU) or "paper" (the published recipe);
    out: run folder for checkpoints, previews and logs (None: keep nothing on disk);
    steps / minutes: stop after this many steps or this much wall time in total (previews
        and checkpoints included);
    max_size: long side of the training image in px (default: the config's, 250);
    config: a full `Config` instead of a preset (not both);
    resume: continue from `out`'s checkpoint with the run's own image and config. Anything
    given that contradicts them (another image, preset, max_size, or a config whose model,
    noise or training differ) is a one-sentence error; a config's sampling settings and
    `checkpoint.BOOKKEEPING` fields replace the run's (they never change what is learned).
    callback(info) after every step: step, loss, lr, elapsed.
    """
    if steps is not None and not (isinstance(steps, int) and steps >= 1):
        raise SinDiffusionError(f"steps is {steps}; give 1 or more training steps.")
    if minutes is not None and not minutes > 0:
        raise SinDiffusionError(f"minutes is {minutes}; give a positive training time.")
    if out is not None:
        check_run_folder(out)  # before any minute is spent on a run that could not be saved
    if preset is not None and config is not None:
        raise SinDiffusionError("give either a preset or a config, not both.")
    resume_ckpt = None
    if resume:
        if out is None or not checkpoint_path(out).exists():
            raise SinDiffusionError(f"nothing to resume in {out}; train without --resume first.")
        resume_ckpt = load_checkpoint(out)
        cfg = resumed_config(resume_ckpt.config, preset, config, max_size)
        img = resume_ckpt.images
        given = _training_images(image, cfg, like=[tuple(i.shape[-2:]) for i in img])
        check_resumed_images(img, given, _names(image))
    else:
        if out is not None and checkpoint_path(out).exists():
            raise SinDiffusionError(
                f"{out} already holds a run; add --resume to go on with it, or give another "
                "--out (a new run would write over it)."
            )
        cfg = config.copy() if config is not None else preset_config(preset or "fast", minutes)
        if max_size is not None:
            cfg.train.max_size = max_size
        img = _training_images(image, cfg)
    trainer = Trainer(img, cfg, seed=seed, run_dir=out, device=device, resume=resume_ckpt)
    trainer.run(steps=steps, minutes=minutes, progress=progress, callback=callback)
    return SinDiffusion.from_checkpoint(trainer.checkpoint(), device=trainer.device)


def _training_image(
    image: str | os.PathLike | torch.Tensor, config: Config, like: tuple[int, int] | None = None
) -> torch.Tensor:
    """The training image (3, H, W) in [-1, 1] as `config` trains it: a tensor as given
    (quantised to 8 bits), a file with its long side reduced to train.max_size. Its sides
    need not be multiples of the network's stride (`random_batch` rounds each rescaled copy),
    so samples default to the image's own size. `like`: the (H, W) of a run being resumed;
    runs before 0.2 rounded the sides down to the stride, and are read that way."""
    if isinstance(image, torch.Tensor):
        return check_image_tensor(image)
    img = load_image(image, max_size=config.train.max_size)
    if like is not None and tuple(img.shape[-2:]) != like:
        img = load_image(image, max_size=config.train.max_size, multiple=stride(config.model))
    return img


def _training_images(image, config: Config, like: list | None = None) -> list[torch.Tensor]:
    """`_training_image` of one image or of each of a list (`like`: their saved sizes)."""
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    if not items:
        raise SinDiffusionError("give at least one training image.")
    sizes = list(like or []) + [None] * len(items)
    return [_training_image(item, config, sizes[k]) for k, item in enumerate(items)]


def _names(image) -> list[str]:
    items = list(image) if isinstance(image, (list, tuple)) else [image]
    return ["the image tensor" if isinstance(i, torch.Tensor) else str(i) for i in items]
