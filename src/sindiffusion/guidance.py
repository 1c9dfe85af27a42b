"""Denoiser wrappers: clipping, autoguidance, known region (inpainting), coarse content
(super-resolution), and guidance by a score of the clean image (ImageNet class, CLIP text).

Every wrapper keeps the denoiser contract `denoiser(x, sigma, **extra) -> x0_hat` (x = x0 +
sigma * noise, x (N, 3, H, W), x0_hat in about [-1, 1]; `extra` is passed on to the wrapped
denoiser), so any sampler runs it unchanged and wrappers nest. A sampling call builds its
wrappers afresh (`sampling.py`); user guidance enters as a function from a denoiser to a
wrapped one, e.g. the one `guide()` returns:

    volcano = guide(class_name="volcano", scale=0.2)       # denoiser -> GradientGuidance
    images = model.sample(n=4, guide=volcano)
    wide = outpaint(model, extend={"right": 128}, guide=volcano)  # + the known region

Guidance acts on the predicted clean image. The score's gradient is taken with respect to
x0_hat, not through the denoiser (the denoiser's Jacobian is skipped): the step costs one
classifier pass instead of a backward pass through the UNet, and it works for any denoiser,
including ones that are not differentiable (a closed-form patch denoiser).
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from .contract import Denoise, Guide, sigma_rows
from .errors import SinDiffusionError

ScoreFn = Callable[[torch.Tensor], torch.Tensor]

DEFAULT_SCALE = 0.2  # GradientGuidance's scale: the RMS change of x0_hat per step

CLIP_ENV = "SINDIFFUSION_CLIP_MODEL"  # a CLIP hub id or local folder, used when none is given
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
# The image normalisation every OpenAI CLIP checkpoint was trained with.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clipped(denoiser: Denoise) -> Denoise:
    """Wrap a denoiser so that its clean-image estimate is clamped to [-1, 1]."""

    def wrapped(x: torch.Tensor, sigma, **extra) -> torch.Tensor:
        return denoiser(x, sigma, **extra).clamp(-1, 1)

    return wrapped


class Autoguidance:
    """Autoguidance (Karras et al. 2024): at noise levels within `sigmas` (low, high) the
    estimate becomes D + weight * (D - D_weak), D_weak a weaker network of the same shape and
    preconditioning (the `fast` preset: the `generic` weights the run started from, which know
    natural images but not this one). It pushes the detail further towards what the image
    taught the network; each guided call costs a second network pass. Weight 0, or a canvas
    of more than `max_pixels` pixels (None: no limit), returns the strong denoiser's output
    untouched.
    """

    def __init__(
        self,
        denoiser: Denoise,
        weak: Denoise,
        weight: float,
        sigmas: tuple[float, float],
        max_pixels: int | None = None,
    ):
        self.denoiser, self.weak = denoiser, weak
        self.weight, self.sigmas = float(weight), (float(sigmas[0]), float(sigmas[1]))
        self.max_pixels = max_pixels

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float, **extra) -> torch.Tensor:
        sigma = sigma_rows(sigma, x)
        out = self.denoiser(x, sigma, **extra)
        too_large = self.max_pixels is not None and x.shape[-2] * x.shape[-1] > self.max_pixels
        if self.weight == 0 or too_large:
            return out
        lo, hi = self.sigmas
        rows = (sigma >= lo) & (sigma <= hi)
        if rows.any():
            strong = out[rows]
            weak = self.weak(x[rows], sigma[rows], **{k: v[rows] for k, v in extra.items()})
            out[rows] = strong + self.weight * (strong - weak)
        return out


class KnownRegion:
    """Keep a known image where `mask` is False and let the denoiser fill the rest.

    `known` (3, H, W) or (N, 3, H, W) in [-1, 1]; `mask` (H, W) bool, True = regenerate.
    The clean-image estimate is replaced by `known` outside the mask. A sampler then keeps the
    known region of x at `known + sigma * noise` (its own noise, carried from step to step), so
    the denoiser always sees the known region noised to the current level, and the final
    sigma = 0 step returns the known pixels (bit-exact for ddpm, euler and dpmpp_2m).
    """

    def __init__(self, denoiser: Denoise, known: torch.Tensor, mask: torch.Tensor):
        assert mask.dtype == torch.bool and mask.shape == known.shape[-2:], (
            mask.shape,
            known.shape,
        )
        self.denoiser = denoiser
        self.known = known
        self.mask = mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        d = self.denoiser(x, sigma, **extra)
        return torch.where(self.mask.to(d.device), d, self.known.to(d.device, d.dtype))


class CoarseContent:
    """Keep the coarse content of a low-resolution image and let the denoiser draw only the
    detail: each clean estimate is corrected until, shrunk to the low image's size (area
    average), it is that image (back-projection: the enlarged difference added three times
    smoothly, then the small rest exactly). Super-resolution, the result an enlargement of
    `low` that shrinks back to it.

    low (3, h, w) or (N, 3, h, w) in [-1, 1], smaller than the canvas.
    """

    ROUNDS = 3  # smooth back-projections per call, before the exact one

    def __init__(self, denoiser: Denoise, low: torch.Tensor):
        self.denoiser = denoiser
        self.low = (low if low.dim() == 4 else low[None]).float()

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        d = self.denoiser(x, sigma, **extra)
        low = self.low.to(d.device, d.dtype)
        size = tuple(d.shape[-2:])

        def shrink(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=tuple(low.shape[-2:]), mode="area")

        for _ in range(self.ROUNDS):  # smooth corrections first, so no blocks show
            d = d + F.interpolate(low - shrink(d), size=size, mode="bilinear", align_corners=False)
        # Then the rest, exactly: a nearest enlargement's area shrink is the identity for a
        # whole factor (and nearly so otherwise).
        return d + F.interpolate(low - shrink(d), size=size, mode="nearest")


def posterior_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """Var[x0 | x_sigma] / Var[x0] for data of std `sigma_data`: sigma^2 / (sigma^2 + sd^2).

    Near 1 while the clean image is still uncertain, falling to 0 as sigma -> 0, so guidance
    steers the layout early and leaves the finished details alone.
    """
    return sigma**2 / (sigma**2 + sigma_data**2)


class GradientGuidance:
    """Move the clean-image estimate up the gradient of `score_fn`.

    x0_hat <- x0_hat + scale * w(sigma) * g / rms(g), with g = d score_fn(x0_hat) / d x0_hat per
    image and w = `posterior_weight` (the denoiser's Jacobian is skipped, see the module
    docstring). The gradient is normalised per image so that `scale` means the same for every
    score: the largest RMS change of x0_hat per step, in [-1, 1] pixel units. The sampler
    moves x by about (1 - sigma_next / sigma) of that change, so the total push is set by
    `scale` and the range of sigma, not by the number of steps. Useful scales are 0.03-0.3;
    from about 0.5 on, the normalised gradient keeps pushing at full strength after the
    target is reached and writes high-frequency classifier patterns (docs/applications.md).

    score_fn: images (N, 3, H, W) in [-1, 1] -> (N,) scores, higher = more wanted;
    sigma_range: (lo, hi): guide only at noise levels lo <= sigma <= hi; elsewhere (and at
    scale 0) the wrapped denoiser's output is returned untouched.
    """

    def __init__(
        self,
        denoiser: Denoise,
        score_fn: ScoreFn,
        scale: float,
        sigma_range: tuple[float, float] = (0.0, math.inf),
        sigma_data: float = 0.5,
    ):
        self.denoiser = denoiser
        self.score_fn = score_fn
        self.scale = float(scale)
        self.sigma_range = sigma_range
        self.sigma_data = sigma_data

    def active(self, sigma: torch.Tensor) -> bool:
        s = float(torch.as_tensor(sigma).max())
        return self.scale != 0 and self.sigma_range[0] <= s <= self.sigma_range[1]

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra) -> torch.Tensor:
        d = self.denoiser(x, sigma, **extra)
        if not self.active(sigma):
            return d
        with torch.enable_grad():  # samplers run under no_grad
            x0 = d.detach().clamp(-1, 1).requires_grad_(True)
            (g,) = torch.autograd.grad(self.score_fn(x0).sum(), x0)
        g = g / g.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-12)
        s = sigma_rows(sigma, d)[:, None, None, None]
        return d + self.scale * posterior_weight(s, self.sigma_data) * g


def cutouts(
    x: torch.Tensor,
    n: int,
    size: int,
    generator: torch.Generator | None = None,
    min_frac: float = 0.5,
) -> torch.Tensor:
    """`n` random square crops of every image, resized to `size`, half of them mirrored.

    x (N, 3, H, W) -> (n * N, 3, size, size), cut-major (cut k of image i at k * N + i). Crop
    sides are uniform in [min_frac, 1] of the short side. A score averaged over cut-outs
    cannot be raised by a few adversarial pixels at one position and scale.
    """
    h, w = x.shape[-2:]
    short = min(h, w)
    out = []
    for _ in range(n):
        r = torch.rand(4, generator=generator).tolist()
        side = max(1, round(short * (min_frac + (1 - min_frac) * r[0])))
        top, left = int(r[1] * (h - side + 1)), int(r[2] * (w - side + 1))
        crop = x[..., top : top + side, left : left + side]
        down = side > size
        crop = F.interpolate(
            crop, (size, size), mode="bilinear", align_corners=False, antialias=down
        )
        out.append(crop.flip(-1) if r[3] < 0.5 else crop)
    return torch.cat(out)


class _CutoutScore:
    """Shared part of the classifier and CLIP scores: mean over cut-outs of a per-crop score."""

    def __init__(self, cuts: int, cut_size: int, seed: int):
        self.cuts = cuts
        self.cut_size = cut_size
        # A fixed generator: the same seed and call sequence gives the same cut-outs.
        self.generator = torch.Generator().manual_seed(seed)

    def crop_scores(self, crops: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 (N, 3, H, W) in [-1, 1] -> (N,) scores (differentiable)."""
        crops = cutouts(x0, self.cuts, self.cut_size, self.generator)
        return self.crop_scores(crops).reshape(self.cuts, x0.shape[0]).mean(0)


class ClassScore(_CutoutScore):
    """log p(class | image) under an ImageNet classifier, averaged over cut-outs.

    classes: ImageNet indices (see `find_class`); with several, their total probability.
    classifier: (M, 3, s, s) in [-1, 1] -> (M, 1000) logits; default EfficientNet-Lite0 with
    its real ImageNet weights (`sindiffusion.metrics.efficientnet_lite0`).
    """

    def __init__(
        self,
        classes: Sequence[int],
        classifier: torch.nn.Module | None = None,
        cuts: int = 4,
        cut_size: int = 224,
        seed: int = 0,
    ):
        super().__init__(cuts, cut_size, seed)
        if classifier is None:
            from .metrics import efficientnet_lite0

            classifier = efficientnet_lite0(pretrained=True)
        self.classifier = classifier
        self.classes = list(classes)

    def crop_scores(self, crops: torch.Tensor) -> torch.Tensor:
        dev = next(self.classifier.parameters()).device
        logp = self.classifier(crops.to(dev)).log_softmax(-1)[:, self.classes]
        return logp.logsumexp(-1).to(crops.device)


def find_class(name: str | int) -> int:
    """ImageNet index of a class name (case-insensitive, '_' = ' ') or of an index '0'-'999'.

    A name that matches no label raises `SinDiffusionError` listing the closest labels.
    """
    from .metrics import imagenet_classes

    names = imagenet_classes()
    text = str(name).strip()
    if text.isdigit() and int(text) < len(names):
        return int(text)
    key = text.lower().replace("_", " ")
    lowered = [n.lower() for n in names]
    if key in lowered:
        return lowered.index(key)
    close = difflib.get_close_matches(key, lowered, n=5, cutoff=0.6)
    close += [n for n in lowered if key and key in n and n not in close][: 5 - len(close)]
    hint = f"close names: {', '.join(close)}" if close else "give an ImageNet label"
    raise SinDiffusionError(f"{text!r} is not an ImageNet class; {hint}.")


class ClipTextScore(_CutoutScore):
    """Cosine similarity between the CLIP embeddings of image cut-outs and of a text.

    clip: a `transformers.CLIPModel`; input_ids (1, L) (and attention_mask) are the tokenised
    text, e.g. from `ClipTextScore.from_text(clip, tokenizer, "a snowy mountain")`. The crop
    size is the model's input size.
    """

    def __init__(
        self,
        clip,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cuts: int = 4,
        seed: int = 0,
    ):
        super().__init__(cuts, int(clip.config.vision_config.image_size), seed)
        self.clip = clip.eval().requires_grad_(False)
        dev = clip.text_projection.weight.device
        with torch.no_grad():
            out = clip.text_model(
                input_ids=input_ids.to(dev),
                attention_mask=None if attention_mask is None else attention_mask.to(dev),
            )
            # text_projection(pooler_output): the same in transformers 4 and 5.
            self.text = F.normalize(clip.text_projection(out.pooler_output), dim=-1)
        self.mean = torch.tensor(CLIP_MEAN).reshape(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD).reshape(1, 3, 1, 1)

    @classmethod
    def from_text(cls, clip, tokenizer, text: str, **kwargs) -> ClipTextScore:
        """Tokenise `text` with a `transformers` CLIP tokenizer and build the score."""
        enc = tokenizer([text], padding=True, truncation=True, return_tensors="pt")
        return cls(clip, enc["input_ids"], enc.get("attention_mask"), **kwargs)

    def crop_scores(self, crops: torch.Tensor) -> torch.Tensor:
        dev = self.text.device
        pixels = ((crops.to(dev) + 1) / 2 - self.mean.to(dev)) / self.std.to(dev)
        img = self.clip.vision_model(pixel_values=pixels).pooler_output
        img = F.normalize(self.clip.visual_projection(img), dim=-1)
        return (img @ self.text.T)[:, 0].to(crops.device)


def load_clip(name: str | os.PathLike | None = None, device: str | torch.device = "cpu"):
    """(CLIPModel, tokenizer) from a local folder or a Hugging Face hub id.

    name: default $SINDIFFUSION_CLIP_MODEL, else "openai/clip-vit-base-patch32". A hub id is
    looked up in the local cache first and downloaded only if missing. Raises
    `SinDiffusionError` saying how to provide the weights when they cannot be found.
    """
    name = str(name or os.environ.get(CLIP_ENV) or DEFAULT_CLIP)
    try:
        from transformers import AutoTokenizer, CLIPModel
    except ImportError:
        raise SinDiffusionError(
            "text guidance needs transformers; run `pip install 'sindiffusion[text]'`."
        ) from None
    how = (
        f"CLIP weights {name!r} are not available; download a CLIP model folder (e.g. "
        f"`hf download {DEFAULT_CLIP} --local-dir clip`) and pass --clip-model clip "
        f"or set {CLIP_ENV}=clip."
    )
    local = Path(name).expanduser()
    is_path = local.exists() or name.startswith((".", "/", "~"))
    if is_path and not (local / "config.json").exists():
        raise SinDiffusionError(how)
    # A hub id: the cache first, then the network, but only when the hub answers at once:
    # offline, transformers would retry for about a minute before giving up.
    for offline in (True, False):
        if not offline and (is_path or not _hub_reachable()):
            break
        try:
            src = str(local) if is_path else name
            clip = CLIPModel.from_pretrained(src, local_files_only=offline)
            tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=offline)
            return clip.to(device).eval().requires_grad_(False), tokenizer  # type: ignore[arg-type]
        except Exception:  # missing files, no network, a foreign folder: all mean "no weights"
            continue
    raise SinDiffusionError(how)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub ($HF_ENDPOINT, else huggingface.co) accepts a connection
    within `timeout` seconds; False when HF_HUB_OFFLINE is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


# Networks built once per process (and device): a web page's every guided request would
# otherwise load them again. Frozen, so calls can share them.
@functools.lru_cache(maxsize=2)
def _classifier(device: str) -> torch.nn.Module:
    from .metrics import efficientnet_lite0

    return efficientnet_lite0().to(device).eval().requires_grad_(False)


@functools.lru_cache(maxsize=2)
def _clip(name: str, device: str):
    return load_clip(name, device)


def guide(
    class_name: str | int | None = None,
    text: str | None = None,
    scale: float = DEFAULT_SCALE,
    sigma_range: tuple[float, float] = (0.0, math.inf),
    cuts: int = 4,
    clip_model: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Guide | None:
    """A guide towards an ImageNet class and/or a text, for `sample(guide=...)` and every
    application; None when neither is given.

    class_name: an ImageNet label or index (`find_class`), scored by EfficientNet-Lite0 with
    its real weights; text: scored by CLIP (`load_clip(clip_model)`); scale, sigma_range: as
    `GradientGuidance`; cuts: random cut-outs per score; seed: of the cut-outs. The scores
    are built once here, so one call's cut-outs follow one seeded sequence.
    """
    if class_name is None and text is None:
        return None
    if cuts < 1:
        raise SinDiffusionError(f"cuts is {cuts}; give at least 1 cut-out per step.")
    scores: list[_CutoutScore] = []
    if class_name is not None:
        classifier = _classifier(str(device))
        scores.append(ClassScore([find_class(class_name)], classifier, cuts=cuts, seed=seed))
    if text is not None:
        name = str(clip_model or os.environ.get(CLIP_ENV) or DEFAULT_CLIP)
        clip, tokenizer = _clip(name, str(device))
        scores.append(ClipTextScore.from_text(clip, tokenizer, text, cuts=cuts, seed=seed))

    def wrap(denoiser: Denoise) -> Denoise:
        for score in scores:  # class inside, text outside
            denoiser = GradientGuidance(denoiser, score, scale, sigma_range)
        return denoiser

    return wrap
