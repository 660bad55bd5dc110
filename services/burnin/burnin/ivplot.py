"""IV scan document -> PNG image, without a plotting library (pure: data in, bytes out).

:func:`render_iv_png` draws |IMon| (uA) against |VMon| (V) for every module of one archived IV scan (the
document ``store.py`` writes to ``<uid>/iv/<step>-<n>.json``): one colour per module, a square per point joined
by lines, axes with ticks and numbers, a title with the burn-in uid, the step and the temperature, and a legend
with each module's name, its stop reason and the voltage it stopped at. Magnitudes are plotted, so a negative
bias stand and a positive one give the same picture.

The pieces are separate and tested on their own: :func:`nice_ticks` (axis numbers), :class:`Frame` (data ->
pixel), :class:`Canvas` (an RGB raster with lines, rectangles and text in the font of ``bitmapfont.py``) and
:func:`encode_png` (RGB raster -> PNG: IHDR, one zlib IDAT with filter 0 on every row, IEND).
"""

from __future__ import annotations

import itertools
import math
import struct
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .bitmapfont import CELL_H, CELL_W, glyph, text_width

Color = tuple[int, int, int]

WIDTH = 1000
HEIGHT = 640
BACKGROUND: Color = (255, 255, 255)
INK: Color = (20, 20, 20)
GRID: Color = (225, 225, 225)
MUTED: Color = (110, 110, 110)
#: module colours, chosen to stay apart from each other on white (beyond ten, hues are spread evenly)
PALETTE: tuple[Color, ...] = (
    (31, 100, 180),
    (230, 110, 0),
    (30, 150, 60),
    (205, 30, 40),
    (130, 80, 180),
    (140, 80, 60),
    (220, 80, 170),
    (90, 90, 90),
    (170, 170, 20),
    (20, 170, 190),
)


def module_colors(n: int) -> list[Color]:
    """``n`` distinct colours: the palette, then evenly spread hues at two lightnesses."""
    if n <= len(PALETTE):
        return list(PALETTE[:n])
    extra = n - len(PALETTE)
    out = list(PALETTE)
    for k in range(extra):
        hue = (k * 0.618034) % 1.0  # golden-ratio steps: neighbours far apart on the wheel
        value = 0.75 if k % 2 else 0.55
        out.append(_hsv(hue, 0.9, value))
    # equal colours could still come out of rounding: nudge until all differ
    seen: set[Color] = set()
    for i, c in enumerate(out):
        while c in seen:
            c = (c[0], c[1], (c[2] + 7) % 256)
        seen.add(c)
        out[i] = c
    return out


def _hsv(h: float, s: float, v: float) -> Color:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (round(r * 255), round(g * 255), round(b * 255))


# ---------------------------------------------------------------------------------------------- axes
def nice_ticks(hi: float, target: int = 6) -> list[float]:
    """Ticks 0, s, 2s, ... reaching ``hi`` (within 1 % of a step); s is 1, 2, 2.5 or 5 x 10^k; about ``target``."""
    if not math.isfinite(hi) or hi <= 0:
        hi = 1.0
    raw = hi / max(1, target - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.999)
    n = math.ceil(hi / step - 0.01)  # a value up to 1 % of a step past a round tick (200.3 V) does not add a tick
    return [round(k * step, 12) for k in range(n + 1)]


def tick_label(value: float, step: float) -> str:
    """A tick number with as many decimals as the step needs (``0``, ``2.5``, ``0.05``)."""
    decimals = 0 if step >= 1 and float(step).is_integer() else max(0, -math.floor(math.log10(step)) + 1)
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


@dataclass(frozen=True)
class Frame:
    """The plot area: pixels ``left..right`` x ``top..bottom`` show |V| in 0..``v_max`` and |I| in 0..``i_max``."""

    left: int
    top: int
    right: int
    bottom: int
    v_max: float
    i_max: float

    def to_px(self, v: float, i: float) -> tuple[int, int]:
        """Pixel of the point (|v|, |i|); y grows downwards in the image."""
        x = self.left + abs(v) / self.v_max * (self.right - self.left)
        y = self.bottom - abs(i) / self.i_max * (self.bottom - self.top)
        return round(x), round(y)


# ---------------------------------------------------------------------------------------------- raster
class Canvas:
    """An RGB raster (row-major, 3 bytes a pixel) with the few drawing operations the plot needs."""

    def __init__(self, width: int, height: int, background: Color = BACKGROUND) -> None:
        if width <= 0 or height <= 0:
            raise ValueError(f"canvas size must be positive, got {width}x{height}")
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def get(self, x: int, y: int) -> Color:
        o = (y * self.width + x) * 3
        return (self.pixels[o], self.pixels[o + 1], self.pixels[o + 2])

    def set(self, x: int, y: int, c: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            o = (y * self.width + x) * 3
            self.pixels[o : o + 3] = bytes(c)

    def rect(self, x0: int, y0: int, x1: int, y1: int, c: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), both included."""
        xa, xb = max(0, min(x0, x1)), min(self.width - 1, max(x0, x1))
        if xa > xb:
            return
        row = bytes(c) * (xb - xa + 1)
        for y in range(max(0, min(y0, y1)), min(self.height - 1, max(y0, y1)) + 1):
            o = (y * self.width + xa) * 3
            self.pixels[o : o + len(row)] = row

    def line(self, x0: int, y0: int, x1: int, y1: int, c: Color, width: int = 1) -> None:
        """A straight line (Bresenham), ``width`` pixels thick."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        lo, hi = -((width - 1) // 2), width // 2
        while True:
            if width == 1:
                self.set(x0, y0, c)
            else:
                self.rect(x0 + lo, y0 + lo, x0 + hi, y0 + hi, c)
            if x0 == x1 and y0 == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy

    def text(self, x: int, y: int, text: str, c: Color = INK, scale: int = 1) -> int:
        """Draw ``text`` with its top-left corner at (x, y); returns the x after the last character."""
        for ch in text:
            for gx, gy in glyph(ch):
                self.rect(x + gx * scale, y + gy * scale, x + gx * scale + scale - 1, y + gy * scale + scale - 1, c)
            x += CELL_W * scale
        return x

    def text_up(self, x: int, y: int, text: str, c: Color = INK, scale: int = 1) -> None:
        """Draw ``text`` turned 90 degrees anticlockwise, reading upwards; (x, y) is its bottom-left corner."""
        for ch in text:
            for gx, gy in glyph(ch):
                px, py = x + gy * scale, y - gx * scale
                self.rect(px, py - scale + 1, px + scale - 1, py, c)
            y -= CELL_W * scale


def encode_png(width: int, height: int, rgb: bytes | bytearray) -> bytes:
    """A truecolour 8-bit PNG of the row-major RGB bytes ``rgb``."""
    if len(rgb) != width * height * 3:
        raise ValueError(f"{len(rgb)} bytes do not make a {width}x{height} RGB image")
    stride = width * 3
    raw = b"".join(b"\x00" + bytes(rgb[y * stride : (y + 1) * stride]) for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------------------------------------- the IV plot
@dataclass(frozen=True)
class Curve:
    """One module's points as (|V|, |I| uA) pairs, with how its scan ended."""

    module: str
    points: tuple[tuple[float, float], ...]
    outcome: str
    stop_v: float | None  #: the last point's |V| (None without points)


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def _modules(doc: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The per-module scans of the document; anything not shaped like one counts as a scan without points."""
    modules = doc.get("modules")
    if not isinstance(modules, Mapping):
        return {}
    return {str(m): (s if isinstance(s, Mapping) else {}) for m, s in modules.items()}


def _points(scan: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    pts = scan.get("points")
    return [p for p in pts if isinstance(p, Mapping)] if isinstance(pts, list) else []


def curves(doc: Mapping[str, Any]) -> list[Curve]:
    """The plottable curves of an IV scan document; points without a finite VMon and IMon are left out."""
    out: list[Curve] = []
    for name, scan in _modules(doc).items():
        pts: list[tuple[float, float]] = []
        for p in _points(scan):
            v = _number(p.get("vmon"))
            if v is None:
                v = _number(p.get("set_v"))
            i = _number(p.get("imon"))
            if v is not None and i is not None:
                pts.append((abs(v), abs(i)))
        out.append(Curve(str(name), tuple(pts), str(scan.get("outcome") or "?"), pts[-1][0] if pts else None))
    return out


def scan_temperature(doc: Mapping[str, Any]) -> tuple[float | None, str]:
    """(degC, what it is): the mean module temperature of the points, else the chiller bath reading."""
    temps = [
        t for scan in _modules(doc).values() for p in _points(scan) if (t := _number(p.get("temperature"))) is not None
    ]
    if temps:
        return sum(temps) / len(temps), "module"
    bath = _number(doc.get("bath_temp"))
    if bath is not None:
        return bath, "bath"
    return None, ""


def _fit(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(1, max_chars - 1)] + "~"


def marker_half(k: int) -> int:
    """Half the side of module ``k``'s point squares: 6, 4, 2 pixels, repeating."""
    return 6 - 2 * (k % 3)


def layout(width: int, height: int, v_max: float, i_max: float) -> Frame:
    """The plot area of an image of this size (room for the title, axis numbers and the legend)."""
    legend_w = max(200, width * 31 // 100)
    return Frame(left=100, top=78, right=width - legend_w - 30, bottom=height - 72, v_max=v_max, i_max=i_max)


def plot_iv(doc: Mapping[str, Any], width: int = WIDTH, height: int = HEIGHT) -> tuple[Canvas, Frame, list[Color]]:
    """Draw the scan; returns the canvas, its frame (data -> pixel) and the colour of each module in order."""
    cs = curves(doc)
    colors = module_colors(len(cs))
    v_ticks = nice_ticks(max((v for c in cs for v, _ in c.points), default=0.0) or 100.0)
    i_ticks = nice_ticks(max((i for c in cs for _, i in c.points), default=0.0) or 1.0)
    frame = layout(width, height, v_ticks[-1], i_ticks[-1])
    cv = Canvas(width, height)
    s = 2  # text scale: 10x14-pixel letters

    # title: uid and step; then temperature, profile and time
    step = doc.get("step")
    step_text = f"step {step + 1}" if isinstance(step, int) else "step ?"
    uid = str(doc.get("burnin") or "unknown burn-in")
    cv.text(12, 10, _fit(f"IV scan  {uid}  {step_text}", (width - 24) // (CELL_W * s)), INK, s)
    temp, what = scan_temperature(doc)
    temp_text = (
        f"T = {temp:.1f} °C ({'module mean' if what == 'module' else 'chiller bath'})"
        if temp is not None
        else "T unknown"
    )
    sub = [temp_text]
    if doc.get("profile"):
        sub.append(f"profile {doc['profile']}")
    ts = _number(doc.get("ts"))
    if ts is not None:
        sub.append(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)))
    if doc.get("interrupted"):
        sub.append(f"interrupted: {doc['interrupted']}")
    cv.text(12, 10 + CELL_H * s + 4, _fit("   ".join(sub), (width - 24) // (CELL_W * s)), MUTED, s)

    # grid, axes, ticks and numbers
    v_step = v_ticks[1] - v_ticks[0] if len(v_ticks) > 1 else 1.0
    i_step = i_ticks[1] - i_ticks[0] if len(i_ticks) > 1 else 1.0
    for v in v_ticks:
        x, _ = frame.to_px(v, 0)
        cv.line(x, frame.top, x, frame.bottom, GRID)
        cv.line(x, frame.bottom, x, frame.bottom + 6, INK)
        label = tick_label(v, v_step)
        cv.text(x - text_width(label, s) // 2, frame.bottom + 10, label, INK, s)
    for i in i_ticks:
        _, y = frame.to_px(0, i)
        cv.line(frame.left, y, frame.right, y, GRID)
        cv.line(frame.left - 6, y, frame.left, y, INK)
        label = tick_label(i, i_step)
        cv.text(frame.left - 10 - text_width(label, s), y - 7, label, INK, s)
    cv.line(frame.left, frame.top, frame.left, frame.bottom, INK, 2)
    cv.line(frame.left, frame.bottom, frame.right, frame.bottom, INK, 2)
    x_title = "|VMon| (V)"
    cv.text((frame.left + frame.right - text_width(x_title, s)) // 2, frame.bottom + 40, x_title, INK, s)
    y_title = "|IMon| (µA)"
    cv.text_up(14, (frame.top + frame.bottom + text_width(y_title, s)) // 2, y_title, INK, s)

    # curves: lines first, then a square on every point, so the points stay visible where curves cross. Squares
    # come in three sizes, largest drawn first: modules that measured the same point show as nested squares
    for c, color in zip(cs, colors, strict=True):
        px = [frame.to_px(v, i) for v, i in c.points]
        for (x0, y0), (x1, y1) in itertools.pairwise(px):
            cv.line(x0, y0, x1, y1, color, 2)
    by_size = sorted(range(len(cs)), key=lambda k: -marker_half(k))
    for k in by_size:
        half = marker_half(k)
        for x, y in (frame.to_px(v, i) for v, i in cs[k].points):
            cv.rect(x - half, y - half, x + half, y + half, colors[k])

    # legend: swatch, module name and how its scan ended (two lines each; one line each when many modules)
    lx, ly = frame.right + 24, frame.top
    max_chars = (width - lx - 26 - 6) // (CELL_W * s)
    two_lines = len(cs) * (2 * CELL_H * s + 10) <= height - ly - 10
    if not cs:
        cv.text(lx, ly, "no modules", MUTED, s)
    for k, (c, color) in enumerate(zip(cs, colors, strict=True)):
        if not two_lines and ly + 2 * CELL_H * s > height - 10:
            cv.text(lx, ly, f"+{len(cs) - k} more", MUTED, s)
            break
        how = c.outcome if c.stop_v is None else f"{c.outcome} at {c.stop_v:.0f} V"
        if not c.points:
            how = f"{c.outcome}, no points"
        cv.rect(lx, ly + 2, lx + 18, ly + 14, color)
        if two_lines:
            cv.text(lx + 26, ly, _fit(c.module, max_chars), INK, s)
            cv.text(lx + 26, ly + CELL_H * s, _fit(how, max_chars), MUTED, s)
            ly += 2 * CELL_H * s + 10
        else:
            x = cv.text(lx + 26, ly, _fit(c.module, max_chars), INK, s)
            room = max_chars - len(_fit(c.module, max_chars)) - 1
            if room >= 4:
                cv.text(x + CELL_W * s, ly, _fit(c.outcome, room), MUTED, s)
            ly += CELL_H * s + 4
    return cv, frame, colors


def render_iv_png(doc: Mapping[str, Any], width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """The PNG of an IV scan document (see the module docstring)."""
    cv, _, _ = plot_iv(doc, width, height)
    return encode_png(cv.width, cv.height, cv.pixels)
