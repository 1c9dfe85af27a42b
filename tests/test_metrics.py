"""Quality metrics: references, invariants (x vs x), monotonicity, and the real-weights check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import natural_tensor

from sindiffusion.errors import SinDiffusionError
from sindiffusion.image import bundled_image, load_image
from sindiffusion.metrics import (
    InceptionWeightsMissing,
    broken_structure,
    copy_fraction,
    copy_score,
    duplication,
    efficientnet_lite0,
    frechet_distance,
    imagenet_classes,
    inception_stem,
    lpips_e,
    match_sizes,
    patch_nn_distance,
    patch_swd,
    pixel_diversity,
    score,
    texture_share,
)
from sindiffusion.metrics.backbones import INCEPTION_WEIGHTS_ENV, inception_state_keys
from sindiffusion.metrics.sifid import sifid, sqrtm_psd

ROCKET = bundled_image("rocket")


@pytest.fixture(scope="module")
def real() -> torch.Tensor:
    """The bundled photo at 64x43 px, (3, H, W) in [-1, 1]."""
    return load_image(ROCKET, max_size=64)


def noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def blurred(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma) + 1
    k = torch.exp(-(torch.arange(-r, r + 1.0) ** 2) / (2 * sigma**2))
    k = (k / k.sum())[None, None]
    x = F.pad(x[:, None], (r, r, r, r), mode="reflect")
    return F.conv2d(F.conv2d(x, k[..., None, :]), k[..., None])[:, 0]


def shuffled_tiles(x: torch.Tensor, tile: int, seed: int = 0) -> torch.Tensor:
    """The image cut into tile x tile squares put back in a random order (crop to whole tiles)."""
    _, h, w = x.shape
    ny, nx = h // tile, w // tile
    tiles = x[:, : ny * tile, : nx * tile].unfold(1, tile, tile).unfold(2, tile, tile)
    tiles = tiles.reshape(3, ny * nx, tile, tile)
    tiles = tiles[:, torch.randperm(ny * nx, generator=torch.Generator().manual_seed(seed))]
    return tiles.reshape(3, ny, nx, tile, tile).permute(0, 1, 3, 2, 4).reshape(3, ny * tile, -1)


# --------------------------------------------------------------------------- Fréchet distance


def test_sqrtm_psd_matches_scipy_on_a_rank_deficient_covariance():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 8))
    cov = a.T @ a  # 8x8 of rank 5
    ours = sqrtm_psd(torch.from_numpy(cov)).numpy()
    assert np.allclose(ours @ ours, cov, atol=1e-8)
    assert np.allclose(ours, linalg.sqrtm(cov).real, atol=1e-5)


def test_frechet_distance_matches_numpy_scipy_reference():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16))
    y = rng.normal(size=(200, 16)) @ rng.normal(size=(16, 16)) * 0.5 + 0.3
    mu1, mu2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    ours = frechet_distance(*(torch.from_numpy(a) for a in (mu1, c1, mu2, c2)))
    assert ours == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_of_identical_singular_gaussians_is_zero():
    c = torch.zeros(6, 6, dtype=torch.float64)
    c[:2, :2] = torch.tensor([[2.0, 1.0], [1.0, 1.0]])  # rank 2: sqrtm(c1 c2) is singular
    mu = torch.arange(6.0)
    assert frechet_distance(mu, c, mu, c) == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- SIFID-E


def test_sifid_e_of_an_image_with_itself_is_zero(real):
    assert sifid(real, real[None]).item() == pytest.approx(0.0, abs=1e-6)


def test_sifid_e_grows_with_noise(real):
    values = sifid(real, torch.stack([noisy(real, s) for s in (0.05, 0.1, 0.2, 0.4)]))
    assert (values.diff() > 0).all(), values


def test_sifid_e_grows_with_blur(real):
    values = sifid(real, torch.stack([blurred(real, s) for s in (0.5, 1.0, 2.0, 4.0)]))
    assert (values.diff() > 0).all(), values


# --------------------------------------------------------------------------- EfficientNet-Lite0


def test_imagenet_classes_are_the_1000_names_in_output_order():
    names = imagenet_classes()
    assert len(names) == len(set(names)) == 1000
    assert (names[0], names[417], names[657], names[812]) == (
        "tench",
        "balloon",
        "missile",
        "space shuttle",
    )


def test_efficientnet_lite0_real_weights_recognise_the_rocket_photo():
    """The shipped weights load and, at 224 px, put a rocket-like class in the top 5."""
    x = load_image(ROCKET)
    x = F.interpolate(x[None], size=224, mode="bilinear", antialias=True)  # squash to 224x224
    with torch.no_grad():
        top5 = efficientnet_lite0()(x)[0].topk(5).indices.tolist()
    names = [imagenet_classes()[i] for i in top5]
    print("top-5:", names)  # drilling platform, missile, projectile, space shuttle, ...
    assert {"missile", "projectile", "space shuttle"} & set(names), names


def test_efficientnet_lite0_forward_features_strides_and_channels():
    feats = efficientnet_lite0(pretrained=False).forward_features(torch.zeros(1, 3, 64, 48), [4, 2])
    assert [tuple(f.shape) for f in feats] == [(1, 40, 8, 6), (1, 24, 16, 12)]


# --------------------------------------------------------------------------- Inception weights

# The 25 tensors of SinGAN's Inception stem, named and shaped as in torchvision's
# inception_v3_google-*.pth and pytorch-fid's pt_inception-2015-12-05-6726825d.pth.
INCEPTION_LAYERS = {
    "Conv2d_1a_3x3": (32, 3, 3),
    "Conv2d_2a_3x3": (32, 32, 3),
    "Conv2d_2b_3x3": (64, 32, 3),
    "Conv2d_3b_1x1": (80, 64, 1),
    "Conv2d_4a_3x3": (192, 80, 3),
}
INCEPTION_KEYS = {
    f"{layer}.{name}": shape
    for layer, (c_out, c_in, k) in INCEPTION_LAYERS.items()
    for name, shape in [("conv.weight", (c_out, c_in, k, k))]
    + [(f"bn.{p}", (c_out,)) for p in ("weight", "bias", "running_mean", "running_var")]
}


def test_inception_weights_round_trip_with_the_published_key_names(tmp_path, real):
    net = inception_stem(pretrained=False)
    for p in net.parameters():  # random, so a reload that silently kept init weights would show
        p.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)

    saved = torch.load(path, weights_only=True)
    assert {k: tuple(v.shape) for k, v in saved.items() if "num_batches" not in k} == INCEPTION_KEYS
    assert inception_state_keys() == INCEPTION_KEYS

    loaded = inception_stem(path)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with torch.no_grad():
        out = loaded(real[None])
    assert out.shape == (1, 192, (((real.shape[1] - 1) // 2 - 5) // 2 - 1), 12)


def test_inception_loads_a_whole_network_file_without_batch_counters(tmp_path):
    state = {k: v for k, v in inception_stem(pretrained=False).state_dict().items()}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    state["Mixed_5b.branch1x1.conv.weight"] = torch.zeros(64, 192, 1, 1)  # later layers: ignored
    state["fc.weight"] = torch.zeros(1008, 2048)
    torch.save(state, tmp_path / "full.pth")
    net = inception_stem(tmp_path / "full.pth")
    loaded = net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)
    assert "fc.weight" not in loaded  # the layers after the stem are left out


def test_inception_rejects_a_foreign_weights_file(tmp_path):
    state = inception_stem(pretrained=False).state_dict()
    state["Conv2d_4a_3x3.conv.weight"] = torch.zeros(64, 80, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(InceptionWeightsMissing, match="Conv2d_4a_3x3.conv.weight"):
        inception_stem(tmp_path / "bad.pth")


@pytest.mark.usefixtures("no_inception_download")  # with internet it would fetch them
def test_missing_inception_weights_say_how_to_provide_them(monkeypatch, tmp_path, real):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty cache
    with pytest.raises(
        ValueError, match=f"--inception-weights PATH, set \\${INCEPTION_WEIGHTS_ENV}"
    ):
        score(real, real, backbone="inception")
    with pytest.raises(InceptionWeightsMissing, match="does not exist"):
        inception_stem(tmp_path / "nowhere.pth")


def test_score_with_inception_from_the_environment_variable(monkeypatch, tmp_path, real):
    path = tmp_path / "inception.pth"
    torch.save(inception_stem(pretrained=False).state_dict(), path)
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(path))
    result = score(real, real, backbone="inception")
    assert "sifid_e" not in result
    assert result["sifid"] == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------- diversity


def test_identical_samples_have_zero_diversity(real):
    same = real[None].repeat(3, 1, 1, 1)
    assert pixel_diversity(real, same) == 0.0
    assert lpips_e(same) == pytest.approx(0.0, abs=1e-6)


def test_diversity_grows_with_the_difference_between_samples(real):
    def pair(s: float) -> torch.Tensor:
        return torch.stack([noisy(real, s, seed=1), noisy(real, s, seed=2)])

    assert 0 < pixel_diversity(real, pair(0.05)) < pixel_diversity(real, pair(0.2))
    assert 0 < lpips_e(pair(0.05)) < lpips_e(pair(0.2))


def test_pixel_diversity_is_relative_to_the_image_std():
    real = torch.tensor([-0.5, 0.5]).repeat(3, 2, 1)  # std 0.5
    fakes = torch.stack([torch.full((3, 2, 2), -0.1), torch.full((3, 2, 2), 0.1)])  # std 0.1
    assert pixel_diversity(real, fakes) == pytest.approx(0.2)


def test_texture_share_is_low_for_even_regions_and_high_for_fine_detail():
    torch.manual_seed(0)
    halves = torch.zeros(3, 48, 48)
    halves[:, :24] = 0.8  # a "sky" above a "field": all contrast is layout
    assert texture_share(torch.zeros(3, 16, 16)) == 0.0
    # At a 2 px scale only the horizon's few rows count as detail (a 48 px image is too
    # small for the default 8 px: the horizon's blur would cover most of it).
    assert texture_share(halves, scale=2.0) < 0.12
    noise = torch.rand(3, 48, 48) * 2 - 1  # all contrast is detail
    assert texture_share(noise, scale=2.0) == pytest.approx(1.0, abs=0.08)
    # The same field with fine texture added: more of its contrast is detail.
    textured = halves + 0.3 * (torch.rand(3, 48, 48) * 2 - 1)
    assert 0.3 < texture_share(textured, scale=2.0) < 0.6
    # A wider blur counts coarser structure as detail.
    assert texture_share(halves, scale=2.0) < texture_share(halves, scale=8.0)


def test_texture_share_refuses_a_batch_and_a_bad_scale(real):
    with pytest.raises(SinDiffusionError, match="one image"):
        texture_share(real[None])
    with pytest.raises(SinDiffusionError, match="positive blur width"):
        texture_share(real, scale=0)


# --------------------------------------------------------------------------- patch metrics


def test_patch_distances_are_zero_for_the_real_image_and_grow_with_noise(real):
    fakes = torch.stack([real, noisy(real, 0.1), noisy(real, 0.3)])
    nn = patch_nn_distance(real, fakes)
    swd = patch_swd(real, fakes)
    assert nn[0] == pytest.approx(0.0, abs=1e-3) and nn[0] < nn[1] < nn[2]
    assert swd[0] == 0.0 and swd[0] < swd[1] < swd[2]


def test_patch_swd_is_reproducible_for_a_seed(real):
    fake = noisy(real, 0.1)[None]
    assert torch.equal(patch_swd(real, fake, seed=3), patch_swd(real, fake, seed=3))
    assert not torch.equal(patch_swd(real, fake, seed=3), patch_swd(real, fake, seed=4))


def test_copy_score_is_one_for_the_real_image_and_zero_for_shuffled_tiles(real):
    shuffled = shuffled_tiles(real, 8)
    cropped = real[:, : shuffled.shape[1], : shuffled.shape[2]]
    assert copy_score(real, real[None]).item() == 1.0
    assert copy_score(real, cropped[None]).item() == 1.0  # a crop is still a copy
    assert copy_score(real, shuffled[None]).item() < 0.05


def test_copy_score_measures_the_copied_fraction(real):
    """Left half copied, right half shuffled: about half the image is a copy."""
    fake = shuffled_tiles(real, 4)
    half = fake.shape[2] // 2
    fake[:, :, :half] = real[:, : fake.shape[1], :half]
    assert copy_score(real, fake[None]).item() == pytest.approx(0.5, abs=0.15)


def test_copy_fraction_sees_a_pasted_48px_crop_that_the_64px_score_misses():
    real = load_image(ROCKET, max_size=160)  # 160x107
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(real.shape, generator=g) * 2 - 1
    pasted = noise.clone()
    pasted[:, 30:78, 70:118] = real[:, 40:88, 20:68]  # a 48 px square of the photo, moved
    got = copy_fraction(real, torch.stack([pasted, noise, real]))
    area = 48 * 48 / real[0].numel()  # the pasted square: 0.13 of the pixels
    assert 0.5 * area < got[0] <= area  # the 32 px windows inside it, on an 8 px grid
    assert got[1] == 0 and got[2] > 0.9  # noise copies nothing; the photo is all copy
    assert copy_score(real, pasted[None]).item() == 0  # no 64 px window fits in the square
    slightly_off = (pasted + 0.02).clamp(-1, 1)  # 2.5 grey levels: still a copy (RMS 0.02)
    assert copy_fraction(real, slightly_off[None]).item() == got[0]
    assert copy_fraction(real, (pasted + 0.06).clamp(-1, 1)[None]).item() == 0  # beyond 0.04


def test_copy_score_tolerates_slight_noise_but_not_a_regenerated_texture(real):
    assert copy_score(real, noisy(real, 0.01)[None]).item() > 0.9
    assert copy_score(real, noisy(real, 0.3)[None]).item() < 0.05


# --------------------------------------------------------------------------- score()


def test_score_reports_every_metric_and_diversity_only_for_several_fakes(real):
    one = score(real, noisy(real, 0.1))
    assert set(one) == {
        "sifid_e",
        "patch_nn",
        "patch_swd",
        "copy_score",
        "copy_32",
        "duplication",
        "broken",
    }
    two = score(real, torch.stack([noisy(real, 0.1, 1), noisy(real, 0.1, 2)]))
    assert set(two) == set(one) | {"pixel_diversity", "lpips_e"}
    assert all(isinstance(v, float) and np.isfinite(v) for v in two.values())


def test_score_resizes_fakes_of_another_size_with_a_warning(real):
    big = F.interpolate(real[None], scale_factor=2, mode="bilinear")[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = score(real, [real, big])
    assert len(caught) == 1 and "fake 1" in str(caught[0].message)
    assert result["copy_score"] > 0.5
    fakes, notes = match_sizes(real, [big])
    assert fakes.shape == (1, *real.shape) and len(notes) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_score_on_cuda_matches_cpu(real):
    fakes = torch.stack([noisy(real, 0.1, 1), noisy(real, 0.1, 2)])
    cpu, cuda = score(real, fakes), score(real, fakes, device="cuda")
    for k in cpu:
        assert cuda[k] == pytest.approx(cpu[k], rel=1e-3, abs=1e-4), k


def test_duplication_finds_a_block_cloned_twice_and_not_the_image_itself():
    image = natural_tensor(96, 128)
    cloned = image.clone()
    cloned[:, 40:88, 70:118] = image[:, 0:48, 0:48]  # off the windows' grid: any position counts
    cloned[:, 45:93, 5:53] = image[:, 0:48, 0:48]
    own, twice = duplication(torch.stack([image, cloned])).tolist()
    assert own == 0 and twice > 0.2  # measured 0.0 and 0.34
    flat = torch.zeros(1, 3, 64, 64)  # textureless: repeats everywhere, but nothing to count
    assert duplication(flat).item() == 0


def test_broken_structure_is_zero_for_the_image_and_counts_pasted_and_shuffled_pieces():
    image = natural_tensor(96, 128)
    cloned = image.clone()  # the duplication test's image: a 48 px block pasted twice
    cloned[:, 40:88, 70:118] = image[:, 0:48, 0:48]
    cloned[:, 45:93, 5:53] = image[:, 0:48, 0:48]
    tiles = image.unfold(1, 16, 16).unfold(2, 16, 16)  # (3, 6, 8, 16, 16)
    order = torch.randperm(48, generator=torch.Generator().manual_seed(0))
    shuffled = tiles.reshape(3, 48, 16, 16)[:, order].reshape(3, 6, 8, 16, 16)
    shuffled = shuffled.permute(0, 1, 3, 2, 4).reshape(3, 96, 128)
    blurred = F.avg_pool2d(image[None], 3, 1, 1, count_include_pad=False)[0]
    own, pasted, tiled, soft = broken_structure(
        image, torch.stack([image, cloned, shuffled, blurred])
    ).tolist()
    assert own == 0 and soft == 0  # the image, and a softer copy, keep every object
    assert 0.1 < pasted < tiled  # measured 0.17 and 0.91
    assert tiled > 0.5
