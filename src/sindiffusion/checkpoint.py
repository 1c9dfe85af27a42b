"""The run folder: atomic save, validated load.

A run folder holds:

- ``checkpoint.safetensors`` — everything needed to sample *and* to resume, in one file that
  is replaced atomically (temporary file, then rename), so a crash at any moment leaves the
  previous checkpoint loadable: the network weights (``model.*``), their EMA (``ema.*``, used
  for sampling), the AdamW state (``optim.*``), the training random-generator state, the
  training image (uint8), and in its metadata the full `Config` as JSON, the step, the
  elapsed training time and the package version.
- ``config.json`` and ``image.png`` — human-readable copies of the config and training image
  (``image-1.png``, ... for a run learned from several images).
- ``log.csv``, ``loss.png`` and ``previews/`` — the training log (`write_log`, `read_log`), its
  curve and sample grids.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import Config
from .errors import CheckpointError, SinDiffusionError
from .image import atomic_write, from_uint8, save_image, to_uint8
from .version import __version__

LOG = "log.csv"
LogRow = tuple[int, float, float, float]  # step, loss, learning rate, elapsed seconds

FORMAT = "sindiffusion-checkpoint-v1"
CHECKPOINT = "checkpoint.safetensors"


@dataclass
class Checkpoint:
    """The contents of a checkpoint file, in memory."""

    config: Config
    model: dict[str, torch.Tensor]  # raw network weights
    ema: dict[str, torch.Tensor]  # EMA weights (what samples come from)
    image: torch.Tensor  # the training image (3, H, W) in [-1, 1]
    step: int = 0
    elapsed: float = 0.0  # seconds of training so far
    seed: int = 0
    version: str = ""
    optimizer: dict[str, Any] | None = None  # torch optimizer state_dict, None if not saved
    rng_state: torch.Tensor | None = None  # training generator state
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the time budget of the run
    more_images: list[torch.Tensor] = field(default_factory=list)  # a run learned from several

    @property
    def images(self) -> list[torch.Tensor]:
        """Every training image (3, H_i, W_i) in [-1, 1]: `image`, then `more_images`."""
        return [self.image, *self.more_images]


def checkpoint_path(path: str | os.PathLike) -> Path:
    """Accept a run folder or a checkpoint file; return the file's path."""
    path = Path(path)
    return path / CHECKPOINT if path.is_dir() or path.suffix != ".safetensors" else path


def check_run_folder(run_dir: str | os.PathLike) -> Path:
    """`run_dir` as a Path, or a one-sentence `CheckpointError` when it names a file (or sits
    under one), before any work is spent on a run that could not be saved."""
    run_dir = Path(run_dir)
    for folder in (run_dir, *run_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise CheckpointError(
                    f"{folder} is a file, not a folder; give --out a folder for the run."
                )
            break
    return run_dir


def save_checkpoint(run_dir: str | os.PathLike, ckpt: Checkpoint) -> Path:
    """Write `ckpt` into `run_dir` (created if needed) atomically; return the file's path."""
    run_dir = check_run_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"model.{k}": v for k, v in ckpt.model.items()})
    tensors.update({f"ema.{k}": v for k, v in ckpt.ema.items()})
    tensors["image"] = to_uint8(ckpt.image)
    for k, img in enumerate(ckpt.more_images, 1):
        tensors[f"image.{k}"] = to_uint8(img)
    meta: dict[str, str] = {
        "format": FORMAT,
        "version": __version__,
        "config": ckpt.config.to_json(),
        "step": str(ckpt.step),
        "elapsed": repr(float(ckpt.elapsed)),
        "seed": str(ckpt.seed),
        "extra": json.dumps(ckpt.extra),
    }
    if ckpt.optimizer is not None:
        for pid, state in ckpt.optimizer["state"].items():
            for key, value in state.items():
                tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value)
        meta["optimizer_param_groups"] = json.dumps(ckpt.optimizer["param_groups"])
    if ckpt.rng_state is not None:
        tensors["rng_state"] = ckpt.rng_state
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    path = run_dir / CHECKPOINT

    def write(tmp: str) -> None:
        try:
            save_file(tensors, tmp, metadata=meta)
        except SafetensorError as e:  # its I/O errors (a full disk) are OSErrors to atomic_write
            raise OSError(str(e).split(": ", 1)[-1]) from None

    atomic_write(path, write)
    atomic_write(run_dir / "config.json", lambda tmp: Path(tmp).write_text(ckpt.config.to_json()))
    for k, img in enumerate(ckpt.images):
        name = "image.png" if k == 0 else f"image-{k}.png"
        if not (run_dir / name).exists():
            save_image(img, run_dir / name)
    return path


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a run folder or checkpoint file; a missing, foreign or corrupt one raises
    `CheckpointError` with a one-sentence message."""
    file = checkpoint_path(path)
    if not file.exists():
        raise CheckpointError(
            f"{path} holds no {CHECKPOINT}; give a run folder written by 'sindiffusion train'."
        )
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(
                    f"{file} is not a sindiffusion checkpoint; give a run folder written by "
                    "'sindiffusion train'."
                )
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        config_dict = json.loads(meta["config"])
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"{file} is corrupt or unreadable ({type(e).__name__}); retrain or use an earlier copy."
        ) from None

    try:
        config = Config.from_dict(config_dict)
    except (SinDiffusionError, TypeError, ValueError, AttributeError) as e:
        version = meta.get("version", "")
        if _newer(version, __version__):
            raise CheckpointError(
                f"{file} was written by sindiffusion {version}, newer than this {__version__}; "
                "upgrade sindiffusion to load it."
            ) from None
        raise CheckpointError(f"{file} holds a config this version cannot read: {e}") from None

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    optimizer = None
    if "optimizer_param_groups" in meta:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in part("optim.").items():
            pid, key = k.split(".", 1)
            state.setdefault(int(pid), {})[key] = v
        optimizer = {"state": state, "param_groups": json.loads(meta["optimizer_param_groups"])}
    if "image" not in tensors or not part("ema."):
        raise CheckpointError(f"{file} is incomplete; retrain or use an earlier copy.")
    return Checkpoint(
        config=config,
        model=part("model."),
        ema=part("ema."),
        image=from_uint8(tensors["image"]),
        step=int(meta.get("step", 0)),
        elapsed=float(meta.get("elapsed", 0.0)),
        seed=int(meta.get("seed", 0)),
        version=meta.get("version", ""),
        optimizer=optimizer,
        rng_state=tensors.get("rng_state"),
        extra=json.loads(meta.get("extra", "{}")),
        more_images=[from_uint8(tensors[f"image.{k}"]) for k in range(1, _count(tensors))],
    )


def _count(tensors: dict[str, torch.Tensor]) -> int:
    """How many training images a checkpoint holds ("image", "image.1", ...)."""
    k = 1
    while f"image.{k}" in tensors:
        k += 1
    return k


def remove_stale_temporaries(run_dir: str | os.PathLike) -> int:
    """Delete the temporary files (`.NAME.*.tmp`) a killed writer left in a run folder;
    returns how many. Only one process writes a run folder, so none of them is in use."""
    stale = list(Path(run_dir).glob(".*.tmp")) + list(Path(run_dir).glob("previews/.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _newer(version: str, than: str) -> bool:
    """Whether version string `version` (e.g. "0.3.1") is later than `than`."""

    def key(v: str) -> tuple[int, ...]:
        return tuple(int(p) if p.isdigit() else 0 for p in v.split("."))

    return bool(version) and key(version) > key(than)


def write_log(run_dir: str | os.PathLike, rows: list[LogRow]) -> None:
    """Write the training log `run_dir/log.csv` (step, loss, lr, elapsed) atomically."""
    text = "step,loss,lr,elapsed\n" + "".join(
        f"{s},{lo:.6g},{lr:.6g},{e:.3f}\n" for s, lo, lr, e in rows
    )
    atomic_write(Path(run_dir) / LOG, lambda tmp: Path(tmp).write_text(text))


def read_log(run_dir: str | os.PathLike | None) -> list[LogRow]:
    """The training log of a run folder (empty when there is none)."""
    if run_dir is None or not (Path(run_dir) / LOG).exists():
        return []
    rows = []
    for line in (Path(run_dir) / LOG).read_text().splitlines()[1:]:
        s, lo, lr, e = line.split(",")
        rows.append((int(s), float(lo), float(lr), float(e)))
    return rows
