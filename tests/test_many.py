"""Many images: one run per image, skip/resume, shards, summary, contact sheet, sample-many."""

from __future__ import annotations

import csv

import pytest
from conftest import natural_like, tiny_config
from PIL import Image

import sindiffusion
from sindiffusion.checkpoint import load_checkpoint
from sindiffusion.cli import main
from sindiffusion.many import list_images, parse_shard, shard


@pytest.fixture
def folder(tmp_path):
    """Three tiny images of different shapes, plus a file that is not an image."""
    d = tmp_path / "images"
    d.mkdir()
    for name, (h, w), seed in [
        ("a.png", (32, 32), 0),
        ("b.jpg", (24, 32), 1),
        ("c.png", (32, 20), 2),
    ]:
        Image.fromarray(natural_like(h, w, seed=seed)).save(d / name)
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(tiny_config(checkpoint_every=2).to_json())
    return path


def train_many(folder, runs, config_file, *extra):
    return main(
        [
            "train-many",
            str(folder),
            "--out",
            str(runs),
            "--config",
            str(config_file),
            "--steps",
            "4",
            "--quiet",
            *extra,
        ]
    )


def test_one_run_per_image_with_summary_and_contact_sheet(folder, config_file, tmp_path, capsys):
    runs = tmp_path / "runs"
    assert train_many(folder, runs, config_file) == 0
    out = capsys.readouterr().out
    assert {p.name for p in runs.iterdir() if p.is_dir()} == {"a", "b", "c"}
    for name in "abc":
        assert load_checkpoint(runs / name).step == 4
        assert (runs / name / "sample.png").is_file()
        assert (runs / name / "loss.png").is_file()
    rows = list(csv.DictReader((runs / "summary.csv").open()))
    assert [r["image"] for r in rows] == ["a.png", "b.jpg", "c.png"]
    assert all(r["status"] == "done" and r["steps"] == "4" for r in rows)
    assert all(float(r["final_loss"]) > 0 and float(r["seconds"]) > 0 for r in rows)
    assert "| b.jpg | b | done | 4 |" in (runs / "summary.md").read_text()
    assert "| b.jpg | b | done | 4 |" in out  # the table is printed too
    sheet = Image.open(runs / "contact.png")
    assert sheet.width > 3 * 2 * 60 and sheet.height >= 96  # three pairs on one row


def test_a_second_call_skips_finished_runs_and_resumes_unfinished_ones(
    folder, config_file, tmp_path, capsys
):
    runs = tmp_path / "runs"
    # "a" was killed after its checkpoint of step 2; "b" finished but died before its sample.
    sindiffusion.train(
        folder / "a.png", config=tiny_config(), out=runs / "a", steps=2, progress=False
    )
    sindiffusion.train(
        folder / "b.jpg", config=tiny_config(), out=runs / "b", steps=4, progress=False
    )
    b_stamp = (runs / "b" / "checkpoint.safetensors").stat().st_mtime_ns
    assert train_many(folder, runs, config_file) == 0
    out = capsys.readouterr().out
    assert "a: resumed to step 4" in out
    assert "b: finished earlier, skipped" in out
    assert "c: trained to step 4" in out
    assert (runs / "b" / "checkpoint.safetensors").stat().st_mtime_ns == b_stamp
    assert (runs / "b" / "sample.png").is_file()
    assert load_checkpoint(runs / "a").step == 4
    # A third call has nothing left to do.
    stamps = {n: (runs / n / "checkpoint.safetensors").stat().st_mtime_ns for n in "abc"}
    assert train_many(folder, runs, config_file) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 3
    assert stamps == {n: (runs / n / "checkpoint.safetensors").stat().st_mtime_ns for n in "abc"}


def test_shards_partition_the_images(folder, config_file, tmp_path):
    items = list(range(7))
    for n in range(1, 5):
        parts = [shard(items, i, n) for i in range(n)]
        assert sorted(x for p in parts for x in p) == items
    assert parse_shard("1/3") == (1, 3)
    runs = tmp_path / "runs"
    assert train_many(folder, runs, config_file, "--shard", "1/2") == 0
    assert {p.name for p in runs.iterdir() if p.is_dir()} == {"b"}
    statuses = [r["status"] for r in csv.DictReader((runs / "summary.csv").open())]
    assert statuses == ["missing", "done", "missing"]
    assert train_many(folder, runs, config_file, "--shard", "0/2") == 0
    statuses = [r["status"] for r in csv.DictReader((runs / "summary.csv").open())]
    assert statuses == ["done", "done", "done"]


def test_sample_many_writes_k_samples_per_run(folder, config_file, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "samples"
    assert train_many(folder, runs, config_file) == 0
    assert (
        main(
            [
                "sample-many",
                str(runs),
                "--n",
                "3",
                "--out",
                str(out),
                "--size",
                "40x24",
                "--steps",
                "2",
            ]
        )
        == 0
    )
    for name in "abc":
        files = sorted(p.name for p in (out / name).glob("sample-*.png"))
        assert files == ["sample-000.png", "sample-001.png", "sample-002.png"]
        assert Image.open(out / name / "sample-000.png").size == (40, 24)
    # --prior reaches each run's sample(): these tiny runs have no layout stage to change.
    capsys.readouterr()
    assert main(["sample-many", str(runs), "--out", str(tmp_path / "p"), "--prior", "0.1"]) == 2
    assert "no closed-form layout stage" in capsys.readouterr().err


def test_a_bad_image_is_reported_and_the_others_still_train(folder, config_file, tmp_path, capsys):
    (folder / "broken.png").write_bytes(b"not a png at all")
    runs = tmp_path / "runs"
    assert train_many(folder, runs, config_file) == 1
    out = capsys.readouterr().out
    assert "broken: error:" in out
    rows = {r["run"]: r["status"] for r in csv.DictReader((runs / "summary.csv").open())}
    assert rows["broken"].startswith("failed:") and rows["a"] == rows["c"] == "done"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train-many", "{missing}", "--out", "{runs}"], "is not a folder"),
        (["train-many", "{empty}", "--out", "{runs}"], "holds no images"),
        (["train-many", "{texts}", "--out", "{runs}"], "holds no images"),
        (["train-many", "{texts}", "--out", "{runs}", "--shard", "2/2"], "is not i/n"),
        (["train-many", "{texts}", "--out", "{runs}", "--shard", "first"], "is not i/n"),
        (["sample-many", "{empty}", "--out", "{runs}"], "holds no run folders"),
        (["sample-many", "{missing}", "--out", "{runs}"], "is not a folder"),
    ],
)
def test_bad_inputs_are_one_line_errors(argv, message, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("x")
    paths = {k: str(tmp_path / k) for k in ("missing", "empty", "texts", "runs")}
    assert main([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_list_images_ignores_other_files(folder):
    assert [p.name for p in list_images(folder)] == ["a.png", "b.jpg", "c.png"]
