"""Layout candidates: what `sample --candidates N` chooses among, as a picture and a number.

For each trained run (a hybrid model, e.g. the `fast` preset): draw `--rows` times N closed-form
layouts, score each with `layout_mismatch` (Fréchet distance of their coarse patches' statistics
to the training image's), finish every candidate with the network, and compare the chosen samples with
the first candidates (what 1 candidate gives) on SIFID-E and pixel diversity. The layouts are
whole closed-form images noised afresh to `--renoise` for the network (the run's
`sampling.renoise` by default), or with `--renoise 0` the clean estimates at the level where
`sample` compares them (`layout_cut`: one closed-form level before the network takes over
mid-path). Writes a picture (per row: the training image, the N layouts
with their scores, the N finished samples; the chosen one framed in red) and a table (printed
and as table.md) into --out.

    python benchmarks/layout_candidates.py bench-out/cache/fast-1500steps/{2,3,6} --rows 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import sindiffusion
from sindiffusion.checkpoint import load_checkpoint
from sindiffusion.config import SamplingOptions
from sindiffusion.image import atomic_write, tensor_to_pil
from sindiffusion.layout import layout_mismatch, random_shifts
from sindiffusion.metrics.diversity import pixel_diversity
from sindiffusion.metrics.sifid import sifid
from sindiffusion.sampling import Kind, build_plan


def candidate_row(model, n: int, seed: int, renoise: float):
    """n layouts (n, 3, h, w), their mismatch scores (n,) and the finished samples (n, 3, h, w)
    each of them becomes, all from one seeded generator, through the stages `sample` runs."""
    plan = build_plan(*model.prepare(SamplingOptions(candidates=2, renoise=renoise)))
    if plan.kind is Kind.ONE:
        raise SystemExit("not a hybrid model with levels above its switch (hybrid_sigma > 0).")
    first, second = plan.stages
    g = torch.Generator().manual_seed(seed)
    shift = random_shifts(n, plan.shift, g, model.device)
    extra = {"shift": shift} if shift is not None else {}
    x = torch.randn((n, 3, *model.size), generator=g) * first.sigmas[0]
    x = first.sampler(first.denoiser, x, first.sigmas, generator=g, extra_args=extra)
    renoised = plan.kind is Kind.RENOISE
    layouts = x if renoised else first.denoiser(x, first.sigmas[-1], **extra)
    if renoised:
        x = x + second.sigmas[0] * torch.randn(x.shape, generator=g)
    finals = second.sampler(second.denoiser, x, second.sigmas, generator=g, extra_args=extra)
    return layouts, layout_mismatch(layouts, model.image), finals.clamp(-1, 1)


def draw_rows(image: torch.Tensor, rows: list) -> Image.Image:
    """Per row: image | layouts with scores | finished samples; the chosen pair framed red."""
    h, w = image.shape[-2:]
    n = rows[0][0].shape[0]
    pad = 4
    sheet = Image.new("RGB", (pad + (2 * n + 1) * (w + pad), pad + len(rows) * (h + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (layouts, scores, finals) in enumerate(rows):
        y = pad + r * (h + pad)
        best = int(scores.argmin())
        tiles = [image, *layouts.clamp(-1, 1), *finals]
        for j, tile in enumerate(tiles):
            x = pad + j * (w + pad)
            sheet.paste(tensor_to_pil(tile), (x, y))
            if j in (1 + best, 1 + n + best):
                draw.rectangle((x - 2, y - 2, x + w + 1, y + h + 1), outline="red", width=3)
            if 1 <= j <= n:
                text = f"{float(scores[j - 1]):.3f}"
                draw.rectangle((x, y, x + 6 + 6 * len(text), y + 13), fill="white")
                draw.text((x + 3, y + 1), text, fill="black")
    return sheet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders of hybrid models (e.g. the fast preset)")
    p.add_argument("--candidates", type=int, default=4, help="layouts per sample (default 4)")
    p.add_argument("--rows", type=int, default=4, help="samples per run (default 4)")
    p.add_argument(
        "--renoise",
        type=float,
        help="sigma the closed-form layouts are noised to for the network; 0 = hand over "
        "mid-path at the switch (default: each run's layout_renoise)",
    )
    p.add_argument(
        "--layout-prior",
        type=float,
        help="the closed-form denoiser's position prior (default: each run's sampling.patch.prior)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench-out/layout", help="output folder")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    args = p.parse_args()
    if args.rows < 2:
        p.error("--rows must be at least 2: pixel diversity compares samples")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    table = []
    for run in args.runs:
        ckpt = load_checkpoint(run)
        if args.layout_prior is not None:
            ckpt.config.sampling.patch.prior = args.layout_prior
        model = sindiffusion.SinDiffusion.from_checkpoint(ckpt, device="cpu")
        renoise = model.config.sampling.renoise if args.renoise is None else args.renoise
        rows = [
            candidate_row(model, args.candidates, args.seed + r, renoise) for r in range(args.rows)
        ]
        # The first candidate of each row is what plain sampling (1 candidate) would give.
        first = torch.stack([f[0] for _, _, f in rows])
        chosen = torch.stack([f[int(s.argmin())] for _, s, f in rows])
        name = Path(run).name
        table.append(
            {
                "run": name,
                "sifid_first": float(sifid(model.image, first).mean()),
                "sifid_chosen": float(sifid(model.image, chosen).mean()),
                "div_first": pixel_diversity(model.image, first),
                "div_chosen": pixel_diversity(model.image, chosen),
            }
        )
        sheet = draw_rows(model.image, rows)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / f"{name}.jpg", lambda f, s=sheet: s.save(f, "JPEG", quality=88))
        print(f"{name}: {out / f'{name}.jpg'}", flush=True)
    lines = [
        "| run | SIFID-E, 1 candidate ↓ | chosen ↓ | pixel div., 1 candidate ↑ | chosen ↑ |",
        "|---|---:|---:|---:|---:|",
    ]
    for t in table:
        lines.append(
            f"| {t['run']} | {t['sifid_first']:.1f} | {t['sifid_chosen']:.1f} "
            f"| {t['div_first']:.3f} | {t['div_chosen']:.3f} |"
        )
    md = "\n".join(lines) + "\n"
    atomic_write(out / "table.md", lambda f: Path(f).write_text(md))
    print(md)


if __name__ == "__main__":
    main()
