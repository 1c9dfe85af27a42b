"""The capabilities beyond the paper (issue #30), measured on real photos with trained runs.

    python3 benchmarks/beyond.py --cache bench-out/cache/fast-5min --images 26,35,44 \\
        --analogy 41 --picture docs/beyond.jpg

For each Places50 image of --images whose trained run lies in --cache/<n> (the quality
benchmark's runs), with --n samples each (seed 0):

- retarget: twice as wide, strength 0.6, against a fresh sample of the same size: the edge
  correlation with the stretched image (`metrics.edge_correlation`; structure kept) and
  SIFID-E against the training image (patches still the image's own);
- tile: `--tile` samples against plain ones: the seam score of the sample laid 2 x 2
  (`metrics.tile_seam_score`; 1 = invisible) and SIFID-E;
- upscale: the image shrunk to half size, then `upscale --factor 2`: PSNR and SIFID-E against
  the real image, beside a bicubic enlargement; once with the trained run (it has seen the
  full-resolution patches) and once with the half-size image's own zero-training model (only
  its own patches, as SinGAN's super-resolution);
- analogy: the layout of Places50 #--analogy painted with this run's patches (strength 0.6): edge
  correlation with the layout image, SIFID-E against this run's image;
- animate: --frames frames of a loop with 3 keyframes: change per frame and flicker
  (`metrics.flicker`; about 1.7 for unrelated frames), beside as many independent samples;
- mirror: `--mirror x`: the largest difference between a sample and its own flip.

Then one model of two images (the first two of --images, zero-training: no training needed)
and the fraction of its samples' 32 px windows closer to each image. Prints a table per
capability and, with --picture, writes one contact sheet (a row per capability).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch
from quality import DEFAULT_DATA, list_images, parse_images

from sindiffusion import apps, load, zero_training
from sindiffusion.image import contact_sheet, load_image, resize
from sindiffusion.metrics import edge_correlation, flicker, frame_change, tile_seam_score
from sindiffusion.metrics.sifid import sifid
from sindiffusion.report import markdown_table


def sifid_e(real: torch.Tensor, fakes: torch.Tensor) -> float:
    return float(sifid(real, fakes).mean())


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.float() - b.float()).pow(2).mean().item()
    return 10 * math.log10(4 / max(mse, 1e-12))


def tiled(x: torch.Tensor) -> torch.Tensor:
    return x.repeat(1, 2, 2)


def measure(model, real: torch.Tensor, layout: torch.Tensor, args) -> tuple[dict, dict]:
    """All the figures for one trained run, and the pictures for the contact sheet."""
    n, h, w = args.n, *real.shape[-2:]
    fig, pics = {}, {}

    wide = (h, 2 * w)
    stretched = resize(real, wide, mode="bicubic").clamp(-1, 1)
    kept = apps.retarget(model, wide, strength=0.6, n=n, seed=0)
    fresh = model.sample(n=n, size=wide, seed=0)
    fig["retarget"] = {
        "edge corr., retargeted": statistics.mean(edge_correlation(x, stretched) for x in kept),
        "edge corr., fresh sample": statistics.mean(edge_correlation(x, stretched) for x in fresh),
        "SIFID-E, retargeted": sifid_e(real, kept),
        "SIFID-E, fresh sample": sifid_e(real, fresh),
    }
    pics["retarget"] = [real, kept[0], fresh[0]]

    tiles = model.sample(n=n, tile=True, seed=0)
    plain = model.sample(n=n, seed=0)
    fig["tile"] = {
        "seam, --tile": statistics.mean(tile_seam_score(x) for x in tiles),
        "seam, plain": statistics.mean(tile_seam_score(x) for x in plain),
        "seam, the photo": tile_seam_score(real),
        "SIFID-E, --tile": sifid_e(real, tiles),
        "SIFID-E, plain": sifid_e(real, plain),
    }
    pics["tile"] = [tiled(tiles[0]), tiled(plain[0])]

    low = resize(real, (h // 2, w // 2))
    bicubic = resize(low, (h, w), mode="bicubic").clamp(-1, 1)
    # upscale makes round(factor * side): crop to the real image's size (odd sides).
    up = apps.upscale(model, 2.0, image=low, n=n, seed=0)[..., :h, :w]
    own = apps.upscale(zero_training(low), 2.0, n=n, seed=0)[..., :h, :w]
    fig["upscale"] = {
        "PSNR, bicubic": psnr(bicubic, real),
        "PSNR, trained run": statistics.mean(psnr(x, real) for x in up),
        "PSNR, half-size image's own": statistics.mean(psnr(x, real) for x in own),
        "SIFID-E, bicubic": sifid_e(real, bicubic[None]),
        "SIFID-E, trained run": sifid_e(real, up),
        "SIFID-E, half-size image's own": sifid_e(real, own),
    }
    pics["upscale"] = [bicubic, up[0], own[0], real]

    painted = apps.analogy(layout, model, n=n, seed=0)
    fig["analogy"] = {
        "edge corr. with the layout": statistics.mean(edge_correlation(x, layout) for x in painted),
        "SIFID-E against the texture": sifid_e(real, painted),
        "SIFID-E of the layout itself": sifid_e(real, layout[None]),
    }
    pics["analogy"] = [layout, painted[0], real]

    frames = apps.animate(model, frames=args.frames, keyframes=3, seed=0)
    independent = model.sample(n=args.frames, seed=1)
    fig["animate"] = {
        "change per frame": frame_change(frames),
        "flicker": flicker(frames),
        "change, independent": frame_change(independent),
        "flicker, independent": flicker(independent),
    }
    pics["animate"] = list(frames[:: max(1, args.frames // 4)][:4])

    sym = model.sample(n=n, mirror="x", seed=0)
    fig["mirror"] = {"largest difference from its flip": (sym - sym.flip(-1)).abs().max().item()}
    pics["mirror"] = [sym[0], sym[1 % n]]
    return fig, pics


def nearest_share(samples: torch.Tensor, a: torch.Tensor, b: torch.Tensor, size: int = 32):
    """The fraction of the samples' size x size windows (stride size/2) whose nearest window
    (RMS) is in image a rather than b."""

    def windows(x: torch.Tensor) -> torch.Tensor:
        x = x if x.dim() == 4 else x[None]
        return torch.nn.functional.unfold(x, size, stride=size // 2).transpose(1, 2).flatten(0, 1)

    q, wa, wb = windows(samples), windows(a), windows(b)
    da = torch.cdist(q, wa).min(1).values
    db = torch.cdist(q, wb).min(1).values
    return (da < db).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache", default="bench-out/cache/fast-5min", help="trained runs by number")
    p.add_argument("--images", default="26,35,44", help="Places50 numbers with runs in --cache")
    p.add_argument("--analogy", type=int, default=41, help="the layout image's number")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--n", type=int, default=4, help="samples per measurement")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--picture", help="write the contact sheet of the first image here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    numbers = parse_images(args.images)
    files = list_images(Path(args.data), numbers)
    layout_file = list_images(Path(args.data), [args.analogy])[0]
    per_image, first_pics, reals = [], None, []
    for path in files:
        t0 = time.perf_counter()
        model = load(Path(args.cache) / path.stem)
        real = model.image.cpu()
        reals.append(real)
        layout = load_image(layout_file, max_size=model.config.train.max_size)
        fig, pics = measure(model, real, layout, args)
        per_image.append(fig)
        first_pics = first_pics or pics
        print(f"#{path.stem} measured in {time.perf_counter() - t0:.0f} s", flush=True)

    stems = [f.stem for f in files]
    for cap in per_image[0]:
        keys = list(per_image[0][cap])
        rows = [(k, *(f"{fig[cap][k]:.3f}" for fig in per_image)) for k in keys]
        print(f"\n{cap}\n")
        print(markdown_table(["figure", *(f"#{s}" for s in stems)], rows, align="l"))

    if len(reals) >= 2:
        a, b = reals[0], reals[1]
        both = zero_training([a, b])
        mixed = both.sample(n=args.n, seed=0)
        share = nearest_share(mixed, a, b)
        print(f"\ntwo images (#{stems[0]}, #{stems[1]}), zero-training: {share:.2f} of the "
              f"samples' 32 px windows are nearest to #{stems[0]}, {1 - share:.2f} to #{stems[1]}")  # fmt: skip
        first_pics["two images"] = [a, b, mixed[0], mixed[1 % args.n]]

    if args.picture:
        order = ["retarget", "tile", "upscale", "analogy", "animate", "mirror", "two images"]
        captions = {
            "retarget": ["training image", "retarget 2x wide", "fresh sample, same size"],
            "tile": ["--tile, laid 2x2", "plain, laid 2x2"],
            "upscale": ["bicubic x2", "upscale x2 (run)", "upscale x2 (own patches)", "real"],
            "analogy": ["layout image", "its layout, run's patches", "the run's image"],
            "animate": [f"frame {i * max(1, args.frames // 4)}" for i in range(4)],
            "mirror": ["--mirror x", "--mirror x"],
            "two images": ["image A", "image B", "one model of both", "one model of both"],
        }
        rows = [first_pics[k] for k in order if k in first_pics]
        labels = [captions[k] for k in order if k in first_pics]
        sheet = contact_sheet(rows, labels=labels, height=160)
        sheet.convert("RGB").save(args.picture, quality=85)
        print(f"wrote {args.picture}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
