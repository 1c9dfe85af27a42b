"""Quality against wall-clock training time, per preset, on Places50 images; and a sampler table.

    python3 benchmarks/time_to_quality.py --images 7 --budgets 1,2,5 --presets fast,paper
    python3 benchmarks/time_to_quality.py --images 7 --samplers-only --run bench-out/ttq/fast-5/7

For every preset and budget (minutes of training time), trains a fresh model per image (runs
are cached in --out, so an interrupted benchmark resumes), draws --k samples at the image's
size, and scores them with the quality harness (SIFID-E, pixel diversity, LPIPS-E, patch NN,
copy score). SinGAN's output for the same images is scored the same way and drawn as a
horizontal line. The `paper` preset always runs beside `fast` so every figure is a ratio
measured in one run. Writes table.md, ttq.png (quality against minutes) and samplers.md.

The sampler table (on --run, default the `fast` run of the longest budget on the first image)
starts with the run's own sampler (its config: for `fast`, closed-form layout levels, then Heun
with autoguidance), then each sampler at --sampler-steps network levels, then the paper's
ancestral sampler at --ddpm-steps (1000; 2 samples, it takes minutes per sample on a CPU).
A hybrid run keeps its closed-form layout levels in every row: the steps are the network's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import sindiffusion
from sindiffusion.checkpoint import checkpoint_path, load_checkpoint
from sindiffusion.image import from_uint8, load_image, make_grid, save_image, to_uint8
from sindiffusion.metrics import score

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KEYS = ("sifid_e", "pixel_diversity", "lpips_e", "patch_nn", "copy_score")


def parse_list(text: str) -> list[str]:
    out: list[str] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += [str(i) for i in range(int(a), int(b) + 1)]
        elif part:
            out.append(part)
    return out


def train_cached(image: Path, config, minutes: float, run: Path) -> sindiffusion.SinDiffusion:
    if checkpoint_path(run).exists():
        ckpt = load_checkpoint(run)
        if ckpt.extra.get("budget") and ckpt.elapsed >= ckpt.extra["budget"] - 1:
            return sindiffusion.load(run)
    resume = checkpoint_path(run).exists()
    return sindiffusion.train(
        image, config=config, out=run, minutes=minutes, progress=False, resume=resume
    )


def score_samples(real: torch.Tensor, model, k: int, **kw) -> dict:
    """Draw k samples (seed 0) at the real image's size and score them as the quality
    benchmark does (as 8-bit images, never resized: a resize blurs, and SIFID-E punishes blur);
    adds seconds and network evaluations per sample."""
    images = 0

    def count(module, inputs, output):
        nonlocal images
        images += inputs[0].shape[0]

    # The network and autoguidance's weaker copy; closed-form layout levels are not counted.
    nets = [model.network, model.weak_network]
    hooks = [net.unet.register_forward_hook(count) for net in nets if net is not None]
    try:
        t0 = time.perf_counter()
        fakes = model.sample(n=k, size=tuple(real.shape[-2:]), seed=0, **kw)
        sec = (time.perf_counter() - t0) / k
    finally:
        for h in hooks:
            h.remove()
    fakes = from_uint8(to_uint8(fakes))
    r = score(real, fakes)
    r["sec_per_sample"] = sec
    r["network_calls"] = images / k
    return r, fakes


def mean_std(rows: list[dict], key: str) -> str:
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return f"{vals[0]:.3g}"
    return f"{statistics.mean(vals):.3g} ± {statistics.stdev(vals):.2g}"


def plot(results: dict, singan: float | None, path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for preset, by_budget in results.items():
        xs = sorted(by_budget)
        axes[0].plot(
            xs,
            [statistics.mean(r["sifid_e"] for r in by_budget[b]) for b in xs],
            "o-",
            label=preset,
        )
        axes[1].plot(
            xs,
            [statistics.mean(r.get("pixel_diversity", 0) for r in by_budget[b]) for b in xs],
            "o-",
            label=preset,
        )
    if singan is not None:
        axes[0].axhline(singan, color="gray", ls="--", label="SinGAN")
    axes[1].axhline(0.45, color="gray", ls=":", label="target 0.45")
    axes[0].set(
        xlabel="training minutes (2 CPU cores)",
        ylabel="SIFID-E (lower is better)",
        xscale="log",
        yscale="log",
    )
    axes[1].set(xlabel="training minutes (2 CPU cores)", ylabel="pixel diversity", xscale="log")
    budgets = sorted({b for by_budget in results.values() for b in by_budget})
    for ax in axes:
        ax.set_xticks(budgets, [f"{b:g}" for b in budgets])
        ax.minorticks_off()
        ax.legend()
    axes[1].set_title(f"{k} samples per point (fewer samples read as less diverse)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", type=Path, default=DATA / "places50")
    ap.add_argument("--images", default="7")
    ap.add_argument("--presets", default="fast,paper")
    ap.add_argument("--budgets", default="1,2,5")
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("bench-out/ttq"))
    ap.add_argument("--samplers-only", action="store_true")
    ap.add_argument("--paper-sample-steps", type=int, default=50, help="ddpm steps for paper")
    ap.add_argument("--paper-batch", type=int, default=4, help="paper preset's batch (128 OOMs)")
    ap.add_argument("--run", type=Path, help="run folder for the sampler table (default above)")
    ap.add_argument("--sampler-steps", default="6,10,20,50,100")
    ap.add_argument("--ddpm-steps", type=int, default=1000, help="the paper's sampler; 0: skip")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    images = parse_list(args.images)

    if not args.samplers_only:
        results: dict[str, dict[float, list[dict]]] = {}
        for preset in args.presets.split(","):
            for minutes in [float(b) for b in args.budgets.split(",")]:
                for name in images:
                    image = args.data / f"{name}.jpg"
                    cache = args.out / f"{preset}-{minutes:g}" / name
                    done = cache / "score.json"
                    if done.exists():
                        r = json.loads(done.read_text())
                    else:
                        config = sindiffusion.preset(preset)
                        if preset == "paper":  # batch 128 of whole images needs ~30 GB here
                            config.train.batch_size = args.paper_batch
                        model = train_cached(image, config, minutes, cache)
                        real = load_image(image, max_size=config.train.max_size)
                        # The paper's 1000-step sampler costs minutes per sample on a CPU.
                        kw = {"steps": args.paper_sample_steps} if preset == "paper" else {}
                        r, fakes = score_samples(real, model, args.k, **kw)
                        r["steps"] = model.step
                        save_image(
                            make_grid([real, *fakes], nrow=4),
                            cache / "grid.png",
                        )
                        done.write_text(json.dumps(r))
                    results.setdefault(preset, {}).setdefault(minutes, []).append(r)
                    print(preset, minutes, name, {k: round(v, 3) for k, v in r.items()}, flush=True)
        singan_rows = []
        for name in images:
            f = DATA / "baselines" / "places50" / "singan" / f"{name}.png"
            if f.exists():
                singan_rows.append(
                    score(load_image(args.data / f"{name}.jpg"), load_image(f)[None])
                )
        lines = [
            "| preset | minutes | steps | " + " | ".join(KEYS) + " | s/sample |",
            "|" + " --- |" * (len(KEYS) + 4),
        ]
        for preset, by_budget in results.items():
            for minutes, rows in sorted(by_budget.items()):
                cells = [mean_std(rows, k) for k in KEYS]
                lines.append(
                    f"| {preset} | {minutes:g} | {mean_std(rows, 'steps')} | "
                    + " | ".join(cells)
                    + f" | {mean_std(rows, 'sec_per_sample')} |"
                )
        if singan_rows:
            lines.append(
                "| SinGAN (published outputs) | – | – | "
                + " | ".join(mean_std(singan_rows, k) for k in KEYS)
                + " | – |"
            )
        table = "\n".join(lines)
        print(table)
        (args.out / "table.md").write_text(table + "\n")
        singan = statistics.mean(r["sifid_e"] for r in singan_rows) if singan_rows else None
        plot(results, singan, args.out / "ttq.png", args.k)
        print(f"wrote {args.out / 'table.md'} and {args.out / 'ttq.png'}")

    run = args.run
    if run is None and "fast" in args.presets.split(","):
        longest = max(float(b) for b in args.budgets.split(","))
        run = args.out / f"fast-{longest:g}" / images[0]
    if run is not None:
        model = sindiffusion.load(run)
        real = model.image
        dc = model.config.diffusion
        rows = [("default", None, min(args.k, 4))]
        rows += [
            (sampler, int(steps), min(args.k, 4))
            for sampler in ("dpmpp_2m", "heun", "euler", "ddpm")
            for steps in args.sampler_steps.split(",")
        ]
        if args.ddpm_steps > 0:
            rows.append(("ddpm", args.ddpm_steps, 2))
        lines = [
            f"Run {run} ({model.step} training steps); {dc.hybrid_steps} closed-form layout "
            f"levels above sigma {dc.hybrid_sigma:g} in every row; autoguidance {dc.autoguidance:g}.",
            "",
            "| sampler | steps | network calls / sample | samples | sifid_e | pixel_diversity "
            "| s/sample |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for sampler, steps, k in rows:
            kw = {} if sampler == "default" else {"sampler": sampler, "steps": steps}
            r, _ = score_samples(real, model, k, **kw)
            name = f"default ({dc.sampler} {dc.sample_steps})" if sampler == "default" else sampler
            lines.append(
                f"| {name} | {steps or dc.sample_steps} | {r['network_calls']:.0f} | {k} "
                f"| {r['sifid_e']:.3g} | {r.get('pixel_diversity', float('nan')):.3g} "
                f"| {r['sec_per_sample']:.2f} |"
            )
            print(lines[-1], flush=True)
        (args.out / "samplers.md").write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out / 'samplers.md'}")


if __name__ == "__main__":
    main()
