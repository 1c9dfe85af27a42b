"""The page itself (gradio): its layout and the handlers behind its buttons. The server-side
rules (runs folder, uploads, background training) are in `ui.runs`."""

from __future__ import annotations

import functools
import hashlib
import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import apps
from ..checkpoint import CHECKPOINT
from ..config import Config, load_config, preset
from ..errors import SinDiffusionError
from ..guidance import CLIP_ENV, Guide, guide
from ..image import IMAGE_SUFFIXES, MIN_SIDE, save_image, tensor_to_pil, write_samples
from ..model import SinDiffusion
from .runs import (
    MAX_UPLOAD_MB,
    PREVIEW_SECONDS,
    OneAtATime,
    RunStore,
    TrainingJob,
    check_mask_upload,
    check_upload,
)

CONFIG_ENV = "SINDIFFUSION_UI_CONFIG"  # a config JSON used instead of the fast preset (tests)
MAX_SAMPLE_SIDE = 1024  # the page is for one laptop; bigger samples belong to the CLI
MAX_SAMPLES = 16
MAX_SPREAD = 0.2  # the layout spread slider's end: beyond it layouts lose the scene
CACHE_DIR = ".gradio"  # gradio's upload/download cache, inside the runs folder


def _gradio():
    """Import gradio, or say in one sentence how to install it."""
    try:
        import gradio
    except ImportError:
        raise SinDiffusionError(
            'the web page needs gradio; install it with: pip install "sindiffusion[ui]"'
        ) from None
    return gradio


# --- the page ----------------------------------------------------------------------------------
def _page_errors(fn: Callable) -> Callable:
    """Show a `SinDiffusionError` as the page's error message instead of a stack trace."""
    gr = _gradio()
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except SinDiffusionError as e:
                raise gr.Error(str(e), print_exception=False) from None

        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SinDiffusionError as e:
            raise gr.Error(str(e), print_exception=False) from None

    return call


def _latest_preview(run_dir: Path) -> str | None:
    previews = sorted((run_dir / "previews").glob("step-*.png"))
    return str(previews[-1]) if previews else None


def _whole(value: Any, name: str, lo: int, hi: int) -> int:
    """A whole number from a page field, in [lo, hi], or a one-sentence error."""
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise SinDiffusionError(f"{name} must be a whole number.") from None
    if not lo <= v <= hi:
        raise SinDiffusionError(f"{name} must be between {lo} and {hi}.")
    return v


def _spread(value: Any) -> float | None:
    """The layout spread field: a position prior std in (0, MAX_SPREAD], or None for 0 (the
    run's own); a one-sentence error otherwise."""
    try:
        v = float(value or 0)
    except (TypeError, ValueError):
        raise SinDiffusionError("the layout spread must be a number.") from None
    if not 0 <= v <= MAX_SPREAD:
        raise SinDiffusionError(f"the layout spread must be between 0 and {MAX_SPREAD:g}.")
    return v or None


def build_app(
    runs: str | os.PathLike,
    config: Config | None = None,
    max_upload_mb: float = MAX_UPLOAD_MB,
    device: str | None = None,
    preview_seconds: float = PREVIEW_SECONDS,
):
    """The page as a `gradio.Blocks` (not started). `config` replaces the fast preset."""
    gr = _gradio()
    store = RunStore(runs)
    # Served in place: without this gradio copies every file it shows (checkpoints too) into its
    # cache. Browsers can read the runs folder either way (`allowed_paths`), and nothing else.
    gr.set_static_paths([store.root])
    base = config if config is not None else preset("fast")
    custom = config is not None
    training = OneAtATime()
    current: dict[str, TrainingJob] = {}

    def with_max_size(max_size: Any, minutes: float | None = None) -> Config:
        # The preset for this budget (short runs train on smaller crops); a given config as is.
        cfg = Config.from_dict((base if custom else preset("fast", minutes)).to_dict())
        cfg.train.max_size = _whole(max_size, "the long side", MIN_SIDE, 2048)
        return cfg

    def show_upload(path, max_size):
        """Check an upload at once; a refused file is removed from the page, with the reason."""
        try:
            img = check_upload(path, with_max_size(max_size), max_upload_mb)
        except SinDiffusionError as e:
            gr.Warning(str(e), title="Upload refused")
            return None, None, f"**refused:** {e}"
        h, w = img.shape[-2:]
        return gr.update(), tensor_to_pil(img), f"trains at {w}x{h} px"

    @_page_errors
    def run_training(path, kind, amount, seed, max_size):
        if kind == "minutes":
            minutes, steps = float(amount or 0), None
            if not 0 < minutes <= 24 * 60:
                raise SinDiffusionError("minutes must be between 0 and 1440.")
        else:
            minutes, steps = None, _whole(amount, "steps", 1, 10**6)
        cfg = with_max_size(max_size, minutes)
        img = check_upload(path, cfg, max_upload_mb)
        seed = _whole(seed, "the seed", 0, 2**31 - 1)
        training.claim()
        try:
            run_dir = store.new_run(Path(path).name)
            job = TrainingJob(img, cfg, run_dir, steps, minutes, seed, device, preview_seconds)
            current["job"] = job.start()
            keep = gr.update()
            while not job.done:
                time.sleep(0.5)
                preview = str(job.preview_path) if job.preview_path else keep
                yield job.status(), preview, job.loss_table(), keep
            job.join()
            if job.error:
                raise SinDiffusionError(job.error)
            name = run_dir.name
            yield (
                job.status() + f" · run folder `{name}`",
                str(job.preview_path),
                job.loss_table(),
                gr.update(choices=store.names(), value=name),
            )
        finally:
            current.pop("job", None)
            training.release()

    def stop_training():
        job = current.get("job")
        if job is not None:
            job.stop()

    @_page_errors
    def select_run(name):
        if not name:
            return "No run yet: upload an image and train one.", None, None
        model = store.model(name, device)
        h, w = model.size
        run_dir = store.path(name)
        prior = model.config.sampling.patch.prior
        info = (
            f"**{name}** · preset {model.config.preset} · {model.step} steps · "
            f"training image {w}x{h} px · sampler {model.config.sampling.sampler} "
            f"({model.config.sampling.steps} steps)"
            + (f" · layout spread {prior}" if model.patch is not None else "")
        )
        return info, _latest_preview(run_dir), str(run_dir / CHECKPOINT)

    tracker = gr.Progress()  # gradio shows a progress bar for a handler with one as default

    @_page_errors
    def make_samples(name, width, height, n, seed, spread, cls, text, scale, progress=tracker):
        model = store.model(name, device)
        h0, w0 = model.size
        w = _whole(width, "the width", 0, MAX_SAMPLE_SIDE) or w0
        h = _whole(height, "the height", 0, MAX_SAMPLE_SIDE) or h0
        if min(w, h) < MIN_SIDE:
            raise SinDiffusionError(
                f"each side must be at least {MIN_SIDE} px (0 = training size)."
            )
        n = _whole(n, "the number of samples", 1, MAX_SAMPLES)
        seed = _whole(seed, "the seed", 0, 2**31 - 1)
        prior = _spread(spread)
        steer, tag = guided(model, cls, text, scale, seed)
        images = model.sample(
            n=n,
            size=(h, w),
            seed=seed,
            prior=prior,
            guide=steer,
            callback=_ticker(progress, n, model),
        )
        tag = (f"-spread{prior:g}" if prior else "") + tag
        return _write_gallery(
            images, store.path(name) / "samples" / f"{w}x{h}-seed{seed}-n{n}{tag}"
        )

    names = store.names()
    with gr.Blocks(title="sindiffusion", analytics_enabled=False) as app:
        gr.Markdown(
            "# sindiffusion\nLearn a diffusion model from **one** image, then draw new images "
            "of any size with the same patches."
        )
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown(
                    "### 1 · Train"
                    + (f" (config `{base.preset}`)" if custom else " (`fast` preset)")
                )
                upload = _image_upload(
                    gr,
                    f"training image: PNG, JPEG, WebP, TIFF or BMP, at most {max_upload_mb:g} MB",
                    "upload",
                    120,
                )
                with gr.Row():
                    train_image = gr.Image(
                        label="as trained",
                        interactive=False,
                        elem_id="train-image",
                        height=160,
                        format="png",
                    )
                    upload_info = gr.Markdown(elem_id="upload-info")
                with gr.Row():
                    kind = gr.Radio(
                        ["minutes", "steps"],
                        value="steps" if custom else "minutes",
                        label="budget",
                        elem_id="budget-kind",
                    )
                    amount = gr.Number(
                        value=base.train.steps if custom else 3,
                        label="minutes or steps",
                        minimum=0,
                        elem_id="budget",
                    )
                with gr.Accordion("advanced", open=False):
                    with gr.Row():
                        seed = gr.Number(0, precision=0, label="seed", minimum=0)
                        max_size = gr.Number(
                            base.train.max_size, precision=0, label="long side (px)"
                        )
                with gr.Row():
                    train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                status = gr.Markdown(elem_id="train-status")
            with gr.Column():
                preview = gr.Image(
                    label="preview: the training image, then samples",
                    interactive=False,
                    elem_id="preview",
                    format="png",
                    height=200,
                )
                loss_plot = gr.LinePlot(
                    x="step", y="loss", label="loss (smoothed)", height=200, elem_id="loss"
                )
        gr.Markdown("### 2 · Use a run")
        with gr.Row(equal_height=True):
            run = gr.Dropdown(
                choices=names,
                value=names[0] if names else None,
                label="run folder",
                elem_id="run",
                scale=3,
            )
            refresh = gr.Button("refresh list", scale=1)
            ckpt_dl = gr.DownloadButton("download checkpoint", elem_id="download-ckpt", scale=1)
        run_info = gr.Markdown(elem_id="run-info")
        with gr.Accordion("guidance (optional): steer samples and fills", open=False):
            with gr.Row():
                cls = gr.Textbox(
                    label="ImageNet class, e.g. volcano", elem_id="guide-class", max_length=100
                )
                text = gr.Textbox(
                    label=f"text (CLIP weights via ${CLIP_ENV})",
                    elem_id="guide-text",
                    max_length=300,
                )
                scale = gr.Slider(0.05, 2.0, value=0.5, step=0.05, label="guidance scale")
        guide_fields = [cls, text, scale]
        with gr.Tabs():
            with gr.Tab("Samples", elem_id="tab-samples"):
                with gr.Row():
                    width = gr.Number(0, precision=0, label="width px (0 = training)")
                    height = gr.Number(0, precision=0, label="height px (0 = training)")
                    count = gr.Slider(1, MAX_SAMPLES, value=4, step=1, label="samples")
                    sample_seed = gr.Number(0, precision=0, label="seed", minimum=0)
                with gr.Row():
                    spread = gr.Slider(
                        0,
                        MAX_SPREAD,
                        value=0,
                        step=0.005,
                        label="layout spread (0 = the run's)",
                        info="how far the layout stage may move patches from their place: "
                        "larger gives more varied, less faithful layouts",
                        elem_id="spread",
                    )
                with gr.Row():
                    sample_btn = gr.Button("Generate", variant="primary", elem_id="sample-btn")
                    grid_dl = gr.DownloadButton("download grid", elem_id="download-grid")
                gallery = gr.Gallery(
                    label="samples", columns=4, elem_id="gallery", format="png", height="auto"
                )
            with gr.Tab("Outpaint / inpaint", elem_id="tab-inpaint") as apps_tab:
                load_editor = _apps_panel(
                    gr, store, device, run, guide_fields, tracker, max_upload_mb
                )

        # `upload`, not `change`: removing a refused file must not fire the check again.
        upload.upload(show_upload, [upload, max_size], [upload, train_image, upload_info])
        upload.clear(lambda: (None, ""), None, [train_image, upload_info])
        train_btn.click(
            run_training,
            [upload, kind, amount, seed, max_size],
            [status, preview, loss_plot, run],
            show_progress="minimal",
        )
        stop_btn.click(stop_training, None, None, queue=False)
        refresh.click(lambda v: gr.update(choices=store.names(), value=v), run, run)
        shown = [run_info, preview, ckpt_dl]
        run.change(select_run, run, shown)
        # A page opened later lists the runs trained since the server started.
        app.load(
            lambda: gr.update(choices=(n := store.names()), value=n[0] if n else None), None, run
        )
        if load_editor is not None:
            fn, editor = load_editor
            # On showing the tab too: an editor hidden in a closed tab misses its first image.
            run.change(fn, run, editor)
            apps_tab.select(fn, run, editor)
        sample_btn.click(
            make_samples,
            [run, width, height, count, sample_seed, spread, *guide_fields],
            [gallery, grid_dl],
        )
    return app


def _image_upload(gr, label: str, elem_id: str, height: int):
    """An upload box for image files. A `File`, not an `Image`: gradio would decode an `Image`
    upload itself and fail on a non-image with a bare "Error"; this way `check_upload` and
    `load_mask` refuse it in one clear sentence (and gradio refuses other extensions)."""
    return gr.File(
        label=label, file_types=list(IMAGE_SUFFIXES), type="filepath", elem_id=elem_id,
        height=height,
    )  # fmt: skip


def _ticker(progress, n: int, model: SinDiffusion) -> Callable[[dict], None]:
    """A sampler callback that moves the page's progress bar (`n` images, one call per step)."""
    steps = len(model.sigmas()) - 1
    done = [0]

    def tick(_info: dict) -> None:
        done[0] += 1
        progress(min(1.0, done[0] / max(1, steps)), desc=f"sampling {n} images")

    return tick


def _write_gallery(images: torch.Tensor, out: Path) -> tuple[list, str]:
    """Write images (N, 3, H, W) in [-1, 1] as PNGs + grid.png; returns (gallery items, grid)."""
    grid = write_samples(images, out)
    files = [out / f"sample-{i:03d}.png" for i in range(len(images))]
    return [(str(p), f"{i}") for i, p in enumerate(files)], str(grid)


def guided(
    model: SinDiffusion, cls: str | None, text: str | None, scale: float, seed: int
) -> tuple[Guide | None, str]:
    """(guide, folder tag) for the page's guidance fields: (None, "") when both are empty.

    The tag is a hash: class names and texts come from the browser and never name a file.
    """
    cls, text = (cls or "").strip() or None, (text or "").strip() or None
    if cls is None and text is None:
        return None, ""
    steer = guide(class_name=cls, text=text, scale=float(scale), seed=seed, device=model.device)
    key = f"{cls}|{text}|{float(scale):g}".encode()
    return steer, "-guided-" + hashlib.sha1(key).hexdigest()[:8]


def painted_mask(value: dict | None, size: tuple[int, int]) -> torch.Tensor | None:
    """The union of the painted layers of an ImageEditor value, as (H, W) bool (True = paint).

    `size` is (H, W) of the image painted on; None when nothing was painted.
    """
    layers = (value or {}).get("layers") or []
    mask = None
    for layer in layers:
        a = np.asarray(layer)
        if a.ndim != 3 or a.shape[-1] != 4:
            continue
        if a.shape[:2] != tuple(size):
            raise SinDiffusionError(
                f"the painted mask is {a.shape[1]}x{a.shape[0]} px but the image is "
                f"{size[1]}x{size[0]}; pick the run again and repaint."
            )
        m = torch.from_numpy(a[..., 3] > 0)
        mask = m if mask is None else mask | m
    return mask if mask is not None and bool(mask.any()) else None


def _apps_panel(gr, store: RunStore, device, run, guide_fields, tracker, max_upload_mb):
    """The outpaint / inpaint tab. Returns (handler, editor): the handler puts a run's image
    into the editor."""
    gr.Markdown(
        "Paint over the part of the training image to regenerate (white brush), or upload a "
        "mask (white = regenerate), then **Inpaint**. **Outpaint** adds the pixels set below "
        "around the image. Guidance above applies too."
    )
    with gr.Row(equal_height=False):
        editor = gr.ImageEditor(
            type="numpy",
            sources=[],  # the background is the run's image, never a file from the browser
            layers=False,
            transforms=[],
            brush=gr.Brush(default_size=12, colors=["#ffffff"], color_mode="fixed"),
            label="paint the region to regenerate",
            elem_id="editor",
            height=320,
        )
        with gr.Column():
            mask_file = _image_upload(
                gr, "…or upload a mask (white = regenerate)", "mask-upload", 100
            )
            with gr.Row():
                n = gr.Slider(1, 8, value=4, step=1, label="results")
                seed = gr.Number(0, precision=0, label="seed", minimum=0)
            inpaint_btn = gr.Button("Inpaint", variant="primary", elem_id="inpaint-btn")
            with gr.Row():
                sides = [
                    gr.Number(0, precision=0, label=f"{side} px", minimum=0)
                    for side in ("left", "right", "top", "bottom")
                ]
            outpaint_btn = gr.Button("Outpaint", variant="primary", elem_id="outpaint-btn")
    with gr.Row():
        gallery = gr.Gallery(
            label="results", columns=4, elem_id="apps-gallery", format="png", height="auto"
        )
    grid_dl = gr.DownloadButton("download grid", elem_id="download-apps-grid")

    def common(name, n, seed):
        model = store.model(name, device)
        n = _whole(n, "the number of results", 1, 8)
        return model, n, _whole(seed, "the seed", 0, 2**31 - 1)

    @_page_errors
    def run_inpaint(name, value, path, n, seed, cls, text, scale, progress=tracker):
        model, n, seed = common(name, n, seed)
        h, w = model.size
        if path is not None:
            mask = check_mask_upload(path, (h, w), max_upload_mb)
        else:
            mask = painted_mask(value, (h, w))
            if mask is None:
                raise SinDiffusionError("paint the region to regenerate, or upload a mask.")
        steer, tag = guided(model, cls, text, scale, seed)
        images = apps.inpaint(
            model, mask, n=n, seed=seed, guide=steer, callback=_ticker(progress, n, model)
        )
        key = hashlib.sha1(mask.numpy().tobytes()).hexdigest()[:8]
        out = store.path(name) / "inpaint" / f"mask-{key}-seed{seed}-n{n}{tag}"
        save_image(mask.float()[None].expand(3, -1, -1) * 2 - 1, out / "mask.png")
        return _write_gallery(images, out)

    @_page_errors
    def run_outpaint(name, left, right, top, bottom, n, seed, cls, text, scale, progress=tracker):
        model, n, seed = common(name, n, seed)
        vals = (left, right, top, bottom)
        ext = {
            k: _whole(v, f"{k} px", 0, MAX_SAMPLE_SIDE)
            for k, v in zip(("left", "right", "top", "bottom"), vals, strict=True)
        }
        steer, tag = guided(model, cls, text, scale, seed)
        images = apps.outpaint(
            model, extend=ext, n=n, seed=seed, guide=steer, callback=_ticker(progress, n, model)
        )
        le, ri, to, bo = ext.values()
        out = store.path(name) / "outpaint" / f"l{le}-r{ri}-t{to}-b{bo}-seed{seed}-n{n}{tag}"
        return _write_gallery(images, out)

    inpaint_btn.click(
        run_inpaint, [run, editor, mask_file, n, seed, *guide_fields], [gallery, grid_dl]
    )
    outpaint_btn.click(run_outpaint, [run, *sides, n, seed, *guide_fields], [gallery, grid_dl])

    @_page_errors
    def load_editor(name):
        if not name:
            return None
        # The run's own file, served in place: a fresh PIL image would be re-encoded into the
        # cache on every call, racing with the browser reading the previous copy.
        img = str(store.path(name) / "image.png")
        return {"background": img, "layers": [], "composite": img}

    return load_editor, editor


def page_theme():
    """The page's theme: gradio's default with system fonts, so the page fetches nothing from
    the web (it must work offline)."""
    gr = _gradio()
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "monospace"],
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 7860,
    runs: str | os.PathLike = "runs",
    config: Config | None = None,
    max_upload_mb: float = MAX_UPLOAD_MB,
    device: str | None = None,
    quiet: bool = False,
) -> None:
    """Start the page and block until Ctrl-C. `config` (or the JSON file named by the
    SINDIFFUSION_UI_CONFIG environment variable) replaces the fast preset."""
    runs = Path(runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    # Read by gradio when it is first imported: uploads and downloads then stay in `runs`.
    os.environ["GRADIO_TEMP_DIR"] = str(runs / CACHE_DIR)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if config is None and os.environ.get(CONFIG_ENV):
        config = load_config(os.environ[CONFIG_ENV])
    app = build_app(runs, config=config, max_upload_mb=max_upload_mb, device=device)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}: anyone who can reach it can use this page.")
    try:
        app.queue().launch(
            server_name=host,
            server_port=port,
            max_file_size=int(max_upload_mb * 2**20),
            allowed_paths=[str(runs)],
            theme=page_theme(),
            ssr_mode=False,
            mcp_server=False,
            quiet=quiet,
            show_error=True,  # an unexpected failure is shown on the page, not only in a log
            footer_links=[],
        )
    except OSError as e:
        raise SinDiffusionError(
            f"cannot listen on {host}:{port} ({e}); pick another --port or --host."
        ) from None
