"""Sampling settings, swept on trained runs: the quality benchmark's scores for each setting
without retraining (a setting is `config.sampling` changes; training stays as cached).

    python3 benchmarks/sampling_sweep.py bench-out/cache/fast-5min --images 1-12 \\
        --set '{}' --set '{"candidates": 8}' --set '{"patch": {"prior": 0.04}}'

For every run folder named by --images in the cache folder and every --set (a JSON object of
`SamplingConfig` fields, "patch" taking `PatchConfig` fields, or of the options a user passes
to `sample`, e.g. {"variety": 0.5}), draws --k samples at the image's
size (seed --seed, as the quality benchmark does: the empty setting reproduces its numbers),
scores them against the real image of --image-set (Places50 or LSUN), format-matched as the
quality benchmark does (SIFID-E, pixel diversity, copy and structure scores), and prints a
table of means; rows go to --jsonl. Only tune on a tune split (Places50 1-25, LSUN 25-37).

    python3 benchmarks/sampling_sweep.py bench-out/cache/lsun/fast-5min --image-set lsun \
        --images 25-37 --set '{}' --set '{"variation": 3}' --plot bench-out/lsun-frontier.png \
        --baselines bench-out/lsun-tune/per_image.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from quality import SETS, list_images, parse_images

from sindiffusion import SinDiffusion
from sindiffusion.checkpoint import load_checkpoint
from sindiffusion.config import PatchConfig, SamplingOptions
from sindiffusion.image import from_uint8, load_image, to_uint8
from sindiffusion.metrics import jpeg_format, score
from sindiffusion.report import markdown_table, mean_std

KEYS = ("sifid_e", "pixel_diversity", "copy_score", "copy_32", "duplication", "broken")


def split_setting(setting: dict) -> tuple[dict, dict]:
    """(config changes, call options) of a setting: `SamplingOptions` fields are options
    passed to `sample` (as a user passes them), the rest `SamplingConfig` fields."""
    names = {f.name for f in dataclasses.fields(SamplingOptions)}
    config = {k: v for k, v in setting.items() if k not in names}
    return config, {k: v for k, v in setting.items() if k in names}


def with_setting(ckpt, setting: dict):
    """The checkpoint's config with `setting`'s config changes applied to its sampling part."""
    sampling = ckpt.config.sampling
    changes = split_setting(setting)[0]
    if "patch" in changes:
        changes["patch"] = dataclasses.replace(sampling.patch, **changes["patch"])
    config = dataclasses.replace(ckpt.config, sampling=dataclasses.replace(sampling, **changes))
    return dataclasses.replace(ckpt, config=config)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("cache", help="a folder of run folders named by image number")
    p.add_argument("--images", required=True, help="image numbers, e.g. 1-12 (tune split only)")
    p.add_argument("--set", action="append", default=[], help="a JSON object of sampling fields")
    p.add_argument("--image-set", choices=sorted(SETS), default="places50")
    p.add_argument("--data", help="the real images (default: the image set's)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jsonl", default="bench-out/sampling-sweep.jsonl")
    p.add_argument(
        "--plot",
        help="also draw SIFID-E against pixel diversity, one point per setting, into this PNG "
        "(with the baselines of --baselines, a quality benchmark's per_image.csv)",
    )
    p.add_argument("--baselines", help="per_image.csv of a quality benchmark on the same images")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    numbers = parse_images(args.images)
    image_set = SETS[args.image_set]
    tune = set(parse_images(image_set.splits["tune"]))
    if any(n not in tune for n in numbers):
        print(f"note: only {image_set.splits['tune']} are the tune split", file=sys.stderr)
    settings = [json.loads(s) for s in (args.set or ["{}"])]
    for s in settings:
        PatchConfig(**s.get("patch", {}))  # a typo is an error before any sampling
    files = list_images(Path(args.data or image_set.data), numbers)
    rows = []
    for setting in settings:
        per_image = []
        for path in files:
            ckpt = with_setting(load_checkpoint(Path(args.cache) / path.stem), setting)
            real = load_image(path, max_size=ckpt.config.train.max_size)
            model = SinDiffusion.from_checkpoint(ckpt)
            t0 = time.perf_counter()
            options = split_setting(setting)[1]
            fakes = model.sample(n=args.k, size=tuple(real.shape[-2:]), seed=args.seed, **options)
            sec = (time.perf_counter() - t0) / args.k
            scores = score(real, from_uint8(to_uint8(fakes)), fake_format=jpeg_format(path))
            row = {"setting": setting, "image": path.stem, "steps": ckpt.step,
                   "sec_per_sample": sec, **{k: scores[k] for k in KEYS}}  # fmt: skip
            per_image.append(row)
            Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{json.dumps(setting)} #{path.stem}: " + "  ".join(
                f"{k} {row[k]:.3f}" for k in KEYS), flush=True)  # fmt: skip
        cells = []
        for k in (*KEYS, "sec_per_sample"):
            m, s = mean_std([r[k] for r in per_image])
            cells.append(f"{m:.3f} ± {s:.3f}" if k != "sifid_e" else f"{m:.2f} ± {s:.2f}")
        worst_div = min(r["pixel_diversity"] for r in per_image)
        rows.append((json.dumps(setting), *cells, f"{worst_div:.3f}"))
    print()
    print(markdown_table(["setting", *KEYS, "s / sample", "lowest div."], rows, align="l"))
    if args.plot:
        plot(
            args.jsonl,
            [json.dumps(s) for s in settings],
            numbers,
            args.plot,
            args.baselines,
            args.image_set,
        )
    return 0


def plot(
    jsonl: str,
    settings: list[str],
    numbers: list[int],
    out: str,
    baselines: str | None,
    image_set: str = "places50",
):
    """SIFID-E (mean over the images) against pixel diversity, one point per setting; each
    baseline a point where it has several samples per image (its diversity measured), else a
    horizontal line."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stems = {str(n) for n in numbers}
    rows = [json.loads(line) for line in Path(jsonl).read_text().splitlines()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    dial = []  # (variety, x, y) of the settings that are only a variety: one curve
    for name in settings:
        mine = {
            r["image"]: r for r in rows if json.dumps(r["setting"]) == name and r["image"] in stems
        }
        if len(mine) < len(stems):
            continue
        x = sum(r["pixel_diversity"] for r in mine.values()) / len(mine)
        y = sum(r["sifid_e"] for r in mine.values()) / len(mine)
        ax.plot(x, y, "o", color="#3a5a8c")
        setting = json.loads(name)
        if list(setting) == ["variety"]:
            dial.append((setting["variety"], x, y))
            label = f"variety {setting['variety']:g}"
        else:
            label = "the preset as it is" if name == "{}" else name
        ax.annotate(label if len(label) < 40 else label[:37] + "...", (x, y), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")  # fmt: skip
    if len(dial) > 1:
        _, xs, ys = zip(*sorted(dial), strict=True)
        ax.plot(xs, ys, "-", color="#3a5a8c", lw=1, label="ours along the variety dial")
        ax.legend(fontsize=8, loc="upper left")
    if baselines:
        table = list(csv.DictReader(open(baselines)))
        colours = {"singan": "#c0392b", "consingan": "#d35400", "gpnn": "#27ae60",
                   "gpdm": "#8e44ad"}  # fmt: skip
        for method, colour in colours.items():
            mine = [r for r in table if r["method"] == method and r["image"] in stems]
            if len(mine) != len(stems):
                continue
            mean = sum(float(r["sifid_e"]) for r in mine) / len(mine)
            divs = [float(r["pixel_diversity"]) for r in mine if r["pixel_diversity"]]
            if len(divs) == len(mine):
                ax.plot(sum(divs) / len(divs), mean, "s", color=colour)
                ax.annotate(method, (sum(divs) / len(divs), mean), fontsize=8, color=colour,
                            xytext=(4, -9), textcoords="offset points")  # fmt: skip
            else:
                ax.axhline(mean, color=colour, ls="--", lw=1)
                ax.text(ax.get_xlim()[0], mean, f" {method} {mean:.1f} (diversity unknown)",
                        color=colour, fontsize=8, va="bottom")  # fmt: skip
    ax.axvline(0.45, color="grey", ls=":", lw=1)
    ax.set_xlabel("pixel diversity (10 samples) ↑")
    ax.set_ylabel("SIFID-E ↓")
    name = {"places50": "Places50", "lsun": "LSUN"}.get(image_set, image_set)
    ax.set_title(f"Fidelity against diversity, {name} {min(numbers)}-{max(numbers)}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
