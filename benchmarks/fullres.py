"""Photos at their own resolution (issue #40): train on a large photo, sample at its full size,
and compare with the same photo trained at 250 px and enlarged (by our `upscale`, and bicubic).

    python3 benchmarks/fullres.py /work/hd/00142.png --max-size 1024 --minutes 10
    python3 benchmarks/fullres.py eifeel.jpg --max-size 4000 --minutes 30 --k 1 --no-upscale

For each image (the HD set is the GPDM repository's `data/images/SR/`, see docs/full-resolution.md):

- trains (or reuses, in --out/cache) a run with `sindiffusion train IMAGE --max-size M
  --minutes X` in a child process: its wall time (previews included) and peak memory;
- draws --k samples at the full size in a child process: seconds per sample (after a warm-up
  at 256 px) and peak memory;
- trains (or reuses) a 250 px run (--low-minutes), draws --k samples at 250 px and enlarges
  them to the full size with `apps.upscale` (the 250 px model draws the detail) and bicubic;
- scores the three against the photo at its working size: SIFID-E on full-resolution
  features, patch NN distance (7 px patches of the photo, the fakes' every 32 px), pixel
  diversity, copy 32 taken at 250 px (where the 250 px figures are taken: regions copied,
  not texture), and detail (mean |Laplacian| over the photo's);
- writes table.md, per_image.csv and crops.png: 100 % crops, photo | ours | upscale | bicubic.

Settings under test go in with --set (JSON as `sampling_sweep.py` takes it: `SamplingConfig`
fields, "patch" taking `PatchConfig` fields, or a user's sampling options such as
{"steps": 4}), applied to the full-size run's samples only.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from sampling_sweep import split_setting, with_setting

import sindiffusion
from sindiffusion import apps
from sindiffusion.checkpoint import load_checkpoint
from sindiffusion.config import preset as preset_config
from sindiffusion.image import (
    atomic_write,
    from_uint8,
    load_image,
    make_grid,
    resize,
    save_image,
    to_uint8,
)
from sindiffusion.metrics import copy_fraction, pixel_diversity
from sindiffusion.metrics.sifid import sifid
from sindiffusion.report import markdown_table, mean_std

GB = 1024**3
LOW = 250  # the working size every other benchmark uses


def run_measured(cmd: list[str], threads: int) -> tuple[float, float, str]:
    """(wall seconds, peak resident GB, stdout) of `cmd` in a child process: wait4 reports
    that child's own peak, not the largest of all children so far."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:  # a file, not a pipe: wait4 cannot drain one
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        text = out.read()
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (status {status}); run it alone to see why.")
    return wall, usage.ru_maxrss * 1024 / GB, text


def train_run(image: str, folder: Path, max_size: int, minutes: float, threads: int) -> dict:
    """Train (or reuse) a run; its wall seconds and peak GB are kept in folder/measured.json."""
    measured = folder / "measured.json"
    if measured.exists():
        return json.loads(measured.read_text())
    cmd = [sys.executable, "-m", "sindiffusion", "train", image, "--out", str(folder),
           "--max-size", str(max_size), "--minutes", str(minutes), "--quiet", "--seed", "0"]  # fmt: skip
    wall, peak, _ = run_measured(cmd, threads)
    steps = len((folder / "log.csv").read_text().splitlines()) - 1
    info = {"train_s": wall, "train_gb": peak, "steps": steps}
    measured.write_text(json.dumps(info))
    return info


def child_sample(run: str, k: int, out: str, settings: str) -> None:
    """Child mode: k samples of the run at its size, timed after a small warm-up, saved."""
    setting = json.loads(settings)
    # A cached run samples with today's settings of its preset (as the quality benchmark's).
    ckpt = load_checkpoint(run)
    today = preset_config(ckpt.config.preset).sampling
    ckpt = dataclasses.replace(ckpt, config=dataclasses.replace(ckpt.config, sampling=today))
    model = sindiffusion.SinDiffusion.from_checkpoint(with_setting(ckpt, setting))
    options = split_setting(setting)[1]
    model.sample(1, size=(256, 256), seed=999, **options)  # oneDNN picks its kernels first
    times = []
    for i in range(k):
        t0 = time.perf_counter()
        x = model.sample(1, seed=i, **options)
        times.append(time.perf_counter() - t0)
        save_image(x[0], Path(out) / f"{i}.png")
    print(json.dumps({"s_per_sample": sum(times) / k}))


def detail(x: torch.Tensor) -> float:
    """Mean |Laplacian| of images (N, 3, H, W) or (3, H, W): how much fine detail they hold."""
    x = x.reshape(-1, 1, *x.shape[-2:]).float()
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])[None, None]
    return float(F.conv2d(x, kernel).abs().mean())


def hd_scores(real: torch.Tensor, fakes: torch.Tensor) -> dict[str, float]:
    """The full-resolution scores of fakes (N, 3, H, W) against real (3, H, W), in [-1, 1]."""
    small = resize(real, _low_size(real))
    small_fakes = resize(fakes, _low_size(real))
    out = {
        "sifid_e": float(sifid(real, fakes).mean()),
        "patch_nn": patch_nn(real, fakes),
        "copy_32": float(copy_fraction(small, small_fakes).mean()),
        "detail": detail(fakes) / detail(real),
    }
    if len(fakes) >= 2:
        out["pixel_diversity"] = pixel_diversity(real, fakes)
    return out


def patch_nn(real: torch.Tensor, fakes: torch.Tensor, queries: int = 1024) -> float:
    """Mean RMS distance from about `queries` 7 px patches of each fake (on a grid) to the
    nearest 7 px patch of the real image: every patch of a photo up to 1.2 megapixels, every
    other (or third) patch of a larger one, so memory and time stay bounded; the same
    reference patches for every method of an image, so they compare."""
    h, w = real.shape[-2:]
    ref_stride = 1 if h * w <= 1_200_000 else 2 if h * w <= 5_000_000 else 3
    step = max(7, round((h * w / queries) ** 0.5))
    ref = F.unfold(real[None].float(), 7, stride=ref_stride)[0].T  # (R, 147)
    ref_sq = ref.square().sum(1)
    values = []
    for fake in fakes:
        q = F.unfold(fake[None].float(), 7, stride=step)[0].T
        best = torch.cat([
            (c.square().sum(1, keepdim=True) - 2 * c @ ref.T + ref_sq).min(1).values
            for c in q.split(64)
        ])  # fmt: skip
        values.append(float((best.clamp(min=0) / ref.shape[1]).sqrt().mean()))
    return sum(values) / len(values)


def enlarge(model: sindiffusion.SinDiffusion, image: torch.Tensor, size, seed: int):
    """`image` (3, h, w) enlarged to `size` by `apps.upscale` in steps of at most 4x."""
    while max(image.shape[-2:]) < max(size):
        factor = min(4.0, max(size) / max(image.shape[-2:]))
        image = apps.upscale(model, factor=factor, image=image, n=1, seed=seed)[0]
    return resize(image, size)


def _low_size(img: torch.Tensor) -> tuple[int, int]:
    h, w = img.shape[-2:]
    s = LOW / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def load_samples(folder: Path, k: int) -> torch.Tensor:
    return torch.stack([load_image(folder / f"{i}.png") for i in range(k)])


def _cell(values: list[float]) -> str:
    """Mean ± std over images (the mean alone for one image)."""
    m, sd = mean_std(values)
    return f"{m:.3g}" if len(values) == 1 else f"{m:.3g} ± {sd:.2g}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fullres.py", description=__doc__.split("\n")[0])
    p.add_argument("images", nargs="*", help="photos")
    p.add_argument("--max-size", type=int, default=1024, help="long side of the full run (1024)")
    p.add_argument("--minutes", type=float, default=10.0, help="its training budget (10)")
    p.add_argument("--low-minutes", type=float, default=5.0, help="the 250 px run's (5)")
    p.add_argument("--k", type=int, default=4, help="samples per method (4)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (2)")
    p.add_argument("--set", default="{}", help="sampling settings of the full run (JSON)")
    p.add_argument(
        "--no-upscale",
        action="store_true",
        help="leave out the 250 px model's `upscale` (at 4000 px it takes longer than ours)",
    )
    p.add_argument("--out", default="bench-out/fullres", help="output folder")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        run, k, out, settings = args.child
        child_sample(run, int(k), out, settings)
        return 0

    out = Path(args.out)
    rows, crops = [], []
    for image in args.images:
        name = Path(image).stem
        full_run = out / "cache" / f"{name}-{args.max_size}-{args.minutes:g}min"
        low_run = out / "cache" / f"{name}-{LOW}-{args.low_minutes:g}min"
        print(f"{name}: training at {args.max_size} px ...", flush=True)
        trained = train_run(image, full_run, args.max_size, args.minutes, args.threads)
        low = train_run(image, low_run, LOW, args.low_minutes, args.threads)
        tag = f"{abs(hash(args.set)) % 10**8:08d}"
        ours_dir = out / "samples" / name / f"ours-{tag}"
        ours_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, __file__, "--threads", str(args.threads),
               "--child", str(full_run), str(args.k), str(ours_dir), args.set]  # fmt: skip
        _, sample_gb, text = run_measured(cmd, args.threads)
        sample_s = json.loads(text.strip().splitlines()[-1])["s_per_sample"]

        low_model = sindiffusion.load(low_run)
        real = load_image(image, max_size=args.max_size)
        h, w = real.shape[-2:]
        low_samples = low_model.sample(args.k, seed=0)
        bicubic = resize(low_samples, (h, w), mode="bicubic").clamp(-1, 1)
        ours = load_samples(ours_dir, args.k)
        methods = {f"ours at {args.max_size} px": (ours, trained, sample_s, sample_gb)}
        if not args.no_upscale:
            t0 = time.perf_counter()
            up = [enlarge(low_model, s, (h, w), i) for i, s in enumerate(low_samples)]
            up_s = (time.perf_counter() - t0) / args.k
            methods[f"{LOW} px + upscale"] = (torch.stack(up), low, up_s, float("nan"))
        methods[f"{LOW} px + bicubic"] = (bicubic, low, 0.0, float("nan"))
        for method, (fakes, run_info, secs, gb) in methods.items():
            fakes = from_uint8(to_uint8(fakes))  # scored as saved: 8 bits
            s = hd_scores(real, fakes)
            row = {"image": name, "size": f"{w}x{h}", "method": method,
                   "train_min": run_info["train_s"] / 60, "train_gb": run_info["train_gb"],
                   "s_per_sample": secs, "sample_gb": gb, **s}  # fmt: skip
            rows.append(row)
            print("  " + "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                   for k, v in row.items()), flush=True)  # fmt: skip
        cy, cx, c = h // 2 - 128, w // 2 - 128, 256
        crops.append(make_grid([real[:, cy : cy + c, cx : cx + c]]
                               + [m[0][0][:, cy : cy + c, cx : cx + c] for m in methods.values()],
                               nrow=1 + len(methods)))  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    keys = ["sifid_e", "patch_nn", "pixel_diversity", "copy_32", "detail",
            "train_min", "train_gb", "s_per_sample", "sample_gb"]  # fmt: skip
    table = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        table.append([method] + [_cell([r.get(k, float("nan")) for r in mine]) for k in keys])
    text = markdown_table(["method", *keys], table)
    atomic_write(out / "table.md", lambda t: Path(t).write_text(text + "\n"))
    with open(out / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if crops:
        save_image(make_grid(crops, nrow=1), out / "crops.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
