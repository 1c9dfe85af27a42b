"""The application subcommands of `sindiffusion` (outpaint, inpaint, paint, harmonize, edit)
and the guidance options shared with `sample`. A thin layer over `apps` and `guidance`."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from ..errors import SinDiffusionError

DEFAULT_GUIDANCE = 0.2  # see guidance.GradientGuidance: the RMS change of x0_hat per step


def add_guidance_args(p: argparse.ArgumentParser) -> None:
    """--class / --text guidance options (for `sample` and every application)."""
    g = p.add_argument_group("guidance")
    g.add_argument(
        "--class", dest="class_name", help="ImageNet class to steer towards, e.g. volcano"
    )
    g.add_argument("--text", help='text to steer towards with CLIP, e.g. "a snowy mountain"')
    g.add_argument(
        "--guidance",
        type=float,
        help=f"guidance scale: RMS change of the clean-image estimate per step; 0.03-0.3 is "
        f"useful, 1 and more writes classifier noise (default {DEFAULT_GUIDANCE})",
    )
    g.add_argument(
        "--guidance-range",
        help="guide only at noise levels LO,HI (sigma), e.g. 0.5,80 (default all)",
    )
    g.add_argument("--cuts", type=int, default=4, help="random cut-outs per step (default 4)")
    g.add_argument(
        "--clip-model", help="CLIP hub id or local folder (default $SINDIFFUSION_CLIP_MODEL)"
    )


def guided_denoiser(args: argparse.Namespace, model):
    """The model's denoiser wrapped by the requested guidance, or None when none is asked."""
    from ..guidance import ClassScore, ClipTextScore, GradientGuidance, find_class, load_clip

    if args.class_name is None and args.text is None:
        if args.guidance is not None or args.guidance_range is not None:
            raise SinDiffusionError("--guidance needs a target: add --class NAME or --text TEXT.")
        return None
    scale = DEFAULT_GUIDANCE if args.guidance is None else args.guidance
    sigma_range = _parse_range(args.guidance_range) if args.guidance_range else (0.0, math.inf)
    if args.cuts < 1:
        raise SinDiffusionError(f"--cuts {args.cuts} must be at least 1.")
    den = model.denoiser
    if args.class_name is not None:
        from ..metrics import efficientnet_lite0

        clf = efficientnet_lite0().to(model.device)
        score = ClassScore([find_class(args.class_name)], clf, cuts=args.cuts, seed=args.seed)
        den = GradientGuidance(den, score, scale, sigma_range)
    if args.text is not None:
        clip, tokenizer = load_clip(args.clip_model, model.device)
        score = ClipTextScore.from_text(clip, tokenizer, args.text, cuts=args.cuts, seed=args.seed)
        den = GradientGuidance(den, score, scale, sigma_range)
    return den


def _parse_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise SinDiffusionError(
            f"--guidance-range {text!r} is not LO,HI; write it like 0.5,80."
        ) from None
    if not 0 <= lo < hi:
        raise SinDiffusionError(f"--guidance-range {text!r} needs 0 <= LO < HI.")
    return lo, hi


def add_parsers(sub) -> None:
    """Add the application subcommands to the `sindiffusion` parser's subparsers."""
    p = sub.add_parser("outpaint", help="extend an image beyond its borders")
    _common(p)
    p.add_argument(
        "--extend", help="pixels to add per side, e.g. left=64,right=128,top=0,bottom=32"
    )
    p.add_argument("--size", help="output size WIDTHxHEIGHT instead of --extend, e.g. 512x256")
    p.add_argument(
        "--anchor",
        default="center",
        help="where the image sits with --size: center, left, right, top, bottom, top-left, ...",
    )
    _resampling(p)

    p = sub.add_parser("inpaint", help="regenerate the white region of a mask")
    _common(p)
    p.add_argument("--mask", required=True, help="mask PNG of the image's size, white = regenerate")
    _resampling(p)

    for name, strength, mask, what in (
        ("paint", 0.6, None, "turn a coarse colour sketch into an image (paint-to-image)"),
        ("harmonize", 0.4, True, "blend a pasted object (white in --mask) into the image"),
        ("edit", 0.5, False, "make a hand-edited image seamless again"),
    ):
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


def _common(p: argparse.ArgumentParser, image_required: bool = False) -> None:
    from ..cli import _positive_int

    p.add_argument(
        "run", help="run folder written by 'sindiffusion train' (an image with --zero-training)"
    )
    p.add_argument(
        "--zero-training",
        action="store_true",
        help="RUN is an image: use the closed-form patch denoiser, no training",
    )
    p.add_argument(
        "--image", required=image_required, help="input image (default: the run's training image)"
    )
    p.add_argument("--out", required=True, help="output folder for PNGs and grid.png")
    p.add_argument("--n", type=_positive_int, default=4, help="number of results (default 4)")
    p.add_argument("--steps", type=_positive_int, help="sampler steps (default: the preset's)")
    p.add_argument("--sampler", help="ddpm, ddim, heun or dpmpp_2m (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    add_guidance_args(p)


def _resampling(p: argparse.ArgumentParser, default: int = 2) -> None:
    from ..cli import _positive_int

    p.add_argument(
        "--resample",
        type=_positive_int,
        default=default,
        help=f"RePaint resampling: run each stretch of steps N times (default {default}; 1 = off)",
    )
    p.add_argument(
        "--jump", type=_positive_int, default=2, help="steps per resampled stretch (default 2)"
    )
    p.add_argument(
        "--no-exact",
        dest="exact",
        action="store_false",
        help="let the model's output stand in the kept region instead of pasting the input back",
    )


def cmd_app(args: argparse.Namespace) -> int:
    """Run one application subcommand; writes DIR/NAME-NNN.png, DIR/grid.png, DIR/input.png."""
    from .. import apps
    from ..api import load
    from ..cli import _zero_or_run, write_samples
    from ..image import load_image, parse_size, save_image

    model = _zero_or_run(args.run, args.zero_training, args.device) or load(args.run, args.device)
    image = load_image(args.image) if args.image else model.image.float().cpu()
    kwargs = dict(
        n=args.n,
        steps=args.steps,
        sampler=args.sampler,
        seed=args.seed,
        denoiser=guided_denoiser(args, model),
        resample=args.resample,
        jump=args.jump,
        exact=args.exact,
        progress=True,
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


APP_COMMANDS = ("outpaint", "inpaint", "paint", "harmonize", "edit")
