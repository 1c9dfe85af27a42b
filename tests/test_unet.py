"""The UNet: any size in, same size out; the paper network's size and receptive field."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sindiffusion.config import ModelConfig, preset
from sindiffusion.errors import SinDiffusionError
from sindiffusion.unet import GroupNorm, UNet, Upsample, count_parameters, measure_receptive_field


@pytest.mark.parametrize("upsample", ["conv", "low_conv"])
@pytest.mark.parametrize("h,w", [(16, 16), (17, 31), (33, 20), (45, 64)])
def test_output_has_the_input_shape_for_odd_sizes(h, w, upsample):
    net = UNet(ModelConfig(base_channels=8, channel_mults=(1, 2, 4), groups=4, upsample=upsample))
    x = torch.randn(2, 3, h, w)
    assert net(x, torch.zeros(2)).shape == (2, 3, h, w)


def test_low_conv_upsampling_convolves_at_the_coarse_level_into_the_finer_channels():
    cfg = ModelConfig(base_channels=8, channel_mults=(1, 2, 4), groups=4)
    paper = UNet(cfg)
    low = UNet(dataclasses.replace(cfg, upsample="low_conv"))
    ups = [m.conv for m in low.up if isinstance(m, Upsample)]
    # 32 -> 16 channels into the middle level, 16 -> 8 into the full-resolution one
    assert [(c.in_channels, c.out_channels) for c in ups] == [(32, 16), (16, 8)]
    assert count_parameters(low) < count_parameters(paper)
    with pytest.raises(SinDiffusionError, match="use one of conv, low_conv"):
        dataclasses.replace(cfg, upsample="bilinear")


def test_zero_initialised_output_gives_zero_at_start():
    net = UNet(ModelConfig(base_channels=8, channel_mults=(1, 2), groups=4))
    assert net(torch.randn(1, 3, 16, 16), torch.ones(1)).abs().max() == 0


@pytest.mark.slow
def test_paper_preset_matches_the_published_network():
    cfg = preset("paper").model
    assert (cfg.base_channels, cfg.channel_mults, cfg.num_res_blocks) == (64, (1, 2, 4), 1)
    n = count_parameters(UNet(cfg))
    assert 6.5e6 < n < 8.5e6, n  # "about 7 M parameters"
    assert 90 <= measure_receptive_field(cfg) <= 110  # "about 100 px"


def test_receptive_field_is_a_patch_not_the_image():
    cfg = ModelConfig(base_channels=8, channel_mults=(1, 2), groups=4)
    rf = measure_receptive_field(cfg, size=64)
    # in_conv + 2 + down + (1 block) ... a two-level net sees a few tens of pixels, not 64+
    assert 10 < rf < 64
    deeper = ModelConfig(base_channels=8, channel_mults=(1, 2, 4), groups=4)
    assert measure_receptive_field(deeper, size=64) > rf


def test_fast_preset_keeps_a_patch_level_receptive_field():
    rf = measure_receptive_field(preset("fast").model)
    assert 60 <= rf <= 140


def test_groupnorm_takes_a_bfloat16_input_as_it_is_when_sampling():
    norm = GroupNorm(4, 16)
    with torch.no_grad():
        norm.weight.normal_(generator=torch.Generator().manual_seed(1))
        norm.bias.normal_(generator=torch.Generator().manual_seed(2))
    x = torch.randn(2, 16, 64, 64, generator=torch.Generator().manual_seed(0)) * 3 + 1
    x = x.bfloat16()
    with torch.no_grad():
        fast = norm(x)  # the mixed-precision kernel, as in sampling
    slow = norm(x)  # grad enabled: through float32 and back, as in training
    assert fast.dtype == slow.dtype == torch.bfloat16
    # Both take float32 statistics and round once to bfloat16: at most one bfloat16 step apart.
    step = slow.float().abs().clamp(min=1e-3) * 2**-7
    assert ((fast.float() - slow.float()).abs() <= step).all()
    want = F.group_norm(x.float(), 4, norm.weight, norm.bias, norm.eps)
    assert (fast.float() - want).abs().max() < 0.05
