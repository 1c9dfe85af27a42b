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
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from .. import apps
from ..checkpoint import CHECKPOINT
from ..config import Config, SamplingOptions, load_config, preset
from ..errors import SinDiffusionError
from ..guidance import CLIP_ENV, Guide, guide
from ..image import (
    DEMO_IMAGE,
    IMAGE_SUFFIXES,
    MIN_SIDE,
    bundled_image,
    save_image,
    tensor_to_pil,
    write_samples,
)
from ..model import SinDiffusion
from ..sampling import MAX_VARIETY
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
MAX_TRAIN_SIDE = 4096  # the long side a photo may be trained at (docs/full-resolution.md)
MAX_SAMPLES = 16
MAX_REQUEST_PIXELS = 4 * 2**20  # one request's results, all n of them (16 samples of 512x512)
QUEUE_SIZE = 32  # requests waiting at most, for all users; gradio refuses more at once
CACHE_DIR = ".gradio"  # gradio's upload/download cache, inside the runs folder
SIDES = ("left", "right", "top", "bottom")  # outpainting's sides, in the page's order


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
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except SinDiffusionError as e:
                raise _page_error(e) from None

        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SinDiffusionError as e:
            raise _page_error(e) from None

    return call


def _page_error(error: SinDiffusionError) -> Exception:
    """The page's message for `error` (gradio is imported only once a page exists)."""
    return _gradio().Error(str(error), print_exception=False)


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


def _check_request(n: int, h: int, w: int) -> None:
    """A one-sentence error when n results of h x w px (sizes after every fallback) are more
    than `MAX_REQUEST_PIXELS` in all: the page is shared by its users."""
    if n * h * w > MAX_REQUEST_PIXELS:
        raise SinDiffusionError(
            f"{n} results of {w}x{h} px are {n * h * w / 1e6:.1f} megapixels, more than the "
            f"page's {MAX_REQUEST_PIXELS / 1e6:.1f} per request; ask for fewer or smaller "
            "(the command line has no such cap)."
        )


def _variety(value: Any) -> float | None:
    """The variety dial: a number in [0, MAX_VARIETY], or None for 1 (the run's own samples);
    a one-sentence error otherwise."""
    try:
        v = float(1 if value is None or value == "" else value)
    except (TypeError, ValueError):
        raise SinDiffusionError("the variety must be a number.") from None
    if not 0 <= v <= MAX_VARIETY:
        raise SinDiffusionError(f"the variety must be between 0 and {MAX_VARIETY:g}.")
    return None if v == 1 else v


def build_app(
    runs: str | os.PathLike,
    config: Config | None = None,
    max_upload_mb: float = MAX_UPLOAD_MB,
    device: str | None = None,
    preview_seconds: float = PREVIEW_SECONDS,
    shared_runs: bool = False,
):
    """The page as a `gradio.Blocks` (not started). `config` replaces the fast preset. With
    logins, each user sees, uses and stops only the runs they trained, unless `shared_runs`."""
    gr = _gradio()
    page = _Page(RunStore(runs), config, max_upload_mb, device, preview_seconds, shared_runs)
    # Served in place: without this gradio copies every file it shows (checkpoints too) into its
    # cache. Browsers can read the runs folder either way (`allowed_paths`), and nothing else.
    gr.set_static_paths([page.store.root])
    with gr.Blocks(title="sindiffusion", analytics_enabled=False) as app:
        page.header()
        train = page.train_panel()
        run = page.run_bar(app, train.preview)
        guide_fields = page.guidance_fields()
        with gr.Tabs():
            page.samples_tab(run, guide_fields)
            page.apps_tab(run, guide_fields)
        page.wire_training(train, run)
    return app


class _Page:
    """The page's state (the runs folder, the base config, the one training at a time) and
    its handlers; each `*_panel` / `*_tab` method lays out one part of the page in order and
    wires the events whose inputs and outputs it holds."""

    def __init__(
        self,
        store: RunStore,
        config: Config | None,
        max_upload_mb: float,
        device: str | None,
        preview_seconds: float,
        shared_runs: bool = False,
    ):
        self.gr = _gradio()
        self.shared_runs = shared_runs
        self.store = store
        self.base = config if config is not None else preset("fast")
        self.custom = config is not None
        self.max_upload_mb = max_upload_mb
        self.device = device
        self.preview_seconds = preview_seconds
        self.trainings: dict[str | None, OneAtATime] = {}  # one training at a time per user
        self.current: dict[str | None, TrainingJob] = {}  # each user's running training
        self.tracker = self.gr.Progress()

    def wired(self, handler: Callable) -> Callable:
        """`handler` as gradio must see it: its `progress` parameter defaulting to a
        `gr.Progress` (gradio then shows a progress bar) and its `request` parameter annotated
        `gr.Request` (gradio then passes the request: who is logged in). Gradio finds both by
        default and annotation, and is imported only when a page is built, so the methods
        cannot name it in their own signatures."""
        signature = inspect.signature(handler)
        params = [
            p.replace(default=self.tracker) if p.name == "progress" else p
            for p in signature.parameters.values()
        ]

        if inspect.isgeneratorfunction(handler):  # gradio streams a generator's updates

            def call(*args, **kwargs):
                yield from handler(*args, **kwargs)

        else:

            def call(*args, **kwargs):
                return handler(*args, **kwargs)

        call.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        if "request" in signature.parameters:
            call.__annotations__ = {"request": self.gr.Request}
        return call

    def user(self, request) -> str | None:
        """Whose runs a request may see and use: its login, unless the page was started with
        shared runs (or without logins: one user at the computer)."""
        return None if self.shared_runs else getattr(request, "username", None)

    def runs(self, request) -> RunStore:
        """The runs folder as the request's user sees it (`RunStore.for_owner`)."""
        return self.store.for_owner(self.user(request))

    def header(self) -> None:
        """The page's title and what it does, in one sentence."""
        self.gr.Markdown(
            "# sindiffusion\nLearn a diffusion model from **one** image, then draw new images "
            "of any size with the same patches."
        )

    # --- 1 · Train ---------------------------------------------------------------------------
    def train_panel(self) -> SimpleNamespace:
        """Upload an image, set a budget, train with a live preview and loss curve."""
        gr, base = self.gr, self.base
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown(
                    "### 1 · Train"
                    + (f" (config `{base.preset}`)" if self.custom else " (`fast` preset)")
                )
                upload = _image_upload(
                    gr,
                    "training image: PNG, JPEG, WebP, TIFF or BMP, at most "
                    f"{self.max_upload_mb:g} MB",
                    "upload",
                    120,
                )
                example = gr.Button(
                    "or try the demo's image: the Himalaya from orbit (public domain)",
                    size="sm", elem_id="example-btn",
                )  # fmt: skip
                with gr.Row():
                    train_image = gr.Image(
                        label="as trained", interactive=False, elem_id="train-image",
                        height=160, format="png",
                    )  # fmt: skip
                    upload_info = gr.Markdown(elem_id="upload-info")
                kind, amount, seed, max_size = self.train_settings()
                with gr.Row():
                    train_btn = gr.Button("Train", variant="primary", elem_id="train-btn")
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                status = gr.Markdown(elem_id="train-status")
            with gr.Column():
                preview = gr.Image(
                    label="preview: the training image, then samples", interactive=False,
                    elem_id="preview", format="png", height=200,
                )  # fmt: skip
                loss_plot = gr.LinePlot(
                    x="step", y="loss", label="loss (smoothed)", height=200, elem_id="loss"
                )
        # `upload`, not `change`: removing a refused file must not fire the check again.
        upload.upload(self.show_upload, [upload, max_size], [upload, train_image, upload_info])
        upload.clear(lambda: (None, ""), None, [train_image, upload_info])
        example.click(self.use_example, [max_size], [upload, train_image, upload_info])
        return SimpleNamespace(
            upload=upload, kind=kind, amount=amount, seed=seed, max_size=max_size,
            train_btn=train_btn, stop_btn=stop_btn, status=status, preview=preview,
            loss_plot=loss_plot,
        )  # fmt: skip

    def train_settings(self) -> tuple:
        """The training budget (minutes or steps), and the seed and long side under "advanced"."""
        gr, base = self.gr, self.base
        with gr.Row():
            kind = gr.Radio(
                ["minutes", "steps"], value="steps" if self.custom else "minutes",
                label="budget", elem_id="budget-kind",
            )  # fmt: skip
            amount = gr.Number(
                value=base.train.steps if self.custom else 3, label="minutes or steps",
                minimum=0, elem_id="budget",
            )  # fmt: skip
        with gr.Accordion("advanced", open=False):
            with gr.Row():
                seed = gr.Number(0, precision=0, label="seed", minimum=0)
                max_size = gr.Number(base.train.max_size, precision=0, label="long side (px)")
        return kind, amount, seed, max_size

    def wire_training(self, train: SimpleNamespace, run) -> None:
        """Train and Stop; a finished run is selected in the run list."""
        inputs = [train.upload, train.kind, train.amount, train.seed, train.max_size]
        outputs = [train.status, train.preview, train.loss_plot, run]
        train.train_btn.click(
            self.wired(self.run_training), inputs, outputs, show_progress="minimal"
        )
        train.stop_btn.click(self.wired(self.stop_training), None, None, queue=False)

    def with_max_size(self, max_size: Any, minutes: float | None = None) -> Config:
        """The preset for this budget (short runs train on smaller crops), or the given config,
        with the page's long side."""
        base = self.base if self.custom else preset("fast", minutes)
        cfg = Config.from_dict(base.to_dict())
        cfg.train.max_size = _whole(max_size, "the long side", MIN_SIDE, MAX_TRAIN_SIDE)
        return cfg

    def show_upload(self, path, max_size):
        """Check an upload at once; a refused file is removed from the page, with the reason."""
        try:
            img = check_upload(path, self.with_max_size(max_size), self.max_upload_mb)
        except SinDiffusionError as e:
            self.gr.Warning(str(e), title="Upload refused")
            return None, None, f"**refused:** {e}"
        h, w = img.shape[-2:]
        return self.gr.update(), tensor_to_pil(img), f"trains at {w}x{h} px"

    def use_example(self, max_size):
        """The demo's bundled image in the upload box, checked as an upload is: a first run
        needs no photo of one's own."""
        path = str(bundled_image(DEMO_IMAGE))
        _, shown, info = self.show_upload(path, max_size)
        return (path if shown is not None else None), shown, info  # refused: an empty box

    @_page_errors
    def run_training(self, path, kind, amount, seed, max_size, request=None):
        """Train on the upload in the background, streaming status, preview and loss."""
        if kind == "minutes":
            minutes, steps = float(amount or 0), None
            if not 0 < minutes <= 24 * 60:
                raise SinDiffusionError("minutes must be between 0 and 1440.")
        else:
            minutes, steps = None, _whole(amount, "steps", 1, 10**6)
        cfg = self.with_max_size(max_size, minutes)
        img = check_upload(path, cfg, self.max_upload_mb)
        seed = _whole(seed, "the seed", 0, 2**31 - 1)
        user, store = self.user(request), self.runs(request)
        lock = self.trainings.setdefault(user, OneAtATime())
        lock.claim()
        try:
            run_dir = store.new_run(Path(path).name)
            job = TrainingJob(
                img, cfg, run_dir, steps, minutes, seed, self.device, self.preview_seconds
            )
            self.current[user] = job.start()
            keep = self.gr.update()
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
                self.gr.update(choices=store.names(), value=name),
            )
        finally:
            self.current.pop(user, None)
            lock.release()

    def stop_training(self, request=None) -> None:
        """Stop the requesting user's training, and only theirs."""
        job = self.current.get(self.user(request))
        if job is not None:
            job.stop()

    # --- 2 · Use a run -----------------------------------------------------------------------
    def run_bar(self, app, preview):
        """Pick a run folder (its description, latest preview and checkpoint download)."""
        gr, store = self.gr, self.store
        gr.Markdown("### 2 · Use a run")
        names = store.names()
        with gr.Row(equal_height=True):
            run = gr.Dropdown(
                choices=names, value=names[0] if names else None, label="run folder",
                elem_id="run", scale=3,
            )  # fmt: skip
            refresh = gr.Button("refresh list", scale=1)
            ckpt_dl = gr.DownloadButton("download checkpoint", elem_id="download-ckpt", scale=1)
        run_info = gr.Markdown(elem_id="run-info")
        refresh.click(self.wired(self.refresh_runs), run, run)
        run.change(self.wired(self.select_run), run, [run_info, preview, ckpt_dl])
        # A page opened later lists the runs trained since the server started.
        app.load(self.wired(self.list_runs), None, run)
        return run

    def refresh_runs(self, value, request=None):
        """The run list again, keeping the selected run."""
        return self.gr.update(choices=self.runs(request).names(), value=value)

    def list_runs(self, request=None):
        """The run list for a page just opened, newest run selected."""
        names = self.runs(request).names()
        return self.gr.update(choices=names, value=names[0] if names else None)

    @_page_errors
    def select_run(self, name, request=None):
        """The run's description, its latest preview and its checkpoint for download."""
        if not name:
            return "No run yet: upload an image and train one.", None, None
        store = self.runs(request)
        model = store.model(name, self.device)
        h, w = model.size
        run_dir = store.path(name)
        sampling = model.config.sampling
        info = (
            f"**{name}** · preset {model.config.preset} · {model.step} steps · "
            f"training image {w}x{h} px · sampler {sampling.sampler} "
            f"({model.prepare()[1].steps} steps)"  # a large photo's own (`reduced_steps`)
            + (f" · position prior {sampling.patch.prior}" if model.patch is not None else "")
        )
        return info, _latest_preview(run_dir), str(run_dir / CHECKPOINT)

    def guidance_fields(self) -> list:
        """The optional class / text guidance every generating tab applies."""
        gr = self.gr
        with gr.Accordion("guidance (optional): steer samples and fills", open=False):
            with gr.Row():
                cls = gr.Textbox(
                    label="ImageNet class, e.g. volcano", elem_id="guide-class", max_length=100
                )
                text = gr.Textbox(
                    label=f"text (CLIP weights via ${CLIP_ENV})", elem_id="guide-text",
                    max_length=300,
                )  # fmt: skip
                scale = gr.Slider(0.05, 2.0, value=0.5, step=0.05, label="guidance scale")
        return [cls, text, scale]

    # --- Samples -----------------------------------------------------------------------------
    def samples_tab(self, run, guide_fields: list) -> None:
        """New samples of any size, with the variety dial."""
        gr = self.gr
        with gr.Tab("Samples", elem_id="tab-samples"):
            with gr.Row():
                width = gr.Number(0, precision=0, label="width px (0 = training)")
                height = gr.Number(0, precision=0, label="height px (0 = training)")
                count = gr.Slider(1, MAX_SAMPLES, value=4, step=1, label="samples")
                seed = gr.Number(0, precision=0, label="seed", minimum=0)
            with gr.Row():
                variety = gr.Slider(
                    0, MAX_VARIETY, value=1, step=0.01, label="variety (1 = the run's)",
                    info="0 redraws the image's detail and keeps its layout, 0.5 moves its "
                    "objects a little, 0.9 to 1 lets go of it, 1 draws free samples, 2 the "
                    "widest layouts",
                    elem_id="variety",
                )  # fmt: skip
            with gr.Row():
                sample_btn = gr.Button("Generate", variant="primary", elem_id="sample-btn")
                grid_dl = gr.DownloadButton("download grid", elem_id="download-grid")
            gallery = gr.Gallery(
                label="samples", columns=4, elem_id="gallery", format="png", height="auto"
            )
        sample_btn.click(
            self.wired(self.make_samples),
            [run, width, height, count, seed, variety, *guide_fields],
            [gallery, grid_dl],
        )

    @_page_errors
    def make_samples(
        self, name, width, height, n, seed, variety, cls, text, scale, request=None, progress=None
    ):
        """New samples of the run at the asked size, written under its samples folder."""
        store = self.runs(request)
        model = store.model(name, self.device)
        h0, w0 = model.size
        w = _whole(width, "the width", 0, MAX_SAMPLE_SIDE) or w0
        h = _whole(height, "the height", 0, MAX_SAMPLE_SIDE) or h0
        if min(w, h) < MIN_SIDE:
            raise SinDiffusionError(
                f"each side must be at least {MIN_SIDE} px (0 = training size)."
            )
        n = _whole(n, "the number of samples", 1, MAX_SAMPLES)
        _check_request(n, h, w)
        seed = _whole(seed, "the seed", 0, 2**31 - 1)
        dial = _variety(variety)
        steer, tag = guided(model, cls, text, scale, seed)
        images = model.sample(
            n=n, size=(h, w), seed=seed, options=SamplingOptions(variety=dial), guide=steer,
            callback=_ticker(progress, n, model),
        )  # fmt: skip
        tag = (f"-variety{dial:g}" if dial is not None else "") + tag
        out = store.path(name) / "samples" / f"{w}x{h}-seed{seed}-n{n}{tag}"
        return _write_gallery(images, out)

    # --- Outpaint / inpaint ------------------------------------------------------------------
    def apps_tab(self, run, guide_fields: list) -> None:
        """Inpaint a painted or uploaded mask, or outpaint by pixels per side."""
        gr = self.gr
        with gr.Tab("Outpaint / inpaint", elem_id="tab-inpaint") as tab:
            gr.Markdown(
                "Paint over the part of the training image to regenerate (white brush), or "
                "upload a mask (white = regenerate), then **Inpaint**. **Outpaint** adds the "
                "pixels set below around the image. Guidance above applies too."
            )
            with gr.Row(equal_height=False):
                editor = self.mask_editor()
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
                            for side in SIDES
                        ]
                    outpaint_btn = gr.Button("Outpaint", variant="primary", elem_id="outpaint-btn")
            with gr.Row():
                gallery = gr.Gallery(
                    label="results", columns=4, elem_id="apps-gallery", format="png",
                    height="auto",
                )  # fmt: skip
            grid_dl = gr.DownloadButton("download grid", elem_id="download-apps-grid")
        results = [gallery, grid_dl]
        painted = [run, editor, mask_file, n, seed, *guide_fields]
        inpaint_btn.click(self.wired(self.run_inpaint), painted, results)
        extended = [run, *sides, n, seed, *guide_fields]
        outpaint_btn.click(self.wired(self.run_outpaint), extended, results)
        # On showing the tab too: an editor hidden in a closed tab misses its first image.
        run.change(self.wired(self.load_editor), run, editor)
        tab.select(self.wired(self.load_editor), run, editor)

    def mask_editor(self):
        """The training image to paint the region to regenerate on (loaded by `load_editor`)."""
        gr = self.gr
        return gr.ImageEditor(
            type="numpy",
            sources=[],  # the background is the run's image, never a browser's file
            layers=False,
            transforms=[],
            brush=gr.Brush(default_size=12, colors=["#ffffff"], color_mode="fixed"),
            label="paint the region to regenerate",
            elem_id="editor",
            height=320,
        )

    def _app_call(self, name, n, seed, request):
        """The runs the request may use, the model, result count and seed, checked."""
        store = self.runs(request)
        model = store.model(name, self.device)
        n = _whole(n, "the number of results", 1, 8)
        return store, model, n, _whole(seed, "the seed", 0, 2**31 - 1)

    @_page_errors
    def run_inpaint(
        self, name, value, path, n, seed, cls, text, scale, request=None, progress=None
    ):
        """Fill the painted or uploaded mask anew, written under the run's inpaint folder."""
        store, model, n, seed = self._app_call(name, n, seed, request)
        h, w = model.size
        _check_request(n, h, w)
        if path is not None:
            mask = check_mask_upload(path, (h, w), self.max_upload_mb)
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
    def run_outpaint(
        self, name, left, right, top, bottom, n, seed, cls, text, scale, request=None,
        progress=None,
    ):  # fmt: skip
        """Extend the image by the pixels asked per side, under the run's outpaint folder."""
        store, model, n, seed = self._app_call(name, n, seed, request)
        sides = (left, right, top, bottom)
        ext = {
            k: _whole(v, f"{k} px", 0, MAX_SAMPLE_SIDE) for k, v in zip(SIDES, sides, strict=True)
        }
        h, w = model.size
        _check_request(n, h + ext["top"] + ext["bottom"], w + ext["left"] + ext["right"])
        steer, tag = guided(model, cls, text, scale, seed)
        images = apps.outpaint(
            model, extend=ext, n=n, seed=seed, guide=steer, callback=_ticker(progress, n, model)
        )
        le, ri, to, bo = ext.values()
        out = store.path(name) / "outpaint" / f"l{le}-r{ri}-t{to}-b{bo}-seed{seed}-n{n}{tag}"
        return _write_gallery(images, out)

    @_page_errors
    def load_editor(self, name, request=None):
        """The run's image as the editor's background."""
        if not name:
            return None
        # The run's own file, served in place: a fresh PIL image would be re-encoded into the
        # cache on every call, racing with the browser reading the previous copy.
        img = str(self.runs(request).path(name) / "image.png")
        return {"background": img, "layers": [], "composite": img}


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


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_access(host: str, share: bool, auth: list[tuple[str, str]] | None) -> None:
    """A one-sentence error for a page others could reach (`share`, or a `host` beyond this
    computer) without a login (`auth`)."""
    if (share or host not in LOCAL_HOSTS) and not auth:
        where = "a public link (--share)" if share else f"{host}, beyond this computer"
        raise SinDiffusionError(
            f"the page would be open to anyone at {where}; add --auth USER:PASS or "
            "--auth-file FILE so that only they can use it."
        )


def parse_auth(pairs: list[str] | None = None, file: str | os.PathLike | None = None):
    """(user, password) pairs from `USER:PASS` strings and from a file of such lines (blank
    lines and lines starting with # skipped); a one-sentence error for a malformed one."""
    lines = list(pairs or [])
    if file is not None:
        try:
            text = Path(file).read_text()
        except OSError:
            raise SinDiffusionError(
                f"{file}: cannot read this auth file; check the path."
            ) from None
        lines += [x.strip() for x in text.splitlines() if x.strip() and not x.startswith("#")]
    out = []
    for line in lines:
        user, sep, password = line.partition(":")
        if not sep or not user.strip() or not password:
            raise SinDiffusionError("an --auth entry is not USER:PASS; write it like ana:s3cret.")
        out.append((user.strip(), password))
    return out


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
    share: bool = False,
    auth: list[tuple[str, str]] | None = None,
    shared_runs: bool = False,
) -> None:
    """Start the page and block until Ctrl-C. `config` (or the JSON file named by the
    SINDIFFUSION_UI_CONFIG environment variable) replaces the fast preset. `share`: a public
    gradio link (off unless asked here: gradio's own environment switches and notebook
    defaults cannot turn it on); `auth`: (user, password) pairs that may log in, required
    whenever the page is shared or listens beyond this computer (`check_access`); each user
    then sees and stops only their own runs, unless `shared_runs`."""
    check_access(host, share, auth)
    runs = Path(runs).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    # Read by gradio when it is first imported: uploads and downloads then stay in `runs`.
    os.environ["GRADIO_TEMP_DIR"] = str(runs / CACHE_DIR)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if config is None and os.environ.get(CONFIG_ENV):
        config = load_config(os.environ[CONFIG_ENV])
    app = build_app(
        runs, config=config, max_upload_mb=max_upload_mb, device=device, shared_runs=shared_runs
    )
    RunStore(runs).clean(CACHE_DIR)  # yesterday's uploads and downloads
    try:
        app.queue(max_size=QUEUE_SIZE).launch(
            server_name=host,
            server_port=port,
            share=share,  # explicit: GRADIO_SHARE and hosted notebooks cannot share it
            auth=auth or None,
            max_file_size=int(max_upload_mb * 2**20),
            # The runs, and the demo's image that the example button puts in the upload box.
            allowed_paths=[str(runs), str(bundled_image(DEMO_IMAGE))],
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
