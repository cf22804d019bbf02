"""Line charts of a run's curves (losses.png, metrics.png), drawn with Pillow.

Drawn here rather than by matplotlib, whose import and first chart took a training process 0.79 s of CPU and each
chart after 0.23 s (this: 0.06 s and 0.035 s): a short run paid more for its curves than for its steps
(bench/results/charts.txt)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .files import atomic_write

WIDTH, PANEL_HEIGHT = 640, 240  # pixels of the PNG, and of each panel in it
SCALE = 2  # drawn at twice the size, then halved: lines and text come out smooth
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
LEFT, RIGHT, TOP, BOTTOM = 64, 14, 26, 42  # margins; TOP holds a panel's title, BOTTOM the x axis's labels
GAP = 30  # between one panel's box and the next's, room for the next title
MARGIN = 0.05  # of the data's range on each side, as matplotlib's default


@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size * SCALE)


def _ticks(low: float, high: float, most: int) -> list[float]:
    """Round values for axis ticks in [low, high]: steps of 1, 2, 2.5 or 5 times a power of ten, at most `most`."""
    span = high - low
    for step in (m * 10.0**e for e in range(math.floor(math.log10(span / most)), 400) for m in (1, 2, 2.5, 5)):
        first = math.ceil(low / step - 1e-9)
        count = math.floor(high / step + 1e-9) - first + 1
        if count <= most:
            return [(first + i) * step for i in range(count)]
    return [low, high]


def _log_ticks(low: float, high: float) -> list[float]:
    """Ticks of a log axis over [10**low, 10**high] (log10 bounds): the powers of ten, with 2 and 5 times them
    where fewer than three powers fall in the range."""
    inside = lambda ticks: [t for t in ticks if low - 1e-9 <= math.log10(t) <= high + 1e-9]
    powers = range(math.floor(low), math.ceil(high) + 1)
    ticks = inside([10.0**e for e in powers])
    return ticks if len(ticks) >= 3 else inside([m * 10.0**e for e in powers for m in (1, 2, 5)]) or [10**low, 10**high]


def _labels(ticks: list[float]) -> list[str]:
    """The ticks' texts, with as many decimals as their spacing needs."""
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    power = math.floor(math.log10(step) + 1e-9)
    halves = round(step / 10**power, 3) == 2.5  # 0.25 needs a decimal more than 0.2
    return [f"{t:.3g}" if abs(t) >= 1e6 or 0 < abs(t) < 1e-4 else f"{t:.{max(0, -power + halves)}f}" for t in ticks]


def _bounds(values: list[float]) -> tuple[float, float]:
    """The axis range of values, widened by MARGIN (or to a unit wide when they are all one value)."""
    low, high = min(values), max(values)
    if high - low < 1e-12 * max(1.0, abs(high)):
        pad = max(abs(high) * 0.05, 0.5)
        return low - pad, high + pad
    pad = (high - low) * MARGIN
    return low - pad, high + pad


def _series(rows: Sequence[dict[str, float]], column: str, log: bool) -> list[list[tuple[float, float]]]:
    """The column's (step, value) points in row order, rows without it skipped (evaluations are every few rows),
    split where a value cannot be drawn (not finite, or not positive on a log axis)."""
    runs: list[list[tuple[float, float]]] = [[]]
    for r in rows:
        if r.get(column) in (None, ""):
            continue
        x, y = float(r["step"]), float(r[column])
        if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log):
            runs[-1].append((x, math.log10(y) if log else y))
        elif runs[-1]:
            runs.append([])
    return [run for run in runs if run]


def _along(points: np.ndarray) -> np.ndarray:
    """A curve's points and 7 more evenly along each of its segments: what a legend placed over it would hide."""
    if len(points) < 2:
        return points
    t = np.linspace(0, 1, 8, endpoint=False)[None, :, None]
    return np.concatenate([(points[:-1, None] + (points[1:] - points[:-1])[:, None] * t).reshape(-1, 2), points[-1:]])


def _legend(
    draw: ImageDraw.ImageDraw,
    entries: list[tuple[str, str]],
    box: tuple[float, float, float, float],
    ink: np.ndarray,
) -> None:
    """A legend of (name, colour) entries in the corner of the box that hides the fewest of the curves' points
    (ink: their pixel positions), upper right if no other hides fewer."""
    left, top, right, bottom = box
    s, font, row = SCALE, _font(11), 16 * SCALE
    w = max(draw.textlength(name, font=font) for name, _ in entries) + 40 * s
    h = row * len(entries) + 6 * s
    corners = [(right - 6 * s - w, top + 6 * s), (left + 6 * s, top + 6 * s),
               (left + 6 * s, bottom - 6 * s - h), (right - 6 * s - w, bottom - 6 * s - h)]  # fmt: skip

    def hidden(corner: tuple[float, float]) -> int:
        x, y = corner
        return int(((ink[:, 0] >= x) & (ink[:, 0] <= x + w) & (ink[:, 1] >= y) & (ink[:, 1] <= y + h)).sum())

    x, y = min(corners, key=hidden)  # the first of the least hidden
    draw.rectangle([x, y, x + w, y + h], fill="white", outline="#cccccc", width=s)
    for k, (name, colour) in enumerate(entries):
        mid = y + 3 * s + row * k + row / 2
        draw.line([(x + 6 * s, mid), (x + 26 * s, mid)], fill=colour, width=round(1.5 * s))
        draw.text((x + 32 * s, mid), name, fill="black", font=font, anchor="lm")


def plot_curves(
    rows: Sequence[dict[str, float]],
    path: str | Path,
    panels: Sequence[tuple[str, Sequence[str]]],
    log_first: bool = False,
    xlabel: str = "step",
) -> Path:
    """One panel per (title, columns) against rows' "step", from CSV rows, sharing the x axis; empty columns are
    skipped (and a panel with nothing to draw gets no legend); log_first: the first panel's y axis is log10."""
    path = Path(path)
    s = SCALE
    height = PANEL_HEIGHT * len(panels)
    image = Image.new("RGB", (WIDTH * s, height * s), "white")
    draw = ImageDraw.Draw(image)
    small, title_font = _font(11), _font(12)

    lines = [
        [(col, _series(rows, col, log_first and i == 0)) for col in columns] for i, (_, columns) in enumerate(panels)
    ]
    xs = [x for panel in lines for _, runs in panel for run in runs for x, _ in run]
    x0, x1 = _bounds(xs) if xs else (0.0, 1.0)
    left, right = LEFT * s, (WIDTH - RIGHT) * s
    box_h = (height - TOP - BOTTOM - GAP * (len(panels) - 1)) / len(panels)
    px = lambda x: left + (x - x0) / (x1 - x0) * (right - left)
    x_ticks = _ticks(x0, x1, max(2, (right - left) // (s * 70)))
    x_texts = _labels(x_ticks)

    for i, ((title, _), panel) in enumerate(zip(panels, lines)):
        top = (TOP + i * (box_h + GAP)) * s
        bottom = top + box_h * s
        log = log_first and i == 0
        ys = [y for _, runs in panel for run in runs for _, y in run]
        y0, y1 = _bounds(ys) if ys else (0.0, 1.0)

        def py(y: float, y0: float = y0, y1: float = y1, top: float = top, bottom: float = bottom) -> float:
            return bottom - (y - y0) / (y1 - y0) * (bottom - top)

        draw.text(((left + right) / 2, top - 6 * s), title, fill="black", font=title_font, anchor="md")
        # y ticks: grid line, tick mark and label
        y_ticks = [math.log10(t) for t in _log_ticks(y0, y1)] if log else _ticks(y0, y1, 6)
        y_texts = [f"{10**y:g}" for y in y_ticks] if log else _labels(y_ticks)
        for y, text in zip(y_ticks, y_texts):
            at = py(y)
            draw.line([(left, at), (right, at)], fill="#ebebeb", width=s)
            draw.line([(left - 4 * s, at), (left, at)], fill="black", width=s)
            draw.text((left - 6 * s, at), text, fill="black", font=small, anchor="rm")
        for x, text in zip(x_ticks, x_texts):
            at = px(x)
            draw.line([(at, top), (at, bottom)], fill="#ebebeb", width=s)
            draw.line([(at, bottom), (at, bottom + 4 * s)], fill="black", width=s)
            if i == len(panels) - 1:
                draw.text((at, bottom + 6 * s), text, fill="black", font=small, anchor="ma")
        # the curves (inside the box: the axes' ranges have a margin)
        drawn, ink = [], [np.empty((0, 2))]
        for k, (col, runs) in enumerate(panel):
            colour = COLOURS[k % len(COLOURS)]
            for run in runs:
                points = [(px(x), py(y)) for x, y in run]
                if len(points) == 1:
                    (cx, cy), r = points[0], 2 * s
                    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
                else:
                    draw.line(points, fill=colour, width=round(1.5 * s), joint="curve")
                ink.append(_along(np.asarray(points)))
            if runs:
                drawn.append((col, colour))
        draw.rectangle([left, top, right, bottom], outline="black", width=s)
        if drawn:
            _legend(draw, drawn, (left, top, right, bottom), np.concatenate(ink))
    draw.text(((left + right) / 2, (height - 4) * s), xlabel, fill="black", font=small, anchor="md")
    picture = image.reduce(s)
    atomic_write(path, lambda f: picture.save(f, format="PNG"))
    return path
