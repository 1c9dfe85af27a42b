"""Seeded outputs of every sampling path, saved whole, to prove a refactor changes nothing.

    python3 tools/snapshot_outputs.py --save before.pt      # on the old code
    python3 tools/snapshot_outputs.py --compare before.pt   # on the new code: all bit-identical?

Each entry is one seeded call on the CPU in float32 (one thread): every sampler, candidates,
renoised layouts, autoguidance, shifts, tiles and mirrors, a model of the `paper` kind,
zero-training, a few training steps, and each application (outpainting, inpainting, the
SDEdit family, retargeting, upscaling, analogy, animation, a gradient guide). The networks
are untrained, their weights drawn from a seeded generator, except the one trained entry.
The pinned tests check a slice of a few of these; this checks every pixel of all of them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import natural_tensor, tiny_config  # noqa: E402
from test_pinned_untrained import TINY, seeded_weights  # noqa: E402

import sindiffusion  # noqa: E402
from sindiffusion import apps  # noqa: E402
from sindiffusion.guidance import GradientGuidance  # noqa: E402


def hybrid_model() -> sindiffusion.SinDiffusion:
    cfg = sindiffusion.preset("fast")
    cfg.train.bf16, cfg.train.channels_last = False, False
    return sindiffusion.SinDiffusion(cfg, natural_tensor(32, 40), seeded_weights(cfg.model))


def paper_model() -> sindiffusion.SinDiffusion:
    cfg = sindiffusion.preset("paper")
    cfg.model = TINY
    return sindiffusion.SinDiffusion(cfg, natural_tensor(16, 24), seeded_weights(TINY))


def brightness_guide(den):
    return GradientGuidance(den, lambda x0: x0.mean(dim=(1, 2, 3)), scale=0.2)


def entries() -> dict[str, Callable[[], torch.Tensor]]:
    hy, pa = hybrid_model(), paper_model()
    zt = sindiffusion.zero_training(natural_tensor(32, 40), steps=6)
    mask = torch.zeros(32, 40, dtype=torch.bool)
    mask[8:24, 6:26] = True
    out: dict[str, Callable[[], torch.Tensor]] = {}
    for sampler in ("ddpm", "ddim", "heun", "dpmpp_2m"):
        out[f"hybrid {sampler}"] = lambda s=sampler: hy.sample(n=2, seed=1, sampler=s)
        out[f"paper {sampler}"] = lambda s=sampler: pa.sample(n=2, seed=1, sampler=s, steps=6)
        out[f"zero {sampler}"] = lambda s=sampler: zt.sample(n=1, seed=1, sampler=s)
    out |= {
        "hybrid default n=3": lambda: hy.sample(n=3, seed=2),
        "hybrid wide": lambda: hy.sample(n=1, seed=0, size=(24, 64)),
        "hybrid renoise": lambda: hy.sample(n=2, seed=0, renoise=0.3, candidates=3),
        "hybrid no candidates": lambda: hy.sample(n=2, seed=0, candidates=1),
        "hybrid no autoguidance": lambda: hy.sample(n=1, seed=0, autoguidance=0.0),
        "hybrid strong autoguidance": lambda: hy.sample(n=1, seed=0, autoguidance=1.0),
        "hybrid prior": lambda: hy.sample(n=1, seed=0, prior=0.1),
        "hybrid prior pair": lambda: hy.sample(n=1, seed=0, prior=(0.03, 0.06)),
        "hybrid tile": lambda: hy.sample(n=1, seed=0, tile=True),
        "hybrid mirror xy": lambda: hy.sample(n=1, seed=0, mirror="xy"),
        "hybrid steps 3": lambda: hy.sample(n=1, seed=0, steps=3),
        "hybrid guided": lambda: hy.sample(n=1, seed=0, guide=brightness_guide),
        "hybrid with_patch": lambda: hy.with_patch(topk=None, temperature=2.0).sample(n=1),
        "zero tile": lambda: zt.sample(n=1, seed=3, tile=True),
        "zero mirror": lambda: zt.sample(n=1, seed=3, mirror="x", size=(20, 48)),
        "outpaint": lambda: apps.outpaint(hy, extend={"right": 16, "top": 8}, n=2, seed=0),
        "outpaint candidates": lambda: apps.outpaint(
            hy, extend={"left": 12}, n=1, seed=0, candidates=3, autoguidance=0.3
        ),
        "outpaint ddpm": lambda: apps.outpaint(hy, extend={"bottom": 8}, n=1, sampler="ddpm"),
        "outpaint paper": lambda: apps.outpaint(pa, extend={"right": 8}, n=1, steps=6),
        "inpaint": lambda: apps.inpaint(hy, mask, n=2, seed=0),
        "inpaint renoise": lambda: apps.inpaint(hy, mask, n=1, seed=0, renoise=0.3),
        "inpaint zero": lambda: apps.inpaint(zt, mask, n=1, seed=0),
        "inpaint no resampling": lambda: apps.inpaint(hy, mask, n=1, resample=1),
        "paint": lambda: apps.paint(hy, natural_tensor(32, 40, seed=5), n=1),
        "harmonize": lambda: apps.harmonize(hy, natural_tensor(32, 40, seed=6), mask, n=1),
        "edit": lambda: apps.edit(hy, natural_tensor(32, 40, seed=7), n=1, strength=0.3),
        "sdedit guided": lambda: apps.sdedit(hy, None, n=1, guide=brightness_guide),
        "retarget": lambda: apps.retarget(hy, (32, 64), n=1),
        "upscale": lambda: apps.upscale(hy, 1.5, n=1),
        "analogy": lambda: apps.analogy(natural_tensor(24, 32, seed=8), hy, n=1),
        "analogy zero": lambda: apps.analogy(natural_tensor(24, 32, seed=8), zt, n=1),
        "animate": lambda: apps.animate(hy, frames=4, keyframes=2, steps=3),
        "animate zero": lambda: apps.animate(zt, frames=3, keyframes=2),
        "trained tiny": lambda: sindiffusion.train(
            natural_tensor(32, 32),
            config=tiny_config(),
            steps=6,
            seed=0,
            progress=False,
            device="cpu",
        ).sample(n=1, seed=0),  # fmt: skip
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--save", metavar="FILE", help="write every output to FILE")
    action.add_argument("--compare", metavar="FILE", help="compare every output with FILE")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    got = {name: fn() for name, fn in entries().items()}
    if args.save:
        torch.save(got, args.save)
        print(f"{len(got)} outputs saved to {args.save}")
        return 0
    want = torch.load(args.compare)
    bad = 0
    for name in sorted(set(got) | set(want)):
        if name not in got or name not in want:
            print(f"{name}: only in {'the file' if name in want else 'this run'}")
            bad += 1
        elif not torch.equal(got[name], want[name]):
            diff = (got[name] - want[name]).abs().max().item()
            print(f"{name}: differs (max {diff:.3g})")
            bad += 1
    print(f"{len(got) - bad} of {len(got)} outputs bit-identical")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
