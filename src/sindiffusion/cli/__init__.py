"""The `sindiffusion` command: a thin layer over the Python API.

Every error a user can cause is printed as one line (`error: ...`) with exit code 2 (also
argparse's code for a bad option), never a traceback. Sizes are WIDTHxHEIGHT.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from ..errors import SinDiffusionError, SinDiffusionWarning
from ..image import BUNDLED_IMAGES, DEMO_IMAGE
from ..version import __version__
from . import apps, commands
from .options import (
    add_device,
    add_model_source,
    add_sampling,
    add_training,
    positive_float,
    positive_int,
)

USER_ERROR = 2  # exit code of a one-line error, as argparse's


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sindiffusion",
        description="Learn a diffusion model from one image; sample new images of any size.",
    )
    parser.add_argument("--version", action="version", version=f"sindiffusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="learn a model from one image (or a few)")
    p.add_argument(
        "image",
        nargs="+",
        help="the training image (PNG, JPEG, WebP, TIFF, BMP); several: one model of them all",
    )
    p.add_argument("--out", required=True, help="run folder for checkpoints, previews and logs")
    add_training(p)
    p.add_argument(
        "--resume", action="store_true", help="continue from the run folder's checkpoint"
    )

    p = sub.add_parser("sample", help="draw new images from a trained run (or an image)")
    add_model_source(p)
    p.add_argument("--out", required=True, help="output folder for PNGs and grid.png")
    _add_output_size(p)
    add_sampling(p)

    p = sub.add_parser("info", help="describe a run: parameters, receptive field, image size")
    p.add_argument("run", help="run folder")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("demo", help="train on the bundled image and write samples")
    p.add_argument(
        "--out", default="sindiffusion-demo", help="output folder (default ./sindiffusion-demo)"
    )
    p.add_argument(
        "--minutes",
        type=positive_float,
        default=3.0,
        help="training minutes, previews included (default 3)",
    )
    p.add_argument(
        "--image",
        choices=list(BUNDLED_IMAGES),
        default=DEMO_IMAGE,
        help="the bundled image: tibet (the Himalaya from orbit, default) or rocket (launch "
        "towers, a hard case for patch methods)",
    )
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("train-many", help="train one model per image of a folder (shardable)")
    p.add_argument("folder", help="a folder of training images")
    p.add_argument("--out", required=True, help="runs folder: one run folder per image")
    p.add_argument(
        "--shard", default="0/1", help="i/n: every n-th image from the i-th (default 0/1)"
    )
    add_training(p)

    p = sub.add_parser("sample-many", help="draw samples from every run of a runs folder")
    p.add_argument("runs", help="runs folder written by 'sindiffusion train-many'")
    p.add_argument("--out", required=True, help="output folder: one sub-folder per run")
    p.add_argument("--shard", default="0/1", help="i/n: every n-th run from the i-th (default 0/1)")
    _add_output_size(p)
    add_sampling(p)

    p = sub.add_parser("ui", help="open the local web page (needs the [ui] extra: gradio)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this PC)"
    )
    p.add_argument("--port", type=positive_int, default=7860, help="port (default 7860)")
    p.add_argument(
        "--runs", default="runs", help="the only folder the page writes to (default ./runs)"
    )
    p.add_argument(
        "--config", help="a config JSON instead of the fast preset (or $SINDIFFUSION_UI_CONFIG)"
    )
    p.add_argument(
        "--max-upload-mb", type=positive_float, default=20.0, help="upload limit (default 20)"
    )
    p.add_argument(
        "--share",
        action="store_true",
        help="a public gradio link (off by default, whatever GRADIO_SHARE says); needs --auth",
    )
    p.add_argument(
        "--auth",
        action="append",
        metavar="USER:PASS",
        help="a login for the page (repeatable); required with --share or a --host beyond "
        "this computer",
    )
    p.add_argument("--auth-file", help="a file of USER:PASS lines, instead of --auth")
    p.add_argument(
        "--shared-runs",
        action="store_true",
        help="logged-in users all see and use every run (default: each only their own)",
    )
    add_device(p)

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
    p.add_argument(
        "--no-format-match",
        action="store_true",
        help="score the fakes as they are; by default, when the real image is a JPEG, each fake "
        "is first encoded the same way (its quality and chroma subsampling), so the features "
        "compare images, not file formats",
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--json", action="store_true", help="print JSON")

    apps.add_parsers(sub)  # outpaint, inpaint, paint, harmonize, edit
    return parser


def _add_output_size(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", help="output size WIDTHxHEIGHT, e.g. 512x256 (default: training size)")
    p.add_argument("--scale", help="output size as factors of the training size, e.g. 1.5x1")


COMMANDS = {
    "train": commands.cmd_train,
    "sample": commands.cmd_sample,
    "info": commands.cmd_info,
    "demo": commands.cmd_demo,
    "train-many": commands.cmd_train_many,
    "sample-many": commands.cmd_sample_many,
    "ui": commands.cmd_ui,
    "score": commands.cmd_score,
    **dict.fromkeys(apps.APP_COMMANDS, apps.cmd_app),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 on success, 2 for a user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse's own usage errors and --help
        return int(e.code or 0)
    with warnings.catch_warnings():
        warnings.simplefilter("always", SinDiffusionWarning)
        warnings.showwarning = _one_line_warning
        try:
            return COMMANDS[args.command](args)
        except SinDiffusionError as e:
            print(f"error: {e}", file=sys.stderr)
            return USER_ERROR
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130


_show_warning = warnings.showwarning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as one line, `warning: ...`, like the errors; others as Python shows them."""
    if issubclass(category, SinDiffusionWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        _show_warning(message, category, filename, lineno, file, line)
