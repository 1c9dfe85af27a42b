"""Many images: one model per image in a folder, split over workers; samples from every run.

`train_many(folder, runs)` trains `runs/<image-stem>/` for each image, skipping runs that
already reached their target (checkpoint step >= steps, or training time >= the budget) and
resuming unfinished ones, so a killed worker just starts again. `shard=(i, n)` takes every
n-th image starting at i, so n workers (machines, SLURM array tasks) split one dataset
without talking to each other. After its share, each worker writes a summary of *all* the
images' runs (`summary.md`, `summary.csv`) and a contact sheet (`contact.png`); the last
worker to finish writes the complete one. `sample_many(runs, n, out)` draws n samples per run.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import CHECKPOINT, load_checkpoint
from .config import Config
from .errors import SinDiffusionError
from .image import atomic_write, load_image, resize, save_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
SAMPLE = "sample.png"  # one sample per run (seed 0) for the contact sheet
FINAL_LOSS_STEPS = 10  # the summary's final loss is the mean over this many last steps


@dataclass
class RunSummary:
    """One row of the summary table."""

    image: str  # file name in the image folder
    run: str  # run folder name (under the runs folder)
    status: str  # "done", "partial" (unfinished), "missing" (not started) or "failed: ..."
    steps: int = 0  # optimiser steps in the checkpoint
    seconds: float = 0.0  # training time in total, over every resume
    loss: float = math.nan  # mean loss of the last FINAL_LOSS_STEPS logged steps


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n: this worker takes every n-th image starting at i."""
    try:
        i, n = (int(p) for p in text.split("/"))
    except ValueError:
        i, n = -1, 0
    if not 0 <= i < n:
        raise SinDiffusionError(
            f"shard {text!r} is not i/n with 0 <= i < n; write e.g. 0/4 for the first of 4 workers."
        )
    return i, n


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in `folder`, sorted by name; one-line errors for a missing or
    empty folder or one without images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SinDiffusionError(f"{folder} is not a folder; give a folder of images.")
    images = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not images:
        raise SinDiffusionError(
            f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); give a folder of images."
        )
    return images


def run_names(images: list[Path]) -> dict[Path, str]:
    """A run-folder name per image: its stem, or stem_ext where two images share a stem
    (computed over the whole folder, so every shard names runs the same way)."""
    stems = [p.stem for p in images]
    return {p: p.stem if stems.count(p.stem) == 1 else f"{p.stem}_{p.suffix[1:]}" for p in images}


def shard(items: list, index: int, count: int) -> list:
    """Every `count`-th item starting at `index`: the shards of 0..count-1 partition `items`."""
    return items[index::count]


def _finished(run_dir: Path, steps: int, minutes: float | None) -> tuple[bool, bool]:
    """(has a checkpoint, reached its target) for a run folder."""
    if not (run_dir / CHECKPOINT).exists():
        return False, False
    ckpt = load_checkpoint(run_dir)
    if minutes is not None:
        return True, ckpt.elapsed >= minutes * 60.0
    return True, ckpt.step >= steps


def train_many(
    folder: str | os.PathLike,
    runs: str | os.PathLike,
    shard_spec: tuple[int, int] = (0, 1),
    preset: str = "fast",
    config: Config | None = None,
    steps: int | None = None,
    minutes: float | None = None,
    max_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[RunSummary]:
    """Train one model per image of `folder` (this worker's shard) into `runs/<name>/`.

    Finished runs are skipped, unfinished ones resumed. `steps`/`minutes` are per image
    (default: the config's steps). A bad image is reported and skipped; the others go on.
    Returns the summary rows of every image in the folder (all shards), also written to
    `runs/summary.md` and `runs/summary.csv`, with a contact sheet `runs/contact.png`.
    """
    from .api import _preset, load
    from .api import train as train_one

    images = list_images(folder)
    names = run_names(images)
    mine = shard(images, *shard_spec)
    base = config if config is not None else _preset(preset)
    target = steps if steps is not None else base.train.steps
    runs = Path(runs)
    failed: dict[str, str] = {}
    for k, path in enumerate(mine, 1):
        name = names[path]
        run_dir = runs / name
        head = f"[{k}/{len(mine)}] {name}"
        try:
            started, done = _finished(run_dir, target, minutes)
            if done:
                if not (run_dir / SAMPLE).exists():  # killed between training and its sample
                    _write_sample(load(run_dir, device=device), run_dir)
                log(f"{head}: finished earlier, skipped")
                continue
            t0 = time.perf_counter()
            model = train_one(
                path,
                config=Config.from_dict(base.to_dict()),  # a fresh copy per run
                out=run_dir,
                steps=None if minutes is not None else target,
                minutes=minutes,
                seed=seed,
                max_size=max_size,
                resume=started,
                device=device,
                progress=progress,
            )
            _write_sample(model, run_dir)
            log(
                f"{head}: {'resumed' if started else 'trained'} to step {model.step} "
                f"in {time.perf_counter() - t0:.0f} s"
            )
        except SinDiffusionError as e:
            failed[name] = str(e)
            log(f"{head}: error: {e}")
    rows = summarize(folder, runs, failed)
    write_summary(rows, runs)
    contact_sheet(folder, runs)
    return rows


def _write_sample(model, run_dir: Path) -> Path:
    """One sample (seed 0, the preview's sampler steps) for the contact sheet."""
    steps = model.config.train.preview_steps
    return save_image(model.sample(n=1, seed=0, steps=steps)[0], run_dir / SAMPLE)


def _final_loss(run_dir: Path) -> float:
    lines = (
        (run_dir / "log.csv").read_text().splitlines()[1:] if (run_dir / "log.csv").exists() else []
    )
    losses = [float(line.split(",")[1]) for line in lines[-FINAL_LOSS_STEPS:]]
    return sum(losses) / len(losses) if losses else math.nan


def summarize(
    folder: str | os.PathLike,
    runs: str | os.PathLike,
    failed: dict[str, str] | None = None,
) -> list[RunSummary]:
    """A row per image of `folder`: its run's steps, training time and final loss.

    A run counts as "done" when it has a sample (written when its training finished).
    """
    images = list_images(folder)
    names = run_names(images)
    runs = Path(runs)
    rows = []
    for path in images:
        name = names[path]
        run_dir = runs / name
        row = RunSummary(image=path.name, run=name, status="missing")
        if (run_dir / CHECKPOINT).exists():
            try:
                ckpt = load_checkpoint(run_dir)
                row.steps, row.seconds = ckpt.step, ckpt.elapsed
                row.loss = _final_loss(run_dir)
                row.status = "done" if (run_dir / SAMPLE).exists() else "partial"
            except SinDiffusionError as e:
                row.status = f"failed: {e}"
        if failed and name in failed:
            row.status = f"failed: {failed[name]}"
        rows.append(row)
    return rows


def format_table(rows: list[RunSummary]) -> str:
    """The summary as a Markdown table."""
    lines = [
        "| image | run | status | steps | time (s) | final loss |",
        "|---|---|---|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.image} | {r.run} | {r.status} | {r.steps} | {r.seconds:.1f} | {r.loss:.4g} |"
        )
    done = [r for r in rows if r.status == "done"]
    lines.append("")
    lines.append(
        f"{len(done)} of {len(rows)} runs done, {sum(r.seconds for r in rows) / 60:.1f} "
        f"minutes of training in total; final loss = mean of the last {FINAL_LOSS_STEPS} steps."
    )
    return "\n".join(lines) + "\n"


def write_summary(rows: list[RunSummary], runs: str | os.PathLike) -> tuple[Path, Path]:
    """Write `runs/summary.md` and `runs/summary.csv` atomically; returns their paths."""
    runs = Path(runs)
    md, csv_path = runs / "summary.md", runs / "summary.csv"
    text = format_table(rows)
    atomic_write(md, lambda tmp: Path(tmp).write_text(text))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["image", "run", "status", "steps", "seconds", "final_loss"])
    for r in rows:
        writer.writerow([r.image, r.run, r.status, r.steps, f"{r.seconds:.3f}", f"{r.loss:.6g}"])
    atomic_write(csv_path, lambda tmp: Path(tmp).write_text(buf.getvalue()))
    return md, csv_path


def contact_sheet(
    folder: str | os.PathLike, runs: str | os.PathLike, height: int = 96, pairs_per_row: int = 4
) -> Path | None:
    """`runs/contact.png`: each finished run's training image next to its sample, `height` px
    high, `pairs_per_row` pairs per row, with the run's name above; None when nothing is done."""
    from PIL import Image, ImageDraw

    from .image import tensor_to_pil

    names = run_names(list_images(folder))
    cells = []
    for name in names.values():
        run_dir = Path(runs) / name
        if not (run_dir / SAMPLE).exists():
            continue
        pair = []
        for file in (run_dir / "image.png", run_dir / SAMPLE):
            img = load_image(file)
            w = max(1, round(img.shape[-1] * height / img.shape[-2]))
            pair.append(tensor_to_pil(resize(img, (height, w))))
        cells.append((name, pair))
    if not cells:
        return None
    pad, label = 6, 14
    cell_w = max(a.width + b.width for _, (a, b) in cells) + 3 * pad
    cell_h = height + label + 2 * pad
    cols = min(pairs_per_row, len(cells))
    rows = math.ceil(len(cells) / cols)
    sheet = Image.new("RGB", (cols * cell_w, rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, (a, b)) in enumerate(cells):
        x, y = (i % cols) * cell_w + pad, (i // cols) * cell_h + pad
        draw.text((x, y), name, fill="black")
        sheet.paste(a, (x, y + label))
        sheet.paste(b, (x + a.width + pad, y + label))
    return save_image(sheet, Path(runs) / "contact.png")


def list_runs(runs: str | os.PathLike) -> list[Path]:
    """The run folders (holding a checkpoint) directly in `runs`, sorted by name."""
    runs = Path(runs)
    if not runs.is_dir():
        raise SinDiffusionError(f"{runs} is not a folder; give the --out folder of train-many.")
    found = sorted(p for p in runs.iterdir() if (p / CHECKPOINT).is_file())
    if not found:
        raise SinDiffusionError(
            f"{runs} holds no run folders with a {CHECKPOINT}; run 'sindiffusion train-many' first."
        )
    return found


def sample_many(
    runs: str | os.PathLike,
    n: int,
    out: str | os.PathLike,
    shard_spec: tuple[int, int] = (0, 1),
    device: str | torch.device | None = None,
    log: Callable[[str], None] = print,
    guide: Callable | None = None,
    **sample_kwargs,
) -> list[Path]:
    """Draw `n` samples from every run in `runs` into `out/<run-name>/sample-NNN.png` (and
    grid.png); `sample_kwargs` go to `SinDiffusion.sample` (size, scale, steps, sampler, seed).
    guide: model -> a wrapped denoiser for that model (e.g. class guidance), or None.
    Returns the output folders."""
    from .api import load
    from .cli import write_samples

    folders = []
    todo = shard(list_runs(runs), *shard_spec)
    for k, run_dir in enumerate(todo, 1):
        model = load(run_dir, device=device)
        t0 = time.perf_counter()
        denoiser = guide(model) if guide is not None else None
        images = model.sample(n=n, denoiser=denoiser, **sample_kwargs)
        dest = Path(out) / run_dir.name
        write_samples(images, dest)
        folders.append(dest)
        log(f"[{k}/{len(todo)}] {run_dir.name}: {n} samples in {time.perf_counter() - t0:.1f} s")
    return folders
