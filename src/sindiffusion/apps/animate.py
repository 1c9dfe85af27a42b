"""Animation: a smooth walk through the noise, each frame a sample.

The frames start from noises on a loop of spherical interpolations between a few random
keyframe noises (slerp keeps every frame's noise Gaussian), and every frame is denoised the
same way: one layout per frame (no candidates to switch between), one shift of the position
prior for all, the closed-form layout's patch grid seeded by the animation's seed instead of
by each frame (`PatchDenoiser`'s `grid_seed`), and a deterministic sampler. Nearby noises then
give nearby images: the scene drifts instead of flickering (`metrics.flicker`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import limits
from ..config import SamplingOptions
from ..contract import Guide
from ..device import seeded
from ..errors import SinDiffusionError
from ..image import atomic_write, check_folder, tensor_to_pil
from ..layout import random_shifts
from ..sampling import build_plan, run

if TYPE_CHECKING:
    from ..model import SinDiffusion

VIDEO_SUFFIXES = (".gif", ".mp4")


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between two noises of one shape, t in [0, 1]: the path stays
    at the norm of Gaussian noise, where a straight line would shrink it half-way."""
    cos = (a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-12)
    theta = torch.arccos(cos.clamp(-1, 1))
    if theta < 1e-4:
        return (1 - t) * a + t * b
    return (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)


def noise_loop(
    frames: int, keyframes: int, size: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """(frames, 3, h, w) noises on a closed loop through `keyframes` random ones."""
    keys = torch.randn((keyframes, 3, *size), generator=generator)
    out = []
    for f in range(frames):
        u = f * keyframes / frames
        k = int(u)
        out.append(slerp(keys[k], keys[(k + 1) % keyframes], u - k))
    return torch.stack(out)


def animate(
    model: SinDiffusion,
    frames: int = 48,
    keyframes: int = 4,
    size: tuple[int, int] | None = None,
    scale: tuple[float, float] | None = None,
    *,
    options: SamplingOptions | None = None,
    seed: int = 0,
    guide: Guide | None = None,
    progress: bool = False,
    **overrides: Any,
) -> torch.Tensor:
    """`frames` frames (frames, 3, H, W) in [-1, 1] of a looping walk through `keyframes`
    noises; size / scale and the sampling options as `SinDiffusion.sample`, but one layout
    per frame (no candidates, no renoise). The sampler must be deterministic (heun, dpmpp_2m,
    euler): ancestral steps would draw fresh noise for every frame."""
    if not (isinstance(frames, int) and frames >= 2):
        raise SinDiffusionError(f"frames is {frames}; give 2 or more.")
    limits.check("frames", frames, "the frame count of this animation")
    if not (isinstance(keyframes, int) and 2 <= keyframes <= frames):
        raise SinDiffusionError(f"keyframes is {keyframes}; give between 2 and the frames.")
    call = SamplingOptions.of(options, **overrides)
    if call.candidates not in (None, 1) or call.renoise:
        raise SinDiffusionError(
            "an animation draws one layout per frame; drop candidates and renoise."
        )
    if model.network is not None and model.patch is not None:
        # A hybrid's layout stage takes the single nearest patch (topk 1), which switches
        # abruptly between nearby frames; a blend of the 8 nearest changes smoothly.
        k = model.patch.cfg.topk
        model = model.with_patch(topk=None if k is None else max(k, 8), temperature=2.0)
    parts, opts = model.prepare(call.filled(candidates=1, renoise=0.0))
    if opts.sampler == "ddpm":
        raise SinDiffusionError(
            "ddpm draws fresh noise at every step, so its frames would flicker; use heun, "
            "dpmpp_2m or euler."
        )
    h, w = model.output_size(size, scale)
    generator = seeded(seed)
    extra: dict[str, torch.Tensor] = {}
    if model.patch is not None:  # the layout stage: one shift and one patch grid for all frames
        shift = random_shifts(1, opts.shift, generator, model.device)
        if shift is not None:
            extra["shift"] = shift.expand(frames, 2)
        extra["grid_seed"] = torch.full((frames,), seed, dtype=torch.int64, device=model.device)
    noise = noise_loop(frames, keyframes, (h, w), generator)
    plan = build_plan(parts, opts, guide)
    return run(plan, frames, (h, w), generator, model.device, progress=progress,
               noise=noise, extra=extra)  # fmt: skip


def check_video_path(path: str | os.PathLike, fps: float = 12) -> Path:
    """`path` as a Path, or a one-sentence error for a name that is not .gif or .mp4, a rate
    outside (0, 120] or a folder in the way: checked before any frame is drawn."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise SinDiffusionError(f"{path}: give a .gif or .mp4 file name for the animation.")
    if not 0 < fps <= 120:
        raise SinDiffusionError(f"fps is {fps:g}; give a rate between 0 and 120.")
    if path.is_dir():
        raise SinDiffusionError(f"{path} is a folder; give a .gif or .mp4 file name.")
    check_folder(path.parent, "the animation")
    return path


def write_video(frames: torch.Tensor, path: str | os.PathLike, fps: float = 12) -> Path:
    """Write frames (N, 3, H, W) in [-1, 1] as an animated GIF (Pillow) or an MP4 (needs
    imageio with its ffmpeg plugin: `pip install "sindiffusion[video]"`), atomically."""
    path = check_video_path(path, fps)
    suffix = path.suffix.lower()
    images = [tensor_to_pil(f) for f in frames]
    if suffix == ".gif":
        duration = round(1000 / fps)

        def write(tmp: str) -> None:
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                           duration=duration, loop=0)  # fmt: skip

    else:
        try:
            import imageio.v3 as iio
        except ImportError:
            raise SinDiffusionError(
                'writing .mp4 needs imageio and ffmpeg: pip install "sindiffusion[video]" '
                "(or write a .gif)."
            ) from None
        import numpy as np

        def write(tmp: str) -> None:
            stack = np.stack([np.asarray(im) for im in images])
            named = tmp + ".mp4"  # ffmpeg picks the container from the file name
            try:
                iio.imwrite(named, stack, fps=fps, codec="libx264", macro_block_size=1)
                os.replace(named, tmp)
            finally:
                Path(named).unlink(missing_ok=True)

    atomic_write(path, write)
    return path
