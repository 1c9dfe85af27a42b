"""Applications: outpainting / inpainting, the SDEdit family, class and CLIP text guidance.

A tiny model trained for a few steps stands in for a real run: these tests check mechanisms
(known pixels kept, masks validated, guidance wired through any sampler), not image quality.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import natural_like, tiny_config
from PIL import Image

import sindiffusion
from sindiffusion.apps import (
    edit,
    harmonize,
    inpaint,
    outpaint,
    outpaint_canvas,
    paint,
    parse_extend,
    sdedit,
)
from sindiffusion.cli import main
from sindiffusion.errors import SinDiffusionError
from sindiffusion.guidance import (
    ClassScore,
    ClipTextScore,
    GradientGuidance,
    KnownRegion,
    cutouts,
    find_class,
    load_clip,
)
from sindiffusion.image import from_uint8, load_mask, to_uint8
from sindiffusion.samplers import SAMPLERS, get_sampler, resampled
from sindiffusion.schedules import start_at


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with a tiny model trained for 6 steps on a 32x32 image."""
    root = tmp_path_factory.mktemp("apps")
    Image.fromarray(natural_like(32, 32)).save(root / "img.png")
    (root / "tiny.json").write_text(tiny_config().to_json())
    args = ["train", str(root / "img.png"), "--out", str(root / "run")]
    assert main([*args, "--config", str(root / "tiny.json"), "--steps", "6", "--quiet"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def model(run):
    return sindiffusion.load(run, device="cpu")


def box_mask(h=32, w=32, box=(8, 20, 8, 24)) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    m[box[0] : box[1], box[2] : box[3]] = True
    return m


def save_mask(path, mask: np.ndarray) -> str:
    Image.fromarray(mask.astype(np.uint8)).save(path)
    return str(path)


# --- outpainting / inpainting -------------------------------------------------------------------
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_outpaint_keeps_the_known_region_with_every_sampler(model, sampler):
    out = outpaint(model, extend={"left": 8, "right": 16, "top": 4}, n=2, sampler=sampler, seed=1)
    assert out.shape == (2, 3, 36, 56) and out.abs().max() <= 1
    known = out[:, :, 4:, 8:40]
    assert torch.equal(to_uint8(known), to_uint8(model.image).expand_as(known))  # bit-exact
    new = out[:, :, :, 40:]
    assert (new[0] - new[1]).abs().mean() > 0.01  # two different fills, not a copy


def test_known_region_is_kept_by_the_sampler_itself_without_pasting(model):
    mask = box_mask()
    out = inpaint(model, mask, n=2, sampler="dpmpp_2m", exact=False, resample=3)
    # The final sigma = 0 step returns the known pixels: no paste-back needed.
    assert torch.allclose(out[:, :, ~mask], model.image[:, ~mask].expand(2, -1, -1), atol=1e-6)
    assert (out[:, :, mask] - model.image[:, mask]).abs().mean() > 0.01


def test_known_region_wrapper_replaces_only_outside_the_mask():
    known, mask = torch.zeros(3, 8, 8), box_mask(8, 8, (2, 5, 2, 5))
    den = KnownRegion(lambda x, s: x * 0 + 0.5, known, mask)
    out = den(torch.randn(2, 3, 8, 8), torch.tensor(1.0))
    assert torch.all(out[:, :, mask] == 0.5) and torch.all(out[:, :, ~mask] == 0)


def test_outpaint_same_seed_same_images_and_resampling_changes_them(model):
    a = outpaint(model, extend={"right": 16}, n=1, seed=3)
    assert torch.equal(a, outpaint(model, extend={"right": 16}, n=1, seed=3))
    assert not torch.equal(a, outpaint(model, extend={"right": 16}, n=1, seed=3, resample=1))


def test_resampling_runs_each_stretch_several_times():
    calls = []

    def den(x, sigma):
        calls.append(float(sigma))
        return x * 0

    sigmas = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.0])
    fn = get_sampler("ddim")
    assert resampled(fn, times=1) is fn
    resampled(fn, times=3, jump=2)(den, torch.ones(1, 3, 4, 4), sigmas, torch.Generator())
    # stretch [8, 4, 2] runs 3 times, then [2, 1, 0] (ending at 0) once
    assert calls == [8.0, 4.0] * 3 + [2.0, 1.0]


def test_outpaint_canvas_with_size_and_anchor():
    img = torch.rand(3, 20, 30) * 2 - 1
    canvas, mask = outpaint_canvas(img, size=(40, 50), anchor="bottom-right")
    assert canvas.shape == (3, 40, 50) and torch.equal(canvas[:, 20:, 20:], img)
    assert mask.sum() == 40 * 50 - 20 * 30 and not mask[20:, 20:].any()
    _, mask = outpaint_canvas(img, size=(40, 50), anchor="center")
    assert not mask[10:30, 10:40].any()
    assert parse_extend("left=64, right=128,top=0") == {"left": 64, "right": 128, "top": 0}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"extend": {"left": -4}}, "negative"),
        ({"extend": {"left": 0, "top": 0}}, "adds no pixels"),
        ({"extend": {"right": 10_000}}, "too large"),
        ({"size": (10, 40)}, "smaller than"),
        ({"size": (40, 40), "anchor": "middle"}, "unknown anchor"),
        ({}, "either"),
    ],
)
def test_bad_extensions_are_one_line_errors(kwargs, message):
    with pytest.raises(SinDiffusionError, match=message):
        outpaint_canvas(torch.zeros(3, 20, 30), **kwargs)


@pytest.mark.parametrize("text", ["left:3", "middle=4", "left=x", "left=1,left=2"])
def test_bad_extension_syntax(text):
    with pytest.raises(SinDiffusionError, match="extension"):
        parse_extend(text)


def test_mask_policy_threshold_128_and_antialiased_edges(tmp_path):
    a = np.zeros((32, 32), np.uint8)
    a[8:20, 8:20] = 255
    a[8:20, 20] = 130  # anti-aliased edge: >= 128 counts as white
    a[8:20, 7] = 100  # < 128 counts as black
    m = load_mask(save_mask(tmp_path / "m.png", a), (32, 32))
    assert m.sum() == 12 * 13 and m[8, 20] and not m[8, 7]


@pytest.mark.parametrize(
    "make, size, message",
    [
        (lambda a: a.__setitem__((slice(0, 8),), 255), (32, 40), "32x32 px but the image is 40x32"),
        (lambda a: a.__setitem__((slice(None),), 128), (32, 32), "not a black-and-white"),
        (lambda a: None, (32, 32), "all black"),
        (lambda a: a.__setitem__((slice(None),), 255), (32, 32), "all white"),
    ],
)
def test_bad_masks_are_one_line_errors(tmp_path, make, size, message):
    a = np.zeros((32, 32), np.uint8)
    make(a)
    with pytest.raises(SinDiffusionError, match=message):
        load_mask(save_mask(tmp_path / "m.png", a), size)


def test_inpaint_tensor_mask_of_wrong_size(model):
    with pytest.raises(SinDiffusionError, match="mask has shape"):
        inpaint(model, torch.ones(8, 8, dtype=torch.bool))


# --- SDEdit family ------------------------------------------------------------------------------
def test_strength_is_a_position_on_the_schedule(model):
    full = model.sigmas(10)
    assert len(full) == 11 and full[-1] == 0
    assert torch.equal(start_at(full, 1.0), full)
    assert torch.equal(start_at(full, 0.5), full[5:])
    assert len(start_at(full, 0.01)) == 2  # at least one step
    for bad in (0.0, 1.5, -1):
        with pytest.raises(SinDiffusionError, match="strength"):
            start_at(full, bad)


def test_sdedit_stays_closer_to_the_input_at_low_strength(model):
    sketch = from_uint8(to_uint8(torch.rand(3, 24, 40) * 2 - 1))  # another size: used as-is
    low = paint(model, sketch, strength=0.1, n=2, steps=10)
    high = paint(model, sketch, strength=0.9, n=2, steps=10)
    assert low.shape == (2, 3, 24, 40)
    assert (low - sketch).abs().mean() < 0.5 * (high - sketch).abs().mean()


def test_harmonize_and_edit_keep_everything_outside_the_mask(model):
    mask = box_mask()
    img = model.image.clone()
    img[:, mask] = 0.8  # a "pasted object"
    for fn in (harmonize, edit):
        out = fn(model, img, mask, n=1)
        assert torch.equal(to_uint8(out[0][:, ~mask]), to_uint8(img[:, ~mask]))
        assert not torch.equal(out[0][:, mask], img[:, mask])
    assert sdedit(model, None, 0.3).shape == (4, 3, 32, 32)  # default: the training image


# --- guidance -----------------------------------------------------------------------------------
def brightness(x0: torch.Tensor) -> torch.Tensor:
    return x0.mean(dim=(1, 2, 3))


def brighter(scale: float, sigma_range=(0.0, float("inf"))):
    """A guide towards brighter images."""
    return lambda den: GradientGuidance(den, brightness, scale, sigma_range)


def test_guidance_changes_the_sample_and_off_leaves_it_bit_identical(model):
    plain = model.sample(n=2, seed=0)
    for off in (brighter(0.0), brighter(1.0, sigma_range=(1e3, 1e4))):
        assert torch.equal(model.sample(n=2, seed=0, guide=off), plain)
    on = model.sample(n=2, seed=0, guide=brighter(0.5))
    assert on.mean() > plain.mean() + 0.05


def test_guidance_composes_with_outpainting(model):
    a = outpaint(model, extend={"right": 16}, seed=0)
    b = outpaint(model, extend={"right": 16}, seed=0, guide=brighter(0.5))
    assert torch.equal(b[..., :32], a[..., :32])  # known region still kept
    assert b[..., 32:].mean() > a[..., 32:].mean() + 0.05


def test_cutouts_shapes_and_determinism():
    x = torch.rand(2, 3, 20, 30)
    a = cutouts(x, 3, 16, torch.Generator().manual_seed(0))
    assert a.shape == (6, 3, 16, 16)
    assert torch.equal(a, cutouts(x, 3, 16, torch.Generator().manual_seed(0)))


def test_find_class_matches_case_insensitively_and_suggests_close_names():
    from sindiffusion.metrics import imagenet_classes

    assert imagenet_classes()[find_class("Volcano")] == "volcano"
    assert find_class("980") == 980
    with pytest.raises(SinDiffusionError, match="not an ImageNet class; close names: volcano"):
        find_class("volcanoo")


def test_class_guidance_with_real_weights_raises_the_target_probability(model):
    from sindiffusion.metrics import efficientnet_lite0

    clf, c = efficientnet_lite0(), find_class("volcano")

    def prob(x):  # judged on the whole image, not on the guide's cut-outs
        return clf(torch.nn.functional.interpolate(x, (64, 64), mode="bilinear")).softmax(-1)[:, c]

    probs = []
    for scale in (0.0, 0.03, 0.1, 0.3):  # the documented useful range
        score = ClassScore([c], clf, cuts=2, cut_size=64, seed=0)
        steer = lambda den, score=score, scale=scale: GradientGuidance(den, score, scale)  # noqa: E731
        probs.append(prob(model.sample(n=2, seed=0, steps=10, guide=steer)).mean().item())
    assert probs == sorted(probs) and probs[-1] > 10 * probs[0]


# --- CLIP text guidance (a tiny random CLIP: no weights can be downloaded here) -----------------
WORDS = ["<|endoftext|>", "<|startoftext|>", "a", "snowy", "mountain", "red", "sky"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A local CLIP folder (config, weights, tokenizer) with a tiny randomly initialised model."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(
            vocab_size=len(WORDS),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=1,
            eos_token_id=0,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=8,
    )
    path = tmp_path_factory.mktemp("clip")
    transformers.CLIPModel(cfg).save_pretrained(path)
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token=WORDS[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=WORDS[0], unk_token=WORDS[0]
    ).save_pretrained(path)
    return path


def test_clip_score_gradients_reach_the_image(clip_dir):
    clip, tokenizer = load_clip(clip_dir)
    score = ClipTextScore.from_text(clip, tokenizer, "a snowy mountain", cuts=2)
    x = torch.zeros(2, 3, 24, 24, requires_grad=True)
    s = score(x)
    assert s.shape == (2,) and s.abs().max() <= 1
    (g,) = torch.autograd.grad(s.sum(), x)
    assert g.abs().sum() > 0


def test_text_guidance_raises_the_clip_similarity(model, clip_dir):
    clip, tokenizer = load_clip(clip_dir)
    ids = torch.tensor([[1, 3, 4, 0]])  # the token-id seam: "a snowy mountain" without a tokenizer
    sims = []
    for scale in (0.0, 0.3, 1.0):
        score = ClipTextScore(clip, ids, cuts=2)
        steer = lambda den, score=score, scale=scale: GradientGuidance(den, score, scale)  # noqa: E731
        images = model.sample(n=2, seed=0, steps=6, guide=steer)
        judge = ClipTextScore(clip, ids, cuts=8, seed=1)
        sims.append(judge(images).mean().item())
    assert sims[0] < sims[1] < sims[2]


def test_missing_clip_weights_say_how_to_provide_them(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("SINDIFFUSION_CLIP_MODEL", str(tmp_path / "nothing"))
    with pytest.raises(SinDiffusionError, match="--clip-model .* or set SINDIFFUSION_CLIP_MODEL"):
        load_clip()


def test_uncached_hub_id_offline_says_how_to_provide_weights(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is not asked: no minute of retries
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    with pytest.raises(SinDiffusionError, match="'nobody/no-such-clip' are not available"):
        load_clip("nobody/no-such-clip")


# --- the command line ---------------------------------------------------------------------------
def test_every_app_subcommand_in_process(run, tmp_path, clip_dir):
    img = tmp_path / "in.png"
    Image.fromarray(natural_like(24, 40, seed=2)).save(img)
    a = np.zeros((24, 40), np.uint8)
    a[4:16, 10:30] = 255
    mask = save_mask(tmp_path / "mask.png", a)
    fast = ["--n", "2", "--steps", "3"]
    cases = {
        "outpaint": (["--extend", "left=8,right=16,bottom=8"], (56, 40)),
        "inpaint": (["--image", str(img), "--mask", mask], (40, 24)),
        "paint": (["--image", str(img), "--strength", "0.7"], (40, 24)),
        "harmonize": (["--image", str(img), "--mask", mask], (40, 24)),
        "edit": (["--image", str(img), "--sampler", "heun"], (40, 24)),
    }
    for name, (extra, size) in cases.items():
        out = tmp_path / name
        assert main([name, str(run), "--out", str(out), *fast, *extra]) == 0, name
        assert Image.open(out / f"{name}-001.png").size == size
        assert (out / "grid.png").exists() and (out / "input.png").exists()
    out = tmp_path / "sized"
    args = ["--size", "48x40", "--anchor", "top-left", "--class", "volcano", "--cuts", "1"]
    assert main(["outpaint", str(run), "--out", str(out), *fast, *args]) == 0
    res = np.asarray(Image.open(out / "outpaint-000.png"))
    assert res.shape == (40, 48, 3) and np.array_equal(res[:32, :32], natural_like(32, 32))
    text = ["--text", "a red sky", "--clip-model", str(clip_dir), "--guidance", "0.5"]
    assert main(["sample", str(run), "--out", str(tmp_path / "t"), *fast, *text]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["outpaint", "--extend", "left=-3"], "negative"),
        (["outpaint"], "either --extend"),
        (["outpaint", "--size", "20x20"], "smaller than"),
        (["outpaint", "--extend", "left=9999"], "too large"),
        (["inpaint", "--mask", "MISSING.png"], "no such file"),
        (["paint", "--image", "MISSING.png"], "no such file"),
        (["edit", "--strength", "1.5"], "strength 1.5 is out of range"),
        (["sample", "--class", "volcanoo"], "close names: volcano"),
        (["sample", "--guidance", "2"], "needs a target"),
        (["sample", "--text", "a sky", "--clip-model", "./no-clip"], "pass --clip-model"),
        (["sample", "--class", "volcano", "--guidance-range", "5,1"], "LO < HI"),
    ],
)
def test_cli_errors_are_one_line(run, tmp_path, capsys, argv, message):
    argv = [argv[0], str(run), "--out", str(tmp_path / "o"), "--n", "1", "--steps", "2", *argv[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err


def test_sample_many_takes_the_guidance_options(run, tmp_path, capsys):
    runs = str(run.parent)  # the folder holding the run
    fast = ["--n", "2", "--steps", "3", "--seed", "1"]
    assert main(["sample-many", runs, "--out", str(tmp_path / "plain"), *fast]) == 0
    guided = ["--class", "volcano", "--guidance", "0.3", "--cuts", "1"]
    assert main(["sample-many", runs, "--out", str(tmp_path / "g"), *fast, *guided]) == 0
    plain = np.asarray(Image.open(tmp_path / "plain" / run.name / "sample-000.png"), float)
    steered = np.asarray(Image.open(tmp_path / "g" / run.name / "sample-000.png"), float)
    assert np.abs(plain - steered).mean() > 1  # 8-bit levels: guidance reached every run
    assert main(["sample-many", runs, "--out", str(tmp_path / "e"), "--guidance", "1"]) == 2
    assert "needs a target" in capsys.readouterr().err
