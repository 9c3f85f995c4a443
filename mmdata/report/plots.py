"""Inline SVG plots for the run report: line charts, horizontal bar charts, a heatmap, stacked
count bars and a timeline of lanes.

Every plot is a string holding one ``<svg class="plot">`` element: no script, no external
font, no CSS file. All text goes through :func:`html.escape`; coordinates are printed with
one decimal, so the same data always gives the same bytes. Tooltips are SVG ``<title>``
children (the browser shows them on hover without any script). Each function bounds its
output (points are thinned, marks are expected pre-aggregated by the caller), so a plot
stays a few tens of kilobytes however long the run.

>>> svg = bar_chart("demo", "Scores", [Bar("fused", 0.8), Bar("image only", None)])
>>> svg.startswith('<svg class="plot" data-plot="demo"') and "n/a" in svg
True
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = [
    "PALETTE",
    "Bar",
    "Lane",
    "Mark",
    "Series",
    "StackRow",
    "bar_chart",
    "fmt_num",
    "heatmap",
    "line_chart",
    "nice_ticks",
    "stacked_bars",
    "timeline",
]

#: Categorical colours (Tableau 10): labels, series, splits.
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_FONT = 'font-family="system-ui, sans-serif" font-size="11"'
_AXIS = "#555"
_GRID = "#e3e3e3"
_MAX_POINTS = 800  # per series; longer series are thinned (first and last point kept)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _f(v: float) -> str:
    """A coordinate: one decimal, no negative zero."""
    s = f"{v:.1f}"
    return "0.0" if s == "-0.0" else s


def fmt_num(x: float | int | None, digits: int = 4) -> str:
    """A number for people: ``n/a`` for None/NaN, thousands separators for integers.

    >>> fmt_num(1234567), fmt_num(0.123456), fmt_num(None), fmt_num(2.0)
    ('1,234,567', '0.1235', 'n/a', '2')
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if isinstance(x, bool):
        return str(x).lower()
    if isinstance(x, int) or (float(x).is_integer() and abs(x) < 1e15):
        return f"{int(x):,}"
    return f"{x:.{digits}g}"


def _truncate(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _open(name: str, title: str, width: int, height: int) -> str:
    return (
        f'<svg class="plot" data-plot="{_e(name)}" xmlns="http://www.w3.org/2000/svg" '
        f'role="img" aria-label="{_e(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT}><title>{_e(title)}</title>'
    )


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{_f(x)}" y="{_f(y)}" text-anchor="{anchor}"{extra}>{_e(text)}</text>'


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]`` (about ``n`` of them).

    >>> nice_ticks(0.0, 1.0)
    [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
    """
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9)
    return [k * step for k in range(start, math.ceil(hi / step - 1e-9) + 1)]


def _legend(items: Sequence[tuple[str, str]], x: float, y: float, width: float) -> str:
    """Swatches with labels, wrapped into rows of ``width``."""
    out, cx, cy = [], x, y
    for color, label in items:
        w = 18 + 6.5 * len(label) + 14
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 16
        out.append(f'<rect x="{_f(cx)}" y="{_f(cy - 9)}" width="12" height="10" fill="{color}"/>')
        out.append(_text(cx + 16, cy, label))
        cx += w
    return "".join(out)


def _legend_rows(items: Sequence[tuple[str, str]], width: float) -> int:
    rows, cx = 1, 0.0
    for _, label in items:
        w = 18 + 6.5 * len(label) + 14
        if cx + w > width and cx > 0:
            rows, cx = rows + 1, 0.0
        cx += w
    return rows if items else 0


# -- line chart ------------------------------------------------------------------------
@dataclass(frozen=True)
class Series:
    """One line: points ``(x, y)`` (None or NaN y values leave a gap)."""

    name: str
    points: Sequence[tuple[float, float | None]]
    color: str = PALETTE[0]
    dashed: bool = False
    markers: bool = False


def _thin(points: Sequence[tuple[float, float | None]]) -> list[tuple[float, float | None]]:
    if len(points) <= _MAX_POINTS:
        return list(points)
    stride = math.ceil(len(points) / _MAX_POINTS)
    kept = list(points[::stride])
    if kept[-1] != points[-1]:
        kept.append(points[-1])
    return kept


def line_chart(
    name: str,
    title: str,
    series: Sequence[Series],
    *,
    x_label: str,
    y_label: str,
    width: int = 720,
    height: int = 300,
) -> str:
    """Lines (with optional markers) on shared axes, with a legend.

    >>> s = Series("loss", [(1, 2.0), (2, 1.5), (3, None), (4, 1.0)])
    >>> "<path" in line_chart("loss", "Loss", [s], x_label="step", y_label="loss")
    True
    """
    series = [Series(s.name, _thin(s.points), s.color, s.dashed, s.markers) for s in series]
    pts = [(x, y) for s in series for x, y in s.points if y is not None and math.isfinite(y)]
    legend = [(s.color, s.name) for s in series]
    left, right, top = 62.0, 16.0, 12.0
    bottom = 40.0 + 16 * _legend_rows(legend, width - left - right)
    pw, ph = width - left - right, height - top - bottom
    out = [_open(name, title, width, height)]
    if not pts:
        out.append(_text(width / 2, height / 2, "no data", "middle", ' fill="#888"'))
        return "".join(out) + "</svg>"
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) or 1) * 0.1, y1 + (abs(y1) or 1) * 0.1
    yt = nice_ticks(y0, y1)
    y0, y1 = min(y0, yt[0]), max(y1, yt[-1])

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    for t in yt:
        out.append(
            f'<line x1="{_f(left)}" x2="{_f(left + pw)}" y1="{_f(sy(t))}" '
            f'y2="{_f(sy(t))}" stroke="{_GRID}"/>'
        )
        out.append(_text(left - 6, sy(t) + 4, fmt_num(round(t, 10)), "end"))
    for t in nice_ticks(x0, x1, 6):
        if x0 <= t <= x1:
            out.append(_text(sx(t), top + ph + 14, fmt_num(round(t, 10)), "middle"))
    out.append(
        f'<rect x="{_f(left)}" y="{_f(top)}" width="{_f(pw)}" height="{_f(ph)}" '
        f'fill="none" stroke="{_AXIS}"/>'
    )
    out.append(_text(left + pw / 2, top + ph + 30, x_label, "middle"))
    out.append(
        _text(
            14, top + ph / 2, y_label, "middle", f' transform="rotate(-90 14 {_f(top + ph / 2)})"'
        )
    )
    for s in series:
        d, pen = [], "M"
        for x, y in s.points:
            if y is None or not math.isfinite(y):
                pen = "M"
                continue
            d.append(f"{pen}{_f(sx(x))} {_f(sy(y))}")
            pen = "L"
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        out.append(
            f'<path d="{" ".join(d)}" fill="none" stroke="{s.color}" '
            f'stroke-width="1.6"{dash}><title>{_e(s.name)}</title></path>'
        )
        if s.markers:
            for x, y in s.points:
                if y is not None and math.isfinite(y):
                    out.append(
                        f'<circle cx="{_f(sx(x))}" cy="{_f(sy(y))}" r="2.6" '
                        f'fill="{s.color}"><title>{_e(s.name)} at {_e(fmt_num(x))}: '
                        f"{_e(fmt_num(y))}</title></circle>"
                    )
    out.append(_legend(legend, left, height - 16 * _legend_rows(legend, pw) + 4, pw))
    return "".join(out) + "</svg>"


# -- horizontal bars -------------------------------------------------------------------
@dataclass(frozen=True)
class Bar:
    """One bar; ``value`` None is drawn as ``n/a``."""

    label: str
    value: float | None
    color: str = PALETTE[0]
    note: str = ""


def bar_chart(
    name: str,
    title: str,
    bars: Sequence[Bar],
    *,
    x_label: str = "",
    max_value: float | None = None,
    legend: Sequence[tuple[str, str]] = (),
    width: int = 720,
) -> str:
    """Horizontal bars with their values printed (``max_value``: the axis end, e.g. 1.0;
    ``legend``: (colour, meaning) pairs drawn below)."""
    left, right, row = 190.0, 60.0, 22.0
    n_legend = _legend_rows(legend, width - left - right)
    height = int(24 + row * len(bars) + 34 + 16 * n_legend)
    pw = width - left - right
    vals = [b.value for b in bars if b.value is not None and math.isfinite(b.value)]
    top_v = max_value if max_value is not None else max([*vals, 0.0]) or 1.0
    out = [_open(name, title, width, height)]
    for t in nice_ticks(0.0, top_v, 5):
        if t <= top_v + 1e-12:
            x = left + t / top_v * pw
            out.append(
                f'<line x1="{_f(x)}" x2="{_f(x)}" y1="14" y2="{_f(20 + row * len(bars))}" '
                f'stroke="{_GRID}"/>'
            )
            out.append(_text(x, 32 + row * len(bars), fmt_num(round(t, 10)), "middle"))
    for i, b in enumerate(bars):
        y = 18 + i * row
        out.append(_text(left - 8, y + 12, _truncate(b.label, 30), "end"))
        tip = f"{b.label}: {fmt_num(b.value)}" + (f" ({b.note})" if b.note else "")
        if b.value is None or not math.isfinite(b.value):
            out.append(_text(left + 4, y + 12, "n/a", extra=' fill="#888"'))
            continue
        w = max(b.value, 0.0) / top_v * pw
        out.append(
            f'<rect x="{_f(left)}" y="{_f(y)}" width="{_f(w)}" height="{_f(row - 6)}" '
            f'fill="{b.color}"><title>{_e(tip)}</title></rect>'
        )
        out.append(_text(left + w + 4, y + 12, fmt_num(b.value, 3)))
    axis_end = 24 + row * len(bars) + 34
    out.append(_text(left + pw / 2, axis_end - 6, x_label, "middle"))
    if legend:
        out.append(_legend(legend, left, axis_end + 12, pw))
    return "".join(out) + "</svg>"


# -- heatmap ---------------------------------------------------------------------------
def _blend(frac: float) -> str:
    """White → dark blue."""
    frac = min(max(frac, 0.0), 1.0)
    lo, hi = (255, 255, 255), (31, 74, 140)
    r, g, b = (round(a + (c - a) * frac) for a, c in zip(lo, hi, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap(
    name: str,
    title: str,
    rows: Sequence[str],
    cols: Sequence[str],
    matrix: Sequence[Sequence[int]],
    *,
    x_label: str,
    y_label: str,
) -> str:
    """A count matrix; cells shaded by their share of the row, counts printed.

    >>> svg = heatmap("cm", "Confusion", ["a", "b"], ["a", "b"], [[3, 1], [0, 2]],
    ...               x_label="predicted", y_label="true")
    >>> svg.count("<rect") >= 4
    True
    """
    cell = 44.0 if max(len(rows), len(cols)) <= 10 else 26.0
    left = 24 + 7.0 * min(max((len(r) for r in rows), default=4), 28)
    top = 16 + 6.0 * min(max((len(c) for c in cols), default=4), 28)
    width = int(left + cell * len(cols) + 20 + 4.6 * min(len(cols[-1]) if cols else 0, 28))
    height = int(top + cell * len(rows) + 36)
    out = [_open(name, title, width, height)]
    for j, c in enumerate(cols):
        x = left + (j + 0.5) * cell
        out.append(
            _text(
                x,
                top - 6,
                _truncate(c, 28),
                "start",
                f' transform="rotate(-45 {_f(x)} {_f(top - 6)})"',
            )
        )
    for i, r in enumerate(rows):
        y = top + i * cell
        total = sum(matrix[i]) if i < len(matrix) else 0
        out.append(_text(left - 6, y + cell / 2 + 4, _truncate(r, 28), "end"))
        for j, c in enumerate(cols):
            v = matrix[i][j] if i < len(matrix) and j < len(matrix[i]) else 0
            frac = v / total if total else 0.0
            fill = _blend(frac)
            ink = "#fff" if frac > 0.55 else "#222"
            tip = f"true {r}, predicted {c}: {v} of {total}"
            out.append(
                f'<rect x="{_f(left + j * cell)}" y="{_f(y)}" width="{_f(cell)}" '
                f'height="{_f(cell)}" fill="{fill}" stroke="#fff">'
                f"<title>{_e(tip)}</title></rect>"
            )
            out.append(
                _text(
                    left + (j + 0.5) * cell,
                    y + cell / 2 + 4,
                    fmt_num(v),
                    "middle",
                    f' fill="{ink}"',
                )
            )
    out.append(_text(left + cell * len(cols) / 2, height - 8, x_label, "middle"))
    out.append(
        _text(
            10,
            top + cell * len(rows) / 2,
            y_label,
            "middle",
            f' transform="rotate(-90 10 {_f(top + cell * len(rows) / 2)})"',
        )
    )
    return "".join(out) + "</svg>"


# -- stacked count bars ----------------------------------------------------------------
@dataclass(frozen=True)
class StackRow:
    """One stage: items in, out and quarantined (a bar of out and quarantined shares)."""

    label: str
    in_: int
    out: int
    quarantined: int
    status: str = "complete"


def stacked_bars(name: str, title: str, rows: Sequence[StackRow], width: int = 720) -> str:
    """Per row a 100 % bar split into out (green) and quarantined (red), counts printed."""
    left, right, row = 110.0, 250.0, 22.0
    height = int(16 + row * len(rows) + 30)
    pw = width - left - right
    out = [_open(name, title, width, height)]
    for i, r in enumerate(rows):
        y = 10 + i * row
        out.append(_text(left - 8, y + 12, _truncate(r.label, 16), "end"))
        total = max(r.in_, r.out + r.quarantined, 1)
        w_out, w_q = r.out / total * pw, r.quarantined / total * pw
        tip = f"{r.label}: in {r.in_:,}, out {r.out:,}, quarantined {r.quarantined:,}"
        out.append(
            f'<rect x="{_f(left)}" y="{_f(y)}" width="{_f(pw)}" height="{_f(row - 6)}" '
            f'fill="#f1f1f1"><title>{_e(tip)}</title></rect>'
        )
        out.append(
            f'<rect x="{_f(left)}" y="{_f(y)}" width="{_f(w_out)}" '
            f'height="{_f(row - 6)}" fill="{PALETTE[4]}"><title>{_e(tip)}</title></rect>'
        )
        if r.quarantined:
            out.append(
                f'<rect x="{_f(left + w_out)}" y="{_f(y)}" width="{_f(max(w_q, 1.5))}" '
                f'height="{_f(row - 6)}" fill="{PALETTE[2]}"><title>{_e(tip)}</title>'
                "</rect>"
            )
        label = f"{r.out:,} / {r.in_:,} out" + (
            f", {r.quarantined:,} quarantined" if r.quarantined else ""
        )
        if r.status != "complete":
            label = r.status
        out.append(_text(left + pw + 8, y + 12, label))
    out.append(_legend([(PALETTE[4], "out"), (PALETTE[2], "quarantined")], left, height - 8, pw))
    return "".join(out) + "</svg>"


# -- timeline --------------------------------------------------------------------------
@dataclass(frozen=True)
class Mark:
    """A span ``[start_ns, end_ns)`` on a lane (a tick when they are equal)."""

    start_ns: int
    end_ns: int
    color: str
    tip: str = ""


@dataclass(frozen=True)
class Lane:
    """One row of the timeline."""

    label: str
    marks: Sequence[Mark] = field(default_factory=tuple)
    tip: str = ""
    group: str = ""  # a heading drawn above the first lane of each group


_TIME_STEPS_S = (
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)


def _clock(seconds: float, step: float) -> str:
    """``+m:ss`` / ``+h:mm:ss`` / ``+Nd hh:mm`` offsets from the timeline's start."""
    sign = "-" if seconds < 0 else "+"
    s = abs(seconds)
    if step < 1:
        return f"{sign}{s:.1f}s"
    s_int = round(s)
    d, rem = divmod(s_int, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{sign}{d}d {h:02d}:{m:02d}"
    if h:
        return f"{sign}{h}:{m:02d}:{sec:02d}"
    return f"{sign}{m}:{sec:02d}"


def timeline(
    name: str,
    title: str,
    lanes: Sequence[Lane],
    t0_ns: int,
    t1_ns: int,
    *,
    legend: Sequence[tuple[str, Sequence[tuple[str, str]]]] = (),
    width: int = 960,
) -> str:
    """Lanes of marks against reference time, labelled as offsets from ``t0_ns``.

    >>> lane = Lane("cam", [Mark(0, 60_000_000_000, "#4e79a7", "frames")])
    >>> svg = timeline("t", "Timeline", [lane], 0, 60_000_000_000, legend=[("streams", [
    ...     ("#4e79a7", "sensor")])])
    >>> "+1:00" in svg and ">sensor<" in svg
    True
    """
    left, right, lane_h, gap, group_h = 250.0, 16.0, 14.0, 5.0, 18.0
    pw = width - left - right
    span = max(t1_ns - t0_ns, 1)
    n_groups = len({ln.group for ln in lanes if ln.group})
    body = len(lanes) * (lane_h + gap) + n_groups * group_h
    axis_y = 10 + body + 4
    rows = sum(_legend_rows(items, pw) for _, items in legend if items)
    height = int(axis_y + 28 + 16 * rows)
    out = [_open(name, title, width, height)]

    def sx(t: int) -> float:
        return left + (t - t0_ns) / span * pw

    step = next((s for s in _TIME_STEPS_S if span / 1e9 / s <= 10), _TIME_STEPS_S[-1])
    k = 0
    while k * step * 1e9 <= span:
        x = sx(t0_ns + int(k * step * 1e9))
        out.append(f'<line x1="{_f(x)}" x2="{_f(x)}" y1="8" y2="{_f(axis_y)}" stroke="{_GRID}"/>')
        out.append(_text(x, axis_y + 14, _clock(k * step, step), "middle"))
        k += 1
    y, group = 10.0, None
    for ln in lanes:
        if ln.group and ln.group != group:
            group = ln.group
            out.append(_text(6, y + 12, _truncate(ln.group, 60), extra=' font-weight="bold"'))
            y += group_h
        label = _text(left - 8, y + lane_h - 3, _truncate(ln.label, 38), "end")
        if ln.tip:
            label = f"<g><title>{_e(ln.tip)}</title>{label}</g>"
        out.append(label)
        out.append(
            f'<rect x="{_f(left)}" y="{_f(y)}" width="{_f(pw)}" height="{_f(lane_h)}" '
            f'fill="#f7f7f7"/>'
        )
        for m in ln.marks:
            x0 = sx(max(m.start_ns, t0_ns))
            x1 = max(sx(min(m.end_ns, t1_ns)), x0 + 1.2)
            tip = f"<title>{_e(m.tip)}</title>" if m.tip else ""
            out.append(
                f'<rect x="{_f(x0)}" y="{_f(y + 1)}" width="{_f(x1 - x0)}" '
                f'height="{_f(lane_h - 2)}" fill="{m.color}">{tip}</rect>'
            )
        y += lane_h + gap
    out.append(
        f'<line x1="{_f(left)}" x2="{_f(left + pw)}" y1="{_f(axis_y)}" '
        f'y2="{_f(axis_y)}" stroke="{_AXIS}"/>'
    )
    ly = axis_y + 36
    for heading, items in legend:
        if items:
            out.append(_text(left - 8, ly, heading, "end", ' fill="#666"'))
            out.append(_legend(items, left, ly, pw))
            ly += 16 * _legend_rows(items, pw)
    return "".join(out) + "</svg>"
