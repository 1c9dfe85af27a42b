"""`sindiffusion score`, run in-process on tiny PNGs: JSON and text output, the resize warning,
and the one-line errors for missing Inception weights and files that are not images."""

from __future__ import annotations

import json

import pytest
from conftest import natural_like
from PIL import Image

from sindiffusion.cli import main
from sindiffusion.metrics import METRICS

# The metrics of one fake; several add the two diversities.
ONE_FAKE = {"sifid_e", "patch_nn", "patch_swd", "copy_score", "copy_32", "duplication", "broken"}


@pytest.fixture
def images(tmp_path):
    """real.png and two other 64x48 images a.png, b.png, and a 40x40 small.png."""
    paths = {}
    for name, (h, w, seed) in {
        "real": (48, 64, 0),
        "a": (48, 64, 1),
        "b": (48, 64, 2),
        "small": (40, 40, 3),
    }.items():
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(natural_like(h, w, seed)).save(paths[name])
    return {k: str(v) for k, v in paths.items()}


def test_json_of_the_real_image_against_itself(images, capsys):
    real = images["real"]
    assert main(["score", real, real, real, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["real"] == real and out["fakes"] == [real, real]
    m = out["metrics"]
    assert set(m) == ONE_FAKE | {"pixel_diversity", "lpips_e"}
    assert abs(m["sifid_e"]) < 1e-3 and m["pixel_diversity"] == 0 and m["lpips_e"] == 0
    assert m["copy_score"] == 1.0 and m["copy_32"] > 0.9


def test_one_fake_has_no_diversity(images, capsys):
    assert main(["score", images["real"], images["a"], "--json"]) == 0
    m = json.loads(capsys.readouterr().out)["metrics"]
    assert set(m) == ONE_FAKE
    assert m["sifid_e"] > 1 and m["copy_score"] < 0.05 and m["copy_32"] < 0.05


def test_text_output_names_every_metric_with_its_meaning(images, capsys):
    assert main(["score", images["real"], images["a"], images["b"]]) == 0
    out = capsys.readouterr().out
    for key in (k for k in METRICS if k != "sifid"):  # SIFID needs --backbone inception
        line = next(row for row in out.splitlines() if row.strip().startswith(key + ":"))
        assert METRICS[key] in line


def test_fake_of_another_size_is_resized_with_a_warning(images, capsys):
    assert main(["score", images["real"], images["a"], images["small"], "--json"]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert warnings == [
        f"warning: {images['small']}: fake 1 is 40x40 px, resized to the real image's 64x48 px"
    ]
    assert "lpips_e" in json.loads(captured.out)["metrics"]


@pytest.mark.usefixtures("no_inception_download")  # with internet it would fetch them
def test_inception_without_weights_is_a_one_line_error(images, capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("SINDIFFUSION_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no cached weights
    assert main(["score", images["real"], images["a"], "--backbone", "inception"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The inception backbone needs InceptionV3 weights")
    assert "inception_v3_google-0cc3c7bd.pth" in err and err.count("\n") == 1

    missing = str(tmp_path / "nope.pth")
    args = ["score", images["real"], images["a"], "--backbone", "inception"]
    assert main([*args, "--inception-weights", missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Inception weights file {missing} does not exist")


def test_not_an_image_is_a_one_line_error(images, capsys, tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not a picture")
    assert main(["score", images["real"], str(bad)]) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {bad} is not an image Pillow can read; give a PNG, JPEG, WebP, TIFF or BMP file.\n"
    )
    assert main(["score", str(tmp_path / "missing.png"), images["a"]]) == 2
    assert capsys.readouterr().err.startswith("error: ")
