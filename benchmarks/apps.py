"""Applications benchmark: outpainting / inpainting seams, class guidance, SDEdit pictures.

    python3 benchmarks/apps.py --threads 1 [--images 2,3] [--run-cache runs/apps-bench]
    python3 benchmarks/apps.py --run-cache bench-out/cache/fast-5min --tasks class,harmonize
    python3 benchmarks/apps.py --zero --images 2      # the zero-training model, no training

For each Places50 image of --images (a run folder from --run-cache, or the `fast` preset
trained for --minutes and then cached there; with --zero the zero-training patch denoiser):

- fill: a border band (the right quarter) is removed and regenerated (outpainting), and a
  centre box (a third of each side) likewise (inpainting). Both with and without RePaint
  resampling, in one run. Reported: SIFID-E of the regenerated part against the real part it
  replaces, and the seam score = mean squared neighbour difference across the mask boundary /
  elsewhere (about 1 = no seam; the real image's own value under the same mask is given as
  reference).
- class: class guidance (EfficientNet-Lite0, real ImageNet weights) towards --target, one
  class per image (by default one the scene could plausibly show: lakeside for #2, volcano
  for #3, valley for #7).
  Reported per guidance scale: the target's probability judged on the whole sample resized to
  224 px (not on the guide's cut-outs), averaged over --n samples, and SIFID-E against the
  training image. Grid NAME-class-TARGET.png: one row per scale, --n samples per row;
  class-guidance.jpg: one row per scale, two samples of every image.
- sdedit: paint-to-image on ../shared/data/singan/sketch/balloons_sketch.png and editing of
  ../shared/data/singan/edit/stone_edit.png (models of balloons.png / stone.png, cached too).
- harmonize: a balloon cut from ../shared/data/singan/balloons.png (its mask: the pixels
  that differ from the surrounding sky) pasted into the sky of Places50 #3 and harmonized by
  #3's model; picture harmonize.png (training image, pasted input, strengths 0.3 and 0.5).

Prints markdown tables; writes picture grids into --out (default benchmarks/results/apps).
Judge mechanisms (known region kept, no seam), not beauty: the `fast` preset is small.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from quality import parse_images

import sindiffusion
from sindiffusion.apps import edit, harmonize, outpaint, paint, regenerate
from sindiffusion.guidance import ClassScore, GradientGuidance, find_class
from sindiffusion.image import load_image, make_grid, save_image
from sindiffusion.metrics import efficientnet_lite0, seam_score
from sindiffusion.metrics.sifid import sifid

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = ("fill", "class", "sdedit", "harmonize")
# A class each scene could plausibly show (top-10 of the classifier on the real image).
TARGETS = {"1": "volcano", "2": "lakeside", "3": "volcano", "7": "valley"}


def get_model(path: Path, args):
    """The cached run for `path`, or train one; with --zero the zero-training model."""
    if args.zero:
        return sindiffusion.zero_training(path, device=args.device)
    cache, minutes, device = args.run_cache, args.minutes, args.device
    run = cache / path.stem
    if (run / "checkpoint.safetensors").exists():
        return sindiffusion.load(run, device=device)
    print(f"training {path.name} for {minutes:g} min -> {run}", flush=True)
    return sindiffusion.train(path, preset="fast", minutes=minutes, out=run, device=device)


def region_masks(h: int, w: int) -> dict[str, torch.Tensor]:
    band = torch.zeros(h, w, dtype=torch.bool)
    band[:, w - w // 4 :] = True
    box = torch.zeros(h, w, dtype=torch.bool)
    box[h // 3 : h - h // 3, w // 3 : w - w // 3] = True
    return {"outpaint (right band)": band, "inpaint (centre box)": box}


def crop(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The bounding box of `mask` cut from x (..., H, W)."""
    ys, xs = mask.nonzero(as_tuple=True)
    return x[..., int(ys.min()) : int(ys.max()) + 1, int(xs.min()) : int(xs.max()) + 1]


def fill_bench(model, name: str, args, out: Path) -> list[str]:
    img = model.image.float()
    rows, pictures = [], []
    for task, mask in region_masks(*img.shape[-2:]).items():
        shown = torch.where(mask, torch.zeros_like(img), img)
        pictures += [img, shown]
        for resample in (1, args.resample):
            t0 = time.perf_counter()
            fakes = regenerate(
                model, img, mask, n=args.n, steps=args.steps, seed=0, resample=resample
            )
            dt = (time.perf_counter() - t0) / args.n
            pictures.append(fakes[0])
            s = sifid(crop(img, mask), crop(fakes, mask)).mean().item()
            seams = sum(seam_score(f, mask) for f in fakes) / len(fakes)
            rows.append(
                f"| {name} | {task} | {resample} | {s:.3f} | {seams:.2f} | "
                f"{seam_score(img, mask):.2f} | {dt:.1f} |"
            )
    # A real outpainting, 50% wider, for the picture.
    h, w = img.shape[-2:]
    wide = outpaint(
        model,
        extend={"left": w // 4, "right": w // 4},
        n=1,
        steps=args.steps,
        resample=args.resample,
    )
    grid = make_grid(pictures, nrow=4)
    save_image(grid, out / f"{name}-fill.png")
    save_image(make_grid([img, wide[0]], nrow=2), out / f"{name}-outpaint-wide.png")
    return rows


def class_bench(model, name: str, target: str, args, out: Path):
    """Rows of the class-guidance table and, per scale, the samples (n, 3, H, W)."""
    clf = efficientnet_lite0().to(model.device)
    c = find_class(target)
    rows, samples = [], []
    for scale in args.scales:
        score = ClassScore([c], clf, cuts=args.cuts, cut_size=args.cut_size, seed=0)
        steer = lambda den, score=score, scale=scale: GradientGuidance(den, score, scale)  # noqa: E731
        t0 = time.perf_counter()
        fakes = model.sample(n=args.n, steps=args.steps, seed=0, guide=steer)
        dt = (time.perf_counter() - t0) / args.n
        with torch.no_grad():
            x = F.interpolate(fakes.to(model.device), (224, 224), mode="bilinear", antialias=True)
            p = clf(x).softmax(-1)[:, c]
        s = sifid(model.image.float(), fakes).mean().item()
        rows.append(
            f"| {name} | {target} | {scale:g} | {p.mean():.3f} | {p.min():.3f} | {s:.1f} | "
            f"{dt:.1f} |"
        )
        samples.append(fakes)
    grid = make_grid(torch.cat(samples), nrow=args.n)
    save_image(grid, out / f"{name}-class-{target}.png")
    return rows, samples


def sdedit_bench(args, out: Path) -> None:
    jobs = [
        ("balloons", DATA / "singan/sketch/balloons_sketch.png", paint, (0.5, 0.7)),
        ("stone", DATA / "singan/edit/stone_edit.png", edit, (0.3, 0.5)),
    ]
    for train_name, input_path, fn, strengths in jobs:
        model = get_model(DATA / f"singan/{train_name}.png", args)
        x = load_image(input_path)  # used at its own size: the model is fully convolutional
        pictures = [model.image.float(), x]
        for strength in strengths:
            pictures += list(fn(model, x, strength=strength, n=2, steps=args.steps, seed=0))
        save_image(make_grid(pictures, nrow=2 + len(strengths)), out / f"{train_name}-sdedit.png")
        print(f"wrote {out / f'{train_name}-sdedit.png'} (strengths {strengths})", flush=True)


def paste_object(
    image: torch.Tensor, source: torch.Tensor, box: tuple[int, int, int, int], at: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the object inside `box` (top, left, bottom, right) of `source` into `image` with
    its top-left corner at `at` (y, x). The object is every pixel of the box that differs from
    the box's border colour (its background), widened by 2 px. Returns (pasted image, mask)."""
    top, left, bottom, right = box
    patch = source[:, top:bottom, left:right]
    border = torch.cat([patch[:, 0], patch[:, -1], patch[:, :, 0], patch[:, :, -1]], dim=1)
    background = border.median(dim=1).values.reshape(3, 1, 1)
    obj = (patch - background).abs().sum(0) > 0.25
    obj = F.max_pool2d(obj[None, None].float(), 5, stride=1, padding=2)[0, 0].bool()
    y, x = at
    mask = torch.zeros(image.shape[-2:], dtype=torch.bool)
    mask[y : y + obj.shape[0], x : x + obj.shape[1]] = obj
    pasted = image.clone()
    pasted[:, mask] = patch[:, obj]
    return pasted, mask


def harmonize_bench(args, out: Path) -> None:
    model = get_model(args.data / "3.jpg", args)
    img = model.image.float()
    balloon = load_image(DATA / "singan/balloons.png")
    pasted, mask = paste_object(img, balloon, box=(0, 126, 66, 186), at=(4, 24))
    pictures = [img, pasted]
    for strength in (0.3, 0.5):
        pictures.append(
            harmonize(model, pasted, mask, strength=strength, n=1, steps=args.steps, seed=0)[0]
        )
    save_image(make_grid(pictures, nrow=len(pictures)), out / "harmonize.png")
    print(f"wrote {out / 'harmonize.png'} (strengths 0.3, 0.5)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA / "places50")
    p.add_argument("--images", default="2,3", help="Places50 numbers, e.g. 2,3 or 1-3")
    p.add_argument("--run-cache", type=Path, default=Path("runs/apps-bench"))
    p.add_argument("--minutes", type=float, default=3.0, help="training time per uncached image")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/apps"))
    p.add_argument("--n", type=int, default=4, help="samples per setting")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: preset's)")
    p.add_argument("--resample", type=int, default=2, help="resampling passes to compare with 1")
    p.add_argument(
        "--target",
        help="ImageNet class per image of --images for class guidance, or one for all "
        f"(default: {', '.join(f'{k}={v}' for k, v in TARGETS.items())}, else volcano)",
    )
    p.add_argument("--scales", default="0,0.03,0.1,0.3", help="guidance scales")
    p.add_argument("--cuts", type=int, default=4, help="cut-outs per guidance step (as the CLI)")
    p.add_argument("--cut-size", type=int, default=224, help="cut-out side for the classifier")
    p.add_argument(
        "--tasks", default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}"
    )
    p.add_argument(
        "--zero", action="store_true", help="use the zero-training model instead of learned runs"
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default all)")
    p.add_argument("--device", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images = [str(i) for i in parse_images(args.images)]
    targets = args.target.split(",") if args.target else [TARGETS.get(i, "volcano") for i in images]
    if len(targets) == 1:
        targets *= len(images)
    if len(targets) != len(images):
        p.error(
            f"--target names {len(targets)} classes for {len(images)} images; give one or one each."
        )
    tasks = args.tasks.split(",")
    if not set(tasks) <= set(TASKS):
        p.error(f"--tasks {args.tasks!r}: choose from {','.join(TASKS)}.")
    args.scales = [float(s) for s in args.scales.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    fill_rows, class_rows, by_scale = [], [], [[] for _ in args.scales]
    per_image = {"fill", "class"} & set(tasks)
    for stem, target in zip(images, targets, strict=True) if per_image else ():
        model = get_model(args.data / f"{stem}.jpg", args)
        if "fill" in tasks:
            fill_rows += fill_bench(model, stem, args, args.out)
        if "class" in tasks:
            rows, samples = class_bench(model, stem, target, args, args.out)
            class_rows += rows
            for shown, fakes in zip(by_scale, samples, strict=True):
                shown += list(fakes[:2])
    if class_rows:  # one row per scale: two samples of every image
        grid = make_grid([x for row in by_scale for x in row], nrow=len(by_scale[0]))
        save_image(grid, args.out / "class-guidance.jpg")
    if "sdedit" in tasks:
        sdedit_bench(args, args.out)
    if "harmonize" in tasks:
        harmonize_bench(args, args.out)
    if fill_rows:
        print(
            "\n| image | task | resample | SIFID-E of region | seam score | real image's | s/sample |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(fill_rows))
    if class_rows:
        print(
            f"\n| image | class | guidance scale | target probability (mean of {args.n}) | "
            "lowest | SIFID-E | s/sample |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        print("\n".join(class_rows))
    print(f"\ngrids in {args.out}; total {(time.perf_counter() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
