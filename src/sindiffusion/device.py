"""Where tensors run: the default device, bfloat16 autocast, and the CPU allocator setting."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import warnings
from contextlib import AbstractContextManager, nullcontext

import torch

from .errors import SinDiffusionError, SinDiffusionWarning


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` as a torch.device (None: `default_device()`); a name torch does not know, or
    CUDA where this torch has none, is a one-sentence `SinDiffusionError`."""
    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SinDiffusionError(f"unknown device {device!r}; use cpu or cuda.") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SinDiffusionError(
            f"device {device!r} asks for CUDA, which this machine or torch build lacks; use cpu."
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SinDiffusionError(
            f"device {device!r} does not exist here ({torch.cuda.device_count()} GPUs); "
            "give another index."
        )
    return dev


MAX_SEED = 2**63 - 1  # seeds are whole numbers 0 .. MAX_SEED (torch takes 64 bits)


def seeded(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A `torch.Generator` on `device` seeded with `seed`; a seed that is not a whole number
    from 0 to `MAX_SEED` is a one-sentence `SinDiffusionError` (torch's own is a traceback)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise SinDiffusionError(f"the seed is {seed!r}; give a whole number from 0 to 2**63 - 1.")
    return torch.Generator(device=device).manual_seed(seed)


def bf16_fast(device: torch.device) -> bool:
    """Whether bfloat16 autocast pays on this device (CUDA, or a CPU with AVX-512 bf16 or AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu  # these private checks are the only way to ask; absent in old releases
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def use_bf16(requested: bool, device: torch.device) -> bool:
    """Whether to run under bfloat16 autocast: when the config asks for it (`train.bf16`) and
    it pays on `device`. When asked for but dropped, warns once per process and device kind:
    the same checkpoint and seed then give slightly different samples than on a machine that
    has it."""
    if not requested:
        return False
    if bf16_fast(device):
        return True
    _warn_no_bf16(device.type)
    return False


@functools.cache
def _warn_no_bf16(kind: str) -> None:
    where = "this CPU has neither AVX-512 bf16 nor AMX" if kind == "cpu" else f"{kind} lacks it"
    warnings.warn(
        f"the config asks for bfloat16, but {where}: running in float32, so samples differ a "
        "little from those of a machine with it (same seed).",
        SinDiffusionWarning,
        stacklevel=3,
    )


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """bfloat16 autocast on CPU or CUDA when enabled (a no-op context otherwise)."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def keep_freed_memory_on(device: torch.device) -> None:
    """`keep_freed_memory()` for work on `device`, where it is a CPU (CUDA tensors live in
    torch's own caching allocator)."""
    if device.type == "cpu":
        keep_freed_memory()


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's allocator to keep freed blocks of up to 1 GB for reuse instead of mapping
    and unmapping each large tensor: a network call at 248x248 otherwise spends a third of its
    time faulting in fresh pages (one 248x248 sample 1.4 -> 1.0 s on a 2-core AMD EPYC, the
    same samples bit for bit; freed blocks stay with the process, so a 1024x1024 sample peaks
    at 2.15 GB instead of 1.45). Process-wide, applied once; a no-op off glibc or with
    SINDIFFUSION_NO_MALLOPT=1. Returns whether it applied."""
    if not sys.platform.startswith("linux") or os.environ.get("SINDIFFUSION_NO_MALLOPT"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    # Older glibc refuses thresholds above 32 MB (HEAP_MAX_SIZE / 2): fall back to that.
    for size in (1 << 30, 32 << 20):
        if mallopt(m_mmap_threshold, size) == 1:
            return mallopt(m_trim_threshold, size) == 1
    return False
