"""Starting weights (`train.init`): the shipped generic network, random ones, and bad choices."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import natural_tensor

from sindiffusion.cli import main
from sindiffusion.config import ModelConfig, preset
from sindiffusion.errors import SinDiffusionError
from sindiffusion.train import Trainer, initial_weights
from sindiffusion.unet import UNet


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_generic_weights_fit_the_fast_network_and_are_trained():
    cfg = preset("fast")
    assert cfg.train.init == "generic" and preset("paper").train.init is None
    weights = initial_weights(cfg)
    fresh = UNet(cfg.model).state_dict()
    assert weights.keys() == fresh.keys()
    assert all(weights[k].shape == fresh[k].shape for k in fresh)
    assert all(torch.isfinite(w).all() for w in weights.values())
    # A fresh UNet starts with zeroed output and second convolutions (each block the identity);
    # trained weights no longer are.
    assert weights["out_conv.weight"].abs().max() > 0
    assert weights["down.0.conv2.weight"].abs().max() > 0


def test_a_fast_run_starts_from_the_generic_weights_and_a_random_one_from_its_seed():
    image = natural_tensor(32, 32)
    cfg = preset("fast")
    cfg.train.max_size = 32
    trainer = Trainer(image, cfg, seed=3)
    init = initial_weights(cfg)
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
