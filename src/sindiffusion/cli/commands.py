"""The subcommands that train, sample, describe and score: each parses nothing itself and
calls the Python API once (the options live in `cli.options`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from ..config import load_config
from ..image import (
    bundled_image,
    check_folder,
    load_image,
    make_grid,
    save_image,
    vstack,
    write_sample_chunks,
    write_samples,
)
from .options import (
    guidance,
    guidance_settings,
    open_model,
    output_size,
    sampling_kwargs,
    training_kwargs,
)


def cmd_train(args: argparse.Namespace) -> int:
    from .. import distributed
    from ..trainer import train

    t0 = time.perf_counter()
    try:  # under torchrun (WORLD_SIZE > 1) this trains data-parallel, see distributed.py
        image = args.image[0] if len(args.image) == 1 else args.image
        model = train(image, out=args.out, resume=args.resume, **training_kwargs(args))
    finally:
        distributed.teardown()
    if not distributed.World.from_env().main:
        return 0
    h, w = model.size
    what = f"a {w}x{h} image" if len(model.images) == 1 else f"{len(model.images)} images"
    print(
        f"trained {model.step} steps on {what} in {time.perf_counter() - t0:.0f} s; "
        f"run folder: {args.out}"
    )
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    check_folder(args.out, "the samples")
    size = output_size(args)
    model = open_model(args)
    guide = guidance(args, model)
    t0 = time.perf_counter()
    # Each chunk is written as it is done: memory does not grow with --n.
    chunks = model.sample_chunks(
        n=args.n, progress=True, guide=guide, **size, **sampling_kwargs(args)
    )
    count, grid = write_sample_chunks(chunks, args.out)
    dt = time.perf_counter() - t0
    h, w = model.output_size(size["size"], size["scale"])
    print(
        f"wrote {count} samples of {w}x{h} px to {args.out} ({dt / count:.2f} s each); grid: {grid}"
    )
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..checkpoint import load_checkpoint
    from ..config import SamplingOptions
    from ..patch_denoiser import finest_factor
    from ..sampling import reduced_settings
    from ..unet import UNet, count_parameters, measure_receptive_field

    ckpt = load_checkpoint(args.run)
    cfg = ckpt.config
    h, w = ckpt.image.shape[-2:]
    # What a sample of this run takes, for a photo laid out from a reduced copy too.
    opts = dataclasses.replace(cfg.sampling)
    hybrid = opts.hybrid_sigma > 0
    finest = finest_factor(cfg.sampling.patch, [img.shape[-2:] for img in ckpt.images])
    if hybrid:
        opts = reduced_settings(opts, SamplingOptions(), finest)
    info = {
        "preset": cfg.preset,
        "parameters": count_parameters(UNet(cfg.model)),
        "receptive_field_px": measure_receptive_field(cfg.model),
        "image_size": f"{w}x{h}",
        "images": len(ckpt.images),
        "step": ckpt.step,
        "training_minutes": round(ckpt.elapsed / 60, 2),
        "parameterization": cfg.diffusion.parameterization,
        "sampler": f"{opts.sampler} ({opts.steps} steps)",
    }
    if hybrid:
        info["layout"] = (
            f"closed-form above sigma {opts.hybrid_sigma:.3g}, the closest of "
            f"{opts.candidates} candidate layouts"
            + (f", from a {cfg.sampling.patch.finest} px copy of the image" if finest < 1 else "")
        )
    info["version"] = ckpt.version
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>20}: {v}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..trainer import train

    out = Path(args.out)
    image = bundled_image(args.image)
    print(f"training on the bundled image ({image.name}) for {args.minutes:g} minutes...")
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
    from ..metrics import METRICS, jpeg_format, match_sizes, score

    real = load_image(args.real)
    images = [load_image(path) for path in args.fakes]
    fakes, notes = match_sizes(real, images)
    # match_sizes returns one note per resized fake, in order; name the file in each.
    resized = [p for p, x in zip(args.fakes, images, strict=True) if x.shape != real.shape]
    for path, note in zip(resized, notes, strict=True):
        print(f"warning: {path}: {note}", file=sys.stderr)
    fmt = None if args.no_format_match else jpeg_format(args.real)
    if fmt is not None:
        print(
            f"note: the fakes are scored after a round trip through the real image's own "
            f"encoding, {fmt} (--no-format-match scores them as they are)",
            file=sys.stderr,
        )
    result = score(
        real, fakes, backbone=args.backbone, device=args.device,
        inception_weights=args.inception_weights, fake_format=fmt,
    )  # fmt: skip
    if args.json:
        fmt_name = None if fmt is None else str(fmt)
        report = {"real": args.real, "fakes": args.fakes, "format_match": fmt_name}
        print(json.dumps(report | {"metrics": result}, indent=2))
        return 0
    print(f"{args.real} against {len(args.fakes)} generated image(s):")
    for key, value in result.items():
        print(f"{key:>16}: {value:9.4f}   {METRICS[key]}")
    if len(args.fakes) < 2:
        print("(diversity needs two or more generated images)")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    from ..ui import parse_auth, serve

    auth = parse_auth(args.auth, args.auth_file)
    config = load_config(args.config) if args.config else None
    serve(args.host, args.port, args.runs, config, args.max_upload_mb, args.device,
          share=args.share, auth=auth, shared_runs=args.shared_runs)  # fmt: skip
    return 0


def cmd_train_many(args: argparse.Namespace) -> int:
    from ..many import format_table, parse_shard, train_many

    shard = parse_shard(args.shard)
    rows = train_many(args.folder, args.out, shard_spec=shard, **training_kwargs(args))
    print(format_table(rows), end="")
    out = args.out
    print(f"summary: {out}/summary.md, {out}/summary.csv; contact sheet: {out}/contact.png")
    return 1 if any(r.status.startswith("failed") for r in rows) else 0


def cmd_sample_many(args: argparse.Namespace) -> int:
    from ..many import parse_shard, sample_many

    shard = parse_shard(args.shard)
    check_folder(args.out, "the samples")
    folders = sample_many(
        args.runs,
        args.n,
        args.out,
        shard_spec=shard,
        device=args.device,
        guidance=guidance_settings(args),
        **output_size(args),
        **sampling_kwargs(args),
    )
    print(f"wrote {args.n} samples for each of {len(folders)} runs to {args.out}")
    return 0
