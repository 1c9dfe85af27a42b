"""Scaling-out benchmark: `train-many` on 10 images with 1 and 2 workers, and the equivalence
of data-parallel training (1 process vs 2 gloo ranks under torchrun).

    python3 benchmarks/many.py                       # Places50's first 10 images, 64 px
    python3 benchmarks/many.py --images DIR --steps 50 --max-size 64

Every worker runs with one thread (OMP_NUM_THREADS=1), so "2 workers" is two shard
processes (`--shard 0/2`, `--shard 1/2`) started at once on two cores. The model is a small
test-sized UNet (8 base channels) so the whole benchmark takes a few minutes on a CPU; it
measures the orchestration and the parallel speed-up, not the quality.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from sindiffusion.config import Config, DiffusionConfig, ModelConfig, SamplingConfig, TrainConfig

PLACES50 = Path("/work/shared/data/places50")


def small_config(steps: int, max_size: int) -> Config:
    return Config(
        preset="bench-small",
        model=ModelConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4),
        diffusion=DiffusionConfig(parameterization="edm"),
        sampling=SamplingConfig(sampler="dpmpp_2m", steps=8),
        train=TrainConfig(
            steps=steps,
            batch_size=4,
            lr=2e-3,
            ema_decay=0.99,
            checkpoint_every=max(1, steps // 2),
            preview_every=0,
            preview_steps=8,
            max_size=max_size,
        ),
    )


def env1() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def train_many_time(images: Path, runs: Path, config: Path, steps: int, workers: int) -> float:
    cmd = [sys.executable, "-m", "sindiffusion", "train-many", str(images), "--out", str(runs)]
    cmd += ["--config", str(config), "--steps", str(steps), "--quiet"]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen([*cmd, "--shard", f"{i}/{workers}"], env=env1(), stdout=subprocess.DEVNULL)
        for i in range(workers)
    ]
    codes = [p.wait() for p in procs]
    assert codes == [0] * workers, codes
    return time.perf_counter() - t0


def equivalence(image: Path, config: Path, steps: int, tmp: Path) -> tuple[float, float]:
    """Max abs difference of the weights and of their EMA: 2 gloo ranks vs 1 process."""
    from sindiffusion.checkpoint import load_checkpoint

    ddp, one = tmp / f"ddp{steps}", tmp / f"one{steps}"
    common = [str(image), "--config", str(config), "--steps", str(steps)]
    common += ["--device", "cpu", "--quiet"]
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + ["-m", "sindiffusion", "train", *common, "--out", str(ddp)],
        env=env1(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run(
        [sys.executable, "-m", "sindiffusion", "train", *common, "--out", str(one)],
        env=env1(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    a, b = load_checkpoint(ddp), load_checkpoint(one)
    dm = max((a.model[k] - b.model[k]).abs().max().item() for k in a.model)
    de = max((a.ema[k] - b.ema[k]).abs().max().item() for k in a.ema)
    return dm, de


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=Path, default=PLACES50, help="folder of images (first 10)")
    ap.add_argument("--steps", type=int, default=50, help="steps per image")
    ap.add_argument("--max-size", type=int, default=64, help="long side of each image")
    ap.add_argument("--equivalence-steps", default="10,50", help="K values for 1 vs 2 ranks")
    args = ap.parse_args()
    torch.set_num_threads(1)

    tmp = Path(tempfile.mkdtemp(prefix="bench-many-"))
    try:
        images = tmp / "images"
        images.mkdir()
        files = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        for p in files[:10]:
            shutil.copy(p, images / p.name)
        config = tmp / "config.json"
        config.write_text(small_config(args.steps, args.max_size).to_json())
        n = len(list(images.iterdir()))

        rows = []
        for workers in (1, 2):
            dt = train_many_time(images, tmp / f"runs{workers}", config, args.steps, workers)
            rows.append((workers, dt))
        t1 = rows[0][1]
        load = os.getloadavg()[0]  # other work on the machine skews the 2-worker figure
        print(f"\n## train-many: {n} images, {args.steps} steps each, {args.max_size} px")
        print(f"({os.cpu_count()} CPUs, load average {load:.1f} at the end)\n")
        print("| workers | wall time (s) | speed-up |")
        print("|--:|--:|--:|")
        for workers, dt in rows:
            print(f"| {workers} | {dt:.1f} | {t1 / dt:.2f}x |")

        print("\n## data-parallel equivalence: 2 gloo ranks vs 1 process, same global batch\n")
        print("| steps K | max abs weight diff | max abs EMA diff |")
        print("|--:|--:|--:|")
        first = sorted(images.iterdir())[0]
        for k in (int(s) for s in args.equivalence_steps.split(",")):
            dm, de = equivalence(first, config, k, tmp)
            print(f"| {k} | {dm:.2e} | {de:.2e} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
