"""`score()`: every metric for one real image and its generated samples, as one dict."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from sindiffusion.errors import SinDiffusionError
from sindiffusion.image import MIN_SIDE
from sindiffusion.metrics.diversity import lpips_e, pixel_diversity
from sindiffusion.metrics.formats import JpegFormat, round_trip
from sindiffusion.metrics.patches import (
    copy_fraction,
    copy_score,
    duplication,
    patch_nn_distance,
    patch_swd,
)
from sindiffusion.metrics.sifid import sifid
from sindiffusion.metrics.structure import broken_structure

# What each key of `score()` means; lower is better unless marked.
METRICS = {
    "sifid_e": "SIFID-E: SIFID on EfficientNet-Lite0 block 2 (not comparable with SIFID)",
    "sifid": "SIFID on InceptionV3 Conv2d_4a_3x3, as SinGAN's code computes it",
    "pixel_diversity": "per-pixel std over samples / image std (SinGAN); higher = more diverse",
    "lpips_e": "mean pairwise unweighted LPIPS on EfficientNet-Lite0; higher = more diverse",
    "patch_nn": "mean RMS distance of each 7x7 fake patch to its nearest real patch",
    "patch_swd": "patch sliced-Wasserstein distance, 7x7 patches, scales 1, 1/2, 1/4",
    "copy_score": "fraction of the fake's textured area in 64x64 windows copied from the real",
    "copy_32": "fraction of the fake's pixels in 32x32 windows within RMS 0.02 of a real window",
    "duplication": "fraction of the fake's textured area repeated elsewhere in it (cloned regions)",
    "broken": "fraction of the fake's structured quarter-size windows whose edges the real "
    "image has nowhere (broken objects)",
}


def _as_batch(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4 or x.shape[1] != 3:
        raise SinDiffusionError(
            f"{what} must be a (3, H, W) or (N, 3, H, W) tensor, got shape {tuple(x.shape)}."
        )
    if not x.is_floating_point():
        raise SinDiffusionError(f"{what} must be a float tensor in [-1, 1], got {x.dtype}.")
    return x


def match_sizes(
    real: torch.Tensor, fakes: torch.Tensor | Sequence[torch.Tensor]
) -> tuple[torch.Tensor, list[str]]:
    """Resize every fake to the real image's size (antialiased bilinear).

    `real` `(3, H, W)`; `fakes` `(N, 3, h, w)` or a sequence of `(3, h_i, w_i)`, in [-1, 1].
    Returns the fakes as `(N, 3, H, W)` and one warning line per resized fake (empty if none).
    """
    size = tuple(real.shape[-2:])
    items = list(fakes) if not isinstance(fakes, torch.Tensor) else list(_as_batch(fakes, "fakes"))
    out, notes = [], []
    for i, f in enumerate(items):
        f = _as_batch(f, f"fake {i}")[0]
        if tuple(f.shape[-2:]) != size:
            notes.append(
                f"fake {i} is {f.shape[-1]}x{f.shape[-2]} px, resized to the real image's "
                f"{size[1]}x{size[0]} px"
            )
            down = f.shape[-2] > size[0] or f.shape[-1] > size[1]
            f = F.interpolate(f[None], size, mode="bilinear", align_corners=False, antialias=down)[
                0
            ]
        out.append(f.float().clamp(-1, 1))
    return torch.stack(out), notes


def score(
    real: torch.Tensor,
    fakes: torch.Tensor | Sequence[torch.Tensor],
    backbone: str = "efficientnet",
    device: str | torch.device = "cpu",
    inception_weights: str | os.PathLike | None = None,
    fake_format: JpegFormat | None = None,
) -> dict[str, float]:
    """Every metric of `real` `(3, H, W)` against `fakes` `(N, 3, H, W)`, all in [-1, 1].

    Fakes of another size (or a sequence of differently sized `(3, h, w)`) are resized to the
    real image's size, with a `UserWarning` per fake (`match_sizes` returns the lines instead).
    Keys (see `METRICS`): "sifid_e" (backbone "efficientnet") or "sifid" (backbone "inception",
    needs `inception_weights` or $SINDIFFUSION_INCEPTION_WEIGHTS), "pixel_diversity" and
    "lpips_e" (only with N >= 2), "patch_nn", "patch_swd", "copy_score", "copy_32",
    "duplication", "broken". Values are means over
    the fakes. Backbones are built once per process and device, so repeated calls are cheap.
    fake_format: every fake goes through this JPEG encoding first (`formats.round_trip`;
    format-matched scoring: give the real file's own, `formats.jpeg_format(path)`).
    """
    if backbone not in ("efficientnet", "inception"):
        raise SinDiffusionError(f"unknown backbone {backbone!r}; use efficientnet or inception.")
    real = _as_batch(real, "real")
    if real.shape[0] != 1:
        raise SinDiffusionError(f"real must be one image, got {real.shape[0]}.")
    real = real[0].float()
    if min(real.shape[-2:]) < MIN_SIDE:
        raise SinDiffusionError(
            f"the real image is {real.shape[-1]}x{real.shape[-2]} px; the metrics need at "
            f"least {MIN_SIDE} px a side."
        )
    fakes, notes = match_sizes(real, fakes)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    fakes = round_trip(fakes, fake_format)

    key = "sifid_e" if backbone == "efficientnet" else "sifid"
    result = {key: sifid(real, fakes, backbone, device, inception_weights).mean().item()}
    if fakes.shape[0] >= 2:
        result["pixel_diversity"] = pixel_diversity(real, fakes)
        result["lpips_e"] = lpips_e(fakes, device)
    result["patch_nn"] = patch_nn_distance(real, fakes, device=device).mean().item()
    result["patch_swd"] = patch_swd(real, fakes, device=device).mean().item()
    result["copy_score"] = copy_score(real, fakes, device=device).mean().item()
    result["copy_32"] = copy_fraction(real, fakes, device=device).mean().item()
    result["duplication"] = duplication(fakes, device=device).mean().item()
    result["broken"] = broken_structure(real.cpu(), fakes.cpu()).mean().item()
    return result
