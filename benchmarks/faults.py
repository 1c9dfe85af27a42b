"""Reliability: every bad input and fault we know of, tried, and a table of what happened.

    python3 benchmarks/faults.py                    # every case, 20 SIGKILL trials (~3 min)
    python3 benchmarks/faults.py --quick            # the fast cases (what the tests run)
    python3 benchmarks/faults.py --write docs/reliability.md   # and rewrite the doc's table

Each case runs the command line in-process (or a real process where a signal or a resource
limit is the point) on a scratch folder with a tiny trained run, and reports
`case | expected | got | data intact`: "got" is what a user saw (the one-line error, or
what was made), "data intact" whether the run folder (or the file in question) is byte for
byte what it was before. A case passes when the exit code, the message and the data are
what is expected: a one-line `error: ...` with exit code 2 and no traceback for bad input,
the work done for odd but valid input. tests/test_faults.py runs the fast cases.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import sindiffusion
from sindiffusion import apps
from sindiffusion.checkpoint import CHECKPOINT, load_checkpoint, read_log, save_checkpoint
from sindiffusion.cli import main
from sindiffusion.config import Config, DiffusionConfig, ModelConfig, SamplingConfig, TrainConfig
from sindiffusion.errors import SinDiffusionError
from sindiffusion.ui import OneAtATime, RunStore, check_mask_upload, check_upload

ROOT = Path(__file__).resolve().parents[1]
TABLE_START, TABLE_END = "<!-- faults table -->", "<!-- /faults table -->"


# --- the scratch folder ------------------------------------------------------------------------
def tiny_config(**train) -> Config:
    """A network of a few thousand parameters: every case runs in a second."""
    t = dict(steps=20, batch_size=2, lr=2e-3, ema_decay=0.9, checkpoint_every=1,
             preview_every=0, preview_steps=2, max_size=32)  # fmt: skip
    t.update(train)
    return Config(
        preset="tiny",
        model=ModelConfig(base_channels=8, channel_mults=(1, 2), num_res_blocks=1, groups=4),
        diffusion=DiffusionConfig(parameterization="edm"),
        sampling=SamplingConfig(sampler="dpmpp_2m", steps=3),
        train=TrainConfig(**t),
    )


def picture(h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """A small uint8 RGB image with gradients and texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([0.3 + 0.4 * y, 0.5 + 0.2 * np.sin(6 * x), 0.9 - 0.6 * y], -1)
    img += rng.normal(0, 0.05, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels: a decompression bomb's face."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@dataclass
class Outcome:
    got: str  # what a user saw, one line
    passed: bool
    intact: bool | None = None  # None: no earlier work was at stake


@dataclass
class Workspace:
    """A scratch folder with a tiny trained run (`run`), its image and its config file."""

    root: Path
    run: Path = field(init=False)
    image: Path = field(init=False)
    config: Path = field(init=False)

    def __post_init__(self) -> None:
        self.image = self.root / "image.png"
        Image.fromarray(picture()).save(self.image)
        self.config = self.root / "tiny.json"
        self.config.write_text(tiny_config().to_json())
        self.run = self.root / "run"
        sindiffusion.train(self.image, config=tiny_config(), out=self.run, steps=4,
                           progress=False, device="cpu")  # fmt: skip

    def path(self, name: str) -> Path:
        return self.root / name

    def snapshot(self, folder: Path | None = None) -> dict[str, str]:
        """Every file of a folder (default the run) and its content's hash."""
        folder = folder or self.run
        return {
            str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }

    def cli(self, argv: list[str]) -> tuple[int, str]:
        """Run the command line in-process; (exit code, what it wrote to stderr)."""
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main([str(a) for a in argv])
            except Exception as e:  # noqa: BLE001 - a traceback is what this looks for
                return -1, f"Traceback: {type(e).__name__}: {e}"
        return code, err.getvalue()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def expect_error(ws: Workspace, argv: list, words: str) -> Outcome:
    """A one-line `error: ...` containing `words`, exit code 2, no traceback; the run
    folder untouched."""
    before = ws.snapshot()
    code, err = ws.cli(argv)
    line = _last_line(err)  # progress bars may come before it
    one_line = line.startswith("error: ") or ": error: " in line  # ours, or argparse's usage error
    ok = code == 2 and one_line and words in line and "Traceback" not in err
    return Outcome(f"{line[:150]} (exit {code})", ok, ws.snapshot() == before)


def expect_done(ws: Workspace, argv: list, check: Callable[[], str | None]) -> Outcome:
    """Exit code 0 and `check()` returns what was made (None: it was not)."""
    before = ws.snapshot()
    code, err = ws.cli(argv)
    made = check() if code == 0 else None
    got = made if made is not None else f"{_last_line(err)[:150]} (exit {code})"
    return Outcome(got, code == 0 and made is not None, ws.snapshot() == before)


def expect_api_error(ws: Workspace, fn: Callable[[], object], words: str) -> Outcome:
    """A `SinDiffusionError` whose one sentence contains `words`."""
    before = ws.snapshot()
    try:
        fn()
    except SinDiffusionError as e:
        text = str(e)
        return Outcome(f"SinDiffusionError: {text[:150]}", words in text and "\n" not in text,
                       ws.snapshot() == before)  # fmt: skip
    except Exception as e:  # noqa: BLE001
        return Outcome(f"{type(e).__name__}: {e}"[:150], False, ws.snapshot() == before)
    return Outcome("no error", False, ws.snapshot() == before)


# --- cases ---------------------------------------------------------------------------------------
@dataclass
class Case:
    group: str
    name: str
    expected: str
    run: Callable[[Workspace], Outcome]
    slow: bool = False


CASES: list[Case] = []


def case(group: str, name: str, expected: str, slow: bool = False):
    def register(fn: Callable[[Workspace], Outcome]):
        CASES.append(Case(group, name, expected, fn, slow))
        return fn

    return register


def _train(ws: Workspace, image, out: str = "new") -> list:
    return ["train", image, "--out", ws.path(out), "--config", ws.config, "--steps", "1",
            "--quiet", "--device", "cpu"]  # fmt: skip


def _trained(ws: Workspace, out: str = "new", size: tuple[int, int] | None = None):
    """A check that `out` holds a run whose training image is `size` (W, H) if given."""

    def check() -> str | None:
        if not (ws.path(out) / CHECKPOINT).is_file():
            return None
        img = Image.open(ws.path(out) / "image.png")
        shutil.rmtree(ws.path(out))  # the next case trains into the same name
        if size is not None and img.size != size:
            return None
        return f"trained on it; image.png {img.size[0]}x{img.size[1]} {img.mode}"

    return check


def _save(ws: Workspace, name: str, img: Image.Image, **kw) -> Path:
    path = ws.path(name)
    img.save(path, **kw)
    return path


# Inputs: the training image.
@case("inputs", "not an image (text named .png)", "error: not an image")
def _(ws):
    p = ws.path("text.png")
    p.write_text("hello")
    return expect_error(ws, _train(ws, p), "not an image Pillow can read")


@case("inputs", "truncated JPEG", "error: truncated or corrupt")
def _(ws):
    p = _save(ws, "full.jpg", Image.fromarray(picture(64, 64)), quality=95)
    cut = ws.path("cut.jpg")
    cut.write_bytes(p.read_bytes()[:400])
    return expect_error(ws, _train(ws, cut), "truncated or corrupt")


@case("inputs", "CMYK JPEG", "trains (converted to RGB)")
def _(ws):
    p = _save(ws, "cmyk.jpg", Image.fromarray(picture()).convert("CMYK"))
    return expect_done(ws, _train(ws, p), _trained(ws))


@case("inputs", "16-bit greyscale PNG", "trains (scaled to 8 bits)")
def _(ws):
    a = (picture()[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    p = _save(ws, "deep.png", Image.fromarray(a))  # uint16: mode I;16
    return expect_done(ws, _train(ws, p), _trained(ws))


@case("inputs", "LA, P and 1-bit PNGs", "each trains")
def _(ws):
    outcomes = []
    for mode in ("LA", "P", "1"):
        p = _save(ws, f"mode-{mode}.png", Image.fromarray(picture()).convert(mode))
        outcomes.append(expect_done(ws, _train(ws, p, f"new-{mode}"), _trained(ws, f"new-{mode}")))
    ok = all(o.passed for o in outcomes)
    return Outcome("; ".join(f"{m}: {o.got}" for m, o in zip(("LA", "P", "1"), outcomes, strict=True)),
                   ok, all(o.intact for o in outcomes))  # fmt: skip


@case(
    "inputs",
    "EXIF-rotated JPEG (stored 48x32, shown 32x48)",
    "trains upright: 21x32 at max_size 32",
)
def _(ws):
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    p = _save(ws, "rotated.jpg", Image.fromarray(picture(32, 48)), exif=exif.tobytes())
    return expect_done(ws, _train(ws, p), _trained(ws, size=(21, 32)))


@case("inputs", "1x1 image", "error: too small")
def _(ws):
    p = _save(ws, "dot.png", Image.new("RGB", (1, 1)))
    return expect_error(ws, _train(ws, p), "too small")


@case("inputs", "20000x20000 PNG (decompression bomb)", "error before decoding: megapixels")
def _(ws):
    p = ws.path("bomb.png")
    p.write_bytes(png_claiming(20000, 20000))
    t0 = time.perf_counter()
    out = expect_error(ws, _train(ws, p), "megapixels")
    out.passed = out.passed and time.perf_counter() - t0 < 5  # refused, not decoded
    return out


@case("inputs", "0-byte file", "error: not an image")
def _(ws):
    p = ws.path("empty.png")
    p.write_bytes(b"")
    return expect_error(ws, _train(ws, p), "not an image")


@case("inputs", "a directory", "error: is a folder")
def _(ws):
    ws.path("adir").mkdir(exist_ok=True)
    return expect_error(ws, _train(ws, ws.path("adir")), "is a folder")


@case("inputs", "a path with spaces and unicode", "trains")
def _(ws):
    folder = ws.path("mes images d'été")
    folder.mkdir(exist_ok=True)
    p = _save(ws, "mes images d'été/ciel bleu ☀.png", Image.fromarray(picture()))
    return expect_done(ws, _train(ws, p, "sortie été"), _trained(ws, "sortie été"))


@case("inputs", "train without --resume into an existing run", "error: already holds a run")
def _(ws):
    return expect_error(ws, _train(ws, ws.image, "run"), "already holds a run")


@case("inputs", "--out is an existing file", "error before training: is a file")
def _(ws):
    f = ws.path("afile")
    f.write_text("keep")
    out = expect_error(ws, ["train", ws.image, "--out", f, "--steps", "1"], "is a file")
    out.intact = out.intact and f.read_text() == "keep"
    return out


# Sizes and options.
def _sample(ws: Workspace, *extra) -> list:
    return ["sample", ws.run, "--out", ws.path("samples"), "--n", "1", "--device", "cpu", *extra]


for _size, _words in (("0x0", "out of range"), ("-5x10", "out of range"),
                      ("100000x100000", "out of range"), ("abc", "WIDTHxHEIGHT")):  # fmt: skip

    @case("sizes and options", f"--size {_size}", f"error: {_words}")
    def _(ws, size=_size, words=_words):
        return expect_error(ws, _sample(ws, f"--size={size}"), words)


@case("sizes and options", "--size 17x23 (not a multiple of 4)", "a 17x23 sample")
def _(ws):
    def check():
        size = Image.open(ws.path("samples") / "sample-000.png").size
        return f"a {size[0]}x{size[1]} sample" if size == (17, 23) else None

    return expect_done(ws, _sample(ws, "--size", "17x23"), check)


@case("sizes and options", "--seed 18446744073709551616", "error: whole number")
def _(ws):
    argv = [*_sample_run(ws, ws.run), "--seed", str(2**64)]
    return expect_error(ws, argv, "whole number from 0 to 2**63 - 1")


@case("sizes and options", "--n 1000000; API sample(n=100000)", "error: above the limit")
def _(ws):
    # The CLI writes each chunk as it is done (memory does not grow with --n), up to a count;
    # sample() returns all at once, so its results' pixels are capped.
    argv = [*_sample_run(ws, ws.run)[:-2], "--n", "1000000"]
    cli = expect_error(ws, argv, "SINDIFFUSION_MAX_N")
    model = sindiffusion.load(ws.run, device="cpu")
    api = expect_api_error(ws, lambda: model.sample(n=100_000, size=(188, 250)), "_MAX_PIXELS")
    return Outcome(f"{cli.got}; {api.got}", cli.passed and api.passed, cli.intact and api.intact)


@case("sizes and options", "API: animate 20000 frames", "SinDiffusionError: above the limit")
def _(ws):
    model = sindiffusion.load(ws.run, device="cpu")
    return expect_api_error(
        ws, lambda: apps.animate(model, frames=20_000), "SINDIFFUSION_MAX_FRAMES"
    )


@case("sizes and options", "sample --out FILE, animate --out x.avi", "error before any sampling")
def _(ws):
    afile = ws.path("afile")
    afile.write_text("keep me")
    outcomes = [  # 4000 sampler steps would take minutes: refused first, the file untouched
        expect_error(ws, [*_sample_run(ws, ws.run)[:3], afile, "--steps", "4000"], "is a file"),
        expect_error(
            ws, ["animate", ws.run, "--out", ws.path("x.avi"), "--steps", "4000"], ".gif or .mp4"
        ),  # fmt: skip
    ]
    ok = all(o.passed for o in outcomes)
    return Outcome("; ".join(o.got for o in outcomes), ok and afile.read_text() == "keep me",
                   all(o.intact for o in outcomes))  # fmt: skip


@case("sizes and options", "--n 0", "usage error: must be at least 1")
def _(ws):
    return expect_error(ws, _sample(ws, "--n", "0"), "must be at least 1")


@case("sizes and options", "--steps -3", "usage error: must be at least 1")
def _(ws):
    return expect_error(ws, _sample(ws, "--steps", "-3"), "must be at least 1")


@case("sizes and options", "--prior 0", "usage error: must be positive")
def _(ws):
    return expect_error(ws, _sample(ws, "--prior", "0"), "must be positive")


@case("sizes and options", "--prior 0.1 for a run without a layout stage", "error: changes nothing")
def _(ws):
    return expect_error(ws, _sample(ws, "--prior", "0.1"), "no closed-form layout stage")


@case("sizes and options", "--sampler euler_magic", "error: unknown sampler")
def _(ws):
    return expect_error(ws, _sample(ws, "--sampler", "euler_magic"), "unknown sampler")


@case("sizes and options", "--class volcanoo", "error: not an ImageNet class, close names")
def _(ws):
    return expect_error(ws, _sample(ws, "--class", "volcanoo"), "close names: volcano")


@case("sizes and options", "--text without CLIP weights", "error: how to provide the weights")
def _(ws):
    argv = _sample(ws, "--text", "a sky", "--clip-model", ws.path("no-clip"))
    return expect_error(ws, argv, "--clip-model")


@case("sizes and options", "API: sample(n=0), steps=0, size (9000, 16)", "SinDiffusionError each")
def _(ws):
    model = sindiffusion.load(ws.run, device="cpu")
    outs = [expect_api_error(ws, lambda: model.sample(n=0), "at least 1"),
            expect_api_error(ws, lambda: model.sample(n=1, steps=0), "1 or more"),
            expect_api_error(ws, lambda: model.sample(n=1, size=(9000, 16)), "out of range")]  # fmt: skip
    return Outcome("; ".join(o.got for o in outs), all(o.passed for o in outs), True)


@case("sizes and options", "--preset paper with --config", "error: not both")
def _(ws):
    argv = ["train", ws.image, "--out", ws.path("new"), "--preset", "paper", "--config", ws.config]
    return expect_error(ws, argv, "not both")


@case("sizes and options", "--resume with another image", "error: not the image of this run")
def _(ws):
    other = _save(ws, "other.png", Image.fromarray(picture(seed=5)))
    argv = ["train", other, "--out", ws.run, "--resume", "--steps", "6", "--quiet"]
    return expect_error(ws, argv, "is not the image this run was trained on")


# Masks.
def _mask(ws: Workspace, name: str, a: np.ndarray) -> Path:
    return _save(ws, name, Image.fromarray(a.astype(np.uint8)))


def _inpaint(ws: Workspace, mask: Path) -> list:
    return ["inpaint", ws.run, "--mask", mask, "--out", ws.path("filled"), "--n", "1"]


@case("masks", "wrong size (40x32 for 32x32)", "error: give a mask of the image's size")
def _(ws):
    return expect_error(
        ws, _inpaint(ws, _mask(ws, "m.png", np.full((32, 40), 255))), "image's size"
    )


@case("masks", "all black", "error: all black")
def _(ws):
    return expect_error(ws, _inpaint(ws, _mask(ws, "m.png", np.zeros((32, 32)))), "all black")


@case("masks", "all white", "error: all white")
def _(ws):
    return expect_error(ws, _inpaint(ws, _mask(ws, "m.png", np.full((32, 32), 255))), "all white")


@case("masks", "not an image", "error: not an image")
def _(ws):
    p = ws.path("mask.png")
    p.write_text("nope")
    return expect_error(ws, _inpaint(ws, p), "not an image")


@case("masks", "non-binary grey values", "error: not a black-and-white mask")
def _(ws):
    a = np.tile(np.linspace(0, 255, 32), (32, 1))
    return expect_error(ws, _inpaint(ws, _mask(ws, "m.png", a)), "not a black-and-white")


@case("masks", "API: harmonize with a tensor mask of the wrong size", "SinDiffusionError")
def _(ws):
    model = sindiffusion.load(ws.run, device="cpu")
    mask = torch.ones(8, 8, dtype=torch.bool)
    return expect_api_error(ws, lambda: apps.harmonize(model, None, mask), "image's size")


# Checkpoints.
def _broken_run(ws: Workspace, name: str, content: bytes | None) -> Path:
    folder = ws.path(name)
    shutil.copytree(ws.run, folder, dirs_exist_ok=True)
    if content is None:
        (folder / CHECKPOINT).unlink()
    else:
        (folder / CHECKPOINT).write_bytes(content)
    return folder


def _sample_run(ws: Workspace, folder: Path) -> list:
    return ["sample", folder, "--out", ws.path("samples"), "--n", "1"]


@case("checkpoints", "truncated checkpoint", "error: corrupt")
def _(ws):
    data = (ws.run / CHECKPOINT).read_bytes()
    folder = _broken_run(ws, "truncated", data[: len(data) // 2])
    return expect_error(ws, _sample_run(ws, folder), "corrupt")


@case("checkpoints", "random bytes", "error: corrupt")
def _(ws):
    folder = _broken_run(ws, "random", np.random.default_rng(0).bytes(4096))
    return expect_error(ws, _sample_run(ws, folder), "corrupt")


@case("checkpoints", "a foreign safetensors file", "error: not a sindiffusion checkpoint")
def _(ws):
    from safetensors.torch import save_file

    folder = _broken_run(ws, "foreign", None)
    save_file({"w": torch.zeros(3)}, str(folder / CHECKPOINT))
    return expect_error(ws, _sample_run(ws, folder), "not a sindiffusion checkpoint")


@case("checkpoints", "a missing tensor (no EMA weights)", "error: incomplete")
def _(ws):
    folder = _broken_run(ws, "noema", None)
    ckpt = load_checkpoint(ws.run)
    ckpt.ema = {}
    save_checkpoint(folder, ckpt)
    return expect_error(ws, _sample_run(ws, folder), "incomplete")


@case("checkpoints", "written by a future version", "error: upgrade sindiffusion")
def _(ws):
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = _broken_run(ws, "future", None)
    with safe_open(str(ws.run / CHECKPOINT), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta["version"] = "9.0.0"
    meta["config"] = meta["config"].replace('"sampling": {', '"sampling": {"hyperdrive": 1, ', 1)
    save_file(tensors, str(folder / CHECKPOINT), metadata=meta)
    return expect_error(ws, _sample_run(ws, folder), "upgrade sindiffusion")


@case("checkpoints", "a run folder with no checkpoint", "error: holds no checkpoint")
def _(ws):
    folder = _broken_run(ws, "none", None)
    return expect_error(ws, _sample_run(ws, folder), "holds no checkpoint.safetensors")


def _edited_run(ws: Workspace, name: str, edit: Callable[[dict, dict], None]) -> Path:
    """A copy of the run whose checkpoint's metadata and tensors `edit(meta, tensors)` changed."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    folder = _broken_run(ws, name, None)
    with safe_open(str(ws.run / CHECKPOINT), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    edit(meta, tensors)
    save_file(tensors, str(folder / CHECKPOINT), metadata=meta)
    return folder


def _config_edit(section: str, key: str, value) -> Callable[[dict, dict], None]:
    """An `_edited_run` edit that sets config[section][key] (a path "sampling.patch" too)."""
    import json

    def edit(meta: dict, tensors: dict) -> None:
        cfg = json.loads(meta["config"])
        part = cfg
        for name in section.split("."):
            part = part[name]
        part[key] = value
        meta["config"] = json.dumps(cfg)

    return edit


@case("checkpoints", "metadata: step 'abc', extra not JSON", "error: damaged metadata")
def _(ws):
    outcomes = [
        expect_error(ws, _sample_run(ws, _edited_run(ws, name, edit)), "damaged metadata")
        for name, edit in (
            ("step", lambda m, t: m.update(step="abc")),
            ("extra", lambda m, t: m.update(extra="{not json")),
        )
    ]
    return Outcome("; ".join(o.got for o in outcomes), all(o.passed for o in outcomes),
                   all(o.intact for o in outcomes))  # fmt: skip


@case("checkpoints", "EMA weights of the wrong shape", "error: do not fit")
def _(ws):
    def edit(meta, tensors):
        key = next(k for k in tensors if k.startswith("ema.") and k.endswith("weight"))
        tensors[key] = torch.zeros(2, 2)

    return expect_error(ws, _sample_run(ws, _edited_run(ws, "shape", edit)), "do not fit")


@case("configs from others", "model.base_channels 16384", "error before anything is built")
def _(ws):
    folder = _edited_run(ws, "huge", _config_edit("model", "base_channels", 16384))
    # Refused from the config: building it would ask for about 2 TB.
    return expect_error(ws, _sample_run(ws, folder), "SINDIFFUSION_MAX_PARAMS")


@case("configs from others", "model.base_channels '64' (a string)", "error: whole number")
def _(ws):
    folder = _edited_run(ws, "string", _config_edit("model", "base_channels", "64"))
    return expect_error(ws, _sample_run(ws, folder), "whole number")


@case("configs from others", "sampling.sigma_min 'small' (a string)", "error: a number")
def _(ws):
    folder = _edited_run(ws, "sigma", _config_edit("sampling", "sigma_min", "small"))
    return expect_error(ws, _sample_run(ws, folder), "give a number")


@case("configs from others", "sampling.steps 10^9, candidates 10^6", "error: above the limit")
def _(ws):
    outcomes = [
        expect_error(
            ws,
            _sample_run(ws, _edited_run(ws, key, _config_edit("sampling", key, v))),
            "above the limit",
        )  # fmt: skip
        for key, v in (("steps", 10**9), ("candidates", 10**6))
    ]
    return Outcome("; ".join(o.got for o in outcomes), all(o.passed for o in outcomes),
                   all(o.intact for o in outcomes))  # fmt: skip


@case("configs from others", "sampling.patch.max_refs 10^9", "error: above the limit")
def _(ws):
    folder = _edited_run(ws, "refs", _config_edit("sampling.patch", "max_refs", 10**9))
    return expect_error(ws, _sample_run(ws, folder), "SINDIFFUSION_MAX_REFS")


# Faults: real processes.
def _python(*args, limits: Callable[[], None] | None = None, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "sindiffusion", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=limits, **kw)  # fmt: skip


def sigkill_trials(ws: Workspace, trials: int, seed: int = 0, steps: int = 30) -> Outcome:
    """Kill training with SIGKILL, then --resume: every checkpoint must load, and the run must
    reach the same step count as an uninterrupted one. Odd trials kill at a random moment,
    even ones the moment a checkpoint's temporary file appears, i.e. inside a write (the
    `fast` network, so that a write lasts tens of milliseconds)."""
    rng = random.Random(seed)
    mid_write = loadable = finished = 0
    cfg = tiny_config(checkpoint_every=1)
    cfg.model = ModelConfig(base_channels=32, channel_mults=(1, 2, 2), groups=8)
    config = ws.path("kill.json")
    config.write_text(cfg.to_json())
    for t in range(trials):
        out = ws.path(f"killed-{t}")
        args = ["train", ws.image, "--out", out, "--config", config, "--steps", steps,
                "--quiet", "--device", "cpu"]  # fmt: skip
        proc = _python(*args)
        deadline = time.monotonic() + 60
        while not (out / CHECKPOINT).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if t % 2 == 0:
            while not any(out.glob(".checkpoint.safetensors.*.tmp")) and proc.poll() is None:
                time.sleep(0.001)
        else:
            time.sleep(rng.uniform(0.0, 1.0))
        proc.kill()
        proc.communicate()
        mid_write += any(out.glob(".*.tmp"))
        try:
            load_checkpoint(out)
            loadable += 1
        except SinDiffusionError:
            continue
        resumed = _python(*args, "--resume")
        resumed.communicate(timeout=300)
        done = resumed.returncode == 0 and load_checkpoint(out).step == steps
        finished += done and not any(out.glob(".*.tmp"))  # the resume cleared the leftovers
    got = (f"{trials} kills ({mid_write} inside a write): {loadable} checkpoints loadable, "
           f"{finished} resumed to step {steps} with no file left behind")  # fmt: skip
    return Outcome(got, loadable == finished == trials, loadable == trials)


@case(
    "faults",
    "SIGKILL during training, 2 trials",
    "checkpoint loadable; resume reaches the step count",
)
def _(ws):
    return sigkill_trials(ws, 2, seed=1)


@case(
    "faults",
    "SIGKILL during training, 20 trials",
    "every checkpoint loadable; resume reaches the step count",
    slow=True,
)
def _(ws):
    return sigkill_trials(ws, 20, seed=2)


def _limit_file_size(size: int) -> Callable[[], None]:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return limit


@case(
    "faults",
    "disk full during a checkpoint write (file-size limit)",
    "error: could not write; the previous checkpoint byte-identical",
)
def _(ws):
    out = ws.path("full")
    shutil.copytree(ws.run, out)
    before = (out / CHECKPOINT).read_bytes()
    limit = _limit_file_size(len(before) // 2)
    proc = _python("train", ws.image, "--out", out, "--resume", "--steps", "8", "--quiet",
                   "--device", "cpu", limits=limit)  # fmt: skip
    _, err = proc.communicate(timeout=120)
    line = _last_line(err)
    ok = (
        proc.returncode == 2
        and line.startswith("error: could not write")
        and "Traceback" not in err
    )
    intact = (out / CHECKPOINT).read_bytes() == before and load_checkpoint(out).step == 4
    return Outcome(f"{line[:150]} (exit {proc.returncode})", ok and intact, intact)


@case(
    "faults",
    "disk full on a 4 MB tmpfs (needs root)",
    "error: could not write; the previous checkpoint byte-identical",
    slow=True,
)
def _(ws):
    mnt = ws.path("tmpfs")
    mnt.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:  # fmt: skip
        return Outcome("not run: mounting a tmpfs needs root", True, None)
    try:
        out = mnt / "run"
        shutil.copytree(ws.run, out)
        before = (out / CHECKPOINT).read_bytes()
        ballast = mnt / "ballast"  # fill the disk but for less than one more checkpoint
        free = shutil.disk_usage(mnt).free
        ballast.write_bytes(b"\0" * max(0, free - len(before) // 2))
        code, err = ws.cli(["train", ws.image, "--out", out, "--resume", "--steps", "8",
                            "--quiet", "--device", "cpu"])  # fmt: skip
        line = _last_line(err)
        intact = (out / CHECKPOINT).read_bytes() == before
        ok = code == 2 and "could not write" in line and intact
        return Outcome(f"{line[:150]} (exit {code})", ok, intact)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


@case("faults", "an output folder that cannot be written", "error: could not write")
def _(ws):
    if os.geteuid() == 0:  # root writes through permissions: use a file system that refuses
        target = Path("/proc/sindiffusion-faults/out")
    else:
        locked = ws.path("locked")
        locked.mkdir(exist_ok=True)
        locked.chmod(0o555)
        target = locked / "out"
    return expect_error(ws, _sample(ws)[:3] + [target, "--n", "1"], "could not write")


@case("faults", "SIGTERM to training", "checkpoint of the last step saved; warning")
def _(ws):
    return _sigterm(ws, ["train"], "term")


@case(
    "faults",
    "SIGTERM to torchrun, 2 gloo ranks",
    "checkpoint of the last step saved; warning",
    slow=True,
)
def _(ws):
    return _sigterm(ws, ["torchrun"], "term-ddp")


def _sigterm(ws: Workspace, how: list[str], name: str) -> Outcome:
    out = ws.path(name)
    cfg = ws.path(f"{name}.json")
    cfg.write_text(tiny_config(checkpoint_every=25, steps=10**6).to_json())
    args = ["train", ws.image, "--out", out, "--config", cfg, "--quiet", "--device", "cpu"]
    if how == ["torchrun"]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "sindiffusion", *map(str, args)]  # fmt: skip
    else:
        cmd = [sys.executable, "-m", "sindiffusion", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90  # until the first checkpoint (step 25), then a little more
    while not (out / CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(random.Random(0).uniform(0.5, 1.5))
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    if not (out / CHECKPOINT).exists():
        return Outcome(f"no checkpoint; {_last_line(err)[:120]}", False, None)
    step, logged = load_checkpoint(out).step, read_log(out)[-1][0]
    warned = "stopped by SIGTERM" in err
    return Outcome(f"checkpoint of step {step}, log to step {logged}, warning: {warned}",
                   step == logged and step > 0 and warned, True)  # fmt: skip


# The web page's server side (the browser flows are in tests/test_ui.py).
@case("web page", "an upload over the size limit", "refused: MB")
def _(ws):
    big = ws.path("big.png")
    big.write_bytes(np.random.default_rng(0).bytes(2 * 2**20))
    return expect_api_error(ws, lambda: check_upload(big, tiny_config(), max_upload_mb=1), "MB")


@case("web page", "an upload over 50 megapixels", "refused: megapixels")
def _(ws):
    p = ws.path("wide.png")
    p.write_bytes(png_claiming(8000, 8000))
    return expect_api_error(ws, lambda: check_upload(p, tiny_config()), "megapixels")


@case("web page", "a non-image upload", "refused: not an image")
def _(ws):
    p = ws.path("notes.png")
    p.write_text("hello")
    return expect_api_error(ws, lambda: check_upload(p, tiny_config()), "not an image")


@case("web page", "an EPS file named x.png (upload, mask, training image)", "refused: not an image")
def _(ws):
    p = ws.path("eps.png")  # Pillow would pick its EPS decoder (Ghostscript) by content
    p.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n")
    outcomes = [
        expect_api_error(ws, lambda: check_upload(p, tiny_config()), "not an image"),
        expect_api_error(ws, lambda: check_mask_upload(p, (32, 32)), "not an image"),
        expect_error(ws, _train(ws, p), "not an image"),
    ]
    return Outcome("; ".join(o.got for o in outcomes), all(o.passed for o in outcomes),
                   all(o.intact for o in outcomes))  # fmt: skip


@case("web page", "a GIF mask named mask.txt", "refused: not an image")
def _(ws):
    p = _save(ws, "mask.txt", Image.fromarray(picture()).convert("L"), format="GIF")
    return expect_api_error(ws, lambda: check_mask_upload(p, (32, 32)), "not an image")


@case("web page", "an uploaded mask over the size limit", "refused: MB")
def _(ws):
    p = ws.path("bigmask.png")
    p.write_bytes(np.random.default_rng(1).bytes(2 * 2**20))
    return expect_api_error(ws, lambda: check_mask_upload(p, (32, 32), 1), "at most 1 MB")


@case("shared page", "ui --host 0.0.0.0 / --share without --auth", "error: add --auth")
def _(ws):
    outcomes = [
        expect_error(ws, ["ui", "--runs", ws.path("ui-runs"), *flags], "add --auth USER:PASS")
        for flags in (["--host", "0.0.0.0"], ["--share"])
    ]
    return Outcome("; ".join(o.got for o in outcomes), all(o.passed for o in outcomes),
                   all(o.intact for o in outcomes))  # fmt: skip


@case("shared page", "a request over the pixel cap (8 results of 1024x1024)", "refused")
def _(ws):
    from sindiffusion.ui.page import _check_request

    return expect_api_error(ws, lambda: _check_request(8, 1024, 1024), "per request")


@case(
    "shared page", "a second user asks for the first's run, or presses Stop", "refused; not stopped"
)
def _(ws):
    from types import SimpleNamespace

    from sindiffusion.ui.page import _Page

    page = _Page(RunStore(ws.path("shared")), tiny_config(), 10, "cpu", 1)
    ana, bo = SimpleNamespace(username="ana"), SimpleNamespace(username="bo")
    run = page.runs(ana).new_run("a.png")
    shutil.copytree(ws.run, run, dirs_exist_ok=True)
    job = SimpleNamespace(stopped=False)
    job.stop = lambda: setattr(job, "stopped", True)
    page.current["ana"] = job
    page.stop_training(bo)
    seen = page.runs(bo).names()
    refused = expect_api_error(ws, lambda: page.runs(bo).model(run.name), "pick a run")
    ok = refused.passed and seen == [] and not job.stopped and page.runs(ana).names() == [run.name]
    return Outcome(f"bo sees {seen}; {refused.got}; ana's training running: {not job.stopped}",
                   ok, refused.intact)  # fmt: skip


@case("web page", "a file named ../../x.png", "a run folder inside --runs named x-<time>")
def _(ws):
    store = RunStore(ws.path("runs"))
    run = store.new_run("../../x.png")
    inside = run.parent == store.root and run.name.startswith("x-")
    return Outcome(f"made {run.relative_to(ws.root)}", inside, None)


@case("web page", "two trainings at once", "the second refused: already running")
def _(ws):
    gate = OneAtATime()
    gate.claim()
    try:
        return expect_api_error(ws, gate.claim, "already running")
    finally:
        gate.release()


@case("web page", "a run folder symlinked from outside --runs", "not listed, not readable")
def _(ws):
    store = RunStore(ws.path("runs-linked"))
    (store.root / "evil").symlink_to(ws.run, target_is_directory=True)
    listed = "evil" in store.names()
    try:
        store.path("evil")
        readable = True
    except SinDiffusionError:
        readable = False
    return Outcome(f"listed: {listed}, readable: {readable}", not listed and not readable, None)


# --- the run ------------------------------------------------------------------------------------
def run_cases(cases: list[Case], root: Path | None = None) -> list[tuple[Case, Outcome]]:
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        ws = Workspace(Path(root or tmp))
        results = []
        for c in cases:
            t0 = time.perf_counter()
            try:
                outcome = c.run(ws)
            except Exception as e:  # noqa: BLE001 - a case that crashes fails, the table goes on
                outcome = Outcome(f"the case crashed: {type(e).__name__}: {e}"[:150], False)
            outcome.got = outcome.got.replace(f"{ws.root}/", "")  # the scratch folder's path
            results.append((c, outcome))
            mark = "ok  " if outcome.passed else "FAIL"
            print(f"{mark} {c.group}: {c.name} ({time.perf_counter() - t0:.1f} s)", flush=True)
        return results


def table(results: list[tuple[Case, Outcome]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| group | case | expected | got | data intact | pass |", "|---|---|---|---|---|---|"]
    for c, o in results:
        intact = "n/a" if o.intact is None else ("yes" if o.intact else "**no**")
        lines.append(f"| {c.group} | {cell(c.name)} | {cell(c.expected)} | {cell(o.got)} | "
                     f"{intact} | {'yes' if o.passed else '**no**'} |")  # fmt: skip
    bad_inputs = [o for c, o in results if c.group != "faults"]
    faults = [o for c, o in results if c.group == "faults"]
    lost = sum(o.intact is False for _, o in results)
    summary = (f"{len(bad_inputs)} bad inputs tried, {sum(o.passed for o in bad_inputs)} "
               f"handled; {len(faults)} faults tried, {sum(o.passed for o in faults)} survived; "
               f"{lost} runs or files damaged.")  # fmt: skip
    return summary + "\n\n" + "\n".join(lines) + "\n"


def main_(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="only the fast cases")
    p.add_argument("--write", help="rewrite the table between the markers of this Markdown file")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    cases = [c for c in CASES if not (args.quick and c.slow)]
    t0 = time.perf_counter()
    results = run_cases(cases)
    text = table(results)
    print()
    print(text)
    print(f"{time.perf_counter() - t0:.0f} s; torch {torch.__version__}")
    if args.write:
        doc = Path(args.write)
        head, _, rest = doc.read_text().partition(TABLE_START)
        _, _, tail = rest.partition(TABLE_END)
        stamp = time.strftime("%Y-%m-%d")
        doc.write_text(f"{head}{TABLE_START}\n*Last run {stamp}: `python3 benchmarks/faults.py`"
                       f"{' --quick' if args.quick else ''}.*\n\n{text}{TABLE_END}{tail}")  # fmt: skip
        print(f"wrote the table into {doc}")
    return 0 if all(o.passed for _, o in results) else 1


if __name__ == "__main__":
    sys.exit(main_())
