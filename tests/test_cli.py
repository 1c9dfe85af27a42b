"""The command line, run in-process: every command and every user error's one-line message."""

from __future__ import annotations

import json

import pytest
from conftest import natural_like
from PIL import Image

from sindiffusion.cli import main
from sindiffusion.image import bundled_image


@pytest.fixture
def run(image_file, tiny_config_file, tmp_path):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(image_file),
                "--out",
                str(out),
                "--config",
                str(tiny_config_file),
                "--steps",
                "6",
                "--quiet",
            ]
        )
        == 0
    )
    return out


def test_train_sample_info(run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert (
        main(["sample", str(run), "--n", "3", "--size", "40x24", "--out", str(out), "--seed", "1"])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "grid.png",
        "sample-000.png",
        "sample-001.png",
        "sample-002.png",
    ]
    assert Image.open(out / "sample-000.png").size == (40, 24)
    assert (
        main(["sample", str(run), "--n", "1", "--scale", "2x1", "--out", str(tmp_path / "wide")])
        == 0
    )
    assert Image.open(tmp_path / "wide" / "sample-000.png").size == (64, 32)
    capsys.readouterr()
    assert main(["info", str(run), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["image_size"] == "32x32" and info["step"] == 6 and info["parameters"] > 1000
    assert info["receptive_field_px"] > 10


def test_same_seed_writes_identical_files(run, tmp_path):
    for d in ("a", "b"):
        assert (
            main(["sample", str(run), "--n", "1", "--out", str(tmp_path / d), "--seed", "5"]) == 0
        )
    assert (tmp_path / "a" / "sample-000.png").read_bytes() == (
        tmp_path / "b" / "sample-000.png"
    ).read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("image", [None, "rocket"])
def test_demo_writes_samples_of_two_aspect_ratios(tmp_path, capsys, image):
    out = tmp_path / "demo"
    choice = [] if image is None else ["--image", image]
    assert main(["demo", "--out", str(out), "--minutes", "0.01", *choice]) == 0
    path = bundled_image(image or "tibet")  # tibet is the default
    assert f"bundled image ({path.name})" in capsys.readouterr().out
    assert (out / "grid.png").exists()
    # The samples have the bundled image's shape at the preset's 250 px training size.
    w, h = Image.open(path).size
    a = Image.open(out / "samples" / "sample-000.png").size
    b = Image.open(out / "wide" / "sample-000.png").size
    assert a == (250, round(250 * h / w))
    assert b[0] == 2 * a[0] and b[1] == a[1]


def _error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_user_errors_are_one_line(tmp_path, capsys, run, tiny_config_file):
    notimg = tmp_path / "x.jpg"
    notimg.write_text("not an image")
    small = tmp_path / "small.png"
    Image.fromarray(natural_like(10, 10)).save(small)
    trunc = tmp_path / "t.png"
    Image.fromarray(natural_like(64, 64)).save(trunc)
    trunc.write_bytes(trunc.read_bytes()[:200])
    badjson = tmp_path / "bad.json"
    badjson.write_text("{nope")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.safetensors").write_bytes(b"junk" * 20)
    out = str(tmp_path / "o")
    assert "not an image" in _error(capsys, ["train", str(notimg), "--out", out])
    assert "too small" in _error(capsys, ["train", str(small), "--out", out])
    assert "truncated or corrupt" in _error(capsys, ["train", str(trunc), "--out", out])
    assert "no such file" in _error(capsys, ["train", str(tmp_path / "none.png"), "--out", out])
    assert "unknown preset" in _error(
        capsys, ["train", str(small), "--out", out, "--preset", "huge"]
    )
    assert "not a valid sindiffusion config" in _error(
        capsys, ["train", str(small), "--out", out, "--config", str(badjson)]
    )
    badup = tmp_path / "badup.json"
    badup.write_text('{"model": {"upsample": "bilinear"}}')
    msg = _error(capsys, ["train", str(small), "--out", out, "--config", str(badup)])
    assert "model.upsample is 'bilinear'; use one of conv, low_conv" in msg
    # A string where a number belongs, as someone else's config may have: a sentence, not a
    # TypeError from the first comparison that meets it.
    for section, field, want in (("sampling", "sigma_min", "a number"), ("train", "lr", "a number"),
                                 ("sampling", "steps", "a whole number"),
                                 ("train", "bf16", "true or false")):  # fmt: skip
        badtype = tmp_path / f"{field}.json"
        badtype.write_text(json.dumps({section: {field: "x"}}))
        msg = _error(capsys, ["train", str(small), "--out", out, "--config", str(badtype)])
        assert f"{section}.{field} is 'x'; give {want}" in msg, msg
    assert "nothing to resume" in _error(
        capsys, ["train", str(small), "--out", str(tmp_path / "new"), "--resume"]
    )
    assert "corrupt" in _error(capsys, ["sample", str(corrupt), "--out", out])
    assert "holds no" in _error(capsys, ["sample", str(tmp_path), "--out", out])
    assert "WIDTHxHEIGHT" in _error(capsys, ["sample", str(run), "--out", out, "--size", "big"])
    assert "either --size or --scale" in _error(
        capsys, ["sample", str(run), "--out", out, "--size", "32x32", "--scale", "2"]
    )
    assert "unknown sampler" in _error(
        capsys, ["sample", str(run), "--out", out, "--sampler", "nope"]
    )


def test_usage_errors_exit_2_without_a_traceback(capsys):
    assert main(["train"]) == 2
    assert main(["sample", "run", "--out", "o", "--n", "0"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def _png_header(width: int, height: int) -> bytes:
    """A small PNG file whose header claims width x height RGB pixels (one row of data): what
    a decompression bomb shows Pillow before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * width))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_three_tracebacks_of_issue_31_are_one_line_errors_or_work(tmp_path, capsys):
    image = tmp_path / "img.png"
    Image.fromarray(natural_like(64, 64)).save(image)
    # 1. Canvases at the CLI's smallest sizes sample (the closed-form layout shrinks to fit).
    run = tmp_path / "run"
    assert main(["train", str(image), "--out", str(run), "--steps", "2", "--quiet"]) == 0
    for size, want in (("16x16", (16, 16)), ("17x23", (17, 23))):
        out = tmp_path / size
        assert main(["sample", str(run), "--size", size, "--n", "1", "--out", str(out)]) == 0
        assert Image.open(out / "sample-000.png").size == want
    # 2. --out naming an existing file: refused before training, the file untouched.
    capsys.readouterr()  # the progress bars
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    argv = ["train", str(image), "--steps", "2", "--quiet", "--out"]
    assert "afile is a file, not a folder" in _error(capsys, [*argv, str(afile)])
    assert "is a file, not a folder" in _error(capsys, [*argv, str(afile / "sub")])
    assert afile.read_text() == "keep me"
    # 3. A 20000x20000 PNG (past Pillow's own refusal at 179 MP) and a 12000x12000 one:
    # refused from their headers, naming the limit and --max-size.
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(_png_header(20000, 20000))
    msg = _error(capsys, ["train", str(bomb), "--out", str(tmp_path / "b")])
    assert "larger than 100 megapixels" in msg and "--max-size" in msg
    big = tmp_path / "big.png"
    big.write_bytes(_png_header(12000, 12000))
    msg = _error(capsys, ["train", str(big), "--out", str(tmp_path / "b")])
    assert "12000x12000 px, more than 100 megapixels" in msg and "--max-size" in msg


def test_many_samples_are_written_chunk_by_chunk_and_match_sample(tmp_path, tiny_config_file):
    import torch

    import sindiffusion
    from sindiffusion.image import from_uint8, load_image, to_uint8

    image = tmp_path / "img.png"
    Image.fromarray(natural_like(32, 32)).save(image)
    run = tmp_path / "run"
    argv = ["train", str(image), "--out", str(run), "--config", str(tiny_config_file)]
    assert main([*argv, "--steps", "2", "--quiet"]) == 0
    model = sindiffusion.load(run)
    # 512x512 px: chunks of 4 results (MAX_PIXELS_PER_BATCH), so 5 come as 4 + 1.
    chunks = list(model.sample_chunks(n=5, size=(512, 512), seed=1, steps=2))
    assert [len(c) for c in chunks] == [4, 1]
    assert torch.equal(torch.cat(chunks), model.sample(n=5, size=(512, 512), seed=1, steps=2))
    out = tmp_path / "many"
    argv = ["sample", str(run), "--n", "5", "--size", "512x512", "--steps", "2", "--seed", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    assert len(list(out.glob("sample-*.png"))) == 5
    assert torch.equal(load_image(out / "sample-004.png"), from_uint8(to_uint8(chunks[1][0])))
    assert Image.open(out / "grid.png").size[1] > 512  # two rows: 4 per row
