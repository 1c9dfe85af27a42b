"""The quality benchmark: our model beside other methods' outputs on a folder of images.

For each selected image: train (or reuse) a model, draw K samples at the image's own size,
score them with `metrics.score` against the image; score each comparison folder (one output
per image, `n.png` beside `n.jpg`) the same way. Writes to the output folder:

- ``table.md``: method x metric, mean ± std over images, training minutes and seconds per sample;
- ``per_image.csv``: one row per (method, image), with the image's texture share;
- ``diversity.png``: our per-image pixel diversity against the image's texture share (the
  diversity that redrawing only detail finer than 8 px would give; see `texture_share`);
- ``contact.png``: one row per image: real | 3 of our samples | each comparison method;
- ``frontier.png``: with several `--variety` rows, mean SIFID-E against diversity, ours a
  curve along the dial, the baselines with measured diversity points;
- ``scores/``: one JSON per (method, image), so an interrupted run resumes where it stopped;
- ``samples/``: our samples as PNGs.

    python benchmarks/quality.py --split report --minutes 5   # Places50 26-50: what we report
    python benchmarks/quality.py --split tune --minutes 5     # Places50 1-25: what we tune on
    python benchmarks/quality.py --set lsun --split report    # LSUN 38-49, structured scenes
    python benchmarks/quality.py --images 1-2 --steps 20 --k 2 --out bench-out/smoke   # smoke test

The splits (issues #28, #37): settings are chosen on the *tune* images only, and figures meant
for users come from the *report* images, which no decision ever looked at. Scoring is
format-matched (`--no-format-match` turns it off): every fake, ours and the baselines', goes
through the real file's own JPEG encoding before it is scored (`metrics.formats`).

Paths default to the repository root's neighbour ../shared (run it from the repository root).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import inspect
import io
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sindiffusion import SinDiffusion, preset, train, zero_training
from sindiffusion.checkpoint import Checkpoint, checkpoint_path, load_checkpoint
from sindiffusion.config import Config, PatchConfig
from sindiffusion.device import bf16_fast, resolve_device
from sindiffusion.errors import SinDiffusionError
from sindiffusion.image import (
    IMAGE_SUFFIXES,
    atomic_write,
    contact_sheet,
    from_uint8,
    load_image,
    natural_key,
    save_image,
    to_uint8,
)
from sindiffusion.image import list_images as image_files
from sindiffusion.metrics import jpeg_format, match_sizes, score, texture_share
from sindiffusion.report import markdown_table, mean_std


@dataclass(frozen=True)
class ImageSet:
    """A benchmark set: its real images, the folder of the published methods' outputs (one
    sub-folder per method: `n.png`/`n.jpg` beside real `n.jpg`, or several `n_k.jpg`), and
    its splits: settings are tuned on `tune` only, figures for users come from `report`."""

    data: str
    baselines: str
    compare: tuple[str, ...]
    splits: dict[str, str]
    max_size: int  # long side of the real image and of our training image, px: the set's own


SETS = {
    "places50": ImageSet(
        "../shared/data/places50",
        "../shared/data/baselines/places50",
        ("singan", "consingan", "gpnn", "gpdm"),
        {"tune": "1-25", "report": "26-50"},
        250,
    ),
    # Structured scenes (kitchens, towers, bridges), 10 published samples per baseline.
    "lsun": ImageSet(
        "../shared/data/lsun/real",
        "../shared/data/lsun",
        ("singan", "consingan"),
        {"tune": "25-37", "report": "38-49"},
        256,  # the scenes are 251 px long: kept as they are, as the baselines' samples
    ),
}
SPLITS = ("tune", "report")
# Places50's, for the benchmarks that score natural scenes only.
DEFAULT_DATA = SETS["places50"].data
DEFAULT_BASELINES = SETS["places50"].baselines
DEFAULT_COMPARE = SETS["places50"].compare
CONTACT_SAMPLES = 3  # our samples per contact-sheet row
DIVERSITY_FLOOR = 0.35  # issue #28's per-image pixel diversity target
METRICS_VERSION = 2  # raised when `score` gains a metric, so cached scores are recomputed

# Table columns: (key, header); arrows say which direction is better.
COLUMNS = (
    ("sifid_e", "SIFID-E ↓"),
    ("sifid", "SIFID ↓"),
    ("pixel_diversity", "pixel div. ↑"),
    ("lpips_e", "LPIPS-E ↑"),
    ("patch_nn", "patch NN ↓"),
    ("patch_swd", "patch SWD ↓"),
    ("copy_score", "copy ↓"),
    ("copy_32", "copy 32 ↓"),
    ("duplication", "dup. ↓"),
    ("broken", "broken ↓"),
    ("train_steps", "train steps"),
    ("train_minutes", "train min"),
    ("sample_seconds", "s / sample"),
)


@dataclass
class Method:
    """One row of the table: a name, a cache key, and how to get its fakes for one image."""

    name: str  # row label, e.g. "ours (fast, 5 min)" or "singan"
    key: str  # folder-safe name for the score cache and samples, e.g. "ours-fast-5min"
    # fakes(stem, path, real) -> (fakes (N, 3, H, W) in [-1, 1] or None if missing, extra dict)
    fakes: Callable[[str, Path, torch.Tensor], tuple[torch.Tensor | None, dict]]
    samples_dir: Path  # where its images lie: stem.png, or stem/sample-NNN.png when sampled
    k: int | None = None  # samples drawn per image; None: one given output per image
    # fingerprint(stem) -> what its fakes come from now (e.g. which trained run); a cached
    # score with another fingerprint is recomputed
    fingerprint: Callable[[str], str] | None = None


# --- image selection ----------------------------------------------------------------------------
def parse_images(text: str) -> list[int]:
    """'1-7,12-14' -> [1, 2, ..., 7, 12, 13, 14] (sorted, no repeats); raises SinDiffusionError."""
    numbers: set[int] = set()
    for part in text.replace(" ", "").split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise SinDiffusionError(
                f"--images {text!r} is not a list of numbers and ranges; write it like 1-7,12-14."
            )
        lo = int(m.group(1))
        numbers.update(range(lo, int(m.group(2) or lo) + 1))
    return sorted(numbers)


def list_images(folder: Path, numbers: Sequence[int] | None = None) -> list[Path]:
    """The image files of `folder` in natural order (2 before 10), or those whose stem is one
    of `numbers`, in that order."""
    files = sorted(image_files(folder), key=natural_key)
    if numbers is None:
        return files
    by_stem = {p.stem: p for p in files}
    missing = [str(n) for n in numbers if str(n) not in by_stem]
    if missing:
        raise SinDiffusionError(
            f"{folder} has no image named {', '.join(missing[:5])}; check --images."
        )
    return [by_stem[str(n)] for n in numbers]


def find_by_stem(folder: Path, stem: str) -> Path | None:
    """The image file `stem.*` in `folder` (n.png for n.jpg), or None."""
    for p in sorted(folder.glob(f"{stem}.*")):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            return p
    return None


def outputs_of(folder: Path, stem: str) -> list[Path]:
    """A method's outputs for image `stem` in `folder`: `stem.*` (one), or `stem_0.*`,
    `stem_1.*`, ... (several, in natural order); empty when it has none."""
    one = find_by_stem(folder, stem)
    if one is not None:
        return [one]
    many = [p for p in folder.glob(f"{stem}_*.*") if p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted((p for p in many if p.stem[len(stem) + 1 :].isdigit()), key=natural_key)


# --- table ----------------------------------------------------------------------------------------
def _cell(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    m, s = mean_std(values)
    digits = 3 if abs(m) < 10 else 1
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(values) > 1 else f"{m:.{digits}f}"


def format_table(records: dict[str, dict[str, dict]], images: Sequence[str] | None = None) -> str:
    """A markdown table, one row per method, one column per metric: mean ± std over images.

    records: method name -> image stem -> {"scores": {metric: value}, "train_minutes": float or
    None, "sample_seconds": float or None}; images: restrict to these stems. Columns that no
    method has are left out; a method without a value for a column shows n/a.
    """
    rows = []
    for name, per_image in records.items():
        chosen = [r for s, r in per_image.items() if images is None or s in images]
        cols = {}
        for key, _ in COLUMNS:
            vals = [r.get(key) if key.startswith(("train_", "sample_")) else r["scores"].get(key)
                    for r in chosen]  # fmt: skip
            cols[key] = [v for v in vals if v is not None]
        rows.append((name, len(chosen), cols))
    used = [(k, h) for k, h in COLUMNS if any(cols[k] for _, _, cols in rows)]
    return markdown_table(
        ["method", "images", *(h for _, h in used)],
        [(name, n, *(_cell(cols[k]) for k, _ in used)) for name, n, cols in rows],
        align="l",
    ).rstrip("\n")


def write_csv(
    records: dict[str, dict[str, dict]], path: Path, shares: dict[str, float] | None = None
) -> None:
    """One row per (method, image): every metric, training minutes, seconds per sample, and
    the image's texture share (`shares`: image stem -> `texture_share`; a property of the real
    image, the same on every method's row)."""
    keys = [k for k, _ in COLUMNS]
    shares = shares or {}
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["method", "image", "n_fakes", *keys, "texture_share"])
    for name, per_image in records.items():
        for stem, r in per_image.items():
            vals = [r.get(k) if k.startswith(("train_", "sample_")) else r["scores"].get(k)
                    for k in keys]  # fmt: skip
            vals.append(shares.get(stem))
            writer.writerow(
                [name, stem, r.get("n_fakes", "")] + ["" if v is None else f"{v:.6g}" for v in vals]
            )
    atomic_write(path, lambda tmp: Path(tmp).write_text(buf.getvalue()))


# Training fields that change when and what a run saves and previews, not its weights.
UNWEIGHTED_TRAIN_FIELDS = ("checkpoint_every", "preview_every", "preview_steps")


# --- methods ------------------------------------------------------------------------------------
def run_status(
    run_dir: Path, config: Config, minutes: float | None, steps: int | None
) -> tuple[str, Checkpoint | None]:
    """The state of a cached run folder: "missing", "stale" (trained with another config),
    "partial" (budget not spent: resume it) or "finished"; and its checkpoint, if any, with
    `config`'s sampling settings (a run differing only in those, or in how often it saved
    and previewed, is not retrained: they do not change the weights)."""
    if not checkpoint_path(run_dir).exists():
        return "missing", None
    ckpt = load_checkpoint(run_dir)
    cadence = {k: getattr(config.train, k) for k in UNWEIGHTED_TRAIN_FIELDS}
    train = dataclasses.replace(ckpt.config.train, **cadence)
    adopted = dataclasses.replace(ckpt.config, sampling=config.sampling, train=train)
    if adopted.to_dict() != config.to_dict():
        return "stale", ckpt
    ckpt.config = adopted
    done = ckpt.step >= steps if steps is not None else ckpt.elapsed >= minutes * 60
    return ("finished" if done else "partial"), ckpt


def run_fingerprint(ckpt: Checkpoint) -> str:
    """Which trained model and sampling settings a score came from: config hash (sampling
    settings included), steps, training seconds."""
    digest = hashlib.sha1(ckpt.config.to_json().encode()).hexdigest()[:12]
    return f"{digest}-{ckpt.step}-{ckpt.elapsed:.3f}"


def train_or_load(
    image: Path,
    run_dir: Path,
    config: Config,
    minutes: float | None,
    steps: int | None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> tuple[SinDiffusion, Checkpoint]:
    """Our model for `image`: the finished run in `run_dir` if it was trained with `config`,
    else trained with `sindiffusion.train` (an interrupted run is resumed, a run of another
    config is retrained). Returns the model and its checkpoint."""
    status, ckpt = run_status(run_dir, config, minutes, steps)
    if status == "finished":
        return SinDiffusion.from_checkpoint(ckpt, device=device), ckpt
    if status == "stale":
        print(f"  note: {run_dir} was trained with another config; retraining", file=sys.stderr)
        shutil.rmtree(run_dir)  # a cache entry: train() refuses to write over a run
    model = train(
        image, config=config, out=run_dir, steps=steps, minutes=minutes,
        seed=seed, resume=status == "partial", device=device, progress=progress,
    )  # fmt: skip
    status, ckpt = run_status(run_dir, config, minutes, steps)
    if status != "finished":  # train() saves and returns on Ctrl-C: stop the benchmark too
        raise KeyboardInterrupt
    return model, ckpt


def _folder_method(name: str, folder: Path) -> Method:
    """A comparison method whose outputs lie in `folder` (`outputs_of`: one or several per
    image; with several, its diversity is measured too)."""

    def fakes(stem: str, path: Path, real: torch.Tensor):
        files = outputs_of(folder, stem)
        if not files:
            return None, {}
        images = [load_image(f) for f in files]
        if all(img.shape == images[0].shape for img in images):
            return torch.stack(images), {}
        return match_sizes(real, images)[0], {}

    return Method(name=name, key=name, fakes=fakes, samples_dir=folder)


def _sampled_method(
    name: str, key: str, out: Path, k: int, seed: int, model_for, **options
) -> Method:
    """A method that draws `k` samples per image from `model_for(stem, path, real)` (with the
    sampling `options` of `SinDiffusion.sample`), timed, and keeps them as PNGs in
    out/samples/<key>/<stem>/."""
    folder = out / "samples" / key

    def fakes(stem: str, path: Path, real: torch.Tensor):
        model, extra = model_for(stem, path, real)
        t0 = time.perf_counter()
        samples = model.sample(n=k, size=tuple(real.shape[-2:]), seed=seed, **options)
        extra["sample_seconds"] = (time.perf_counter() - t0) / k
        d = folder / stem
        for old in d.glob("sample-*.png"):
            old.unlink()
        for i, x in enumerate(samples):
            save_image(x, d / f"sample-{i:03d}.png")
        # Scored as the 8-bit images we keep, like the comparison methods' PNGs.
        return from_uint8(to_uint8(samples)), extra

    return Method(name=name, key=key, fakes=fakes, samples_dir=folder, k=k)


def _budget_tag(args: argparse.Namespace) -> str:
    return f"{args.steps}steps" if args.steps is not None else f"{args.minutes:g}min"


def _budget_label(args: argparse.Namespace) -> str:
    return f"{args.steps} steps" if args.steps is not None else f"{args.minutes:g} min"


def build_methods(args: argparse.Namespace) -> list[Method]:
    """Our model, optionally zero-training, then the comparison folders, in table order."""
    out, cache = Path(args.out), Path(args.cache)
    run_tag = f"{args.preset}-{_budget_tag(args)}"

    minutes = None if args.steps else args.minutes
    config = preset(args.preset, minutes)
    config.train.max_size = args.max_size

    def ours(stem: str, path: Path, real: torch.Tensor):
        model, ckpt = train_or_load(
            path, cache / run_tag / stem, config, minutes, args.steps,
            seed=args.seed, device=args.device, progress=not args.quiet,
        )  # fmt: skip
        extra = {"train_minutes": ckpt.elapsed / 60, "train_steps": ckpt.step}
        return model, extra | {"fingerprint": run_fingerprint(ckpt)}

    def fingerprint(stem: str) -> str:
        status, ckpt = run_status(cache / run_tag / stem, config, minutes, args.steps)
        return run_fingerprint(ckpt) if status == "finished" else status

    methods = []
    for variety in args.variety or [None]:
        label, key, dial = f"ours ({args.preset}, {_budget_label(args)})", f"ours-{run_tag}", {}
        if variety is not None:  # the same runs, sampled at another setting of the dial
            label = f"{label[:-1]}, variety {variety:g})"
            key, dial = f"{key}-variety{variety:g}", {"variety": variety}
        methods.append(_sampled_method(label, key, out, args.k, args.seed, ours, **dial))
        methods[-1].fingerprint = fingerprint
    if args.zero_training:

        def zero(stem: str, path: Path, real: torch.Tensor):
            return zero_training(real, device=args.device), {"train_minutes": 0.0}

        methods.append(
            _sampled_method("zero-training", "zero-training", out, args.k, args.seed, zero)
        )
        # Scores are kept until the closed-form denoiser's default knobs or sampler change.
        defaults = inspect.signature(zero_training).parameters
        knobs = asdict(PatchConfig()) | {k: defaults[k].default for k in ("sampler", "steps")}
        knobs = json.dumps(knobs, sort_keys=True).encode()
        digest = hashlib.sha1(knobs).hexdigest()[:12]
        methods[-1].fingerprint = lambda stem: digest
    for name, folder in _comparisons(args):
        methods.append(_folder_method(name, folder))
    return methods


def _comparisons(args: argparse.Namespace) -> list[tuple[str, Path]]:
    if args.no_compare:
        return []
    if args.compare:
        pairs = []
        for item in args.compare:
            name, sep, folder = item.partition("=")
            if not sep or not name or not folder:
                raise SinDiffusionError(f"--compare {item!r} is not NAME=FOLDER.")
            if not Path(folder).is_dir():
                raise SinDiffusionError(f"--compare {name}: {folder} is not a folder.")
            pairs.append((name, Path(folder)))
        return pairs
    image_set = SETS[args.set]
    base = Path(image_set.baselines)
    found = [(n, base / n) for n in image_set.compare if (base / n).is_dir()]
    if not found:
        print(f"note: no comparison folders in {base}; scoring our model only", file=sys.stderr)
    return found


# --- the run ------------------------------------------------------------------------------------
def score_method(
    method: Method,
    stem: str,
    path: Path,
    real: torch.Tensor,
    record_file: Path,
    args: argparse.Namespace,
) -> dict | None:
    """The cached record of `method` on one image, or a fresh one (then cached); None if the
    method has no output for this image."""
    fmt = None if args.no_format_match else jpeg_format(path)
    if record_file.exists():
        record = json.loads(record_file.read_text())
        now = method.fingerprint(stem) if method.fingerprint else None
        cached = (record.get("k"), record.get("size"), record.get("fingerprint"))
        same_scoring = record.get("format") == str(fmt) and record.get("metrics") == METRICS_VERSION
        if cached == (method.k, list(real.shape[-2:]), now) and same_scoring:
            return record
    fakes, extra = method.fakes(stem, path, real)
    if fakes is None:
        return None
    fakes, notes = match_sizes(real, fakes)
    for note in notes:
        print(f"  note: {method.name} on {stem}: {note}", file=sys.stderr)
    scores = score(
        real, fakes, backbone=args.backbone, device=args.score_device,
        inception_weights=args.inception_weights, fake_format=fmt,
    )  # fmt: skip
    record = {
        "format": str(fmt),
        "metrics": METRICS_VERSION,
        "method": method.name,
        "image": stem,
        "n_fakes": int(fakes.shape[0]),
        "k": method.k,
        "size": list(real.shape[-2:]),
        "fingerprint": extra.get("fingerprint"),
        "scores": scores,
        "train_minutes": extra.get("train_minutes"),
        "train_steps": extra.get("train_steps"),
        "sample_seconds": extra.get("sample_seconds"),
    }
    atomic_write(record_file, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
    return record


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with parsed arguments (see `add_arguments`); returns 0."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.images and args.split:
        raise SinDiffusionError("give either --images or --split, not both.")
    image_set = SETS[args.set]
    args.data = args.data or image_set.data
    args.max_size = args.max_size or image_set.max_size
    spec = args.images or (image_set.splits[args.split] if args.split else None)
    files = list_images(Path(args.data), parse_images(spec) if spec else None)
    out = Path(args.out)
    methods = build_methods(args)
    score_dir = out / "scores" / args.backbone
    records: dict[str, dict[str, dict]] = {m.name: {} for m in methods}
    shares: dict[str, float] = {}
    t_start = time.perf_counter()
    for i, path in enumerate(files, 1):
        stem = path.stem
        real = load_image(path, max_size=args.max_size)
        shares[stem] = texture_share(real)
        h, w = real.shape[-2:]
        print(f"[{i}/{len(files)}] {path.name} ({w}x{h})", flush=True)
        for m in methods:
            t0 = time.perf_counter()
            record = score_method(m, stem, path, real, score_dir / m.key / f"{stem}.json", args)
            if record is None:
                continue
            records[m.name][stem] = record
            s = record["scores"]
            key = "sifid_e" if "sifid_e" in s else "sifid"
            div = s.get("pixel_diversity")
            print(
                f"  {m.name:<24} {key} {s[key]:.3f}  div {'n/a' if div is None else f'{div:.3f}'}"
                f"  copy32 {s.get('copy_32', float('nan')):.3f}  dup {s.get('duplication', float('nan')):.3f}"
                f"  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    print(f"done in {(time.perf_counter() - t_start) / 60:.1f} min")

    table = _report(records, files, args) + diversity_section(records, shares)
    atomic_write(out / "table.md", lambda tmp: Path(tmp).write_text(table))
    write_csv(records, out / "per_image.csv", shares)
    _write_contact(methods, files, out)
    wrote = [out / "table.md", out / "per_image.csv", out / "contact.png"]
    if plot_diversity(records, shares, out / "diversity.png"):
        wrote.append(out / "diversity.png")
    if plot_frontier(records, out / "frontier.png"):
        wrote.append(out / "frontier.png")
    print(table)
    print(f"wrote {', '.join(map(str, wrote))}")
    return 0


def _precision(args: argparse.Namespace) -> str:
    """How our model ran (the trainer's rule, `use_bf16`: the preset asks for bf16 and the
    device has it): training and sampling times differ about 3x between the two."""
    if not preset(args.preset).train.bf16:
        return "float32 (the preset's choice)"
    if bf16_fast(resolve_device(args.device)):
        return "bfloat16 autocast"
    return "float32 (no fast bfloat16 on this device)"


def _report(records: dict[str, dict[str, dict]], files: Sequence[Path], args) -> str:
    stems = [p.stem for p in files]
    budget = _budget_label(args)
    parts = [
        f"# Quality benchmark: {Path(args.data).name}"
        + (f", the {args.split} split" if args.split else "")
        + f", images {', '.join(stems)}",
        "",
        f"Ours: preset `{args.preset}`, {budget} of training per image, {args.k} samples per "
        f"image at the image's size (seed {args.seed}); torch threads: {torch.get_num_threads()}; "
        f"{_precision(args)}. "
        "Mean ± std over images; s / sample is the wall time of one batch of K samples / K. "
        "Comparison methods have their published outputs: one per image (diversity n/a) or "
        "several (LSUN: 10, diversity measured); their times are not known here. "
        + (
            "Every fake is scored after a round trip through the real file's own JPEG "
            "encoding (format-matched). "
            if not args.no_format_match
            else "Fakes scored as they are (--no-format-match). "
        )
        + (
            "SIFID-E is SIFID on EfficientNet-Lite0 features: not comparable with published "
            "(Inception) SIFID values."
            if args.backbone == "efficientnet"
            else "SIFID on InceptionV3 as in SinGAN's code."
        ),
        "",
        format_table(records),
    ]
    common = [s for s in stems if all(s in r for r in records.values())]
    if 0 < len(common) < len(stems) and len(records) > 1:
        parts += [
            "",
            f"Only the images every method has ({', '.join(common)}):",
            "",
            format_table(records, images=common),
        ]
    return "\n".join(parts) + "\n"


def _diversities(records: dict[str, dict[str, dict]]) -> dict[str, dict[str, float]]:
    """Method name -> image stem -> pixel diversity, for the methods that have one (ours)."""
    out = {}
    for name, per_image in records.items():
        divs = {s: r["scores"].get("pixel_diversity") for s, r in per_image.items()}
        divs = {s: d for s, d in divs.items() if d is not None}
        if divs:
            out[name] = divs
    return out


def diversity_section(records: dict[str, dict[str, dict]], shares: dict[str, float]) -> str:
    """Markdown: for each method with a diversity, the images below `DIVERSITY_FLOOR`, each
    with its texture share (low shares explain low diversities: see `texture_share`)."""
    parts = []
    for name, divs in _diversities(records).items():
        low = sorted((d, s) for s, d in divs.items() if d < DIVERSITY_FLOOR)
        listed = ", ".join(f"{s}: {d:.2f} (texture share {shares[s]:.2f})" for d, s in low)
        parts.append(
            f"{name}: {len(low)} of {len(divs)} images below pixel diversity {DIVERSITY_FLOOR}"
            + (f": {listed}" if low else "")
            + "."
        )
    return "\n" + "\n\n".join(parts) + "\n" if parts else ""


def _save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure to `path` as PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def plot_diversity(
    records: dict[str, dict[str, dict]], shares: dict[str, float], path: Path
) -> bool:
    """Draw our per-image pixel diversity against each image's texture share into `path`
    (PNG), the `DIVERSITY_FLOOR` as a line and each point labelled with its image; False
    (nothing drawn) when no method has a diversity."""
    divs = _diversities(records)
    if not divs:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, per_image in divs.items():
        stems = sorted(per_image, key=lambda s: natural_key(Path(s)))
        xs, ys = [shares[s] for s in stems], [per_image[s] for s in stems]
        ax.plot(xs, ys, "o", ms=4, label=name)
        for s, x, y in zip(stems, xs, ys, strict=True):
            ax.annotate(s, (x, y), fontsize=7, xytext=(3, 2), textcoords="offset points")
    highest = max(max(d.values()) for d in divs.values())
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="diversity = texture share")
    ax.axhline(DIVERSITY_FLOOR, color="#c0392b", lw=0.8, ls=":", label=f"{DIVERSITY_FLOOR} floor")
    ax.set_xlim(0, max(shares.values()) * 1.1)
    ax.set_ylim(0, max(0.8, 1.1 * highest))
    ax.set_xlabel("texture share of the image (detail finer than 8 px)")
    ax.set_ylabel("pixel diversity of our samples ↑")
    ax.legend(fontsize=8, loc="upper left")
    _save_figure(fig, path)
    return True


def plot_frontier(records: dict[str, dict[str, dict]], path: Path) -> bool:
    """Draw mean SIFID-E against mean pixel diversity into `path` (PNG): our rows as one curve
    (the settings of the variety dial, `--variety`, labelled), every other method with a
    measured diversity as a point; False (nothing drawn) without two of our rows."""
    divs = _diversities(records)
    points = {}
    for name, per_image in divs.items():
        fids = [
            r["scores"].get("sifid_e", r["scores"].get("sifid")) for r in records[name].values()
        ]
        points[name] = (sum(per_image.values()) / len(per_image), sum(fids) / len(fids))
    ours = sorted((xy, n) for n, xy in points.items() if n.startswith("ours"))
    if len(ours) < 2:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot([x for (x, _), _ in ours], [y for (_, y), _ in ours], "o-", color="#3a5a8c",
            label="ours along the variety dial")  # fmt: skip
    for (x, y), name in ours:
        label = name.rsplit(", ", 1)[-1].rstrip(")") if "variety" in name else name
        ax.annotate(label, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    for name, (x, y) in points.items():
        if not name.startswith("ours"):
            ax.plot(x, y, "s", ms=7, label=name)
    ax.set_xlabel("pixel diversity ↑")
    ax.set_ylabel("SIFID-E ↓ (mean over images)")
    ax.legend(fontsize=8, loc="upper left")
    _save_figure(fig, path)
    return True


def _write_contact(methods: Sequence[Method], files: Sequence[Path], out: Path) -> None:
    headers = ["real"]
    rows: list[list[Path | None]] = [[p] for p in files]
    for m in methods:
        n = 1 if m.k is None else min(CONTACT_SAMPLES, m.k)
        headers += [m.name] + [""] * (n - 1)
        for row, path in zip(rows, files, strict=True):
            if m.k is not None:
                found = sorted((m.samples_dir / path.stem).glob("sample-*.png"))[:n]
                row += found + [None] * (n - len(found))
            else:
                row.append(next(iter(outputs_of(m.samples_dir, path.stem)), None))
    labels = [[p.stem] for p in files]
    sheet = contact_sheet(rows, headers, labels=labels)
    save_image(sheet, out / "contact.png")


# --- command line -------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The benchmark's options."""
    p.add_argument(
        "--set",
        choices=sorted(SETS),
        default="places50",
        help="the image set, its baselines and splits: places50 (natural scenes, default) or "
        "lsun (structured scenes, 10 SinGAN and ConSinGAN samples each)",
    )
    p.add_argument("data", nargs="?", help="folder of images (default: the set's)")
    p.add_argument(
        "--images", help="image numbers (file stems), e.g. 1-10 or 1-7,12-14 (default all)"
    )
    p.add_argument(
        "--split",
        choices=SPLITS,
        help="tune: where settings are chosen (Places50 1-25, LSUN 25-37); report: where "
        "figures for users come from, never used for tuning (Places50 26-50, LSUN 38-49)",
    )
    p.add_argument("--preset", default="fast", help="our preset (default fast)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--minutes",
        type=_positive_float,
        default=5.0,
        help="training minutes per image (default 5)",
    )
    budget.add_argument(
        "--steps", type=_positive_int, help="training steps per image instead of minutes"
    )
    p.add_argument("--k", type=_positive_int, default=10, help="our samples per image (default 10)")
    p.add_argument("--seed", type=int, default=0, help="training and sampling seed (default 0)")
    p.add_argument(
        "--variety",
        type=float,
        action="append",
        help="our samples at this setting of the variety dial (0 the image redrawn, 1 the "
        "run's own samples, 2 the widest layouts), a row each, from the same trained runs "
        "(repeatable; default: the preset's samples)",
    )
    p.add_argument(
        "--max-size",
        type=_positive_int,
        help="long side of the real image and our training image (default: the set's, "
        "Places50 250, LSUN 256)",
    )
    p.add_argument(
        "--cache", default="bench-out/cache", help="trained run folders (default bench-out/cache)"
    )
    p.add_argument("--out", default="bench-out/quality", help="output folder (bench-out/quality)")
    p.add_argument(
        "--compare",
        action="append",
        metavar="NAME=DIR",
        help="a folder of another method's outputs, n.png or n_0.jpg, n_1.jpg, ... per image n "
        "(repeatable; default: the set's published baselines)",
    )
    p.add_argument("--no-compare", action="store_true", help="score our model only")
    p.add_argument(
        "--no-format-match",
        action="store_true",
        help="score fakes as they are, not after the real file's own JPEG encoding",
    )
    p.add_argument("--zero-training", action="store_true", help="add the zero-training mode's row")
    p.add_argument("--backbone", choices=("efficientnet", "inception"), default="efficientnet")
    p.add_argument("--inception-weights", help="InceptionV3 weights file for --backbone inception")
    p.add_argument("--device", help="training and sampling device (default: cuda if available)")
    p.add_argument("--score-device", default="cpu", help="metric device (default cpu)")
    p.add_argument(
        "--threads", type=_positive_int, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument("--quiet", action="store_true", help="no training progress bars")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, run, print errors as one line."""
    parser = argparse.ArgumentParser(prog="quality.py", description=__doc__.split("\n")[0])
    add_arguments(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return run(args)
    except SinDiffusionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
