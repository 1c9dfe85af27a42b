"""The local web page (`sindiffusion ui`): upload an image, train with live progress, draw
samples of any size, outpaint and inpaint, download the checkpoint and images, reopen runs.

Built on gradio (the optional `[ui]` extra). Security model: the page listens on 127.0.0.1
unless told otherwise; an upload must be an image of at most `max_upload_mb`; everything it
writes (gradio's upload cache included) stays inside its runs folder, under run names the server
makes itself; a browser names a run only by picking one from the server's list, and the server
checks that name again before touching the disk.

    from sindiffusion.ui import serve
    serve(host="127.0.0.1", port=7860, runs="runs")       # blocks until Ctrl-C
"""

from .page import build_app, guided, painted_mask, parse_auth, serve
from .runs import (
    MAX_PIXELS,
    MAX_UPLOAD_MB,
    OneAtATime,
    RunStore,
    TrainingJob,
    check_mask_upload,
    check_upload,
)

__all__ = [
    "MAX_PIXELS",
    "MAX_UPLOAD_MB",
    "OneAtATime",
    "RunStore",
    "TrainingJob",
    "build_app",
    "check_mask_upload",
    "check_upload",
    "guided",
    "painted_mask",
    "parse_auth",
    "serve",
]
