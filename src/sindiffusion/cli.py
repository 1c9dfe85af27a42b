"""The `sindiffusion` command: a thin layer over the Python API.

Every error a user can cause is printed as one line (`error: ...`) with a non-zero exit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from . import __version__
from .errors import SinDiffusionError

DEMO_IMAGE = "rocket.jpg"


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _positive_float(text: str) -> float:
    v = _number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def _nonnegative_float(text: str) -> float:
    v = _number(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return v


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=_positive_int, default=8, help="number of samples (default 8)")
    p.add_argument("--size", help="output size WIDTHxHEIGHT, e.g. 512x256 (default: training size)")
    p.add_argument("--scale", help="output size as factors of the training size, e.g. 1.5x1")
    p.add_argument(
        "--steps",
        type=_positive_int,
        help="sampler steps; below the layout switch for a split schedule (default: the preset's)",
    )
    p.add_argument("--sampler", help="ddpm, ddim, heun or dpmpp_2m (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--candidates",
        type=_positive_int,
        help="layouts drawn per sample by a hybrid model, the best kept (default: the preset's)",
    )
    p.add_argument(
        "--renoise",
        type=_nonnegative_float,
        metavar="SIGMA",
        help="hybrid models: noise each closed-form layout afresh to SIGMA and finish it with "
        "the network; 0 hands over mid-path instead (default: the preset's)",
    )
    p.add_argument(
        "--autoguidance",
        type=_nonnegative_float,
        metavar="W",
        help="weight of the push away from the run's starting weights at low noise levels; "
        "0 turns it off and saves a network pass per guided level (default: the preset's)",
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sindiffusion",
        description="Learn a diffusion model from one image; sample new images of any size.",
    )
    parser.add_argument("--version", action="version", version=f"sindiffusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="learn a model from one image")
    p.add_argument("image", help="the training image (PNG, JPEG, WebP, TIFF, BMP)")
    p.add_argument("--out", required=True, help="run folder for checkpoints, previews and logs")
    p.add_argument("--preset", default="fast", help="fast (default) or paper")
    p.add_argument(
        "--config", help="a config JSON (e.g. a run folder's config.json) instead of a preset"
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps", type=_positive_int, help="optimiser steps (default: the preset's)"
    )
    budget.add_argument("--minutes", type=_positive_float, help="training-time budget in minutes")
    _add_init(p)
    p.add_argument(
        "--max-size", type=_positive_int, default=None, help="long side in px (default 250)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--resume", action="store_true", help="continue from the run folder's checkpoint"
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("sample", help="draw new images from a trained run")
    p.add_argument(
        "run", help="run folder written by 'sindiffusion train' (an image with --zero-training)"
    )
    p.add_argument("--out", required=True, help="output folder for PNGs and grid.png")
    _add_sampling_args(p)
    p.add_argument(
        "--zero-training",
        action="store_true",
        help="sample from an image right away with the closed-form patch denoiser (no training)",
    )
    from .apps import commands as app_commands

    app_commands.add_guidance_args(p)

    p = sub.add_parser("info", help="describe a run: parameters, receptive field, image size")
    p.add_argument("run", help="run folder")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("demo", help="train on the bundled image and write samples")
    p.add_argument(
        "--out", default="sindiffusion-demo", help="output folder (default ./sindiffusion-demo)"
    )
    p.add_argument("--minutes", type=_positive_float, default=3.0, help="training time (default 3)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train-many", help="train one model per image of a folder (shardable)")
    p.add_argument("folder", help="a folder of training images")
    p.add_argument("--out", required=True, help="runs folder: one run folder per image")
    p.add_argument(
        "--shard", default="0/1", help="i/n: every n-th image from the i-th (default 0/1)"
    )
    p.add_argument("--preset", default="fast", help="fast (default) or paper")
    p.add_argument("--config", help="a config JSON instead of a preset")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=_positive_int, help="steps per image (default: preset's)")
    budget.add_argument("--minutes", type=_positive_float, help="training minutes per image")
    _add_init(p)
    p.add_argument("--max-size", type=_positive_int, default=None, help="long side in px")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("sample-many", help="draw samples from every run of a runs folder")
    p.add_argument("runs", help="runs folder written by 'sindiffusion train-many'")
    p.add_argument("--out", required=True, help="output folder: one sub-folder per run")
    p.add_argument("--shard", default="0/1", help="i/n: every n-th run from the i-th (default 0/1)")
    _add_sampling_args(p)
    app_commands.add_guidance_args(p)

    p = sub.add_parser("ui", help="open the local web page (needs the [ui] extra: gradio)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this PC)"
    )
    p.add_argument("--port", type=_positive_int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--runs", default="runs", help="the only folder the page writes to (default ./runs)"
    )
    p.add_argument(
        "--config", help="a config JSON instead of the fast preset (or $SINDIFFUSION_UI_CONFIG)"
    )
    p.add_argument(
        "--max-upload-mb", type=_positive_float, default=20.0, help="upload limit (default 20)"
    )
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")

    p = sub.add_parser("score", help="score generated images against the real image")
    p.add_argument("real", help="the real (training) image")
    p.add_argument("fakes", nargs="+", metavar="fake", help="generated images (2+ for diversity)")
    p.add_argument(
        "--backbone",
        choices=("efficientnet", "inception"),
        default="efficientnet",
        help="efficientnet: SIFID-E, offline (default); inception: SIFID, needs weights",
    )
    p.add_argument(
        "--inception-weights",
        help="InceptionV3 weights file, e.g. torchvision's inception_v3_google-0cc3c7bd.pth",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--json", action="store_true", help="print JSON")

    from . import bench

    p = sub.add_parser("bench", help="quality benchmark on a folder of images (e.g. Places50)")
    bench.add_arguments(p)
    app_commands.add_parsers(sub)  # outpaint, inpaint, paint, harmonize, edit
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's own usage errors and --help
        return int(e.code or 0)
    try:
        return COMMANDS[args.command](args)
    except SinDiffusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# --- commands ----------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from . import distributed
    from .api import train

    t0 = time.perf_counter()
    try:  # under torchrun (WORLD_SIZE > 1) this trains data-parallel, see distributed.py
        model = train(args.image, out=args.out, resume=args.resume, **_training_kwargs(args))
    finally:
        distributed.teardown()
    if not distributed.World.from_env().main:
        return 0
    h, w = model.size
    print(
        f"trained {model.step} steps on a {w}x{h} image in {time.perf_counter() - t0:.0f} s; "
        f"run folder: {args.out}"
    )
    return 0


def _add_init(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--init",
        choices=("generic", "random"),
        help="starting weights: the shipped generic network (the fast preset's default) or "
        "random ones (learn from the one image alone)",
    )


def _training_kwargs(args: argparse.Namespace) -> dict:
    """The training options that `train` and `train-many` share, as keyword arguments."""
    config = load_config(args.config) if args.config else None
    if args.init is not None:
        from .api import _preset

        config = config or _preset(args.preset)
        config.train.init = None if args.init == "random" else args.init
    return {
        "preset": args.preset,
        "config": config,
        "steps": args.steps,
        "minutes": args.minutes,
        "seed": args.seed,
        "max_size": args.max_size,
        "device": args.device,
        "progress": not args.quiet,
    }


def load_config(path: str | Path):
    """Read a `Config` from a JSON file, with a one-line error for a bad file."""
    from .config import Config

    try:
        return Config.from_dict(json.loads(Path(path).read_text()))
    except OSError:
        raise SinDiffusionError(f"{path}: cannot read this config file; check the path.") from None
    except (ValueError, TypeError) as e:
        raise SinDiffusionError(f"{path} is not a valid sindiffusion config ({e}).") from None


def _sample_kwargs(args: argparse.Namespace) -> dict:
    from .image import parse_scale, parse_size

    if args.size and args.scale:
        raise SinDiffusionError("give either --size or --scale, not both.")
    return {
        "size": parse_size(args.size) if args.size else None,
        "scale": parse_scale(args.scale) if args.scale else None,
        "steps": args.steps,
        "sampler": args.sampler,
        "seed": args.seed,
        "candidates": args.candidates,
        "renoise": args.renoise,
        "autoguidance": args.autoguidance,
    }


def write_samples(images, out: str | Path, prefix: str = "sample") -> Path:
    """Write each (3, H, W) image as PREFIX-NNN.png and all of them as grid.png; returns the grid."""
    from .image import make_grid, save_image

    out = Path(out)
    for i, img in enumerate(images):
        save_image(img, out / f"{prefix}-{i:03d}.png")
    return save_image(make_grid(images, nrow=4), out / "grid.png")


def cmd_sample(args: argparse.Namespace) -> int:
    from .api import load

    kwargs = _sample_kwargs(args)
    model = _zero_or_run(args.run, args.zero_training, args.device) or load(args.run, args.device)
    t0 = time.perf_counter()
    from .apps.commands import guided_denoiser

    images = model.sample(n=args.n, progress=True, denoiser=guided_denoiser(args, model), **kwargs)
    dt = time.perf_counter() - t0
    grid = write_samples(images, args.out)
    h, w = images.shape[-2:]
    print(
        f"wrote {args.n} samples of {w}x{h} px to {args.out} ({dt / args.n:.2f} s each); grid: {grid}"
    )
    return 0


def _zero_or_run(path: str, zero: bool, device: str | None):
    """The zero-training model of an image with `zero`, else None; a one-line error when the
    path is an image without the flag or a run folder with it."""
    p = Path(path)
    is_run = p.is_dir() or p.suffix == ".safetensors"
    if zero and is_run:
        raise SinDiffusionError(
            f"{path} is a run folder; --zero-training samples from an image, so drop the flag."
        )
    if not zero and p.is_file() and not is_run:
        raise SinDiffusionError(
            f"{path} is an image, not a run folder; add --zero-training to sample from it "
            "without training, or train a model first with 'sindiffusion train'."
        )
    if not zero:
        return None
    from .zero import zero_training

    return zero_training(path, device=device)


def cmd_info(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .unet import UNet, count_parameters, measure_receptive_field

    ckpt = load_checkpoint(args.run)
    cfg = ckpt.config
    h, w = ckpt.image.shape[-2:]
    info = {
        "preset": cfg.preset,
        "parameters": count_parameters(UNet(cfg.model)),
        "receptive_field_px": measure_receptive_field(cfg.model),
        "image_size": f"{w}x{h}",
        "step": ckpt.step,
        "training_minutes": round(ckpt.elapsed / 60, 2),
        "parameterization": cfg.diffusion.parameterization,
        "sampler": f"{cfg.diffusion.sampler} ({cfg.diffusion.sample_steps} steps)",
        "version": ckpt.version,
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>20}: {v}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .api import train
    from .image import make_grid, save_image, vstack

    out = Path(args.out)
    with resources.as_file(resources.files("sindiffusion") / "assets" / DEMO_IMAGE) as image:
        print(f"training on the bundled image ({DEMO_IMAGE}) for {args.minutes:g} minutes...")
        model = train(image, preset="fast", out=out / "run", minutes=args.minutes, seed=args.seed)
    h, w = model.size
    same = model.sample(n=4, seed=args.seed)
    wide = model.sample(n=2, size=(h, 2 * w), seed=args.seed + 1)
    write_samples(same, out / "samples")
    write_samples(wide, out / "wide")
    # Top row: the training image and two samples of its size; below: the wide samples.
    top = make_grid([model.image, *same[:2]], nrow=3)
    grid = vstack([top, make_grid(wide, nrow=1)], pad=0)
    save_image(grid, out / "grid.png")
    print(f"wrote {out}/samples (same size), {out}/wide (2x wide) and {out}/grid.png")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .image import load_image
    from .metrics import METRICS, match_sizes, score

    real = load_image(args.real)
    images = [load_image(path) for path in args.fakes]
    fakes, notes = match_sizes(real, images)
    # match_sizes returns one note per resized fake, in order; name the file in each.
    resized = [p for p, x in zip(args.fakes, images, strict=True) if x.shape != real.shape]
    for path, note in zip(resized, notes, strict=True):
        print(f"warning: {path}: {note}", file=sys.stderr)
    result = score(
        real, fakes, backbone=args.backbone, device=args.device,
        inception_weights=args.inception_weights,
    )  # fmt: skip
    if args.json:
        print(json.dumps({"real": args.real, "fakes": args.fakes, "metrics": result}, indent=2))
        return 0
    print(f"{args.real} against {len(args.fakes)} generated image(s):")
    for key, value in result.items():
        print(f"{key:>16}: {value:9.4f}   {METRICS[key]}")
    if len(args.fakes) < 2:
        print("(diversity needs two or more generated images)")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.run(args)


def cmd_ui(args: argparse.Namespace) -> int:
    from .ui import serve

    config = load_config(args.config) if args.config else None
    serve(args.host, args.port, args.runs, config, args.max_upload_mb, args.device)
    return 0


def cmd_train_many(args: argparse.Namespace) -> int:
    from .many import format_table, parse_shard, train_many

    shard = parse_shard(args.shard)
    rows = train_many(args.folder, args.out, shard_spec=shard, **_training_kwargs(args))
    print(format_table(rows), end="")
    out = args.out
    print(f"summary: {out}/summary.md, {out}/summary.csv; contact sheet: {out}/contact.png")
    return 1 if any(r.status.startswith("failed") for r in rows) else 0


def cmd_sample_many(args: argparse.Namespace) -> int:
    from .apps.commands import guided_denoiser
    from .many import parse_shard, sample_many

    kwargs = _sample_kwargs(args)
    folders = sample_many(
        args.runs,
        args.n,
        args.out,
        shard_spec=parse_shard(args.shard),
        device=args.device,
        guide=lambda model: guided_denoiser(args, model),
        **kwargs,
    )
    print(f"wrote {args.n} samples for each of {len(folders)} runs to {args.out}")
    return 0


COMMANDS = {
    "ui": cmd_ui,
    "train": cmd_train,
    "sample": cmd_sample,
    "info": cmd_info,
    "demo": cmd_demo,
    "train-many": cmd_train_many,
    "sample-many": cmd_sample_many,
    "score": cmd_score,
    "bench": cmd_bench,
}
from .apps.commands import APP_COMMANDS, cmd_app  # noqa: E402  (needs the helpers above)

COMMANDS.update(dict.fromkeys(APP_COMMANDS, cmd_app))
