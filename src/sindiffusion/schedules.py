"""Every noise schedule in one place: a schedule is a 1-d tensor of decreasing noise levels
(sigma, in [-1, 1] pixel units: x = x0 + sigma * noise) that ends with a final 0.

- `ddpm_sigmas`: the paper's discrete DDPM levels (linear betas), increasing with t;
- `karras_sigmas`: Karras et al.'s rho-spaced levels, the EDM network's schedule;
- `network_sigmas`, `sigma_range`: the levels a trained network samples from;
- `split_sigmas`: a hybrid model's schedule, log-spaced for the layout above the switch,
  Karras below it for the network; `placed_sigmas`: the same with given layout levels;
- `pyramid_sigmas`: the closed-form patch denoiser's own, an equal share of the steps per
  pyramid level;
- `renoise_sigmas`, `at_or_below`: the network's levels that finish a renoised layout, and
  the closed-form ones that draw it from a given start;
- `start_at`: the tail of a schedule that a part-way start (SDEdit) runs;
- `resampled_steps`: how many steps RePaint resampling makes of a schedule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .config import DiffusionConfig
from .errors import SinDiffusionError


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


def network_sigmas(
    cfg: DiffusionConfig, steps: int, sigma_min: float, sigma_max: float
) -> torch.Tensor:
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


def split_sigmas(
    sigma_min: float, sigma_max: float, switch: float, layout_steps: int, steps: int
) -> torch.Tensor:
    """A schedule split at `switch`: `layout_steps` levels log-spaced from sigma_max down to
    (not including) the switch, then `steps` Karras levels from the switch down to sigma_min,
    then 0. The network's detail needs finer steps at low noise than one Karras schedule
    gives it, while fewer steps for the layout leave it more varied."""
    top, bottom = math.log(sigma_max), math.log(switch)
    high = torch.linspace(top, bottom, layout_steps + 1, dtype=torch.float64)[:-1]
    low = karras_sigmas(max(1, int(steps)), sigma_min, switch)
    return torch.cat([high.exp().float(), low])


def placed_sigmas(
    sigma_min: float, sigma_max: float, switch: float, layout: Sequence[float], steps: int
) -> torch.Tensor:
    """A split schedule whose layout levels are given: sigma_max, its geometric mean with the
    largest of `layout`, then `layout`'s levels above the switch, largest first; then `steps`
    Karras levels from the switch down to sigma_min, then 0 (as `split_sigmas`). A layout
    level at or below the switch, or at or above sigma_max, is left out."""
    inner = sorted({float(s) for s in layout if switch < s < sigma_max}, reverse=True)
    top = [sigma_max, math.sqrt(sigma_max * inner[0])] if inner else [sigma_max]
    low = karras_sigmas(max(1, int(steps)), sigma_min, switch)
    return torch.cat([torch.tensor(top + inner, dtype=torch.float32), low])


def pyramid_sigmas(
    steps: int, sigma_min: float, sigma_max: float, handovers: Sequence[float]
) -> torch.Tensor:
    """`steps` levels from sigma_max down to sigma_min, then 0, for a coarse-to-fine pyramid
    that hands over from one level to the next at the sigmas `handovers`: each stretch
    between two hand-overs gets an equal share of the steps, log-spaced, so the cheap coarse
    levels settle the layout and the costly full-resolution one runs only its share."""
    steps = max(1, int(steps))
    lo, hi = math.log(sigma_min), math.log(sigma_max)
    bounds = {math.log(s) for s in handovers}
    inner = sorted((b for b in bounds if lo < b < hi), reverse=True)
    knots = torch.tensor([hi, *inner, lo], dtype=torch.float64)
    u = torch.linspace(0, 1, steps, dtype=torch.float64) * (len(knots) - 1)
    seg = u.floor().long().clamp(max=len(knots) - 2)
    log_sig = knots[seg] + (u - seg) * (knots[seg + 1] - knots[seg])
    return torch.cat([log_sig.exp(), log_sig.new_zeros(1)]).float()


def at_or_below(sigmas: torch.Tensor, top: float) -> torch.Tensor:
    """The levels of `sigmas` at or below `top`, then its final 0."""
    return torch.cat([sigmas[:-1][sigmas[:-1] <= top], sigmas[-1:]])


def renoise_sigmas(sigmas: torch.Tensor, renoise: float, sigma_min: float) -> torch.Tensor:
    """The network's levels that finish a layout renoised to `renoise`: as many Karras levels
    from `renoise` down to `sigma_min` as `sigmas` has below `renoise` (at least one), then 0."""
    below = max(1, int((sigmas[:-1] < renoise).sum()))
    return karras_sigmas(below, sigma_min, renoise)


def start_at(sigmas: torch.Tensor, strength: float) -> torch.Tensor:
    """The last ceil(strength * steps) levels of `sigmas` (then its final 0): strength in
    (0, 1] is where on the schedule to start, 1 = from pure noise, 0.5 = half-way down (the
    SDEdit t0), so only that many steps run."""
    if not 0 < strength <= 1:
        raise SinDiffusionError(f"strength {strength:g} is out of range; give a value in (0, 1].")
    k = max(1, math.ceil(strength * (len(sigmas) - 1) - 1e-9))
    return sigmas[len(sigmas) - 1 - k :]


def start_from(sigmas: torch.Tensor, top: float) -> torch.Tensor:
    """`sigmas` started at the level `top`: `top`, then the levels below it (then the final
    0); unchanged when `top` is at or above its first level. A variation's schedule: its
    steps are the ones the full schedule takes below `top`, plus the first one down to them."""
    if top >= float(sigmas[0]):
        return sigmas
    below = sigmas[sigmas < top]
    return torch.cat([sigmas.new_tensor([top]), below])


def resampled_steps(steps: int, times: int, jump: int) -> int:
    """Sampler steps that `samplers.resampled(sampler, times, jump)` runs over `steps` levels:
    every stretch of `jump` steps `times` times, but the last stretch once."""
    if times <= 1 or steps == 0:
        return steps
    last = (steps - 1) % jump + 1
    return (steps - last) * times + last
