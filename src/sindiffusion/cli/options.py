"""The options several subcommands share, and their translation into API arguments.

Sizes on the command line are WIDTHxHEIGHT, as in ImageMagick; the API takes (height, width).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from ..config import Config, SamplingOptions, load_config, preset
from ..errors import SinDiffusionError
from ..guidance import DEFAULT_SCALE, Guide, guide
from ..image import parse_scale, parse_size
from ..model import SinDiffusion, load, zero_training
from ..samplers import SAMPLERS

DEFAULT_N = 4  # images per command, as in the Python API and on the web page
RUN_HELP = "run folder written by 'sindiffusion train' (an image with --zero-training)"


# --- argument types: argparse turns their ArgumentTypeError into a usage error -------------------
def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return v


def number(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return v


def positive_float(text: str) -> float:
    v = number(text)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def nonnegative_float(text: str) -> float:
    v = number(text)
    if not v >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return v


# --- option groups ------------------------------------------------------------------------------
def add_device(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument("--device", help="cpu or cuda (default: cuda if available)")


def add_model_source(p: argparse.ArgumentParser) -> None:
    """RUN and --zero-training: the model a sampling command uses."""
    p.add_argument("run", help=RUN_HELP)
    p.add_argument(
        "--zero-training",
        action="store_true",
        help="RUN is an image: sample with the closed-form patch denoiser, no training",
    )


# The argument type of each `SamplingOptions` kind that takes a number.
NUMBER_KINDS = {"count": positive_int, "level": nonnegative_float, "std": positive_float}


def add_sampling(
    p: argparse.ArgumentParser, what: str | None = "samples", apps: bool = False
) -> None:
    """The sampling options of `SinDiffusion.sample`, shared by `sample`, `sample-many` and
    every application: one flag per `SamplingOptions` field, from its metadata, then --seed,
    --device and guidance; `what` names the results --n counts (None: no --n); `apps`: an
    application's command, which leaves out the options marked `apps=False` (the position
    prior: an application keeps the layout of the image it is given)."""
    g = p.add_argument_group("sampling")
    if what is not None:
        g.add_argument(
            "--n", type=positive_int, default=DEFAULT_N, help=f"number of {what} (default 4)"
        )
    for f in dataclasses.fields(SamplingOptions):
        meta = f.metadata
        if apps and not meta.get("apps", True):
            continue
        flag, kind = "--" + f.name.replace("_", "-"), meta["kind"]
        text = f"{meta['help']} (default: the run's)"
        if kind == "flag":
            g.add_argument(flag, action="store_true", default=None, help=meta["help"])
        elif kind == "choice":
            g.add_argument(flag, choices=meta["choices"], help=meta["help"])
        elif kind == "sampler":
            g.add_argument(flag, help=f"{', '.join(SAMPLERS)} (default: the run's)")
        else:
            g.add_argument(flag, type=NUMBER_KINDS[kind], metavar=meta.get("metavar"), help=text)
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_device(g)
    add_guidance(p)


def add_guidance(p: argparse.ArgumentParser) -> None:
    """--class / --text guidance options."""
    g = p.add_argument_group("guidance")
    g.add_argument(
        "--class", dest="class_name", help="ImageNet class to steer towards, e.g. volcano"
    )
    g.add_argument("--text", help='text to steer towards with CLIP, e.g. "a snowy mountain"')
    g.add_argument(
        "--guidance",
        type=number,
        help=f"guidance scale: RMS change of the clean-image estimate per step; 0.03-0.3 is "
        f"useful, 1 and more writes classifier noise (default {DEFAULT_SCALE})",
    )
    g.add_argument(
        "--guidance-range",
        help="guide only at noise levels LO,HI (sigma), e.g. 0.5,80 (default all)",
    )
    g.add_argument("--cuts", type=positive_int, default=4, help="cut-outs per step (default 4)")
    g.add_argument(
        "--clip-model", help="CLIP hub id or local folder (default $SINDIFFUSION_CLIP_MODEL)"
    )


def add_training(p: argparse.ArgumentParser) -> None:
    """The options `train` and `train-many` share."""
    p.add_argument("--preset", help="fast (default) or paper")
    p.add_argument(
        "--config", help="a config JSON (e.g. a run folder's config.json) instead of a preset"
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive_int, help="optimiser steps (default: preset's)")
    budget.add_argument(
        "--minutes",
        type=positive_float,
        help="wall-time budget in minutes, previews and checkpoints included",
    )
    p.add_argument(
        "--init",
        choices=("generic", "random"),
        help="starting weights: the shipped generic network (the fast preset's default) or "
        "random ones (learn from the one image alone)",
    )
    p.add_argument(
        "--max-size",
        type=positive_int,
        help="long side in px (default 250; 1024-4096: a photo at its own resolution)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# --- translation into API arguments --------------------------------------------------------------
def training_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of `train` / `train_many` from `add_training`'s options: a
    config only when --config or --init asks for one, else the preset (None: the default)."""
    if args.preset is not None and args.config is not None:
        raise SinDiffusionError(
            "give either --preset or --config, not both (a config file holds a whole preset)."
        )
    config: Config | None = load_config(args.config) if args.config else None
    if args.init is not None:
        config = config or preset(args.preset or "fast", args.minutes)
        config.train.init = None if args.init == "random" else args.init
    return {
        "preset": args.preset if config is None else None,
        "config": config,
        "steps": args.steps,
        "minutes": args.minutes,
        "seed": args.seed,
        "max_size": args.max_size,
        "device": args.device,
        "progress": not args.quiet,
    }


def sampling_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of `SinDiffusion.sample` and the applications from
    `add_sampling`'s options, without the guide: the `SamplingOptions` and the seed."""
    given = {f.name: getattr(args, f.name, None) for f in dataclasses.fields(SamplingOptions)}
    return {"options": SamplingOptions.of(**given), "seed": args.seed}


def output_size(args: argparse.Namespace) -> dict:
    """`size` / `scale` of `sample` from --size WxH / --scale SXxSY."""
    if args.size and args.scale:
        raise SinDiffusionError("give either --size or --scale, not both.")
    return {
        "size": parse_size(args.size) if args.size else None,
        "scale": parse_scale(args.scale) if args.scale else None,
    }


def guidance_settings(args: argparse.Namespace) -> dict | None:
    """The keyword arguments of `guidance.guide` from --class / --text and their options
    (None without either)."""
    if args.class_name is None and args.text is None:
        if args.guidance is not None or args.guidance_range is not None:
            raise SinDiffusionError("--guidance needs a target: add --class NAME or --text TEXT.")
        return None
    return {
        "class_name": args.class_name,
        "text": args.text,
        "scale": DEFAULT_SCALE if args.guidance is None else args.guidance,
        "sigma_range": parse_range(args.guidance_range) if args.guidance_range else (0, math.inf),
        "cuts": args.cuts,
        "clip_model": args.clip_model,
        "seed": args.seed,
    }


def guidance(args: argparse.Namespace, model: SinDiffusion) -> Guide | None:
    """The guide of --class / --text for `model` (None without either)."""
    settings = guidance_settings(args)
    return None if settings is None else guide(**settings, device=model.device)


def parse_range(text: str) -> tuple[float, float]:
    """'LO,HI' -> (lo, hi) with 0 <= lo < hi."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise SinDiffusionError(
            f"--guidance-range {text!r} is not LO,HI; write it like 0.5,80."
        ) from None
    if not 0 <= lo < hi:
        raise SinDiffusionError(f"--guidance-range {text!r} needs 0 <= LO < HI.")
    return lo, hi


def open_model(args: argparse.Namespace) -> SinDiffusion:
    """The model of RUN: a run folder, or with --zero-training an image; a one-line error
    when the path is an image without the flag or a run folder with it."""
    path = Path(args.run)
    is_run = path.is_dir() or path.suffix == ".safetensors"
    if args.zero_training and is_run:
        raise SinDiffusionError(
            f"{path} is a run folder; --zero-training samples from an image, so drop the flag."
        )
    if not args.zero_training and path.is_file() and not is_run:
        raise SinDiffusionError(
            f"{path} is an image, not a run folder; add --zero-training to sample from it "
            "without training, or train a model first with 'sindiffusion train'."
        )
    if args.zero_training:
        return zero_training(path, device=args.device)
    return load(path, device=args.device)
