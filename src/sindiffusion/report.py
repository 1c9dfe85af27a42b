"""Small helpers for the tables and curves that runs and benchmarks report."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .image import pil_to_tensor


def moving_average(values: Sequence[float], parts: int = 50) -> list[float]:
    """Each value averaged with the ones before it over about 1/`parts` of the series (a
    trailing window, so the curve's start is not pulled towards later values)."""
    k = max(1, len(values) // parts)
    return [sum(values[max(0, i - k) : i + 1]) / len(values[max(0, i - k) : i + 1])
            for i in range(len(values))]  # fmt: skip


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str = "") -> str:
    """A Markdown table: `header` cells, then `rows`; `align` has one letter per column, "l"
    (left) or "r" (right; the default for every column not given)."""
    marks = [":---" if (align[i : i + 1] or "r") == "l" else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and (population) standard deviation; (nan, nan) for no values."""
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def loss_curve(
    steps: list[int], losses: list[float], size: tuple[int, int] = (240, 480)
) -> torch.Tensor:
    """A loss-curve picture (3, H, W) in [-1, 1]: log10 of the loss, smoothed, against step."""
    from PIL import Image, ImageDraw

    h, w = size
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    vals = [math.log10(max(v, 1e-12)) for v in losses if math.isfinite(v)]
    if len(vals) >= 2:
        smooth = moving_average(vals)
        lo, hi = min(smooth), max(smooth)
        span = max(hi - lo, 1e-6)
        m = 30
        pts = [
            (m + (w - 2 * m) * i / (len(smooth) - 1), h - m - (h - 2 * m) * (v - lo) / span)
            for i, v in enumerate(smooth)
        ]
        draw.rectangle([m, m, w - m, h - m], outline=(180, 180, 180))
        draw.line(pts, fill=(30, 90, 200), width=2)
        draw.text((m, 8), f"loss (log10, smoothed)  {10**hi:.3g} .. {10**lo:.3g}", fill="black")
        draw.text((m, h - m + 8), f"step {steps[0]} .. {steps[-1]}", fill="black")
    return pil_to_tensor(img)
