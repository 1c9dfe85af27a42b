"""Resource limits, in one place: how much one call may ask for, checked before anything is
allocated. Each is refused in one sentence that names the limit and how to raise it: the
environment variable SINDIFFUSION_MAX_<NAME> (a whole number), for bigger machines.

- `steps`: sampler steps of a call or a config (also the layout's and a renoised layout's);
- `candidates`: layouts drawn per result;
- `n`: results of one sampling call, drawn and written in chunks (`sample_chunks`);
- `pixels`: pixels of the results one call holds in memory at once, n x height x width x
  candidates (`sample`, the applications);
- `memory`: MB one sampling call plans to use at once (`sampling.Plan.memory`): by
  default three quarters of this machine's memory, so a sample size that cannot fit is
  refused before anything is allocated;
- `frames`: frames of one animation;
- `params`: parameters of a network a config describes (checked before it is built);
- `refs`: reference patches per pyramid level of the closed-form patch denoiser.
"""

from __future__ import annotations

import os

from .errors import SinDiffusionError

DEFAULTS: dict[str, int | None] = {
    "steps": 10_000,  # the paper's sampler runs 1000
    "candidates": 64,
    "n": 100_000,
    "pixels": 2**27,  # 134 M: about 1.6 GB of float32 results (2 800 samples of 250x188 px)
    "memory": None,  # MB; None: three quarters of this machine's memory (`machine_mb`)
    "frames": 10_000,
    "params": 200_000_000,  # the paper's network has 7 M, `fast` 1 M
    "refs": 2**20,  # the default keeps 16 384
}


def env_name(name: str) -> str:
    return f"SINDIFFUSION_MAX_{name.upper()}"


def limit(name: str) -> int:
    """The limit `name` (see `DEFAULTS`), or its environment variable's value when set."""
    text = os.environ.get(env_name(name))
    if text is None:
        default = DEFAULTS[name]
        return default if default is not None else machine_mb() * 3 // 4
    if not text.strip().isdigit() or int(text) < 1:
        raise SinDiffusionError(f"{env_name(name)} is {text!r}; set it to a whole number >= 1.")
    return int(text)


def machine_mb() -> int:
    """This machine's memory in MB (16 GB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (AttributeError, ValueError, OSError):
        return 16_384


def check(name: str, value: int, what: str, less: str = "ask for less") -> None:
    """A one-sentence `SinDiffusionError` when `value` (`what`, e.g. "the sampler steps") is
    above the limit `name`; `less` says how to ask for less."""
    top = limit(name)
    if value > top:
        raise SinDiffusionError(
            f"{what} is {value:,}, above the limit of {top:,}; {less}, or raise the limit "
            f"with the environment variable {env_name(name)}."
        )
