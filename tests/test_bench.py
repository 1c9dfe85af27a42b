"""The quality benchmark (benchmarks/quality.py): its parts (image lists, table, contact sheet)
and one tiny end-to-end run on a temporary folder (no ../shared data): outputs, resumption
from the score cache."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import natural_like, natural_tensor, tiny_config
from PIL import Image

import sindiffusion
from sindiffusion.device import bf16_fast
from sindiffusion.errors import SinDiffusionError
from sindiffusion.report import mean_std

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"


def _load_benchmark(path: Path = BENCH, name: str = "quality_benchmark"):
    """A benchmark script as a module; its folder is on the path while it loads, for the
    scripts that import the quality benchmark's helpers."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


quality = _load_benchmark()
format_table, list_images, main = quality.format_table, quality.list_images, quality.main
parse_images, run_fingerprint, run_status = (
    quality.parse_images,
    quality.run_fingerprint,
    quality.run_status,
)


def test_parse_images_ranges_and_lists():
    assert parse_images("1-10") == list(range(1, 11))
    assert parse_images("1-7,12-14") == [1, 2, 3, 4, 5, 6, 7, 12, 13, 14]
    assert parse_images("3, 1-2,3") == [1, 2, 3]
    assert parse_images("5") == [5]


@pytest.mark.parametrize("text", ["", "a", "1-", "3-1", "1..4", "1,,2"])
def test_parse_images_rejects_garbage(text):
    with pytest.raises(SinDiffusionError, match="write it like 1-7,12-14"):
        parse_images(text)


def test_list_images_natural_order_and_selection(tmp_path):
    for name in ["10.jpg", "2.png", "1.jpg", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["1.jpg", "2.png", "10.jpg"]
    assert [p.name for p in list_images(tmp_path, [10, 1])] == ["10.jpg", "1.jpg"]
    with pytest.raises(SinDiffusionError, match="has no image named 3"):
        list_images(tmp_path, [1, 3])


def test_table_mean_std_and_na():
    records = {
        "ours": {
            "1": {"scores": {"sifid_e": 10.0, "pixel_diversity": 0.4, "copy_score": 0.0},
                  "train_minutes": 5.0, "sample_seconds": 1.0},
            "2": {"scores": {"sifid_e": 30.0, "pixel_diversity": 0.6, "copy_score": 0.0},
                  "train_minutes": 5.0, "sample_seconds": 3.0},
        },
        "singan": {
            "1": {"scores": {"sifid_e": 4.0, "copy_score": 0.5},
                  "train_minutes": None, "sample_seconds": None},
        },
    }  # fmt: skip
    lines = format_table(records).splitlines()
    assert lines[0] == (
        "| method | images | SIFID-E ↓ | pixel div. ↑ | copy ↓ | train min | s / sample |"
    )
    assert lines[1] == "|:---|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == (
        "| ours | 2 | 20.0 ± 10.0 | 0.500 ± 0.100 | 0.000 ± 0.000 | 5.000 ± 0.000 | 2.000 ± 1.000 |"
    )
    assert lines[3] == "| singan | 1 | 4.000 | n/a | 0.500 | n/a | n/a |"
    # Restricted to the images every method has:
    assert format_table(records, images=["1"]).splitlines()[2].startswith("| ours | 1 | 10.0 |")
    assert mean_std([1.0, 3.0]) == (2.0, 1.0)


@pytest.mark.slow
def test_end_to_end_tiny_run_resumes_from_cache(tmp_path, capsys):
    data, other = tmp_path / "data", tmp_path / "other"
    data.mkdir()
    other.mkdir()
    for n in (1, 2):
        Image.fromarray(natural_like(48, 64, seed=n)).save(data / f"{n}.jpg")
    Image.fromarray(natural_like(48, 64, seed=9)).save(other / "1.png")  # none for image 2
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [str(data), "--images", "1-2", "--steps", "2", "--k", "2", "--out", str(out),
            "--cache", str(cache), "--compare", f"other={other}", "--quiet"]  # fmt: skip
    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert "| ours (fast, 2 steps) | 2 |" in table and "| other | 1 |" in table
    # Times depend on the precision: the header says which one ran.
    assert ("bfloat16 autocast" if bf16_fast(torch.device("cpu")) else "float32 (no fast") in table
    assert "Only the images every method has (1)" in table
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert [(r["method"], r["image"], r["n_fakes"]) for r in rows] == [
        ("ours (fast, 2 steps)", "1", "2"),
        ("ours (fast, 2 steps)", "2", "2"),
        ("other", "1", "1"),
    ]
    assert rows[2]["pixel_diversity"] == "" and float(rows[0]["pixel_diversity"]) > 0
    # The texture share belongs to the image: the same on both methods' rows of image 1.
    assert rows[0]["texture_share"] == rows[2]["texture_share"]
    assert 0 < float(rows[0]["texture_share"]) < 1
    assert "ours (fast, 2 steps): " in table and "below pixel diversity 0.35" in table
    assert Image.open(out / "diversity.png").size[0] > 300
    assert (cache / "fast-2steps" / "1" / "checkpoint.safetensors").exists()
    # Two rows (images) of four 64x48 cells (real | 2 samples | other), 4 px apart, under an
    # 18 px header.
    assert Image.open(out / "contact.png").size == (4 + 4 * (64 + 4), 18 + 4 + 2 * (48 + 4))

    # A second run reuses the trained runs and the cached scores: nothing is redrawn.
    record = out / "scores" / "efficientnet" / "ours-fast-2steps" / "1.json"
    sample = out / "samples" / "ours-fast-2steps" / "1" / "sample-000.png"
    before = (record.stat().st_mtime_ns, sample.stat().st_mtime_ns, record.read_text())
    capsys.readouterr()
    assert main(args) == 0
    assert (record.stat().st_mtime_ns, sample.stat().st_mtime_ns, record.read_text()) == before
    assert json.loads(record.read_text())["k"] == 2
    assert (out / "table.md").read_text() == table
    # Scored format-matched: the real images are quality-75 JPEGs (Pillow's default).
    assert json.loads(record.read_text())["format"] == "JPEG quality 75 (4:2:0)"
    assert "format-matched" in table


def test_variety_rows_sample_the_same_runs_at_each_setting(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(natural_like(40, 48, seed=3)).save(data / "1.jpg")
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = [str(data), "--steps", "2", "--k", "2", "--out", str(out), "--cache", str(cache),
            "--no-compare", "--quiet", "--variety", "0", "--variety", "1"]  # fmt: skip
    assert main(args) == 0
    table = (out / "table.md").read_text()
    assert "| ours (fast, 2 steps, variety 0) | 1 |" in table
    assert "| ours (fast, 2 steps, variety 1) | 1 |" in table
    assert [p.name for p in (cache / "fast-2steps").iterdir()] == ["1"]  # trained once
    assert Image.open(out / "frontier.png").size == (650, 450)  # the dial's curve
    rows = {r["method"]: r for r in csv.DictReader((out / "per_image.csv").open())}
    redrawn, free = (rows[f"ours (fast, 2 steps, variety {v})"] for v in (0, 1))
    # Variety 0 keeps the image's layout: its samples differ less from each other.
    assert float(redrawn["pixel_diversity"]) < float(free["pixel_diversity"])
    assert main([*args[:-4], "--variety", "-1"]) == 1  # off the dial: one line, no traceback


def test_a_methods_outputs_are_one_per_image_or_several(tmp_path):
    for name in ("3.png", "4_0.jpg", "4_1.jpg", "4_10.jpg", "4_x.jpg", "40.jpg", "4_2.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in quality.outputs_of(tmp_path, "3")] == ["3.png"]
    assert [p.name for p in quality.outputs_of(tmp_path, "4")] == ["4_0.jpg", "4_1.jpg", "4_10.jpg"]
    assert quality.outputs_of(tmp_path, "5") == []
    assert quality.SETS["lsun"].splits == {"tune": "25-37", "report": "38-49"}
    assert "consingan" in quality.SETS["places50"].compare


def test_cached_runs_take_new_sampling_settings_without_retraining(tmp_path):
    cfg = tiny_config()
    img = natural_tensor(32, 32)
    sindiffusion.train(
        img, config=copy.deepcopy(cfg), out=tmp_path / "run", steps=2, progress=False
    )
    status, ckpt = run_status(Path(tmp_path / "run"), cfg, None, 2)
    assert status == "finished"
    sampling = copy.deepcopy(cfg)
    sampling.sampling.sampler, sampling.sampling.candidates = "heun", 3
    sampling.sampling.sigma_min = 0.006  # the sampler's range is a sampling setting too
    status, patched = run_status(Path(tmp_path / "run"), sampling, None, 2)
    assert status == "finished" and patched.config.to_dict() == sampling.to_dict()
    assert run_fingerprint(patched) != run_fingerprint(ckpt)  # scores are redrawn
    training = copy.deepcopy(cfg)
    training.diffusion.p_mean = -2.0
    assert run_status(Path(tmp_path / "run"), training, None, 2)[0] == "stale"


def test_zero_training_benchmark_scores_format_matched_beside_the_baselines(tmp_path, capsys):
    from conftest import SMALL_PATCHES

    zero = _load_benchmark(BENCH.parent / "zero_training.py", "zero_benchmark")
    data, base = tmp_path / "data", tmp_path / "base"
    data.mkdir()
    (base / "gpnn").mkdir(parents=True)
    for n in (1, 2):
        Image.fromarray(natural_like(48, 64, seed=n)).save(data / f"{n}.jpg")
    Image.fromarray(natural_like(48, 64, seed=9)).save(base / "gpnn" / "1.png")  # none for 2
    out = tmp_path / "out"
    args = ["--data", str(data), "--baselines", str(base), "--images", "1-2", "--k", "2",
            "--large", "0", "--out", str(out), "--knobs", json.dumps(SMALL_PATCHES),
            "--jsonl", str(tmp_path / "rows.jsonl")]  # fmt: skip
    assert zero.main(args) == 0
    table = (out / "table.md").read_text()
    assert "| zero-training | 2 |" in table and "| gpnn | 1 |" in table
    # One row per image, with its knobs, so rows of several sweeps can sit in one file.
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [r["image"] for r in rows] == ["1", "2"] and rows[0]["knobs"] == SMALL_PATCHES
    assert all(r["k"] == 2 and r["sifid_e"] > 0 and r["sec_per_sample"] > 0 for r in rows)
    assert "fakes format-matched" in table and '"patch_size": 7' in table
    assert len(list((out / "samples" / "1").glob("sample-*.png"))) == 2
    assert Image.open(out / "contact.png").size[1] > 2 * 48
    # Only the large sample: its time and the memory of sampling alone, nothing scored.
    large = tmp_path / "large"
    args = ["--data", str(data), "--images", "2", "--large", "56x40", "--large-only",
            "--out", str(large), "--knobs", json.dumps(SMALL_PATCHES)]  # fmt: skip
    assert zero.main(args) == 0
    table = (large / "table.md").read_text()
    assert "Large sample (2, 56x40)" in table and "(sampling only)" in table
    assert "| method |" not in table and not (large / "contact.png").exists()
    assert Image.open(large / "large.png").size == (56, 40)
