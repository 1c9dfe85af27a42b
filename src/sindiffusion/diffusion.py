"""The network as a denoiser: its preconditioning (eps or edm) and the training loss.

Everything works in the sigma parameterisation of Karras et al. (EDM): a noisy image is
`x = x0 + sigma * eps` with `x0` in [-1, 1]. A `Denoiser` wraps the UNet so that
`denoiser(x, sigma) -> x0_hat` for both parameterisations (`contract.Denoise`, the contract
every sampler, wrapper and application uses; the schedules are in `schedules.py`):

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
from .contract import sigma_rows
from .device import autocast
from .schedules import ddpm_sigmas
from .unet import UNet


class Denoiser(nn.Module):
    """The trained network as a denoiser (`contract.Denoise`): `denoiser(x, sigma, **extra)
    -> x0_hat`, x (N, 3, H, W), sigma (N,) or a float, output float32. The network reads no
    extra argument (the layout stage's `shift`, `grid_seed`), so it ignores them."""

    unet: nn.Module  # the UNet, or its DistributedDataParallel wrapper while training
    sigmas: torch.Tensor  # eps: the DDPM noise levels (T,), a buffer

    def __init__(
        self, unet: UNet, cfg: DiffusionConfig, bf16: bool = False, channels_last: bool = False
    ):
        super().__init__()
        self.unet = unet
        self.cfg = cfg
        self.bf16 = bf16  # run the UNet under bfloat16 autocast; preconditioning stays float32
        self.channels_last = channels_last  # weights and inputs in channels-last memory format
        if channels_last:
            unet.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
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

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, **extra) -> torch.Tensor:
        return self._denoise(x, sigma_rows(sigma, x))

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
