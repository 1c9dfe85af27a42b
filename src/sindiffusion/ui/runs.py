"""The web page's server side: the runs folder it may touch, upload checks, and training in
a background thread. Nothing here imports gradio."""

from __future__ import annotations

import copy
import hashlib
import os
import re
import threading
import time
from collections import OrderedDict
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import CHECKPOINT
from ..config import Config
from ..errors import SinDiffusionError
from ..image import (
    IMAGE_FORMATS,
    IMAGE_KINDS,
    IMAGE_SUFFIXES,
    load_image,
    load_mask,
    save_image,
)
from ..model import SinDiffusion, load, zero_training
from ..report import moving_average
from ..trainer import Trainer, preview_grid

MAX_UPLOAD_MB = 20  # default upload limit; larger files are refused before they reach the disk
MAX_PIXELS = 50_000_000  # an upload is refused above this many pixels (decompression bombs)
PREVIEW_SECONDS = 30.0  # live preview samples at most this often: they take time from training
INSTANT_PREVIEW = "zero-training.png"  # previews/ file shown before the first trained preview
INSTANT_PREVIEW_SIDE = 1024  # a larger photo's instant preview is of its 1024 px copy (seconds)
MODELS_KEPT = 4  # loaded models the page keeps (least recently used dropped): memory is bounded
OWNER = ".owner"  # in a run folder: who made it (a hash of the login), for per-user pages
UPLOAD_DAYS = 1.0  # uploads and gradio's cached files older than this are removed at start
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")


class RunStore:
    """The folder of run folders the page reads and writes.

    Names come from the server (`new_run`) and are checked again (`path`) when a browser sends
    one back, so no path from a browser ever reaches the disk.
    """

    def __init__(self, root: str | os.PathLike, owner: str | None = None):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.owner = owner  # None: every run; else only the runs this owner made
        self._models: OrderedDict[str, tuple[float, SinDiffusion]] = OrderedDict()
        self._lock = threading.Lock()

    def for_owner(self, owner: str | None) -> RunStore:
        """The same folder (and loaded models) as seen by `owner`: only the runs it made (its
        name kept in each run's `.owner` file), new runs made as its; None: every run."""
        view = copy.copy(self)
        view.owner = None if owner is None else hashlib.sha256(owner.encode()).hexdigest()[:16]
        return view

    def names(self) -> list[str]:
        """Run folders that hold a checkpoint (the owner's, if one is set), newest first. A
        folder or checkpoint that is a symbolic link is left out: it could lead outside the
        runs folder."""
        runs = [p for p in self.root.iterdir() if _RUN_NAME.match(p.name) and self._inside(p)]
        if self.owner is not None:
            runs = [p for p in runs if _read(p / OWNER) == self.owner]
        return [p.name for p in sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)]

    def _inside(self, run: Path) -> bool:
        """A real run folder of this store: no links on the way, its checkpoint a file."""
        ckpt = run / CHECKPOINT
        if run.is_symlink() or ckpt.is_symlink() or not run.is_dir() or not ckpt.is_file():
            return False
        return ckpt.resolve().parent == self.root / run.name

    def path(self, name: Any) -> Path:
        """The folder of an existing run; any other name is refused."""
        if not isinstance(name, str) or not _RUN_NAME.match(name) or name not in self.names():
            raise SinDiffusionError("pick a run from the list (train one first if it is empty).")
        return self.root / name

    def new_run(self, filename: str) -> Path:
        """Create an empty run folder named after the uploaded file's stem and the time."""
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(filename).stem).strip("-_")[:40] or "image"
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for i in range(1000):
            path = self.root / (f"{stem}-{stamp}" + (f"-{i}" if i else ""))
            try:
                path.mkdir()
                if self.owner is not None:
                    (path / OWNER).write_text(self.owner)
                return path
            except FileExistsError:
                continue
        raise SinDiffusionError("could not make a new run folder; clean up the runs folder.")

    def model(self, name: Any, device: str | None = None) -> SinDiffusion:
        """The run's model, loaded once and again only when its checkpoint changes; at most
        `MODELS_KEPT` stay loaded, the least recently used dropped first."""
        path = self.path(name)
        mtime = (path / CHECKPOINT).stat().st_mtime
        with self._lock:
            cached = self._models.get(name)
            if cached is None or cached[0] != mtime:
                cached = (mtime, load(path, device=device))
                self._models[name] = cached
            self._models.move_to_end(name)
            while len(self._models) > MODELS_KEPT:
                self._models.popitem(last=False)
        return cached[1]

    def loaded(self) -> list[str]:
        """The runs whose models are loaded, least recently used first."""
        return list(self._models)

    def clean(self, folder: str, days: float = UPLOAD_DAYS) -> int:
        """Remove the files under `root/folder` (the page's upload cache) last changed more
        than `days` ago, and the folders they leave empty; returns how many files."""
        top = self.root / folder
        if not top.is_dir() or top.is_symlink():
            return 0
        cutoff = time.time() - days * 86400
        removed = 0
        for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if path.is_symlink() or path.is_file():
                if path.lstat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        return removed


def _read(path: Path) -> str | None:
    """A small text file's content, or None when it is missing or a link."""
    if path.is_symlink() or not path.is_file():
        return None
    return path.read_text()[:64]


def _check_file(path: str | os.PathLike | None, max_upload_mb: float) -> Path:
    """An uploaded file's path, once its size, suffix and header pass: at most
    `max_upload_mb`, an image suffix, a decoder among `IMAGE_FORMATS` and at most
    `MAX_PIXELS` pixels (read from the header, before anything is decoded)."""
    from PIL import Image

    if path is None:
        raise SinDiffusionError(f"upload an image first ({IMAGE_KINDS}).")
    path = Path(path)
    size = path.stat().st_size
    if size > max_upload_mb * 2**20:
        raise SinDiffusionError(
            f"{path.name} is {size / 2**20:.1f} MB; upload an image of at most {max_upload_mb:g} MB."
        )
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise SinDiffusionError(f"{path.name} is not an image; upload a {IMAGE_KINDS} file.")
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            pixels = img.width * img.height
    except Exception:  # any failure to parse the header is the same user error
        raise SinDiffusionError(
            f"{path.name} is not an image Pillow can read; upload a {IMAGE_KINDS} file."
        ) from None
    if pixels > MAX_PIXELS:
        raise SinDiffusionError(
            f"{path.name} has {pixels / 1e6:.0f} megapixels; upload at most {MAX_PIXELS // 10**6}."
        )
    return path


def check_upload(
    path: str | os.PathLike | None, config: Config, max_upload_mb: float = MAX_UPLOAD_MB
) -> torch.Tensor:
    """Validate an uploaded file (`_check_file`) and load it as the training image (3, H, W)
    in [-1, 1], resized as `config` trains it. Raises `SinDiffusionError` with one sentence."""
    path = _check_file(path, max_upload_mb)
    try:
        return load_image(path, max_size=config.train.max_size)
    except SinDiffusionError as e:  # the message names the cache path; the user knows the name
        raise SinDiffusionError(str(e).replace(str(path), path.name)) from None


def check_mask_upload(
    path: str | os.PathLike, size: tuple[int, int], max_upload_mb: float = MAX_UPLOAD_MB
) -> torch.Tensor:
    """An uploaded mask file as (H, W) bool for a run's image of `size` (H, W): the checks of
    an upload (`_check_file`), then the policy of `image.load_mask`; one-sentence errors that
    name the file as the user knows it (not the server's cache path)."""
    path = _check_file(path, max_upload_mb)
    try:
        return load_mask(path, size)
    except SinDiffusionError as e:
        raise SinDiffusionError(str(e).replace(str(path), path.name)) from None


# --- training in the background ----------------------------------------------------------------
class OneAtATime:
    """Allows one training at a time (the CPU is the bottleneck): `claim()` is refused with a
    one-sentence error while another is running; `release()` frees it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def claim(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise SinDiffusionError("a training is already running; wait for it or stop it.")

    def release(self) -> None:
        self._lock.release()


class TrainingJob:
    """One training run in a background thread: the page polls it and may stop it.

    Before the first step the preview shows zero-training samples of the image (about a
    second), so a user sees what the image gives at once; trained previews replace it.
    Stopping works like Ctrl-C on the command line: the trainer saves a checkpoint and returns.
    """

    def __init__(
        self,
        image: torch.Tensor,
        config: Config,
        run_dir: Path,
        steps: int | None = None,
        minutes: float | None = None,
        seed: int = 0,
        device: str | None = None,
        preview_seconds: float = PREVIEW_SECONDS,
    ):
        self.trainer = Trainer(image, config, seed=seed, run_dir=run_dir, device=device)
        self.run_dir = run_dir
        self.steps, self.minutes = steps, minutes
        self.preview_seconds = preview_seconds
        self.preview_path: Path | None = None
        self.error: str | None = None
        self.done = False
        self.stopped = False
        self.loss = float("nan")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sindiffusion-train", daemon=True)
        self._t0 = self._last_preview = 0.0

    def start(self) -> TrainingJob:
        self._t0 = self._last_preview = time.perf_counter()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _callback(self, info: dict) -> None:
        self.loss = info["loss"]
        if self._stop.is_set():
            raise KeyboardInterrupt  # Trainer.run saves a checkpoint on it, as on Ctrl-C
        # Every `preview_seconds`, within the trainer's share of time for previews.
        due = time.perf_counter() - self._last_preview >= self.preview_seconds
        if due and self.trainer.preview_affordable:
            self.preview_path = self.trainer.preview()
            self._last_preview = time.perf_counter()

    def instant_preview(self, n: int = 4) -> Path:
        """Write previews/zero-training.png: the training image, then up to `n` zero-training
        samples (seed 0) at its size (`trainer.preview_grid`); no network is involved, so it
        is ready before the first step."""
        image = self.trainer.image.cpu()
        side = min(max(image.shape[-2:]), INSTANT_PREVIEW_SIDE)
        grid = preview_grid(zero_training(image, max_size=side), n)
        self.preview_path = save_image(grid, self.run_dir / "previews" / INSTANT_PREVIEW)
        return self.preview_path

    def _run(self) -> None:
        try:
            self.instant_preview()
            result = self.trainer.run(
                steps=self.steps, minutes=self.minutes, progress=False, callback=self._callback
            )
            self.stopped = result["interrupted"]
            # Trainer.run previews at the end unless stopped; a stopped run gets one here.
            self.preview_path = (
                self.trainer.preview()
                if self.stopped
                else self.run_dir / "previews" / f"step-{self.trainer.step:06d}.png"
            )
        except SinDiffusionError as e:
            self.error = str(e)
        except Exception as e:  # shown on the page instead of dying silently in a thread
            self.error = f"training failed ({type(e).__name__}: {e})."
        finally:
            self.done = True

    def status(self) -> str:
        """One line of Markdown: step, loss, speed and time left."""
        t = self.trainer
        step, elapsed = t.step, t.elapsed
        rate = step / elapsed if elapsed > 0 else 0.0
        if self.minutes is not None:
            total, left = "", max(0.0, self.minutes * 60 - elapsed)
        else:
            goal = self.steps or t.config.train.steps
            total = f" / {goal}"
            left = (goal - step) / rate if rate > 0 else float("nan")
        if self.error:
            state = "**failed**"
        elif self.done:
            state = "**stopped**" if self.stopped else "**done**"
        else:
            state = "**training**"
        eta = f"{int(left) // 60}:{int(left) % 60:02d}" if left == left else "…"
        parts = [state, f"step {step}{total}", f"loss {self.loss:.4f}", f"{rate:.1f} steps/s"]
        if not self.done and self.preview_path and self.preview_path.name == INSTANT_PREVIEW:
            parts.append("preview: zero-training, trained samples follow")
        parts.append(f"{elapsed:.0f} s" if self.done else f"ETA {eta}")
        return " · ".join(parts)

    def loss_table(self, points: int = 400):
        """The loss log as a DataFrame (step, loss), smoothed and thinned for plotting."""
        import pandas as pd

        rows = list(self.trainer.log)
        smooth = moving_average([r[1] for r in rows])
        every = max(1, len(rows) // points)
        return pd.DataFrame({"step": [r[0] for r in rows][::every], "loss": smooth[::every]})
