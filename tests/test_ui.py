"""The web page (`sindiffusion ui`), end to end in a real headless Chromium driven by Playwright:
start the server, refuse bad uploads, upload a tiny image, train, see samples, paint a mask and
inpaint, upload a mask, outpaint; a screenshot is kept as an artifact. Plus the server-side
checks (run names, uploads, painted masks) without a browser."""

from __future__ import annotations

import contextlib
import inspect
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import natural_like, tiny_config
from PIL import Image

from sindiffusion.checkpoint import load_checkpoint
from sindiffusion.config import PatchConfig
from sindiffusion.errors import SinDiffusionError
from sindiffusion.image import bundled_image
from sindiffusion.ui import RunStore, TrainingJob, check_upload, painted_mask

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# --- server-side checks, no browser --------------------------------------------------------------
def test_the_variety_field_is_checked_on_the_server():
    from sindiffusion.ui.page import _variety

    assert _variety(1) is None and _variety("") is None and _variety(None) is None  # the run's
    assert _variety(0) == 0 and _variety(0.5) == 0.5 and _variety("2") == 2
    for bad in (-0.1, 2.5, "wide"):
        with pytest.raises(SinDiffusionError, match="the variety must be"):
            _variety(bad)


def test_a_page_others_can_reach_needs_a_login(tmp_path, monkeypatch, capsys):
    from sindiffusion.cli import main
    from sindiffusion.ui.page import check_access, parse_auth

    check_access("127.0.0.1", False, None)  # this computer only: no login needed
    check_access("0.0.0.0", True, [("ana", "pw")])
    for host, share in (("0.0.0.0", False), ("192.168.1.5", False), ("127.0.0.1", True)):
        with pytest.raises(SinDiffusionError, match="add --auth USER:PASS"):
            check_access(host, share, None)
    file = tmp_path / "logins"
    file.write_text("# the team\nbo: two words\n\n")
    assert parse_auth(["ana:s3:cret"], file) == [("ana", "s3:cret"), ("bo", " two words")]
    for bad in ("ana", ":pw", "ana:"):
        with pytest.raises(SinDiffusionError, match="not USER:PASS"):
            parse_auth([bad])
    # From the command line: refused before gradio is imported or anything is served.
    monkeypatch.setenv("GRADIO_SHARE", "true")  # gradio's own switch is ignored, not obeyed
    monkeypatch.setenv("GRADIO_TEMP_DIR", "")
    assert main(["ui", "--host", "0.0.0.0", "--runs", str(tmp_path / "runs")]) == 2
    assert "beyond this computer; add --auth" in capsys.readouterr().err
    assert main(["ui", "--share", "--runs", str(tmp_path / "runs")]) == 2
    assert "a public link (--share)" in capsys.readouterr().err


def test_the_page_keeps_few_models_caps_requests_and_cleans_old_uploads(tmp_path):
    import sindiffusion
    from sindiffusion.ui import runs as ui_runs
    from sindiffusion.ui.page import MAX_REQUEST_PIXELS, _check_request

    store = RunStore(tmp_path / "runs")
    image = torch.from_numpy(natural_like(32, 32)).permute(2, 0, 1).float() / 127.5 - 1
    first = store.new_run("a.png")
    sindiffusion.train(image, config=tiny_config(), out=first, steps=1, progress=False)
    for i in range(ui_runs.MODELS_KEPT + 1):  # copies of one run, loaded in turn
        if i:
            shutil.copytree(first, store.root / f"copy-{i}")
    names = store.names()
    for name in names:
        store.model(name)
    assert len(store.loaded()) == ui_runs.MODELS_KEPT and store.loaded()[-1] == names[-1]
    store.model(names[1])  # used again: now the most recent
    assert store.loaded()[-1] == names[1] and names[0] not in store.loaded()

    _check_request(16, 512, 512)  # the page's largest grid of samples
    with pytest.raises(SinDiffusionError, match="megapixels, more than the page's"):
        _check_request(8, 1024, 1024)  # e.g. 0 = the training size of a 2048 px run, x 8
    assert 16 * 512 * 512 == MAX_REQUEST_PIXELS

    cache = store.root / ".gradio" / "upload-1"
    cache.mkdir(parents=True)
    old, new = cache / "old.png", cache / "new.png"
    old.write_bytes(b"x")
    new.write_bytes(b"x")
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    assert store.clean(".gradio") == 1 and not old.exists() and new.exists()
    assert store.clean("no-such-folder") == 0


def test_each_login_sees_uses_and_stops_only_its_own_runs(tmp_path):
    from types import SimpleNamespace

    import gradio
    from gradio.helpers import special_args

    import sindiffusion
    from sindiffusion.ui.page import _Page

    def page(shared: bool = False) -> _Page:
        return _Page(RunStore(tmp_path / "runs"), tiny_config(), 10, "cpu", 1, shared)

    ana, bo, local = (SimpleNamespace(username=u) for u in ("ana", "bo", None))
    per_user = page()
    run = per_user.runs(ana).new_run("a.png")
    image = torch.from_numpy(natural_like(32, 32)).permute(2, 0, 1).float() / 127.5 - 1
    sindiffusion.train(image, config=tiny_config(), out=run, steps=1, progress=False)
    assert per_user.runs(ana).names() == [run.name] and per_user.runs(bo).names() == []
    with pytest.raises(SinDiffusionError, match="pick a run from the list"):
        per_user.runs(bo).model(run.name)  # bo cannot sample, outpaint or download it
    assert per_user.runs(local).names() == [run.name]  # no login: one user at the computer
    assert page(shared=True).runs(bo).names() == [run.name]  # --shared-runs

    class Job:
        stopped = False

        def stop(self):
            self.stopped = True

    job = per_user.current["ana"] = Job()
    per_user.stop_training(bo)
    assert not job.stopped  # bo's Stop button cannot end ana's training
    per_user.stop_training(ana)
    assert job.stopped

    # Gradio hands each handler the request (who is logged in) and a progress bar.
    handler = per_user.wired(per_user.make_samples)
    assert gradio.utils.get_type_hints(handler) == {"request": gradio.Request}
    assert special_args(handler)[1] is not None  # the progress bar's position
    assert inspect.isgeneratorfunction(per_user.wired(per_user.run_training))  # live updates


def test_the_example_button_is_checked_as_an_upload_is(tmp_path):
    from sindiffusion.ui.page import _Page

    page = _Page(RunStore(tmp_path / "runs"), tiny_config(), 10, "cpu", 1, False)
    path, shown, info = page.use_example(40)
    assert Path(path).name == "tibet.jpg" and max(shown.size) == 40 and info.startswith("trains at")
    # An impossible long side refuses it as it refuses an upload: the box is left empty.
    with pytest.warns(UserWarning):
        path, shown, info = page.use_example(-5)
    assert path is None and shown is None and info.startswith("**refused:**")


def test_run_names_are_made_and_checked_on_the_server(tmp_path):
    store = RunStore(tmp_path / "runs")
    run = store.new_run("../../etc/My Photo!.png")
    assert run.parent == store.root and run.name.startswith("My-Photo-")
    assert store.new_run("x.png") != store.new_run("x.png")  # same second: still distinct
    assert store.names() == []  # no checkpoint yet, so not a run
    (run / "checkpoint.safetensors").write_bytes(b"")
    assert store.names() == [run.name]
    assert store.path(run.name) == run
    for bad in ("../runs", "/etc", str(run), ".gradio", "", None, 3, "no-such-run"):
        with pytest.raises(SinDiffusionError, match="pick a run from the list"):
            store.path(bad)


def test_uploads_are_checked(tmp_path):
    cfg = tiny_config()
    good = tmp_path / "a.png"
    Image.fromarray(natural_like(40, 24)).save(good)
    img = check_upload(good, cfg)
    assert img.shape == (3, 32, 19)  # long side to max_size 32; sides as they fall (24 * 0.8)
    assert img.min() >= -1 and img.max() <= 1
    fake = tmp_path / "fake.png"
    fake.write_text("not an image")
    with pytest.raises(SinDiffusionError, match=r"^fake.png is not an image Pillow can read"):
        check_upload(fake, cfg)
    notes = tmp_path / "notes.json"
    notes.write_text("{}")
    with pytest.raises(SinDiffusionError, match="^notes.json is not an image; upload a PNG"):
        check_upload(notes, cfg)
    with pytest.raises(SinDiffusionError, match=r"upload an image of at most 0.001 MB"):
        check_upload(good, cfg, max_upload_mb=0.001)
    with pytest.raises(SinDiffusionError, match="upload an image first"):
        check_upload(None, cfg)


def test_stop_saves_the_training_of_the_page_like_ctrl_c(tmp_path):
    from conftest import natural_tensor

    run = tmp_path / "run"
    job = TrainingJob(natural_tensor(), tiny_config(), run, steps=10**6, preview_seconds=1e9)
    job.start()
    deadline = time.monotonic() + 60
    while job.trainer.step < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    job.stop()
    job.join(60)
    assert job.done and job.stopped and job.error is None
    assert 3 <= load_checkpoint(run).step == job.trainer.step < 10**6
    assert job.status().startswith("**stopped**") and job.preview_path.exists()


def test_training_shows_zero_training_samples_before_its_first_step(tmp_path, monkeypatch):
    from conftest import natural_tensor

    from sindiffusion.image import load_image, make_grid
    from sindiffusion.ui import runs as ui_runs

    image = natural_tensor()
    job = TrainingJob(image, tiny_config(), tmp_path / "run", steps=2, preview_seconds=1e9)
    path = job.instant_preview(n=2)
    assert path == tmp_path / "run" / "previews" / "zero-training.png"
    assert job.trainer.step == 0 and "zero-training" in job.status()
    grid = load_image(path)
    h, w = image.shape[-2:]
    assert grid.shape == make_grid([image] * 3, nrow=3).shape
    tiles = [grid[:, 2 : 2 + h, 2 + i * (w + 2) : 2 + i * (w + 2) + w] for i in range(3)]
    assert (tiles[0] - image).abs().max() <= 1 / 127.5  # the training image, first
    for sample in tiles[1:]:  # then samples of it, neither copies nor blank
        assert 0.02 < (sample - image).abs().mean() and sample.std() > 0.1
    assert not torch.equal(tiles[1], tiles[2])
    job.start().join(60)
    assert job.done and job.error is None and job.preview_path.name == "step-000002.png"
    assert "zero-training" not in job.status() and path.is_file()
    # A large photo's instant preview is drawn from its reduced copy, so it stays instant.
    monkeypatch.setattr(ui_runs, "INSTANT_PREVIEW_SIDE", 16)
    small = load_image(job.instant_preview(n=2))
    assert small.shape == make_grid([torch.zeros(3, 16, 16)] * 3, nrow=3).shape


def test_painted_mask_is_the_union_of_layers():
    a = np.zeros((4, 6, 4), np.uint8)
    b = np.zeros((4, 6, 4), np.uint8)
    a[1, 2, 3] = 255
    b[3, 5, 3] = 10
    mask = painted_mask({"background": None, "layers": [a, b], "composite": None}, (4, 6))
    expected = torch.zeros(4, 6, dtype=torch.bool)
    expected[1, 2] = expected[3, 5] = True
    assert torch.equal(mask, expected)
    assert painted_mask({"layers": [np.zeros((4, 6, 4), np.uint8)]}, (4, 6)) is None
    assert painted_mask(None, (4, 6)) is None
    with pytest.raises(SinDiffusionError, match="pick the run again and repaint"):
        painted_mask({"layers": [a]}, (5, 6))


# --- the page in a real browser ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    pytest.importorskip("gradio", reason="the web page needs gradio (pip install gradio)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser test needs playwright (pip install playwright)"
    )
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.skip("no chromium browser: apt-get install chromium")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        except Exception as e:  # a browser that cannot start here is a skip, not a failure
            pytest.skip(f"chromium cannot be launched: {e}")
        yield b
        b.close()


@contextlib.contextmanager
def _ui_server(tmp: Path, cfg, *args: str):
    """`sindiffusion ui` in a subprocess on a free port, working in `tmp`, with the config
    `cfg`; yields its address."""
    config = tmp / "tiny.json"
    config.write_text(cfg.to_json())
    port = _free_port()
    env = dict(
        os.environ,
        SINDIFFUSION_UI_CONFIG=str(config),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        GRADIO_ANALYTICS_ENABLED="False",
    )
    log = open(tmp / "server.log", "w")  # noqa: SIM115 (closed below)
    cmd = [sys.executable, "-m", "sindiffusion", "ui", "--port", str(port), "--runs", "runs"]
    proc = subprocess.Popen([*cmd, *args], cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("the ui server did not start:\n" + (tmp / "server.log").read_text())
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("gradio", reason="the web page needs gradio (pip install gradio)")
    tmp = tmp_path_factory.mktemp("ui")
    cfg = tiny_config(steps=40, max_size=48)
    # With the closed-form layout stage, as the fast preset samples, so the variety dial acts.
    cfg.sampling.hybrid_sigma, cfg.sampling.sampler, cfg.sampling.steps = 0.7, "heun", 6
    with _ui_server(tmp, cfg, "--max-upload-mb", "1") as url:
        yield url, tmp


def _toasts(page) -> str:
    return " | ".join(page.locator(".toast-body").all_inner_texts())


def _wait_toast(page, text: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in _toasts(page):
        assert time.monotonic() < deadline, f"no message {text!r}; messages: {_toasts(page)}"
        time.sleep(0.2)


@pytest.mark.slow
def test_page_end_to_end(browser, server):
    url, tmp = server
    files = tmp / "files"
    files.mkdir()
    Image.fromarray(natural_like(36, 48, seed=1)).save(files / "photo.png")
    (files / "fake.png").write_text("this is text, not a picture")
    (files / "big.png").write_bytes(np.random.default_rng(0).bytes(int(1.5 * 2**20)))
    (files / "notes.txt").write_text("hello")

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(60_000)  # a busy 2-core machine trains and samples slowly
    page.goto(url)
    page.wait_for_selector("#train-btn")
    upload = page.locator("#upload input[type=file]")

    # Refused uploads: not an image (three ways) and too large, each with a clear message.
    upload.set_input_files(files / "fake.png")
    _wait_toast(page, "fake.png is not an image Pillow can read")
    page.wait_for_function("document.querySelector('#upload-info').innerText.includes('refused')")
    upload.set_input_files(files / "big.png")
    _wait_toast(page, "exceed the maximum allowed size of 1.0 Mb")
    upload.set_input_files(files / "notes.txt")
    _wait_toast(page, "Invalid file type")

    # Upload, train a few steps with live status, then the run is selected.
    upload.set_input_files(files / "photo.png")
    page.wait_for_selector("#train-image img")
    assert "trains at 48x36 px" in page.inner_text("#upload-info")
    page.click("#train-btn")
    page.wait_for_function(
        "/done|failed/.test(document.querySelector('#train-status').innerText)", timeout=60_000
    )
    status = page.inner_text("#train-status")
    assert status.startswith("done") and "step 40 / 40" in status, status
    page.wait_for_function("document.querySelector('#run-info').innerText.includes('40 steps')")
    runs = [p for p in (tmp / "runs").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1 and runs[0].name.startswith("photo-")
    run = runs[0]
    assert (run / "checkpoint.safetensors").is_file()
    assert page.locator("#preview img").count() == 1

    # Samples at a chosen size and seed appear in the gallery and on disk.
    page.get_by_label("width px (0 = training)").fill("64")
    page.get_by_label("seed", exact=True).first.fill("3")
    page.click("#sample-btn")
    page.wait_for_function("document.querySelectorAll('#gallery img').length >= 4")
    out = run / "samples" / "64x36-seed3-n4"
    assert sorted(p.name for p in out.iterdir()) == [
        "grid.png",
        "sample-000.png",
        "sample-001.png",
        "sample-002.png",
        "sample-003.png",
    ]
    assert Image.open(out / "sample-000.png").size == (64, 36)
    # The variety dial: the training image redrawn (0.2), in a folder of its own, closer to the
    # image than the free sample; then back to the run's own.
    assert f"position prior {PatchConfig().prior:g}" in page.inner_text("#run-info")
    page.locator("#variety input[type=number]").fill("0.2")
    page.locator("#variety input[type=number]").press("Enter")
    page.click("#sample-btn")
    redrawn = run / "samples" / "64x36-seed3-n4-variety0.2"
    deadline = time.monotonic() + 30
    while not (redrawn / "grid.png").exists():
        assert time.monotonic() < deadline, _toasts(page)
        time.sleep(0.2)
    a, b = (np.asarray(Image.open(d / "sample-000.png")) for d in (out, redrawn))
    assert a.shape == b.shape and not np.array_equal(a, b)
    page.locator("#variety input[type=number]").fill("1")
    page.locator("#variety input[type=number]").press("Enter")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "ui-samples.png"), full_page=True)

    # Inpaint with a mask painted in the page.
    page.get_by_role("tab", name="Outpaint / inpaint").click()
    editor = page.locator("#editor")
    editor.scroll_into_view_if_needed()
    page.wait_for_selector("#editor canvas")
    time.sleep(2)  # the editor loads the run's image after it is shown
    for attempt in range(3):  # an image that loads later clears the strokes: paint again
        editor.locator("button[aria-label=Brush]").click()
        box = page.locator("#editor canvas").first.bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(cx - 30, cy - 10)
        page.mouse.down()
        for i in range(6):
            page.mouse.move(cx - 30 + 10 * i, cy - 10 + 4 * i, steps=2)
        page.mouse.up()
        unpainted = _toasts(page).count("paint the region to regenerate")
        page.click("#inpaint-btn")
        deadline = time.monotonic() + 60
        while page.locator("#apps-gallery img").count() < 4 and time.monotonic() < deadline:
            if _toasts(page).count("paint the region to regenerate") > unpainted:
                break
            time.sleep(0.2)
        if page.locator("#apps-gallery img").count() >= 4:
            break
        assert attempt < 2 and time.monotonic() < deadline, _toasts(page)
        time.sleep(2)
    (painted,) = list((run / "inpaint").iterdir())
    mask = np.asarray(Image.open(painted / "mask.png").convert("L")) > 127
    assert mask.shape == (36, 48) and 0 < mask.mean() < 1
    page.screenshot(path=str(ARTIFACTS / "ui-inpaint.png"))

    # Inpaint with an uploaded mask: white = regenerate.
    m = np.zeros((36, 48), np.uint8)
    m[10:20, 5:25] = 255
    Image.fromarray(m).save(files / "mask.png")
    page.locator("#mask-upload input[type=file]").set_input_files(files / "mask.png")
    page.wait_for_selector("#mask-upload a[download]")
    page.click("#inpaint-btn")
    deadline = time.monotonic() + 30
    while len(list((run / "inpaint").iterdir())) < 2:
        assert time.monotonic() < deadline, _toasts(page)
        time.sleep(0.2)
    uploaded = next(p for p in (run / "inpaint").iterdir() if p != painted)
    saved = np.asarray(Image.open(uploaded / "mask.png").convert("L")) > 127
    assert np.array_equal(saved, m > 127)

    # Outpaint: 16 px on the right.
    page.get_by_label("right px").fill("16")
    page.click("#outpaint-btn")
    target = run / "outpaint" / "l0-r16-t0-b0-seed0-n4" / "sample-000.png"
    deadline = time.monotonic() + 30
    while not target.exists():
        assert time.monotonic() < deadline, _toasts(page)
        time.sleep(0.2)
    assert Image.open(target).size == (64, 36)

    # A guidance class the classifier does not know is a clear message.
    page.get_by_text("guidance (optional)").click()
    page.get_by_label("ImageNet class, e.g. volcano").fill("volcanno")
    page.get_by_role("tab", name="Samples").click()
    page.click("#sample-btn")
    _wait_toast(page, "is not an ImageNet class; close names: volcano")

    # Everything the page wrote is inside its runs folder (the server's working directory).
    assert sorted(p.name for p in tmp.iterdir()) == ["files", "runs", "server.log", "tiny.json"]
    page.close()
    print(f"screenshots: {ARTIFACTS}/ui-samples.png, ui-inpaint.png")


def _log_in(browser, url: str, user: str, password: str):
    """A fresh browser session (its own cookies) logged in as `user`; returns its page."""
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    page.set_default_timeout(60_000)
    page.goto(url)
    page.get_by_label("username").fill(user)
    page.get_by_label("password").fill(password)
    page.get_by_role("button", name="Login").click()
    page.wait_for_selector("#train-btn")
    return page


def _run_choices(page) -> list[str]:
    """The names in the page's run list (opened, read, closed)."""
    page.locator("#run input").click()
    names = page.locator("ul[role=listbox] li").all_inner_texts()
    page.keyboard.press("Escape")
    return [n.strip().split("\n")[-1] for n in names if n.strip()]  # after a "✓" mark


@pytest.mark.slow
def test_the_demo_image_is_one_click_from_a_first_run(browser, server):
    """The example button puts the demo's bundled image in the upload box, checked as an
    upload is (shown at its training size), and Train trains on it."""
    url, tmp = server
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(url)
    page.click("#example-btn")
    page.wait_for_selector("#train-image img")
    w, h = Image.open(bundled_image("tibet")).size
    assert f"trains at 48x{round(48 * h / w)} px" in page.inner_text("#upload-info")
    page.click("#train-btn")
    page.wait_for_function(
        "/done|failed/.test(document.querySelector('#train-status').innerText)", timeout=60_000
    )
    assert page.inner_text("#train-status").startswith("done")
    assert any(p.name.startswith("tibet-") for p in (tmp / "runs").iterdir())
    page.close()


@pytest.mark.slow
def test_two_logins_cannot_see_or_stop_each_others_runs(browser, tmp_path):
    """A page with logins, as one started with `--auth-file` to be shared: each browser session
    logs in, sees only its own runs, and one's Stop button does not end the other's training."""
    pytest.importorskip("gradio", reason="the web page needs gradio (pip install gradio)")
    (tmp_path / "logins.txt").write_text("ana:first-pass\nbo:second-pass\n")
    photo = tmp_path / "photo.png"
    Image.fromarray(natural_like(36, 48, seed=2)).save(photo)
    cfg = tiny_config(steps=100_000, max_size=48)  # trains until stopped
    with _ui_server(tmp_path, cfg, "--auth-file", "logins.txt") as url:
        # A wrong password does not open the page.
        page = browser.new_context().new_page()
        page.goto(url)
        page.get_by_label("username").fill("ana")
        page.get_by_label("password").fill("bo's guess")
        page.get_by_role("button", name="Login").click()
        page.wait_for_selector("text=Incorrect Credentials")
        assert page.locator("#train-btn").count() == 0
        page.context.close()

        ana = _log_in(browser, url, "ana", "first-pass")
        ana.locator("#upload input[type=file]").set_input_files(photo)
        ana.wait_for_selector("#train-image img")
        ana.click("#train-btn")
        ana.wait_for_function(
            "/training · step [1-9]/.test(document.querySelector('#train-status').innerText)"
        )

        bo = _log_in(browser, url, "bo", "second-pass")
        assert _run_choices(bo) == []  # ana's run is not in bo's list
        bo.click("#stop-btn")  # bo's Stop ...
        time.sleep(3)
        status = ana.inner_text("#train-status")
        assert status.startswith("training"), status  # ... does not end ana's training
        runs = [p for p in (tmp_path / "runs").iterdir() if not p.name.startswith(".")]
        assert len(runs) == 1 and (runs[0] / ".owner").is_file()

        ana.click("#stop-btn")  # ana's own Stop does
        ana.wait_for_function("/stopped/.test(document.querySelector('#train-status').innerText)")
        assert _run_choices(ana) == [runs[0].name]
        bo.reload()
        bo.wait_for_selector("#train-btn")
        assert _run_choices(bo) == []
        ARTIFACTS.mkdir(exist_ok=True)
        ana.screenshot(path=str(ARTIFACTS / "ui-login-ana.png"))
        for page in (ana, bo):
            page.context.close()


def test_ui_without_gradio_says_how_to_install(tmp_path, monkeypatch, capsys):
    from sindiffusion.cli import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # makes `import gradio` fail
    monkeypatch.setenv("GRADIO_TEMP_DIR", "")  # serve() sets it; restored after the test
    assert main(["ui", "--runs", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert (
        err == 'error: the web page needs gradio; install it with: pip install "sindiffusion[ui]"\n'
    )
