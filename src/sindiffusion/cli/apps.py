"""The application subcommands: outpaint, inpaint, paint, harmonize, edit. Each takes the
sampling options of `sample` (`cli.options.add_sampling`) and calls one function of `apps`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import apps
from ..errors import SinDiffusionError
from ..image import check_folder, load_image, parse_size, save_image, write_samples
from ..metrics import flicker, frame_change
from ..model import load, zero_training
from .options import (
    add_model_source,
    add_sampling,
    guidance,
    open_model,
    positive_int,
    sampling_kwargs,
)

# name -> (default strength, --mask: None = no option, True = required, False = optional, help)
SDEDIT = {
    "paint": (0.6, None, "turn a coarse colour sketch into an image (paint-to-image)"),
    "harmonize": (0.4, True, "blend a pasted object (white in --mask) into the image"),
    "edit": (0.5, False, "make a hand-edited image seamless again"),
}
APP_COMMANDS = ("outpaint", "inpaint", *SDEDIT, "retarget", "upscale", "analogy", "animate")


def add_parsers(sub) -> None:
    """Add the application subcommands to the `sindiffusion` parser's subparsers."""
    p = sub.add_parser("outpaint", help="extend an image beyond its borders")
    _common(p)
    p.add_argument(
        "--extend", help="pixels to add per side, e.g. left=64,right=128,top=0,bottom=32"
    )
    p.add_argument("--size", help="canvas size WIDTHxHEIGHT instead of --extend, e.g. 512x256")
    p.add_argument(
        "--anchor",
        default="center",
        choices=sorted(apps.ANCHORS),
        help="where the image sits with --size (default center)",
    )
    _resampling(p)

    p = sub.add_parser("inpaint", help="regenerate the white region of a mask")
    _common(p)
    p.add_argument("--mask", required=True, help="mask PNG of the image's size, white = regenerate")
    _resampling(p)

    for name, (strength, mask, what) in SDEDIT.items():
        p = sub.add_parser(name, help=what)
        _common(p, image_required=name == "paint")
        p.add_argument(
            "--strength",
            type=float,
            default=strength,
            help=f"noise level t0 in (0, 1]: how far the result may move (default {strength})",
        )
        if mask is not None:
            p.add_argument(
                "--mask", required=mask, help="mask PNG, white = may change, black = kept"
            )
        _resampling(p, default=1)

    p = sub.add_parser("retarget", help="resize a scene, keeping its structure")
    _common(p)
    p.add_argument("--size", required=True, help="the new size WIDTHxHEIGHT, e.g. 500x188")
    _strength(p, 0.6)
    _resampling(p, default=1)

    p = sub.add_parser("upscale", help="super-resolution from the image's own patches")
    _common(p)
    p.add_argument("--factor", type=float, default=2.0, help="enlargement (default 2)")
    _strength(p, 0.6)
    _resampling(p, default=1)

    p = sub.add_parser("analogy", help="the layout of one image in the patches of another")
    p.add_argument("layout", help="the image whose layout is kept")
    p.add_argument(
        "texture", help="the image (or a run folder trained on it) whose patches paint it"
    )
    p.add_argument("--out", required=True, help="output folder for PNGs and grid.png")
    _strength(p, 0.6)
    p.add_argument(
        "--max-size", type=positive_int, default=250, help="long side of both images (250)"
    )
    add_sampling(p, what="results", apps=True)
    _resampling(p, default=1)

    p = sub.add_parser("animate", help="a looping animation: a smooth walk through the noise")
    add_model_source(p)
    p.add_argument("--out", required=True, help="the animation file: .gif or .mp4")
    p.add_argument("--frames", type=positive_int, default=48, help="frames (default 48)")
    p.add_argument("--fps", type=float, default=12.0, help="frames per second (default 12)")
    p.add_argument(
        "--keyframes", type=positive_int, default=4, help="noises the loop passes (default 4)"
    )
    p.add_argument("--size", help="frame size WIDTHxHEIGHT (default: the training size)")
    add_sampling(p, what=None, apps=True)


def _strength(p: argparse.ArgumentParser, default: float) -> None:
    p.add_argument(
        "--strength",
        type=float,
        default=default,
        help=f"noise level t0 in (0, 1]: how far the result may move (default {default})",
    )


def _common(p: argparse.ArgumentParser, image_required: bool = False) -> None:
    add_model_source(p)
    p.add_argument(
        "--image", required=image_required, help="input image (default: the run's training image)"
    )
    p.add_argument("--out", required=True, help="output folder for PNGs and grid.png")
    add_sampling(p, what="results", apps=True)


def _resampling(p: argparse.ArgumentParser, default: int = 2) -> None:
    g = p.add_argument_group("resampling")
    g.add_argument(
        "--resample",
        type=positive_int,
        default=default,
        help=f"RePaint resampling: run each stretch of steps N times (default {default}; 1 = off)",
    )
    g.add_argument(
        "--jump", type=positive_int, default=2, help="steps per resampled stretch (default 2)"
    )
    g.add_argument(
        "--no-exact",
        dest="exact",
        action="store_false",
        help="let the model's output stand in the kept region instead of pasting the input back",
    )


def cmd_app(args: argparse.Namespace) -> int:
    """Run one application; writes DIR/NAME-NNN.png, DIR/grid.png and DIR/input.png."""
    if args.command == "animate":
        return _animate(args)
    check_folder(args.out, "the results")
    if args.command == "analogy":
        return _analogy(args)
    model = open_model(args)
    image = load_image(args.image) if args.image else model.image.float().cpu()
    kwargs = dict(
        n=args.n,
        guide=guidance(args, model),
        resample=args.resample,
        jump=args.jump,
        exact=args.exact,
        progress=True,
        **sampling_kwargs(args),
    )
    name = args.command
    t0 = time.perf_counter()
    if name == "outpaint":
        if (args.extend is None) == (args.size is None):
            raise SinDiffusionError("give either --extend SIDE=PX,... or --size WIDTHxHEIGHT.")
        extend = apps.parse_extend(args.extend) if args.extend else None
        size = parse_size(args.size) if args.size else None
        shown, _ = apps.outpaint_canvas(image, extend, size, args.anchor)
        images = apps.outpaint(model, image, extend=extend, size=size, anchor=args.anchor, **kwargs)
    elif name == "inpaint":
        shown = image
        images = apps.inpaint(model, args.mask, image, **kwargs)
    elif name == "retarget":
        shown = image
        size = parse_size(args.size)
        images = apps.retarget(model, size, strength=args.strength, image=image, **kwargs)
    elif name == "upscale":
        shown = image
        images = apps.upscale(model, args.factor, image, strength=args.strength, **kwargs)
    else:
        shown = image
        mask = getattr(args, "mask", None)
        images = apps.sdedit(model, image, strength=args.strength, mask=mask, **kwargs)
    dt = time.perf_counter() - t0
    out = Path(args.out)
    save_image(shown, out / "input.png")
    grid = write_samples(images, out, prefix=name)
    h, w = images.shape[-2:]
    print(f"wrote {len(images)} results of {w}x{h} px to {out} in {dt:.1f} s; grid: {grid}")
    return 0


def _analogy(args: argparse.Namespace) -> int:
    """`analogy LAYOUT TEXTURE`: TEXTURE is a run folder, or an image (its zero-training model)."""
    texture = Path(args.texture)
    is_run = texture.is_dir() or texture.suffix == ".safetensors"
    model = (
        load(texture, args.device)
        if is_run
        else zero_training(texture, max_size=args.max_size, device=args.device)
    )
    t0 = time.perf_counter()
    images = apps.analogy(
        args.layout, model, strength=args.strength, max_size=args.max_size, n=args.n,
        guide=guidance(args, model), resample=args.resample, jump=args.jump, progress=True,
        **sampling_kwargs(args),
    )  # fmt: skip
    dt = time.perf_counter() - t0
    out = Path(args.out)
    save_image(load_image(args.layout, max_size=args.max_size), out / "input.png")
    grid = write_samples(images, out, prefix="analogy")
    h, w = images.shape[-2:]
    print(f"wrote {len(images)} results of {w}x{h} px to {out} in {dt:.1f} s; grid: {grid}")
    return 0


def _animate(args: argparse.Namespace) -> int:
    """`animate RUN --out clip.gif`: frames of a looping walk through the noise."""
    apps.check_video_path(args.out, args.fps)  # before the frames, not after
    model = open_model(args)
    kwargs = sampling_kwargs(args)
    size = parse_size(args.size) if args.size else None
    t0 = time.perf_counter()
    frames = apps.animate(
        model, args.frames, args.keyframes, size, guide=guidance(args, model), progress=True,
        **kwargs,
    )  # fmt: skip
    path = apps.write_video(frames, args.out, args.fps)
    change, jitter = frame_change(frames), flicker(frames)
    h, w = frames.shape[-2:]
    print(
        f"wrote {len(frames)} frames of {w}x{h} px to {path} in {time.perf_counter() - t0:.1f} s "
        f"({len(frames) / args.fps:.1f} s at {args.fps:g} fps; change per frame {change:.3f}, "
        f"flicker {jitter:.2f})"
    )
    return 0
