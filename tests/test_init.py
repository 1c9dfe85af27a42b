"""Starting weights (`train.init`): the shipped generic network, random ones, and bad choices."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import natural_tensor

import sindiffusion
from sindiffusion import SinDiffusion
from sindiffusion.cli import main
from sindiffusion.config import Config, ModelConfig, SamplingConfig, preset
from sindiffusion.diffusion import Denoiser
from sindiffusion.errors import SinDiffusionError
from sindiffusion.guidance import Autoguidance
from sindiffusion.trainer import Trainer
from sindiffusion.unet import UNet, initial_weights


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_generic_weights_fit_the_fast_network_and_are_trained():
    cfg = preset("fast")
    assert cfg.train.init == "generic" and preset("paper").train.init is None
    weights = initial_weights(cfg.train.init, cfg.model)
    fresh = UNet(cfg.model).state_dict()
    assert weights.keys() == fresh.keys()
    assert all(weights[k].shape == fresh[k].shape for k in fresh)
    assert all(torch.isfinite(w).all() for w in weights.values())
    # A fresh UNet starts with zeroed output and second convolutions (each block the identity);
    # trained weights no longer are.
    assert weights["out_conv.weight"].abs().max() > 0
    assert weights["down.0.conv2.weight"].abs().max() > 0


def test_runs_of_the_earlier_fast_network_still_find_their_generic_weights():
    # `fast` runs made before the "low_conv" upsampling saved a model config without the
    # field: it loads as "conv", and their starting weights (autoguidance's weaker network)
    # must still load.
    saved = preset("fast").to_dict()
    del saved["model"]["upsample"]
    old = Config.from_dict(saved)
    assert old.model.upsample == "conv"
    weights = initial_weights(old.train.init, old.model)
    now = initial_weights("generic", preset("fast").model)
    fresh = UNet(old.model).state_dict()
    assert all(weights[k].shape == fresh[k].shape for k in fresh) and weights.keys() == fresh.keys()
    assert weights["up.5.conv.weight"].shape == (64, 64, 3, 3)  # full-resolution conv
    assert now["up.5.conv.weight"].shape == (32, 64, 3, 3)  # at the coarse level, 32 out


def test_a_fast_run_starts_from_the_generic_weights_and_a_random_one_from_its_seed():
    image = natural_tensor(32, 32)
    cfg = preset("fast")
    cfg.train.max_size = 32
    trainer = Trainer(image, cfg, seed=3)
    init = initial_weights(cfg.train.init, cfg.model)
    assert _same(trainer.unet.state_dict(), init) and _same(trainer.ema.state_dict(), init)

    cfg.train.init = None
    trainer = Trainer(image, cfg, seed=3)
    torch.manual_seed(3)
    assert _same(trainer.unet.state_dict(), UNet(cfg.model).state_dict())
    assert not _same(trainer.unet.state_dict(), init)


def test_generic_weights_on_another_network_or_an_unknown_init_is_a_clear_error():
    image = natural_tensor(32, 32)
    cfg = preset("fast")
    cfg.model = ModelConfig(base_channels=16, channel_mults=(1, 2), groups=8)
    with pytest.raises(SinDiffusionError, match="set train.init to null"):
        Trainer(image, cfg)
    cfg = preset("fast")
    cfg.train.init = "imagenet"
    with pytest.raises(SinDiffusionError, match="unknown train.init 'imagenet'"):
        Trainer(image, cfg)


def test_cli_init_random_is_saved_in_the_run(image_file, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", str(image_file), "--out", str(out), "--steps", "1", "--quiet"]
    assert main([*args, "--init", "random", "--max-size", "32"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["preset"] == "fast" and saved["train"]["init"] is None
    assert main(["train", str(image_file), "--out", str(tmp_path / "x"), "--init", "nope"]) == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fast_model():
    cfg = preset("fast")
    cfg.train.max_size = 32
    return sindiffusion.train(natural_tensor(32, 32), config=cfg, steps=2, progress=False)


def _with(model, init: str | None = "generic", **sampling) -> SinDiffusion:
    """The same trained model with other sampling settings (and starting weights)."""
    cfg = model.config.copy()
    cfg.train.init = init
    for key, value in sampling.items():
        setattr(cfg.sampling, key, value)
    return SinDiffusion(cfg, model.image, model.checkpoint.ema, "cpu", model.checkpoint)


def test_autoguidance_pushes_the_estimate_away_from_the_generic_weights_inside_its_levels(
    fast_model,
):
    s = fast_model.config.sampling
    assert (s.autoguidance, s.autoguidance_sigmas) == (0.3, (0.04, 0.15))
    net = fast_model.network
    init = UNet(fast_model.config.model)
    init.load_state_dict(initial_weights("generic", fast_model.config.model))
    weak = Denoiser(init, fast_model.config.diffusion, net.bf16, net.channels_last)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.3
    sigma = torch.tensor([0.1, 0.5, 0.02])  # inside, above, below the guided levels
    plain, away = net(x, sigma), weak(x, sigma)
    got = Autoguidance(net, weak, 0.3, (0.04, 0.15))(x, sigma)
    assert torch.allclose(got[0], plain[0] + 0.3 * (plain[0] - away[0]), atol=1e-5)
    assert torch.equal(got[1:], plain[1:])  # outside the levels: the network alone
    assert (plain[0] - away[0]).abs().max() > 1e-3  # two steps moved the network already
    # The model's own denoiser below the switch is that autoguided network (to float32
    # rounding: a batch of 3 can take other convolution kernels than one of 1 on some CPUs).
    own = fast_model.denoiser(x, sigma[:1].expand(3))[0]
    torch.testing.assert_close(own, got[0], atol=1e-5, rtol=0)
    # A canvas above the pixel limit is not guided (`fast`: half a megapixel).
    assert s.autoguidance_max_pixels == 1 << 19
    limited = Autoguidance(net, weak, 0.3, (0.04, 0.15), max_pixels=32 * 32 - 1)
    assert torch.equal(limited(x, sigma), plain)
    assert torch.equal(Autoguidance(net, weak, 0.3, (0.04, 0.15), 32 * 32)(x, sigma), got)
    with pytest.raises(SinDiffusionError, match="autoguidance_max_pixels is 0"):
        SamplingConfig(autoguidance_max_pixels=0)

    off = _with(fast_model, autoguidance=0.0)
    a, b = fast_model.sample(n=1, seed=4), fast_model.sample(n=1, seed=4)
    assert torch.equal(a, b) and not torch.equal(a, off.sample(n=1, seed=4))


def test_autoguidance_is_off_without_starting_weights_and_bad_levels_are_a_clear_error(
    fast_model,
):
    unguided = _with(fast_model, init=None)  # a run from random weights: nothing to guide away from
    off = _with(fast_model, autoguidance=0.0)
    assert torch.equal(unguided.sample(n=1, seed=2), off.sample(n=1, seed=2))
    with pytest.raises(SinDiffusionError, match=r"autoguidance_sigmas is \(0.2, 0.1\)"):
        _with(fast_model, autoguidance_sigmas=(0.2, 0.1)).sample(n=1)


def test_sample_autoguidance_overrides_the_configs_weight_for_one_call(fast_model):
    off = _with(fast_model, autoguidance=0.0)
    guided = fast_model.sample(n=1, seed=5)
    # Off for one call draws what a run configured without it draws, and the next call is
    # guided again: nothing of a call stays in the model.
    assert torch.equal(fast_model.sample(n=1, seed=5, autoguidance=0), off.sample(n=1, seed=5))
    assert torch.equal(fast_model.sample(n=1, seed=5), guided)
    # On for a run configured without it: its weaker network is built on first use.
    assert torch.equal(off.sample(n=1, seed=5, autoguidance=0.3), guided)
    assert torch.equal(off.sample(n=1, seed=5), fast_model.sample(n=1, seed=5, autoguidance=0))
    assert not torch.equal(off.sample(n=1, seed=5, autoguidance=0.6), guided)

    with pytest.raises(SinDiffusionError, match="0 \\(off\\) or more, got -0.1"):
        fast_model.sample(n=1, autoguidance=-0.1)
    unguided = _with(fast_model, init=None)
    with pytest.raises(SinDiffusionError, match="started from random weights"):
        unguided.sample(n=1, autoguidance=0.3)
    assert unguided.sample(n=1, autoguidance=0).shape == (1, 3, 32, 32)


def test_outpaint_takes_autoguidance_and_candidates_like_sample(fast_model, tmp_path):
    import numpy as np
    from PIL import Image

    from sindiffusion.apps import outpaint
    from sindiffusion.image import to_uint8

    def wide(**options):
        return outpaint(fast_model, extend={"right": 16}, n=2, seed=1, steps=4, **options)

    plain = wide()  # the config's autoguidance, one layout per result
    chosen = wide(candidates=3)
    unguided = wide(autoguidance=0)
    assert torch.equal(chosen, wide(candidates=3)) and chosen.shape == (2, 3, 32, 48)
    assert not torch.equal(chosen, plain) and not torch.equal(unguided, plain)
    assert torch.equal(plain, wide(autoguidance=0.3))  # 0.3 is the config's weight
    for out in (plain, chosen, unguided):  # the known region is kept, bit for bit
        assert torch.equal(
            to_uint8(out[..., :32]), to_uint8(fast_model.image).expand(2, -1, -1, -1)
        )
    run = tmp_path / "run"
    fast_model.save(run)
    args = ["outpaint", str(run), "--extend", "right=16", "--n", "2", "--seed", "1", "--steps", "4"]
    assert main([*args, "--candidates", "3", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    got = np.array(Image.open(tmp_path / "o" / "outpaint-001.png"))
    assert torch.equal(torch.from_numpy(got).permute(2, 0, 1), to_uint8(chosen[1]))


def test_cli_sample_autoguidance_flag(fast_model, tmp_path, capsys):
    run = tmp_path / "run"
    fast_model.save(run)
    for w in ("0", "0.3"):
        out = tmp_path / f"w{w}"
        assert main(["sample", str(run), "--n", "1", "--out", str(out), "--autoguidance", w]) == 0
        assert (out / "sample-000.png").exists()
    assert (tmp_path / "w0" / "sample-000.png").read_bytes() != (
        tmp_path / "w0.3" / "sample-000.png"
    ).read_bytes()
    assert (
        main(["sample", str(run), "--n", "1", "--out", str(tmp_path / "x"), "--autoguidance", "-1"])
        == 2
    )
    assert "must be 0 or more" in capsys.readouterr().err
