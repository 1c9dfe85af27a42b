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

from .checkpoint import CHECKPOINT, load_checkpoint, read_log
from .config import Config
from .config import preset as preset_config
from .errors import SinDiffusionError
from .guidance import guide
from .image import atomic_write, contact_sheet, list_images, save_image, write_sample_chunks
from .model import SinDiffusion, load
from .report import markdown_table
from .trainer import train

SAMPLE = "sample.png"  # one sample per run (seed 0) for the contact sheet
PAIRS_PER_ROW = 4  # (training image, sample) pairs per row of the contact sheet
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
    preset: str | None = None,
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
    images = list_images(folder)
    names = run_names(images)
    mine = shard(images, *shard_spec)
    if preset is not None and config is not None:
        raise SinDiffusionError("give either a preset or a config, not both.")
    base = config if config is not None else preset_config(preset or "fast", minutes)
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
            model = train(
                path,
                config=base,
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
    write_contact_sheet(folder, runs)
    return rows


def _write_sample(model: SinDiffusion, run_dir: Path) -> Path:
    """One sample (seed 0, the preview's sampler steps) for the contact sheet."""
    steps = model.config.train.preview_steps
    return save_image(model.sample(n=1, seed=0, steps=steps)[0], run_dir / SAMPLE)


def _final_loss(run_dir: Path) -> float:
    losses = [row[1] for row in read_log(run_dir)[-FINAL_LOSS_STEPS:]]
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
    table = markdown_table(
        ["image", "run", "status", "steps", "time (s)", "final loss"],
        [(r.image, r.run, r.status, r.steps, f"{r.seconds:.1f}", f"{r.loss:.4g}") for r in rows],
        align="lll",
    )
    done = [r for r in rows if r.status == "done"]
    return table + (
        f"\n{len(done)} of {len(rows)} runs done, {sum(r.seconds for r in rows) / 60:.1f} "
        f"minutes of training in total; final loss = mean of the last {FINAL_LOSS_STEPS} steps.\n"
    )


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


def write_contact_sheet(
    folder: str | os.PathLike, runs: str | os.PathLike, height: int = 96
) -> Path | None:
    """`runs/contact.png`: each finished run's training image next to its sample, `height` px
    high, PAIRS_PER_ROW pairs per row, the run's name in the corner; None when nothing is done."""
    cells, labels = [], []
    for name in run_names(list_images(folder)).values():
        run_dir = Path(runs) / name
        if (run_dir / SAMPLE).exists():
            cells += [run_dir / "image.png", run_dir / SAMPLE]
            labels += [name, None]
    if not cells:
        return None
    width = 2 * PAIRS_PER_ROW
    rows = [cells[i : i + width] for i in range(0, len(cells), width)]
    names = [labels[i : i + width] for i in range(0, len(labels), width)]
    return save_image(contact_sheet(rows, labels=names, height=height), Path(runs) / "contact.png")


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
    guidance: dict | None = None,
    **sample_kwargs,
) -> list[Path]:
    """Draw `n` samples from every run in `runs` into `out/<run-name>/sample-NNN.png` (and
    grid.png), each chunk written as it is done; `sample_kwargs` go to
    `SinDiffusion.sample_chunks` (size, scale, options or the
    `SamplingOptions` fields as keywords, seed). guidance: keyword arguments of
    `guidance.guide` (e.g. {"class_name": "lakeside"}), built afresh for each run, so each
    run's samples are those it would give alone. Returns the output folders."""
    folders = []
    todo = shard(list_runs(runs), *shard_spec)
    for k, run_dir in enumerate(todo, 1):
        model = load(run_dir, device=device)
        t0 = time.perf_counter()
        steer = guide(**guidance, device=model.device) if guidance else None
        dest = Path(out) / run_dir.name
        write_sample_chunks(model.sample_chunks(n=n, guide=steer, **sample_kwargs), dest)
        folders.append(dest)
        log(f"[{k}/{len(todo)}] {run_dir.name}: {n} samples in {time.perf_counter() - t0:.1f} s")
    return folders
