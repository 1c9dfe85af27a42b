"""The denoiser contract every denoiser and wrapper keeps, in the style of k-diffusion:

    x0_hat = denoiser(x, sigma, **extra)

x (N, 3, H, W) is a clean image in [-1, 1] plus noise of standard deviation sigma
(x = x0 + sigma * noise); sigma is a float or (N,) per row; x0_hat (N, 3, H, W) float32 is the
estimate of x0. `extra` holds per-row tensors some denoisers read (the layout stage's `shift`
and `grid_seed`); a wrapper passes all of them on, and a denoiser that does not read one
ignores it. Samplers, guidance, the layout stage and every application compose through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch


class Denoise(Protocol):
    """`denoiser(x, sigma, **extra) -> x0_hat` (see the module docstring)."""

    def __call__(self, x: torch.Tensor, sigma: Any, **extra: Any) -> torch.Tensor: ...


Guide = Callable[[Denoise], Denoise]  # wraps a denoiser, e.g. in guidance.GradientGuidance


def sigma_rows(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """sigma (a float, a 0-d or a (N,) tensor) as (N,) float32 on x's device, one per row of x."""
    s = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
    return s.expand(x.shape[0])
