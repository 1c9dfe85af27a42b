"""Samplers: free functions with one signature, in the style of k-diffusion.

    x = sample_NAME(denoiser, x, sigmas, generator=None, callback=None, extra_args=None)

`denoiser(x, sigma, **extra_args) -> x0_hat` is any callable with the denoiser contract
(`contract.Denoise`: a trained `diffusion.Denoiser`, a wrapper from `guidance.py` or
`layout.py`, the closed-form `PatchDenoiser`...). `x` starts as `noise * sigmas[0]`; `sigmas` decrease to a final 0.
`extra_args` go to every denoiser call unchanged (e.g. `shift`, one row per row of x).
Randomness (ancestral steps) comes only from `generator`, so the same seed gives the same
image. `callback(info)` is called after every step with a dict: i, x, sigma, sigma_next,
denoised. `resampled` wraps any sampler (RePaint resampling); it keeps the signature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .contract import Denoise
from .errors import SinDiffusionError

Callback = Callable[[dict], None] | None
Sampler = Callable[..., torch.Tensor]  # (denoiser, x, sigmas, generator, callback, extra_args)


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
def sample_ddpm(
    denoiser: Denoise, x, sigmas, generator=None, callback: Callback = None, extra_args=None
):
    """DDPM ancestral sampling (Ho et al.) with the fixed-large variance beta_t.

    Each step draws x_{t-1} from the posterior q(x_{t-1} | x_t, x0_hat) written in the
    variance-preserving space, with alpha-bar = 1 / (1 + sigma^2); with all T discrete
    levels this is exactly the paper's sampler.
    """
    _check(sigmas)
    extra = extra_args or {}
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s, **extra)
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
def sample_euler(
    denoiser: Denoise, x, sigmas, generator=None, callback: Callback = None, extra_args=None
):
    """Euler's method on the probability-flow ODE dx/dsigma = (x - x0_hat) / sigma. In the
    sigma parameterisation this is exactly deterministic DDIM (eta = 0, Song et al.; Karras
    et al. 2022, section 3), so the name "ddim" selects it too (`ALIASES`). Deterministic."""
    _check(sigmas)
    extra = extra_args or {}
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s, **extra)
        x = denoised + (sn / s) * (x - denoised)
        _report(callback, i, x, s, sn, denoised)
    return x


@torch.no_grad()
def sample_heun(
    denoiser: Denoise, x, sigmas, generator=None, callback: Callback = None, extra_args=None
):
    """Heun's second-order method on the probability-flow ODE (Karras et al., Algorithm 1).
    Two network calls per step except the last. Deterministic."""
    _check(sigmas)
    extra = extra_args or {}
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s, **extra)
        d = (x - denoised) / s
        x_next = x + (sn - s) * d
        if sn > 0:
            d_next = (x_next - denoiser(x_next, sn, **extra)) / sn
            x_next = x + (sn - s) * (d + d_next) / 2
        x = x_next
        _report(callback, i, x, s, sn, denoised)
    return x


@torch.no_grad()
def sample_dpmpp_2m(
    denoiser: Denoise, x, sigmas, generator=None, callback: Callback = None, extra_args=None
):
    """DPM-Solver++(2M) (Lu et al. 2022): a multistep second-order solver in log-sigma time that
    reuses the previous step's x0_hat, so it costs one network call per step. Deterministic."""
    _check(sigmas)
    extra = extra_args or {}
    old_denoised = None
    for i in range(len(sigmas) - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        denoised = denoiser(x, s, **extra)
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
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}
ALIASES = {"ddim": "euler"}  # other names of the same method (configs before 0.3 say "ddim")


def get_sampler(name: str) -> Callable:
    """The sampler function of that name (see `SAMPLERS` and `ALIASES`)."""
    name = ALIASES.get(name, name)
    if name not in SAMPLERS:
        raise SinDiffusionError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[name]


def resampled(sampler: Sampler, times: int = 2, jump: int = 2) -> Sampler:
    """Wrap a sampler so that each stretch of `jump` steps is run `times` times (RePaint).

    Between runs x is taken back from the stretch's last noise level s_b to its first s_a by
    adding fresh noise of variance s_a^2 - s_b^2 (x = x0 + sigma * noise makes this exact), so
    a regenerated region is re-harmonised with the known one. The last stretch (ending at
    sigma = 0) runs once. `times` = 1 returns `sampler` itself. Same signature as a sampler.
    """
    if times <= 1:
        return sampler

    def sample(denoiser, x, sigmas, generator=None, callback=None, extra_args=None):
        n = len(sigmas) - 1
        for a in range(0, n, jump):
            chunk = sigmas[a : min(a + jump, n) + 1]
            cb = None
            if callback is not None:

                def cb(info, a=a):
                    callback({**info, "i": info["i"] + a})

            for r in range(times if chunk[-1] > 0 else 1):
                if r:
                    x = x + (chunk[0] ** 2 - chunk[-1] ** 2).sqrt() * _noise(x, generator)
                x = sampler(
                    denoiser, x, chunk, generator=generator, callback=cb, extra_args=extra_args
                )
        return x

    return sample
