"""Pretrain the `fast` network on generic images: the weights `train.init = "generic"` starts from.

    pip install scikit-image   # only for its bundled public-domain / CC0 photos and textures
    python3 tools/pretrain_init.py --steps 2000 --out src/sindiffusion/assets/generic-init.safetensors

The nine images (`IMAGES`, from scikit-image's `skimage/data` folder, each CC0, public
domain or without known copyright restrictions by its docstring; none of them is a Places50
image) are loaded as training images are (long side 250 px, greyscale as three equal
channels). Every step trains the `fast` preset's loss on a random crop batch of one random
image, mirrored left-right half of the time, with the preset's AdamW settings, warm-up and
cosine decay over `--steps`, but AdamW's default weight decay 0.01.
7-9 minutes on 2 CPU cores; seeded, so a rerun on the same machine type writes the same
weights. The previous network's weights (`generic-init-conv.safetensors`, nearest-then-conv
upsampling, rescale 0.75-1) came from this script as it was before that change.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import save_file

from sindiffusion.config import preset
from sindiffusion.diffusion import Denoiser
from sindiffusion.image import load_image
from sindiffusion.trainer import random_batch
from sindiffusion.unet import UNet

IMAGES = (
    "astronaut.png",  # NASA, public domain
    "brick.png",  # CC0 Textures, CC0
    "camera.png",  # Lav Varshney, CC0
    "chelsea.png",  # Stefan van der Walt, CC0
    "coffee.png",  # Rachel Michetti, CC0
    "coins.png",  # Brooklyn Museum, no known copyright restrictions
    "grass.png",  # linolafett on DeviantArt, CC0
    "gravel.png",  # CC0 Textures, CC0
    "rocket.jpg",  # SpaceX, public domain
)


def skimage_data() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise SystemExit("error: scikit-image is not installed; run: pip install scikit-image")
    return Path(spec.origin).parent / "data"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--out", type=Path, default=Path("generic-init.safetensors"))
    p.add_argument("--images", type=Path, help="folder holding IMAGES (default: scikit-image's)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    folder = args.images or skimage_data()
    images = [load_image(folder / name, max_size=250) for name in IMAGES]
    cfg = preset("fast")
    tc = cfg.train
    torch.manual_seed(0)
    unet = UNet(cfg.model)
    den = Denoiser(unet, cfg.diffusion, bf16=tc.bf16, channels_last=tc.channels_last)
    # AdamW's default weight decay (0.01), which the shipped weights were made with; the
    # preset's own runs use `tc.weight_decay` (0).
    opt = torch.optim.AdamW(unet.parameters(), lr=tc.lr, betas=(0.9, 0.99), weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for i in range(args.steps):
        # Trainer.learning_rate's schedule, written out: its `pi * min(1, progress)` rounds
        # differently in the last bit, and the shipped weights came from this expression.
        lr = tc.lr * min(1.0, (i + 1) / tc.warmup_steps)
        lr *= 0.5 * (1 + math.cos(math.pi * i / args.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        img = images[int(torch.randint(len(images), (1,), generator=g))]
        if torch.rand((), generator=g) < 0.5:
            img = img.flip(-1)
        loss = den.loss(random_batch(img, cfg, unet.stride, g), g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), tc.grad_clip)
        opt.step()
        if i % 200 == 0 or i == args.steps - 1:
            print(f"step {i + 1}: loss {loss.item():.4f}, {time.perf_counter() - t0:.0f} s")
    weights = {k: v.detach().contiguous() for k, v in unet.state_dict().items()}
    meta = {
        "model": json.dumps(asdict(cfg.model)),
        "steps": str(args.steps),
        "images": ", ".join(IMAGES),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    save_file(weights, str(tmp), metadata=meta)
    tmp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
