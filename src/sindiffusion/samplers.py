"""Samplers: free functions with one signature, in the style of k-diffusion.

    x = sample_NAME(denoiser, x, sigmas, generator=None, callback=None)

`denoiser(x, sigma) -> x0_hat` is any callable with the denoiser contract (a trained
`Denoiser`, a guidance wrapper, the closed-form patch denoiser...). `x` starts as
`noise * sigmas[0]`; `sigmas` decrease to a final 0. Randomness (ancestral steps) comes only
from `generator`, so the same seed gives the same image. `callback(info)` is called after
every step with a dict: i, x, sigma, sigma_next, denoised.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .errors import SinDiffusionError

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict], None] | None


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    dev = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=dev).to(x.device)


def _check(sigmas: torch.Tensor) -> None:
    # Repeated levels would divide by zero (log-sigma steps, d = (x - x0) / sigma): NaN images.
    ok = sigmas.dim() == 1 and len(sigmas) >= 2 and bool((sigmas[1:] < sigmas[:-1]).all())
    if not ok or sigmas[-1] < 0:
        levels = ", ".join(f"{float(v):.4g}" for v in sigmas.flatten()[:8])
        raise SinDiffusionError(
            f"the noise levels [{levels}] do not decrease strictly to a final level >= 0; "
            "give at least two strictly decreasing sigmas."
        )


def _report(callback: Callback, i: int, x, sigma, sigma_next, denoised) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


@torch.no_grad()
def sample_ddpm(denoiser: Denoise, x, sigmas, generator=None, callback: Callback = None):
    """DDPM ancestral sampling (Ho et al.) with the fixed-large variance beta_t.

    Each step draws x_{t-1} from the posterior q(x_{t-1} | x_t, x0_hat) written in the
    variance-preserving space, with alpha-bar = 1 / (1 + sigma^2); with all T discrete
    levels this is exactly the paper's sampler.
    """
    _check(sigmas)
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s)
        abar, abar_next = 1 / (1 + s**2), 1 / (1 + sn**2)
        alpha = abar / abar_next
        beta = 1 - alpha
        x_vp = x * abar.sqrt()
        mean = (abar_next.sqrt() * beta / (1 - abar)) * denoised + (
            alpha.sqrt() * (1 - abar_next) / (1 - abar)
        ) * x_vp
        if sn > 0:
            mean = mean + beta.sqrt() * _noise(x, generator)
        x = mean / abar_next.sqrt()
        _report(callback, i, x, s, sn, denoised)
    return x


@torch.no_grad()
def sample_ddim(denoiser: Denoise, x, sigmas, generator=None, callback: Callback = None):
    """DDIM (eta = 0), which in the sigma parameterisation is Euler's method on the
    probability-flow ODE dx/dsigma = (x - x0_hat) / sigma. Deterministic."""
    _check(sigmas)
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s)
        x = denoised + (sn / s) * (x - denoised)
        _report(callback, i, x, s, sn, denoised)
    return x


@torch.no_grad()
def sample_heun(denoiser: Denoise, x, sigmas, generator=None, callback: Callback = None):
    """Heun's second-order method on the probability-flow ODE (Karras et al., Algorithm 1).
    Two network calls per step except the last. Deterministic."""
    _check(sigmas)
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s)
        d = (x - denoised) / s
        x_next = x + (sn - s) * d
        if sn > 0:
            d_next = (x_next - denoiser(x_next, sn)) / sn
            x_next = x + (sn - s) * (d + d_next) / 2
        x = x_next
        _report(callback, i, x, s, sn, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoise, x, sigmas, generator=None, callback: Callback = None):
    """DPM-Solver++(2M) (Lu et al. 2022): a multistep second-order solver in log-sigma time that
    reuses the previous step's x0_hat, so it costs one network call per step. Deterministic."""
    _check(sigmas)
    old_denoised = None
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s)
        if sn == 0:
            x = denoised
        else:
            h = s.log() - sn.log()  # step size in lambda = -log(sigma)
            d = denoised
            if old_denoised is not None:
                r = (sigmas[i - 1].log() - s.log()) / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sn / s) * x - torch.expm1(-h) * d
        old_denoised = denoised
        _report(callback, i, x, s, sn, denoised)
    return x


SAMPLERS: dict[str, Callable] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}


def get_sampler(name: str) -> Callable:
    """The sampler function of that name (see `SAMPLERS`)."""
    if name not in SAMPLERS:
        raise SinDiffusionError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


def clipped(denoiser: Denoise) -> Denoise:
    """Wrap a denoiser so that its clean-image estimate is clamped to [-1, 1]."""

    def wrapped(x: torch.Tensor, sigma) -> torch.Tensor:
        return denoiser(x, sigma).clamp(-1, 1)

    return wrapped
