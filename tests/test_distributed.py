"""Data-parallel training under torchrun: 2 gloo ranks = 1 process; a lost rank stops cleanly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config

import sindiffusion
from sindiffusion.checkpoint import load_checkpoint
from sindiffusion.distributed import FAULT_ENV, World
from sindiffusion.errors import SinDiffusionError

# 2 ranks and 1 process differ only in the order of float additions (the per-rank means
# averaged by DDP vs one mean); after 12 AdamW steps of the tiny model that is ~1e-6.
TOLERANCE = 2e-5


def torchrun(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "sindiffusion",
        "train",
        *args,
        "--device",
        "cpu",
        "--quiet",
    ]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=full_env)


@pytest.mark.slow
def test_two_gloo_ranks_reach_the_weights_of_one_process(image_file, tmp_path):
    cfg = tiny_config(preview_every=6, checkpoint_every=6)
    config_file = tmp_path / "cfg.json"
    config_file.write_text(cfg.to_json())
    proc = torchrun(
        str(image_file),
        "--out",
        str(tmp_path / "ddp"),
        "--config",
        str(config_file),
        "--steps",
        "12",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("trained 12 steps") == 1  # only rank 0 reports

    sindiffusion.train(
        image_file, config=cfg, out=tmp_path / "one", steps=12, progress=False, device="cpu"
    )
    ddp, one = load_checkpoint(tmp_path / "ddp"), load_checkpoint(tmp_path / "one")
    assert ddp.step == one.step == 12
    diff = max((ddp.model[k] - one.model[k]).abs().max().item() for k in one.model)
    ema_diff = max((ddp.ema[k] - one.ema[k]).abs().max().item() for k in one.ema)
    assert diff < TOLERANCE and ema_diff < TOLERANCE, (diff, ema_diff)
    # The same random stream was consumed: the generators end in the same state.
    assert torch.equal(ddp.rng_state, one.rng_state)
    # Rank 0 wrote the pictures and the log of every step, once.
    run = tmp_path / "ddp"
    assert (run / "loss.png").is_file()
    assert sorted(p.name for p in (run / "previews").iterdir()) == [
        "step-000006.png",
        "step-000012.png",
    ]
    assert len((run / "log.csv").read_text().splitlines()) == 1 + 12


@pytest.mark.slow
def test_a_lost_rank_stops_the_run_with_a_clear_error_and_keeps_the_checkpoint(
    image_file, tiny_config_file, tmp_path
):
    out = tmp_path / "run"
    # Rank 1 SIGKILLs itself after step 13; the config checkpoints every 10 steps.
    proc = torchrun(
        str(image_file),
        "--out",
        str(out),
        "--config",
        str(tiny_config_file),
        "--steps",
        "40",
        env={FAULT_ENV: "1:13"},
    )
    assert proc.returncode != 0
    assert "error: training stopped at step" in proc.stderr
    assert f"the checkpoint of step 10 in {out} is kept" in proc.stderr
    ckpt = load_checkpoint(out)
    assert ckpt.step == 10
    resumed = sindiffusion.train(image_file, out=out, steps=12, resume=True, progress=False)
    assert resumed.step == 12


def test_the_global_batch_must_split_evenly_over_the_ranks():
    world = World(size=2, rank=1)
    assert world.local_batch(4) == slice(2, 4)
    with pytest.raises(SinDiffusionError, match="multiple of 2"):
        world.local_batch(3)
