"""Quality per training step of the `fast` preset, on a GPU: is its 5-minute CPU budget (1500
steps) what limits it, and where should the network take over from the closed-form layout?

    python3 benchmarks/steps_sweep.py --device cuda --workers 10 --seconds 390 \\
        --variant base-1500:-1.8:0.8:1500:0.7 --variant wide-6000:-1.2:1.2:6000:0.7,2,4,0

Each variant NAME:P_MEAN:P_STD:STEPS:SWITCHES trains the `fast` preset with the training noise
distribution log-normal(P_MEAN, P_STD) for STEPS steps on every image, then scores K samples
at each switch sigma (`diffusion.hybrid_sigma`; 0 = the network alone). Jobs run in worker
processes that share the device, in the order given, until --seconds have passed: a job that
would overrun trains on a time budget instead (its learning rate decays over that budget) and
reports the steps it reached; one that cannot start in time is skipped. Writes one JSON line per
(variant, image, switch) to OUT/results.jsonl, 3-sample strips to OUT/samples/, and prints a
table of means. Needs the quality harness's images (../shared/data/places50 by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "places50"
SCORE_SECONDS = 12  # reserved per switch for sampling and scoring after training


def parse_variant(text: str) -> tuple[str, float, float, int, list[float]]:
    name, p_mean, p_std, steps, switches = text.split(":")
    return name, float(p_mean), float(p_std), int(steps), [float(s) for s in switches.split(",")]


def run_job(variant, image: str, deadline: float, out: Path, device: str, k: int):
    import torch

    torch.set_num_threads(1)  # the workers share the machine's cores
    from sindiffusion import SinDiffusion, train
    from sindiffusion.config import preset
    from sindiffusion.image import from_uint8, load_image, save_image, to_uint8
    from sindiffusion.metrics import score

    name, p_mean, p_std, steps, switches = variant
    left = deadline - time.time() - SCORE_SECONDS * len(switches)
    if left < 30:
        return []
    cfg = preset("fast")
    cfg.diffusion.p_mean, cfg.diffusion.p_std = p_mean, p_std
    cfg.train.checkpoint_every = cfg.train.preview_every = 10**9  # nothing written mid-run
    t0 = time.time()
    model = train(image, config=cfg, steps=steps, minutes=left / 60, device=device, progress=False)
    train_s = time.time() - t0
    ckpt, stem = model.checkpoint, Path(image).stem
    real = load_image(image, max_size=cfg.train.max_size)
    rows = []
    for switch in switches:
        ckpt.config.sampling = dataclasses.replace(ckpt.config.sampling, hybrid_sigma=switch)
        model = SinDiffusion.from_checkpoint(ckpt, device=device)
        x = model.sample(n=k, size=tuple(real.shape[-2:]), seed=0)
        x = from_uint8(to_uint8(x))  # scored as the 8-bit images a user gets
        row = {"variant": name, "image": stem, "switch": switch, "steps": ckpt.step,
               "train_s": round(train_s, 1), **score(real, x, device=device)}  # fmt: skip
        rows.append(row)
        with open(out / "results.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        save_image(torch.cat(list(x[:3]), dim=-1), out / "samples" / f"{name}_{stem}_{switch}.jpg")
    print(name, stem, ckpt.step, "steps", [round(r["sifid_e"], 1) for r in rows], flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=str(DATA), help="folder of images")
    p.add_argument("--images", default="1-7,12-14", help="image numbers (default 1-7,12-14)")
    p.add_argument("--variant", action="append", required=True, type=parse_variant)
    p.add_argument("--seconds", type=float, default=390, help="wall-clock limit of the sweep")
    p.add_argument("--workers", type=int, default=10, help="jobs at once")
    p.add_argument("--k", type=int, default=10, help="samples per image and switch")
    p.add_argument("--device", default="cuda")
    p.add_argument("--out", default="bench-out/steps-sweep")
    args = p.parse_args()

    from quality import list_images, parse_images

    out = Path(args.out)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    images = list_images(Path(args.data), parse_images(args.images))
    deadline = time.time() + args.seconds
    jobs = [(v, str(i)) for v in args.variant for i in images]
    rows = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        pending = [pool.apply_async(run_job, (v, i, deadline, out, args.device, args.k))
                   for v, i in jobs]  # fmt: skip
        for job in pending:
            try:
                rows += job.get(timeout=max(1.0, deadline - time.time() + 120))
            except Exception as e:  # one failed job must not lose the others' results
                print(f"a job failed: {e!r}", file=sys.stderr, flush=True)
    print("| variant | switch | images | steps | SIFID-E | pixel div. | copy |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for v in args.variant:
        for switch in v[4]:
            got = [r for r in rows if r["variant"] == v[0] and r["switch"] == switch]
            if got:
                keys = ("steps", "sifid_e", "pixel_diversity", "copy_score")
                m = {key: statistics.mean(r[key] for r in got) for key in keys}
                print(f"| {v[0]} | {switch:g} | {len(got)} | {m['steps']:.0f} | "
                      f"{m['sifid_e']:.1f} | {m['pixel_diversity']:.3f} | "
                      f"{m['copy_score']:.3f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
