"""The noise process: noise levels, network preconditioning, and the training loss.

Everything works in the sigma parameterisation of Karras et al. (EDM): a noisy image is
`x = x0 + sigma * eps` with `x0` in [-1, 1]. A `Denoiser` wraps the UNet so that
`denoiser(x, sigma) -> x0_hat` for both parameterisations:

- ``eps`` (the paper): DDPM with T discrete steps and linear betas. The variance-preserving
  input is `x / sqrt(1 + sigma^2)`, the UNet sees the (fractional) timestep and predicts eps,
  and `x0_hat = x - sigma * eps_hat`. The loss is MSE on eps with t uniform in {0..T-1}.
- ``edm``: the preconditioning of Karras et al. 2022 (c_skip, c_out, c_in, c_noise) with
  log-normal training noise levels and the loss weight that makes every level count equally.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
import torch.nn as nn

from .config import DiffusionConfig
from .unet import UNet


def ddpm_sigmas(timesteps: int, beta_start: float, beta_end: float) -> torch.Tensor:
    """Noise levels (T,) of the linear-beta DDPM schedule, increasing with t."""
    betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt().float()


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """`n` noise levels from sigma_max down to sigma_min, spaced as in Karras et al., then 0."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on CPU or CUDA when enabled (a no-op context otherwise)."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class Denoiser(nn.Module):
    """`denoiser(x, sigma) -> x0_hat`: x (N, 3, H, W), sigma (N,) or a float; output float32."""

    def __init__(
        self, unet: UNet, cfg: DiffusionConfig, bf16: bool = False, channels_last: bool = False
    ):
        super().__init__()
        self.unet = unet
        self.cfg = cfg
        self.bf16 = bf16  # run the UNet under bfloat16 autocast; preconditioning stays float32
        self.channels_last = channels_last  # weights and inputs in channels-last memory format
        self.weak: nn.Module | None = None  # autoguidance, see `guide_away_from`
        self.guide_weight, self.guide_sigmas = 0.0, (0.0, 0.0)
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        if cfg.parameterization == "eps":
            self.register_buffer(
                "sigmas", ddpm_sigmas(cfg.timesteps, cfg.beta_start, cfg.beta_end), persistent=False
            )
        elif cfg.parameterization != "edm":
            raise ValueError(f"unknown parameterization {cfg.parameterization!r}")

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0]) if self.cfg.parameterization == "eps" else self.cfg.sigma_min

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1]) if self.cfg.parameterization == "eps" else self.cfg.sigma_max

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """eps: the fractional DDPM timestep of each sigma (interpolated in log sigma)."""
        log_sigmas = self.sigmas.log()
        s = sigma.log().clamp(log_sigmas[0], log_sigmas[-1])
        idx = torch.searchsorted(log_sigmas, s).clamp(1, len(log_sigmas) - 1)
        lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
        w = (s - lo) / (hi - lo)
        return idx - 1 + w

    def _net(self, unet: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, self.bf16):
            return unet(x, t).float()

    def guide_away_from(self, weak: nn.Module, weight: float, sigmas: tuple[float, float]):
        """Autoguidance (Karras et al. 2024): at noise levels within `sigmas` (low, high) the
        estimate becomes D + weight * (D - D_weak), where D_weak is this preconditioning around
        `weak`, a weaker network of the same shape (the `fast` preset: the `generic` weights
        the run started from, which know natural images but not this one). It pushes the
        detail further towards what the image taught the network; each guided call costs a
        second network pass. weight 0 turns it off."""
        self.weak = weak.to(memory_format=torch.channels_last) if self.channels_last else weak
        self.guide_weight, self.guide_sigmas = float(weight), (float(sigmas[0]), float(sigmas[1]))

    def _denoise(self, unet: nn.Module, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma[:, None, None, None]
        if self.cfg.parameterization == "eps":
            eps = self._net(unet, x / (s**2 + 1).sqrt(), self.sigma_to_t(sigma))
            return x - s * eps
        sd = self.cfg.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        return c_skip * x + c_out * self._net(unet, c_in * x, 250.0 * sigma.log())

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0])
        out = self._denoise(self.unet, x, sigma)
        if self.weak is None or self.guide_weight == 0:
            return out
        lo, hi = self.guide_sigmas
        rows = (sigma >= lo) & (sigma <= hi)
        if rows.any():
            strong = out[rows]
            weak = self._denoise(self.weak, x[rows], sigma[rows])
            out[rows] = strong + self.guide_weight * (strong - weak)
        return out

    def loss(
        self,
        x0: torch.Tensor,
        generator: torch.Generator | None = None,
        rows: slice | None = None,
    ) -> torch.Tensor:
        """Training loss (a scalar) for a batch of clean images x0 (N, 3, H, W) in [-1, 1].

        rows: draw the randomness of the whole batch but compute the loss on `x0[rows]` only,
        the share of one data-parallel rank (see `distributed.py`).
        """
        n = x0.shape[0]
        dev = x0.device
        noise = torch.randn(
            x0.shape, generator=generator, device=generator.device if generator else dev
        )
        noise = noise.to(dev)
        if self.cfg.parameterization == "eps":
            t = torch.randint(0, self.cfg.timesteps, (n,), generator=generator, device=noise.device)
            t = t.to(dev)
            if rows is not None:
                x0, noise, t = x0[rows], noise[rows], t[rows]
            s = self.sigmas[t][:, None, None, None]
            eps = self._net(self.unet, (x0 + s * noise) / (s**2 + 1).sqrt(), t.float())
            return (eps - noise).pow(2).mean()
        rnd = torch.randn(n, generator=generator, device=noise.device).to(dev)
        if rows is not None:
            x0, noise, rnd = x0[rows], noise[rows], rnd[rows]
        sigma = (rnd * self.cfg.p_std + self.cfg.p_mean).exp()
        sd = self.cfg.sigma_data
        weight = ((sigma**2 + sd**2) / (sigma * sd) ** 2)[:, None, None, None]
        denoised = self(x0 + sigma[:, None, None, None] * noise, sigma)
        return (weight * (denoised - x0).pow(2)).mean()

    def sampling_sigmas(self, steps: int) -> torch.Tensor:
        """`steps` decreasing noise levels followed by 0, for the samplers.

        eps: the discrete DDPM levels at evenly spaced timesteps (all T of them when steps = T);
        edm: the Karras et al. schedule between sigma_min and sigma_max.
        """
        steps = max(1, int(steps))
        if self.cfg.parameterization == "eps":
            idx = torch.linspace(self.cfg.timesteps - 1, 0, steps).round().long()
            return torch.cat([self.sigmas.cpu()[idx], torch.zeros(1)])
        return karras_sigmas(steps, self.sigma_min, self.sigma_max)


class HybridDenoiser(nn.Module):
    """Hand the high noise levels to another denoiser: `high(x, sigma)` for sigma > `switch`,
    `low(x, sigma)` below. Used to let the closed-form patch denoiser lay out the image (a
    patch-level network learns the high-noise regime last) while the network draws the detail.
    The noise-level range comes from `low`, and so does the schedule unless `high_steps` > 0
    (see below). Inside `only("high")` or `only("low")`
    every call goes to that part whatever the sigma (the two stages of a renoised layout, see
    `SinDiffusion.sample`).

    high_steps > 0 gives the two parts their own shares of the schedule (`sampling_sigmas`):
    the network's detail needs finer steps at low noise than one Karras schedule gives it,
    while fewer steps for the layout leave it more varied."""

    def __init__(self, low: Denoiser, high: nn.Module, switch: float, high_steps: int = 0):
        super().__init__()
        self.low, self.high, self.switch = low, high, switch
        self.high_steps = high_steps
        self.forced: str | None = None  # "high" or "low" inside `only`

    @contextmanager
    def only(self, part: str) -> Iterator[None]:
        """Route every call to `part` ("high" or "low") inside this block."""
        if part not in ("high", "low"):
            raise ValueError(f"part must be 'high' or 'low', not {part!r}")
        before, self.forced = self.forced, part
        try:
            yield
        finally:
            self.forced = before

    @property
    def sigma_min(self) -> float:
        return self.low.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.low.sigma_max

    def sampling_sigmas(self, steps: int) -> torch.Tensor:
        """Decreasing noise levels, then 0. high_steps = 0: `low`'s schedule of `steps`
        levels. Otherwise high_steps levels log-spaced from sigma_max down to (not including)
        the switch, then `steps` Karras levels from the switch down to sigma_min, all below
        the switch drawn by the network."""
        if self.high_steps <= 0:
            return self.low.sampling_sigmas(steps)
        top, switch = math.log(self.sigma_max), math.log(self.switch)
        high = torch.linspace(top, switch, self.high_steps + 1, dtype=torch.float64)[:-1]
        low = karras_sigmas(max(1, int(steps)), self.sigma_min, self.switch)
        return torch.cat([high.exp().float(), low])

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(x.shape[0])
        if self.forced is not None:
            return (self.high if self.forced == "high" else self.low)(x, sigma)
        high = sigma > self.switch
        if bool(high.all()):
            return self.high(x, sigma)
        if not bool(high.any()):
            return self.low(x, sigma)
        out = self.low(x, sigma)
        out[high] = self.high(x[high], sigma[high])
        return out
