"""Small helpers for the tables and curves that runs and benchmarks report."""

from __future__ import annotations

import math
from collections.abc import Sequence


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
