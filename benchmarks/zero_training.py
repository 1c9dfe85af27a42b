"""Zero-training benchmark: speed, memory and quality of the closed-form patch denoiser.

For each selected Places50 image: draw K samples at the image's size (seconds per sample),
score them with `metrics.score` (SIFID-E, pixel diversity, LPIPS-E, patch NN, copy scores)
beside the SinGAN / ConSinGAN / GPNN / GPDM outputs in ../shared/data/baselines/places50 scored
the same way (one sample each, so no diversity), every fake format-matched (a JPEG round trip
at the real file's own quality first); then time one large sample (default 1024x1024) from
the first image and record the process's peak memory. Writes to --out (default
bench-out/zero/): table.md (printed too), contact.png (real | 3 samples | baselines),
samples/<image>/sample-NNN.png and large.png.

    python benchmarks/zero_training.py --images 1-3 --k 4
    python benchmarks/zero_training.py --split report --k 10
    python benchmarks/zero_training.py --images 26 --large-only   # 1024 px time and memory
    python benchmarks/zero_training.py --images 1-7,12-14 --knobs '{"temperature": 1.5}'
    python benchmarks/zero_training.py --split tune --knobs '{"prior": 0.04}' --jsonl rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from quality import (
    DEFAULT_BASELINES,
    DEFAULT_COMPARE,
    DEFAULT_DATA,
    SETS,
    SPLITS,
    find_by_stem,
    format_table,
    list_images,
    parse_images,
)

from sindiffusion import zero_training
from sindiffusion.image import atomic_write, contact_sheet, load_image, parse_size, save_image


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--images", default="1,3,12", help="Places50 numbers, e.g. 1-7,12-14")
    p.add_argument("--split", choices=SPLITS, help="Places50's tune (1-25) or report (26-50)")
    p.add_argument(
        "--no-format-match",
        action="store_true",
        help="score fakes as they are, not after the real file's own JPEG encoding",
    )
    p.add_argument("--k", type=int, default=4, help="samples per image (default 4)")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--baselines", default=DEFAULT_BASELINES)
    p.add_argument("--out", default="bench-out/zero")
    p.add_argument("--knobs", default="{}", help="PatchConfig knobs as JSON")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's)")
    p.add_argument("--sampler", default=None, help="sampler (default: the model's)")
    p.add_argument("--large", default="1024x1024", help="size of the timed large sample; 0: skip")
    p.add_argument(
        "--large-only",
        action="store_true",
        help="only the large sample, from the first image: its time and the process's peak "
        "memory without the scoring networks",
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--jsonl", help="also append one JSON row per image (knobs, scores, times) to this file"
    )
    args = p.parse_args(argv)
    if args.threads:  # set only when asked: it changes the process's kernels from then on
        torch.set_num_threads(args.threads)
    from sindiffusion.metrics import jpeg_format, score

    out = Path(args.out)
    knobs = json.loads(args.knobs)
    images = SETS["places50"].splits[args.split] if args.split else args.images
    files = list_images(Path(args.data), parse_images(images))
    run = {"steps": args.steps, "sampler": args.sampler}
    records: dict[str, dict[str, dict]] = {"zero-training": {}}
    records.update({name: {} for name in DEFAULT_COMPARE})
    sheet_rows, labels, first_model = [], [], None
    cpu: dict[str, float] = {}  # CPU seconds per sample, all threads: robust to a busy machine
    if args.large_only:
        first_model = zero_training(load_image(files[0], max_size=250), **knobs)
    for path in [] if args.large_only else files:
        stem = path.stem
        real = load_image(path, max_size=250)
        fmt = None if args.no_format_match else jpeg_format(path)
        model = zero_training(real, **knobs)
        first_model = first_model or model
        model.sample(1, seed=args.seed + 999, **run)  # warm-up: allocator, kernels
        t0, c0 = time.perf_counter(), time.process_time()
        fakes = torch.cat([model.sample(1, seed=args.seed + i, **run) for i in range(args.k)])
        sec = (time.perf_counter() - t0) / args.k
        cpu[stem] = (time.process_time() - c0) / args.k
        paths = [
            save_image(f, out / "samples" / stem / f"sample-{i:03d}.png")
            for i, f in enumerate(fakes)
        ]
        scores = score(real, fakes, fake_format=fmt)
        records["zero-training"][stem] = {"scores": scores, "sample_seconds": sec}
        if args.jsonl:  # rows of several runs side by side: a sweep needs no scratch script
            row = {"knobs": knobs, **run, "k": args.k, "image": stem, "sec_per_sample": sec,
                   "cpu_sec_per_sample": cpu[stem], **scores}  # fmt: skip
            Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
        print(
            f"{stem}: {sec:.2f} s/sample  " + "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
        )
        row = [path, *paths[:3], *[None] * (3 - len(paths[:3]))]
        for name in DEFAULT_COMPARE:
            base = find_by_stem(Path(args.baselines) / name, stem)
            row.append(base)
            if base is not None:
                scores = score(real, load_image(base)[None], fake_format=fmt)
                records[name][stem] = {"scores": scores}
        sheet_rows.append(row)
        labels.append([stem])

    lines = []
    if not args.large_only:
        lines += [format_table({k: v for k, v in records.items() if v}), ""]
        lines.append(
            "CPU seconds per sample (all threads): "
            + ", ".join(f"{k}: {v:.2f}" for k, v in cpu.items())
            + "."
        )
    if args.large != "0" and first_model is not None:
        h, w = parse_size(args.large)
        first_model.sample(1, size=(h, w), seed=args.seed, **run)  # warm-up at this size
        t0, c0 = time.perf_counter(), time.process_time()
        big = first_model.sample(1, size=(h, w), seed=args.seed + 1, **run)
        sec, csec = time.perf_counter() - t0, time.process_time() - c0
        save_image(big[0], out / "large.png")
        lines.append(
            f"Large sample ({files[0].stem}, {w}x{h}): {sec:.2f} s ({csec:.2f} CPU s); peak memory of the "
            f"process ({'sampling only' if args.large_only else 'sampling and scoring'}): "
            f"{peak_rss_mb():.0f} MB."
        )
    lines.append(
        f"Knobs: {json.dumps(asdict(first_model.config.sampling.patch)) if first_model else knobs}; "
        f"sampler {args.sampler or first_model.config.sampling.sampler}, "
        f"steps {args.steps or first_model.config.sampling.steps}; "
        f"{torch.get_num_threads()} threads; K = {args.k}; "
        + ("fakes scored as they are." if args.no_format_match else "fakes format-matched.")
    )
    text = "\n".join(lines) + "\n"
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "table.md", lambda tmp: Path(tmp).write_text(text))
    if not sheet_rows:  # --large-only
        print(f"wrote {out}/table.md and {out}/large.png")
        return 0
    sheet = contact_sheet(
        sheet_rows, ["real", "zero 1", "zero 2", "zero 3", *DEFAULT_COMPARE], labels
    )
    save_image(sheet, out / "contact.png")
    print(f"wrote {out}/table.md and {out}/contact.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
