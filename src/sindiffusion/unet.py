"""The fully convolutional UNet with a patch-level receptive field, its measurement, and the
pretrained starting weights shipped with the package.

No attention, no global pooling and no middle block: each output pixel sees a patch of the
input (about 100 px for both presets), so the network learns the image's patch distribution
instead of memorising the whole image.
"""

from __future__ import annotations

import copy
import json
import math
from importlib.resources import files

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open

from .config import Config, ModelConfig, preset
from .errors import SinDiffusionError

# train.init name -> files in assets/, one per network shape it was pretrained for: the
# `fast` network of now, and the one `fast` runs made before its "low_conv" upsampling
# (kept so that those runs still find their starting weights, e.g. for autoguidance).
INITS = {"generic": ("generic-init.safetensors", "generic-init-conv.safetensors")}


def _groups(channels: int, groups: int) -> int:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return g


class GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32; `detach_stats` turns the statistics into constants so that
    gradients flow only through the convolutions (used to measure the receptive field, since the
    statistics otherwise couple every pixel of the image to every other)."""

    detach_stats = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if not self.detach_stats:
            # Sampling (no grad): the mixed-precision kernel takes a bfloat16 input as it is
            # (float32 statistics and affine, bfloat16 out), without a float32 copy and back;
            # the same result (equal on a 1 MP block), and a 1 MP block's network call 18-28 %
            # faster on a CPU. Training keeps the float32 copy: its backward was no faster.
            x = x.float() if torch.is_grad_enabled() else x
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps).to(dtype)
        x = x.float()
        n, c, h, w = x.shape
        g = x.view(n, self.num_groups, -1)
        mean = g.mean(-1, keepdim=True).detach()
        var = g.var(-1, unbiased=False, keepdim=True).detach()
        g = (g - mean) / torch.sqrt(var + self.eps)
        out = g.view(n, c, h, w) * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(dtype)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (N,) noise-level values -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding as FiLM scale-shift on the second norm."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int):
        super().__init__()
        self.norm1 = GroupNorm(_groups(cin, groups), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = GroupNorm(_groups(cout, groups), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)  # each block starts as the identity
        nn.init.zeros_(self.conv2.bias)  # type: ignore[arg-type]  # a Conv2d's bias is set
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Doubles the resolution (to the skip connection's `size`) with a 3x3 conv.

    `mode` "conv": nearest-neighbour upsampling, then the conv at the new resolution (the
    paper's UNet). "low_conv": the conv first, at the low resolution, to the finer level's
    `cout` channels, then nearest-neighbour upsampling: a quarter of the pixels (and, in the
    `fast` UNet, half the channels) for the conv, an 18 % cheaper training step.
    """

    def __init__(self, cin: int, cout: int, mode: str = "conv"):
        super().__init__()
        self.mode = mode
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if self.mode == "low_conv":
            return F.interpolate(self.conv(x), size=size, mode="nearest")
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class UNet(nn.Module):
    """Denoising UNet: `unet(x, t) -> out`, x (N, 3, H, W), t (N,) noise-level values.

    Any H, W works: odd sizes are handled by upsampling to the skip connection's size, so
    the noise's shape sets the output's size. Output has the input's shape.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.base_channels
        emb_dim = 4 * ch
        self.time_embed = nn.Sequential(
            nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.in_conv = nn.Conv2d(3, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips = [ch]
        cur = ch
        levels = len(cfg.channel_mults)
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(cfg.num_res_blocks):
                self.down.append(ResBlock(cur, mult * ch, emb_dim, cfg.groups))
                cur = mult * ch
                skips.append(cur)
            if level < levels - 1:
                self.down.append(Downsample(cur))
                skips.append(cur)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mults))):
            for j in range(cfg.num_res_blocks + 1):
                self.up.append(ResBlock(cur + skips.pop(), mult * ch, emb_dim, cfg.groups))
                cur = mult * ch
                if level > 0 and j == cfg.num_res_blocks:
                    nxt = cur if cfg.upsample == "conv" else cfg.channel_mults[level - 1] * ch
                    self.up.append(Upsample(cur, nxt, cfg.upsample))
                    cur = nxt

        self.out_norm = GroupNorm(_groups(cur, cfg.groups), cur)
        self.out_conv = nn.Conv2d(cur, 3, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)  # type: ignore[arg-type]  # a Conv2d's bias is set

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(t, self.cfg.base_channels).to(x.dtype))
        h = self.in_conv(x)
        hs = [h]
        for m in self.down:
            h = m(h, emb) if isinstance(m, ResBlock) else m(h)
            hs.append(h)
        for m in self.up:
            if isinstance(m, Upsample):
                h = m(h, hs[-1].shape[-2:])
            else:
                h = m(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out_conv(F.silu(self.out_norm(h)))

    @property
    def stride(self) -> int:
        """The total downsampling factor."""
        return stride(self.cfg)


def stride(cfg: ModelConfig) -> int:
    """The total downsampling factor of a UNet with this config."""
    return 2 ** (len(cfg.channel_mults) - 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def measure_receptive_field(cfg: ModelConfig, size: int = 256, seed: int = 0) -> int:
    """Measure the receptive field (px) of a UNet with this config empirically.

    Builds the network with random weights (zero-initialised layers would hide paths),
    freezes the GroupNorm statistics, and takes the gradient of one centre output pixel
    with respect to a random input; the receptive field is the side of the bounding box of
    the input pixels with a non-zero gradient. The input is enlarged until that box stays
    clear of the borders.
    """
    gen = torch.Generator().manual_seed(seed)
    net = UNet(copy.deepcopy(cfg))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    for m in net.modules():
        if isinstance(m, GroupNorm):
            m.detach_stats = True
    while True:
        x = torch.randn(1, 3, size, size, generator=gen, requires_grad=True)
        out = net(x, torch.tensor([10.0]))
        c = size // 2
        out[0, :, c, c].sum().backward()
        assert x.grad is not None
        mask = x.grad[0].abs().sum(0) > 0
        ys = torch.nonzero(mask.any(1)).flatten()
        xs = torch.nonzero(mask.any(0)).flatten()
        touches = ys.min() == 0 or xs.min() == 0 or ys.max() == size - 1 or xs.max() == size - 1
        if not touches or size >= 2048:
            return int(max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1))
        size *= 2


def initial_weights(name: str | None, model: ModelConfig) -> dict[str, torch.Tensor] | None:
    """The starting weights `train.init` names, for a network of shape `model` (None: random).

    "generic" is the `fast` network pretrained for 2000 steps on nine public-domain and CC0
    photos and textures (`tools/pretrain_init.py`; none of Places50): it starts knowing how
    natural images denoise, so a run spends its minutes on its one image. Each weights file
    records the network shape it fits; another shape is a one-sentence error.
    """
    if name is None:
        return None
    if name not in INITS:
        raise SinDiffusionError(
            f"unknown train.init {name!r}; use one of {', '.join(INITS)} or null (random)."
        )
    for file in INITS[name]:
        with safe_open(str(files("sindiffusion") / "assets" / file), framework="pt") as f:
            # Through Config.from_dict: the files record the model fields of their time.
            shape = Config.from_dict({"model": json.loads(f.metadata()["model"])}).model
            if shape == model:
                return {k: f.get_tensor(k) for k in f.keys()}
    raise SinDiffusionError(
        f"train.init {name!r} fits only the `fast` network ({preset('fast').model}), not "
        f"{model}; set train.init to null to start from random weights."
    )
