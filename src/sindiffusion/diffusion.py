"""The noise process: noise schedules, the network's preconditioning, and the training loss.

Everything works in the sigma parameterisation of Karras et al. (EDM): a noisy image is
`x = x0 + sigma * eps` with `x0` in [-1, 1]. A `Denoiser` wraps the UNet so that
`denoiser(x, sigma) -> x0_hat` for both parameterisations (the denoiser contract every
sampler, wrapper and application uses):

- ``eps`` (the paper): DDPM with T discrete steps and linear betas. The variance-preserving
  input is `x / sqrt(1 + sigma^2)`, the UNet sees the (fractional) timestep and predicts eps,
  and `x0_hat = x - sigma * eps_hat`. The loss is MSE on eps with t uniform in {0..T-1}.
- ``edm``: the preconditioning of Karras et al. 2022 (c_skip, c_out, c_in, c_noise) with
  log-normal training noise levels and the loss weight that makes every level count equally.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import DiffusionConfig
from .device import autocast
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


def sigma_range(cfg: DiffusionConfig, sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """The (lowest, highest) noise level a network trained with `cfg` samples from: eps, the
    DDPM table's ends; edm, the sampling settings' `sigma_min` and `sigma_max`."""
    if cfg.parameterization == "eps":
        table = ddpm_sigmas(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        return float(table[0]), float(table[-1])
    return sigma_min, sigma_max


def network_sigmas(cfg: DiffusionConfig, steps: int, sigma_min: float, sigma_max: float):
    """`steps` decreasing noise levels followed by 0, for a network trained with `cfg`.

    eps: the discrete DDPM levels at evenly spaced timesteps (all T of them when steps = T);
    edm: the Karras et al. schedule between sigma_min and sigma_max.
    """
    steps = max(1, int(steps))
    if cfg.parameterization == "eps":
        table = ddpm_sigmas(cfg.timesteps, cfg.beta_start, cfg.beta_end)
        idx = torch.linspace(cfg.timesteps - 1, 0, steps).round().long()
        return torch.cat([table[idx], torch.zeros(1)])
    return karras_sigmas(steps, sigma_min, sigma_max)


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
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        if cfg.parameterization == "eps":
            self.register_buffer(
                "sigmas", ddpm_sigmas(cfg.timesteps, cfg.beta_start, cfg.beta_end), persistent=False
            )

    def sigma_to_t(self, sigma: torch.Tensor) -> torch.Tensor:
        """eps: the fractional DDPM timestep of each sigma (interpolated in log sigma)."""
        log_sigmas = self.sigmas.log()
        s = sigma.log().clamp(log_sigmas[0], log_sigmas[-1])
        idx = torch.searchsorted(log_sigmas, s).clamp(1, len(log_sigmas) - 1)
        lo, hi = log_sigmas[idx - 1], log_sigmas[idx]
        w = (s - lo) / (hi - lo)
        return idx - 1 + w

    def _net(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(x.device, self.bf16):
            return self.unet(x, t).float()

    def _denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma[:, None, None, None]
        if self.cfg.parameterization == "eps":
            eps = self._net(x / (s**2 + 1).sqrt(), self.sigma_to_t(sigma))
            return x - s * eps
        sd = self.cfg.sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        return c_skip * x + c_out * self._net(c_in * x, 250.0 * sigma.log())

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        return self._denoise(x, sigma.expand(x.shape[0]))

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
            eps = self._net((x0 + s * noise) / (s**2 + 1).sqrt(), t.float())
            return (eps - noise).pow(2).mean()
        rnd = torch.randn(n, generator=generator, device=noise.device).to(dev)
        if rows is not None:
            x0, noise, rnd = x0[rows], noise[rows], rnd[rows]
        sigma = (rnd * self.cfg.p_std + self.cfg.p_mean).exp()
        sd = self.cfg.sigma_data
        weight = ((sigma**2 + sd**2) / (sigma * sd) ** 2)[:, None, None, None]
        denoised = self(x0 + sigma[:, None, None, None] * noise, sigma)
        return (weight * (denoised - x0).pow(2)).mean()
