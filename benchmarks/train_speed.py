"""Training speed of the presets on this machine: steps/s and images/s at 188x252, fp32 against
bf16 + channels_last, in one run (so the ratios are fair), plus a convolution micro-benchmark
that tells what fraction of this CPU's bf16 convolution throughput a training step reaches.

    python3 benchmarks/train_speed.py [--steps 5] [--threads 2] [--presets paper,fast]

Prints a markdown table. Timings are medians over `--steps` steps after one warm-up step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sindiffusion.config import preset
from sindiffusion.device import bf16_fast
from sindiffusion.trainer import Trainer
from sindiffusion.unet import UNet, count_parameters

H, W = 188, 252


def conv_flops(net: UNet, h: int, w: int) -> float:
    """Forward FLOPs of the convolutions and linear layers for one (3, h, w) image, by hooks."""
    total = 0.0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, torch.nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            total += 2.0 * k * out.numel()
        elif isinstance(m, torch.nn.Linear):
            total += 2.0 * m.in_features * out.numel()

    handles = [
        m.register_forward_hook(hook)
        for m in net.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)
    ]
    with torch.no_grad():
        net(torch.zeros(1, 3, h, w), torch.zeros(1))
    for hd in handles:
        hd.remove()
    return total


def time_it(fn, steps: int) -> float:
    fn()  # warm-up (oneDNN picks kernels on the first call)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def conv_peak(bf16: bool, steps: int) -> float:
    """FLOP/s of a plain 3x3 convolution layer, 64->64 channels at 188x252, forward + backward,
    laid out as in training (channels_last under autocast for bf16)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)
    x = torch.randn(4, 64, H, W)
    if bf16:
        conv = conv.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)

    def run():
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            y = conv(x)
        y.float().sum().backward()

    dt = time_it(run, steps)
    return 3 * 2 * 64 * 9 * 64 * 4 * H * W / dt  # backward costs about twice the forward


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--presets", default="paper,fast")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"threads={args.threads}  bf16 fast on this CPU: {bf16_fast(cpu)}  size {W}x{H}\n")
    peak = {bf: conv_peak(bf, args.steps) for bf in (False, True)}
    rows = []
    for name in args.presets.split(","):
        for bf16 in (False, True):
            cfg = preset(name)
            cfg.train.bf16 = bf16
            cfg.train.channels_last = bf16
            cfg.train.crop_size = None
            batch = min(
                cfg.train.batch_size, 4
            )  # the paper's 128 does not fit the time of a benchmark
            cfg.train.batch_size = batch
            image = torch.rand(3, H, W) * 2 - 1
            trainer = Trainer(image, cfg, device="cpu")
            trainer.config.train.scale_min = trainer.config.train.scale_max = 1.0  # fixed size
            dt = time_it(lambda trainer=trainer: trainer.train_step(1e-4), args.steps)
            flops = 3 * conv_flops(UNet(cfg.model), H, W) * batch
            rows.append(
                (
                    name,
                    "bf16+CL" if bf16 else "fp32",
                    batch,
                    count_parameters(trainer.unet),
                    dt,
                    flops / dt,
                    peak[bf16],
                )
            )
    print(
        "| preset | precision | batch | params | s/step | steps/s | images/s | GFLOP/s | % of conv peak |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, prec, batch, params, dt, fps, pk in rows:
        print(
            f"| {name} | {prec} | {batch} | {params / 1e6:.2f} M | {dt:.3f} | {1 / dt:.2f} | {batch / dt:.2f} | {fps / 1e9:.0f} | {100 * fps / pk:.0f} % |"
        )
    print(
        f"\nconv micro-benchmark (3x3, 64->64, 4x{H}x{W}, fwd+bwd): fp32 {peak[False] / 1e9:.0f} GFLOP/s, bf16 {peak[True] / 1e9:.0f} GFLOP/s"
    )
    for name in args.presets.split(","):
        f = {r[1]: r[4] for r in rows if r[0] == name}
        print(f"{name}: bf16+channels_last is {f['fp32'] / f['bf16+CL']:.2f}x faster than fp32")


if __name__ == "__main__":
    main()
