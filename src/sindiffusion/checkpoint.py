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

Resuming a run is checked here too: `resumed_config` and `check_resumed_images` refuse what
would train another model than the one saved, and `restore_generator` continues its random
stream.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .config import Config
from .errors import CheckpointError, SinDiffusionError, SinDiffusionWarning
from .image import atomic_write, check_folder, from_uint8, save_image, to_uint8
from .report import loss_curve
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
    try:
        return check_folder(run_dir, "the run")
    except SinDiffusionError as e:
        raise CheckpointError(str(e)) from None


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

    try:
        return _contents(file, config, meta, tensors)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise CheckpointError(
            f"{file} has damaged metadata or tensors ({type(e).__name__}); retrain or use an "
            "earlier copy."
        ) from None


def _contents(
    file: Path, config: Config, meta: dict[str, str], tensors: dict[str, torch.Tensor]
) -> Checkpoint:
    """The `Checkpoint` of a file's parsed metadata and tensors, every field checked: a
    damaged one raises ValueError, TypeError or KeyError (one sentence in `load_checkpoint`)."""

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    optimizer = None
    if "optimizer_param_groups" in meta:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in part("optim.").items():
            pid, key = k.split(".", 1)
            state.setdefault(int(pid), {})[key] = v
        groups = json.loads(meta["optimizer_param_groups"])
        if not isinstance(groups, list):
            raise TypeError("optimizer_param_groups")
        optimizer = {"state": state, "param_groups": groups}
    if "image" not in tensors or not part("ema."):
        raise CheckpointError(f"{file} is incomplete; retrain or use an earlier copy.")
    step, elapsed, seed = (
        int(meta.get("step", 0)),
        float(meta.get("elapsed", 0.0)),
        int(meta.get("seed", 0)),
    )
    extra = json.loads(meta.get("extra", "{}"))
    budget = extra.get("budget") if isinstance(extra, dict) else None
    if not (step >= 0 and math.isfinite(elapsed) and elapsed >= 0 and 0 <= seed < 2**63):
        raise ValueError("step, elapsed or seed")
    if not isinstance(extra, dict) or not (budget is None or isinstance(budget, (int, float))):
        raise TypeError("extra")
    images = [tensors["image"], *[tensors[f"image.{k}"] for k in range(1, _count(tensors))]]
    for img in images:
        if img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] != 3:
            raise ValueError("image")
    return Checkpoint(
        config=config,
        model=part("model."),
        ema=part("ema."),
        image=from_uint8(images[0]),
        step=step,
        elapsed=elapsed,
        seed=seed,
        version=meta.get("version", ""),
        optimizer=optimizer,
        rng_state=tensors.get("rng_state"),
        extra=extra,
        more_images=[from_uint8(img) for img in images[1:]],
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
    """Write the training log `run_dir/log.csv` (step, loss, lr, elapsed) atomically, and its
    curve `loss.png` once there are two rows."""
    text = "step,loss,lr,elapsed\n" + "".join(
        f"{s},{lo:.6g},{lr:.6g},{e:.3f}\n" for s, lo, lr, e in rows
    )
    atomic_write(Path(run_dir) / LOG, lambda tmp: Path(tmp).write_text(text))
    if len(rows) > 1:
        curve = loss_curve([r[0] for r in rows], [r[1] for r in rows])
        save_image(curve, Path(run_dir) / "loss.png")


def read_log(run_dir: str | os.PathLike | None) -> list[LogRow]:
    """The training log of a run folder (empty when there is none)."""
    if run_dir is None or not (Path(run_dir) / LOG).exists():
        return []
    rows = []
    for line in (Path(run_dir) / LOG).read_text().splitlines()[1:]:
        s, lo, lr, e = line.split(",")
        rows.append((int(s), float(lo), float(lr), float(e)))
    return rows


# Train settings that a resumed run may change: they decide when to stop, save and preview.
BOOKKEEPING = ("steps", "checkpoint_every", "checkpoint_minutes", "preview_every", "preview_steps")


def resumed_config(
    saved: Config, preset: str | None, config: Config | None, max_size: int | None
) -> Config:
    """The config a resumed run goes on with: its own, or `config` where they differ only in
    sampling settings and `BOOKKEEPING`; a one-sentence error for a preset, config or
    max_size that contradicts the run (they would train another model than the one saved)."""
    how = "drop it, or start a new run with another --out"
    if preset is not None and preset != saved.preset:
        raise SinDiffusionError(
            f"this run was trained with preset {saved.preset!r}, not {preset!r}; {how}."
        )
    if max_size is not None and max_size != saved.train.max_size:
        raise SinDiffusionError(
            f"this run was trained at max_size {saved.train.max_size}, not {max_size}; {how}."
        )
    if config is None:
        return saved
    given, resumed = config.copy(), saved.copy()
    for part in ("model", "diffusion", "train"):
        mine, theirs = getattr(given, part), getattr(resumed, part)
        if part == "train":  # how often to save and preview never changes what is learned
            mine = dataclasses.replace(mine, **{k: getattr(theirs, k) for k in BOOKKEEPING})
        if mine != theirs:
            raise SinDiffusionError(
                f"the config's {part} settings differ from this run's; {how} (only sampling "
                f"settings and {', '.join(BOOKKEEPING)} may change on --resume)."
            )
    resumed.sampling = given.sampling
    resumed.train = given.train
    return resumed


def check_resumed_images(
    saved: list[torch.Tensor], given: list[torch.Tensor], names: list[str]
) -> None:
    """A one-sentence error unless `given` (3, H, W) images in [-1, 1], named `names`, are
    the `saved` ones of a run, 8-bit for 8-bit."""
    for old, new, name in zip(saved, given, names, strict=False):
        if new.shape != old.shape or not torch.equal(to_uint8(new), to_uint8(old)):
            raise SinDiffusionError(
                f"{name} is not the image this run was trained on; resume with that "
                "image, or start a new run with another --out."
            )
    if len(given) != len(saved):
        raise SinDiffusionError(
            f"this run was trained on {len(saved)} image(s), not {len(given)}; resume with "
            "the same images, or start a new run with another --out."
        )


def restore_generator(generator: torch.Generator, ckpt: Checkpoint) -> None:
    """Continue `ckpt`'s training random stream in `generator`. A state saved on another kind
    of device (CPU and CUDA generators keep states of different sizes) cannot be loaded: the
    stream then goes on seeded by the run's seed and step, so a resume here is still
    reproducible, with a warning that it will not repeat an uninterrupted run."""
    if ckpt.rng_state is None:
        return
    state = ckpt.rng_state.to(torch.uint8).cpu()
    if state.numel() == generator.get_state().numel():
        generator.set_state(state)
        return
    generator.manual_seed((ckpt.seed * 1_000_003 + ckpt.step) % 2**63)
    warnings.warn(
        f"this run was saved on another kind of device than {generator.device.type}: "
        f"its random stream goes on reseeded from step {ckpt.step}, so it will not "
        "repeat an uninterrupted run exactly (resuming here again will).",
        SinDiffusionWarning,
        stacklevel=3,
    )
