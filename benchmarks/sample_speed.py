"""The speed and memory targets of trained runs, in one table: one sample alone at the training
image's size (the median of --repeat after a warm-up), one large sample (default 1024x1024)
with its peak memory, and the peak memory of training on a run's image.

    python3 benchmarks/sample_speed.py bench-out/cache/fast-5min/3 bench-out/cache/fast-5min/7
    python3 benchmarks/sample_speed.py RUN --repeat 9 --large 2048x1024 --train-steps 50
    python3 benchmarks/sample_speed.py --zero-training ../shared/data/places50/7.jpg

With --zero-training the arguments are images, sampled with `sindiffusion.zero_training`: one
sample, a batch of 10 (seconds per sample), and 10 samples through the command line (the wall
time of `sindiffusion sample IMAGE --zero-training --n 10`, start-up included); target
(issue #30): <= 0.5 s per 250x188 sample on every CPU.

Targets (issue #4): a 250 px sample in <= 2 s; a 1024x1024 sample within 8 GB; training a
250 px image within 4 GB. The large sample and the training run each get a fresh process, so
the peak resident memory reported is that job's own (Python and torch included), not what an
earlier job in this process left behind. Writes the table to --out (default
bench-out/sample-speed/table.md) and prints it.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import sindiffusion
from sindiffusion.image import atomic_write, parse_size

GB = 1024**3


def peak_gb() -> float:
    """Peak memory of this process so far, in GB: resident memory (Linux reports kB), or on
    CUDA the device memory torch allocated."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def time_samples(model: sindiffusion.SinDiffusion, repeat: int) -> list[float]:
    """Seconds for each of `repeat` single samples at the model's size, after one warm-up."""
    model.sample(1, seed=999)  # warm-up: oneDNN picks its kernels on the first call
    times = []
    for i in range(repeat):
        t0 = time.perf_counter()
        model.sample(1, seed=i)
        times.append(time.perf_counter() - t0)
    return times


def open_model(source: str, zero: bool) -> sindiffusion.SinDiffusion:
    """A trained run folder, or with `zero` an image sampled without training."""
    return sindiffusion.zero_training(source) if zero else sindiffusion.load(source)


def cli_seconds(image: str, n: int) -> float:
    """Wall seconds of `sindiffusion sample IMAGE --zero-training --n n`, start-up included."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "sindiffusion", "sample", image, "--zero-training",
               "--n", str(n), "--seed", "0", "--out", tmp]  # fmt: skip
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        return time.perf_counter() - t0


def child_large(run: str, size: str, zero: bool = False) -> dict:
    h, w = parse_size(size)
    model = open_model(run, zero)
    t0 = time.perf_counter()
    x = model.sample(1, size=(h, w), seed=0)
    sec = time.perf_counter() - t0
    return {"seconds": sec, "peak_gb": peak_gb(), "finite": bool(torch.isfinite(x).all())}


def child_train(run: str, steps: int) -> dict:
    """Train the run's own config on its image for `steps` steps (nothing written to disk)."""
    model = sindiffusion.load(run)
    t0 = time.perf_counter()
    sindiffusion.train(model.image, config=model.config, steps=steps, progress=False)
    return {"seconds": time.perf_counter() - t0, "peak_gb": peak_gb()}


def in_child(args: list[str], threads: int) -> dict:
    """Run this script's `--child` mode in a fresh Python and read its JSON answer."""
    cmd = [sys.executable, __file__, "--threads", str(threads), "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("runs", nargs="*", help="trained run folders (images with --zero-training)")
    p.add_argument(
        "--zero-training", action="store_true", help="the arguments are images: time zero-training"
    )
    p.add_argument("--repeat", type=int, default=5, help="single samples timed per run")
    p.add_argument("--large", default="1024x1024", help="size of the large sample; 0: skip")
    p.add_argument("--train-steps", type=int, default=30, help="training steps timed; 0: skip")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--out", default="bench-out/sample-speed")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        kind, run, value = args.child
        if kind == "train":
            answer = child_train(run, int(value))
        else:
            answer = child_large(run, value, zero=kind == "large-zero")
        print(json.dumps(answer))
        return 0
    if not args.runs:
        p.error("give at least one trained run folder (or images with --zero-training)")
    if args.zero_training:
        return zero_table(args)

    lines = [
        "| run | size (W x H) | training steps | one sample, median (s) | min-max (s) |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    first = None  # the first run's model: its size and preset name the training row
    for run in args.runs:
        model = sindiffusion.load(run)
        first = first or model
        h, w = model.size
        times = time_samples(model, args.repeat)
        lines.append(
            f"| {run} | {w}x{h} | {model.step} | {statistics.median(times):.2f} "
            f"| {min(times):.2f}-{max(times):.2f} |"
        )
        print(lines[-1], flush=True)
    lines += ["", "| job (fresh process) | seconds | peak memory (GB) | target |", "| --- | ---: | ---: | --- |"]  # fmt: skip
    run = args.runs[0]
    if args.large != "0":
        r = in_child(["large", run, args.large], args.threads)
        if not r["finite"]:
            raise SystemExit(f"the {args.large} sample of {run} is not finite")
        lines.append(
            f"| one {args.large} sample of {run} | {r['seconds']:.1f} | {r['peak_gb']:.2f} "
            "| <= 8 GB |"
        )
        print(lines[-1], flush=True)
    if args.train_steps > 0:
        h, w = first.size
        r = in_child(["train", run, str(args.train_steps)], args.threads)
        lines.append(
            f"| training {args.train_steps} steps, {first.config.preset} preset, {w}x{h} "
            f"| {r['seconds']:.1f} | {r['peak_gb']:.2f} | <= 4 GB |"
        )
        print(lines[-1], flush=True)
    return write_table(lines, args)


def cpu_name() -> str:
    """The CPU's model name (Linux), else the machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def write_table(lines: list[str], args: argparse.Namespace) -> int:
    """Print the table with its footnote and write it to --out/table.md."""
    cpu = cpu_name()
    lines.append(
        f"\n{args.threads} threads; {args.repeat} single samples per row after one warm-up; "
        f"torch {torch.__version__}; {cpu}."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "table.md", lambda tmp: Path(tmp).write_text(text))
    print(f"wrote {out / 'table.md'}")
    return 0


def zero_table(args: argparse.Namespace) -> int:
    """The zero-training table: per image one sample, a batch of 10 and the CLI's 10; then one
    large sample of the first image in a fresh process."""
    lines = [
        "| image | size (W x H) | one sample, median (s) | in a batch of 10 (s / sample) "
        "| CLI, 10 samples (s, start-up included) |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for image in args.runs:
        model = open_model(image, zero=True)
        h, w = model.size
        one = statistics.median(time_samples(model, args.repeat))
        t0 = time.perf_counter()
        model.sample(10, seed=0)
        batch = (time.perf_counter() - t0) / 10
        lines.append(
            f"| {image} | {w}x{h} | {one:.2f} | {batch:.2f} | {cli_seconds(image, 10):.1f} |"
        )
        print(lines[-1], flush=True)
    if args.large != "0":
        r = in_child(["large-zero", args.runs[0], args.large], args.threads)
        lines += ["", f"One {args.large} zero-training sample of {args.runs[0]} (fresh process): "
                  f"{r['seconds']:.1f} s, {r['peak_gb']:.2f} GB peak."]  # fmt: skip
    return write_table(lines, args)


if __name__ == "__main__":
    raise SystemExit(main())
