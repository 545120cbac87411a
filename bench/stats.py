"""Pure helpers for the benchmark report: medians, ratios, table text."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence


def median(values: Iterable[float]) -> float | None:
    """Median of the values, None when there are none."""
    data = [float(v) for v in values]
    return statistics.median(data) if data else None


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """ours / theirs; None when either is missing or theirs is zero."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def fmt(value: float | int | str | None, unit: str = "") -> str:
    """A number for a table cell: '-' when missing, 3 significant digits otherwise."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        text = str(value)
    elif abs(value) >= 100:
        text = f"{value:.0f}"
    elif abs(value) >= 10:
        text = f"{value:.1f}"
    else:
        text = f"{value:.2f}"
    return f"{text} {unit}".rstrip()


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table whose columns are padded to their widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def cycles_within(window_s: float, first_s: float, factor: float, cap_s: float) -> int:
    """Poll cycles in ``window_s`` when waits start at ``first_s`` and grow by ``factor``
    up to ``cap_s`` (factor 1: a fixed interval). The first poll happens at time 0."""
    if first_s <= 0 or factor < 1:
        raise ValueError("first_s must be > 0 and factor >= 1")
    cycles, elapsed, wait = 1, 0.0, first_s
    while elapsed + wait <= window_s:
        elapsed += wait
        cycles += 1
        wait = min(wait * factor, cap_s)
    return cycles


def cycles_from_waits(window_s: float, waits: list[float]) -> int:
    """Poll cycles in ``window_s`` when the waits between them were ``waits`` (measured),
    the last one repeating after them. The first poll happens at time 0."""
    if not waits or min(waits) <= 0:
        raise ValueError("waits must be measured and > 0")
    cycles, elapsed = 1, 0.0
    for wait in [*waits, *[waits[-1]] * int(window_s / waits[-1] + 1)]:
        if elapsed + wait > window_s:
            break
        elapsed += wait
        cycles += 1
    return cycles
