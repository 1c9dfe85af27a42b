"""Data-parallel training under `torchrun`: set-up, rank helpers, collective decisions.

`torchrun --nproc_per_node N -m sindiffusion train ...` starts N processes with the
environment variables WORLD_SIZE, RANK and LOCAL_RANK set; `team()` reads them and gives the
`Trainer` a `DataParallel` team, which joins the process group (gloo on CPU, NCCL on CUDA with
device cuda:LOCAL_RANK), wraps the UNet in DistributedDataParallel and lets only rank 0 write;
a plain run gets `Solo`, the same interface for one process.

How the batch is split, and why 2 ranks reproduce 1 process: every rank keeps the *same*
generator (seeded as in a single process) and draws the randomness of the whole global batch
(rescale factor, crops, noise, noise levels), then keeps its own slice of B / N rows. DDP
averages the gradients of the per-rank mean losses, which equals the gradient of the global
mean loss, so the maths of a step is that of one process with the same global batch and seed;
only the order of float additions differs. Drawing the whole batch's noise on every rank costs
one `randn` per step, small next to the network's forward and backward passes.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import resolve_device
from .errors import SinDiffusionError

# A test hook: "RANK:STEP" makes that rank kill itself with SIGKILL right after that step, to
# check that a lost worker stops the run with a clear error and keeps the last checkpoint.
FAULT_ENV = "SINDIFFUSION_KILL_RANK_AT_STEP"


class WorkerLost(SinDiffusionError):
    """Another training process died or a collective failed; the last checkpoint is kept."""


@dataclass(frozen=True)
class World:
    """Where this process stands among the data-parallel processes."""

    size: int = 1  # number of processes (WORLD_SIZE)
    rank: int = 0  # this process's global rank (RANK)
    local_rank: int = 0  # its rank on this machine (LOCAL_RANK): picks the GPU

    @classmethod
    def from_env(cls) -> World:
        """Read torchrun's environment; a plain `python -m sindiffusion` gives size 1."""
        env = os.environ
        return cls(
            size=int(env.get("WORLD_SIZE", "1")),
            rank=int(env.get("RANK", "0")),
            local_rank=int(env.get("LOCAL_RANK", "0")),
        )

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0 writes checkpoints, previews, logs and the progress bar."""
        return self.rank == 0

    def device(self, requested: str | torch.device | None) -> torch.device:
        """This rank's device: cuda:LOCAL_RANK when CUDA is requested or available, else cpu."""
        kind = torch.device(requested).type if requested is not None else None
        if kind is None:
            kind = "cuda" if torch.cuda.is_available() else "cpu"
        return torch.device("cuda", self.local_rank) if kind == "cuda" else torch.device(kind)

    def local_batch(self, batch_size: int) -> slice:
        """The rows of the global batch this rank trains on; the batch must split evenly."""
        if batch_size % self.size:
            raise SinDiffusionError(
                f"the batch size {batch_size} does not split evenly over {self.size} processes; "
                f"use a batch size that is a multiple of {self.size} (train.batch_size in --config)."
            )
        n = batch_size // self.size
        return slice(self.rank * n, (self.rank + 1) * n)


def init(world: World, device: torch.device) -> None:
    """Join the process group (idempotent): NCCL for CUDA devices, gloo otherwise.

    SIGTERM (what torchrun sends to every rank when it is stopped, and to the others when one
    fails) is handled by the training loop (`trainer.StopSignal`): every rank stops after the
    same step and rank 0 saves, or, when a rank is lost, the next collective fails with a
    clear error.
    """
    if not world.distributed or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    # A lost peer is usually noticed at once (closed socket); the timeout bounds the rest.
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=10))


def teardown() -> None:
    """Leave the process group, if joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _tensor(values: list[float], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64, device=device)


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean over ranks of a scalar tensor (a copy; the input keeps its graph)."""
    out = value.detach().clone().float()
    dist.all_reduce(out)
    return out / dist.get_world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is true on any rank (e.g. "SIGTERM received"), the same answer on all."""
    t = _tensor([float(flag)], device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def from_main(value: float, device: torch.device) -> float:
    """Rank 0's value of `value` on every rank (e.g. the elapsed time, so every rank computes
    the same learning rate and stops at the same step of a time budget)."""
    t = _tensor([value], device)
    dist.broadcast(t, src=0)
    return float(t.item())


def check_same(name: str, values: list[float], device: torch.device) -> None:
    """Raise `SinDiffusionError` unless every rank holds the same `values` (e.g. image size)."""
    t = _tensor(values, device)
    lo, hi = t.clone(), t.clone()
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    if not torch.equal(lo, hi):
        raise SinDiffusionError(
            f"the training processes disagree on the {name}; give every machine the same "
            "image, config and seed (and, for --resume, the same run folder)."
        )


def maybe_fail(world: World, step: int) -> None:
    """The fault-injection hook of `FAULT_ENV` (tests only)."""
    spec = os.environ.get(FAULT_ENV)
    if spec and spec == f"{world.rank}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)


class Solo:
    """The one training process of a plain run. The `Trainer` asks its team, never the
    environment, so the few things data-parallel training does differently live in
    `DataParallel` alone: every method here is what one process does."""

    main = True  # this process writes the run folder and shows the progress bar
    rows: slice | None = None  # this process's rows of each batch; None = all of them

    def __init__(self, device: str | torch.device | None):
        self.device = resolve_device(device)

    def join(self, unet: torch.nn.Module, state: list[float]) -> torch.nn.Module:
        """The module the loss runs through (`unet` itself here); `state` (image sizes and
        sums, step, seed) is what every process must agree on."""
        return unet

    def mean(self, loss: torch.Tensor) -> torch.Tensor:
        """The loss of the whole batch (detached), so every process takes the same decision."""
        return loss.detach()

    def clock(self, elapsed: float) -> float:
        """The elapsed training time every process goes by."""
        return elapsed

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set in any process (a stop asked for)."""
        return flag

    def after_step(self, step: int) -> None:
        """Called after every optimiser step (the data-parallel fault-injection hook)."""

    def lost(self, error: RuntimeError, step: int, kept: str) -> SinDiffusionError | None:
        """The one-sentence error for a RuntimeError in training, when it means a lost process;
        None here: one process's RuntimeError is its own."""
        return None


class DataParallel(Solo):
    """One of several processes under `torchrun` (see the module docstring)."""

    def __init__(self, world: World, device: str | torch.device | None):
        self.world = world
        self.device = world.device(device)
        self.main = world.main
        init(world, self.device)

    def join(self, unet: torch.nn.Module, state: list[float]) -> torch.nn.Module:
        """Check that every rank starts from the same `state`, then wrap `unet` in DDP: the
        loss runs through the wrapper, so its gradients are averaged over the ranks."""
        check_same("training images, step or seed", state, self.device)
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(unet, device_ids=ids)

    def split(self, batch_size: int) -> None:
        """Take this rank's rows of every batch of `batch_size`."""
        self.rows = self.world.local_batch(batch_size)

    def mean(self, loss: torch.Tensor) -> torch.Tensor:
        return mean(loss)

    def clock(self, elapsed: float) -> float:
        # Rank 0's clock for all: the same learning rate and the same last step.
        return from_main(elapsed, self.device)

    def any(self, flag: bool) -> bool:
        return any_rank(flag, self.device)

    def after_step(self, step: int) -> None:
        maybe_fail(self.world, step)

    def lost(self, error: RuntimeError, step: int, kept: str) -> SinDiffusionError | None:
        # gloo/NCCL messages start with "[source/file.cc:123] "; keep their first sentence.
        text = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip()) or type(error).__name__
        cause = text.splitlines()[0].split(". ")[0].rstrip(".")[:160]
        return WorkerLost(
            f"training stopped at step {step} because a training process failed or was "
            f"lost ({cause}); {kept} — fix the cause and rerun the same command with --resume."
        )


def team(device: str | torch.device | None, batch_size: int) -> Solo:
    """The training processes this one belongs to: `DataParallel` under torchrun
    (WORLD_SIZE > 1, training `batch_size` / WORLD_SIZE rows of each batch), else `Solo`."""
    world = World.from_env()
    if not world.distributed:
        return Solo(device)
    parallel = DataParallel(world, device)
    parallel.split(batch_size)
    return parallel
