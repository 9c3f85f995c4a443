"""The timeline of one asset as SVG: a lane per ingested stream, and the aligner's windows.

Streams are drawn on reference time (their span, or one span per clock segment; notes as
ticks) and coloured by modality. The windows, already aggregated into bins by
:mod:`mmdata.report.build`, get up to three lanes: quality (the worst flag in the bin, else
coverage), the majority label and the majority split (when the dataset was built). Each
lane's marks carry a tooltip with the bin's counts; legends are grouped per lane kind.

>>> label_color("normal", ["bearing_wear", "normal"])
'#9cc5a1'
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmdata.report import plots
from mmdata.report.build import COVERAGE, FLAGS, Absent, AssetTimeline, Timeline, WindowBins
from mmdata.report.plots import PALETTE, fmt_num
from mmdata.timebase import ns_to_datetime

__all__ = ["asset_svg", "label_color", "when"]

_MOD_COLORS = {
    "sensor": PALETTE[0],
    "audio": PALETTE[3],
    "image": PALETTE[6],
    "video": PALETTE[6],
    "text": PALETTE[8],
}
_SPLIT_COLORS = {
    "train": PALETTE[0],
    "validation": PALETTE[5],
    "test": PALETTE[2],
    "(not in dataset)": "#ececec",
}
_QUALITY = (
    ("full coverage", "#59a14f"),
    ("partial coverage", "#a6d096"),
    ("gap, stale or missing modality", "#f28e2b"),
    ("clock uncertain or over tolerance", "#e15759"),
)


def when(ns: int) -> str:
    """A reference time for people: ``2026-03-01 08:00:00.123 UTC`` (ms resolution)."""
    d = ns_to_datetime(int(ns))
    return f"{d:%Y-%m-%d %H:%M:%S}.{d.microsecond // 1000:03d} UTC"


def _quality_color(bins: WindowBins, k: int) -> tuple[str, str]:
    f = {name: int(bins.flags[name][k]) for name in FLAGS}
    covs = [float(bins.coverage[m][k]) for m in COVERAGE if not np.isnan(bins.coverage[m][k])]
    if f["clock_uncertain"] or f["exceeds_tolerance"]:
        color = _QUALITY[3][1]
    elif f["gap"] or f["stale"] or f["missing_modality"]:
        color = _QUALITY[2][1]
    elif covs and min(covs) < 0.95:
        color = _QUALITY[1][1]
    else:
        color = _QUALITY[0][1]
    flagged = ", ".join(f"{v} {name}" for name, v in f.items() if v)
    cov = ", ".join(
        f"{m} {bins.coverage[m][k]:.2f}" for m in COVERAGE if not np.isnan(bins.coverage[m][k])
    )
    return color, f"flags: {flagged or 'none'}; mean coverage: {cov or 'n/a'}"


def _majority(counts: dict[str, np.ndarray], k: int) -> tuple[str, str]:
    here = {name: int(v[k]) for name, v in counts.items() if int(v[k])}
    best = max(here.items(), key=lambda kv: kv[1])[0] if here else ""
    return best, ", ".join(f"{name} {n}" for name, n in here.items())


def asset_svg(at: AssetTimeline, tl: Timeline, clocks: dict[str, Any] | Absent) -> str:
    devices = {} if isinstance(clocks, Absent) else clocks.get("devices", {})
    lanes: list[plots.Lane] = []
    times: list[int] = []
    for s in at.lanes:
        color = _MOD_COLORS.get(s.modality, PALETTE[9])
        marks = [
            plots.Mark(a, b, color, f"{s.stream_id}: {when(a)} to {when(b)}") for a, b in s.spans
        ]
        marks += [plots.Mark(t, t, color, f"{n} events at {when(t)}") for t, n in s.ticks]
        times += [t for m in marks for t in (m.start_ns, m.end_ns)]
        d = devices.get(s.device_id, {})
        clock = (
            f"offset {d.get('offset_ns', 0) / 1e6:+.3f} ms, drift "
            f"{fmt_num(d.get('drift_ppm'), 3)} ppm ({d.get('evidence', '?')})"
            if d
            else "no clock model"
        )
        flags = ", ".join(f"{k} {v}" for k, v in s.flags.items())
        tip = (
            f"{s.stream_id} ({s.modality}): {s.rows:,} rows, {s.segments} segment(s); "
            f"device {s.device_id}: {clock}" + (f"; flags: {flags}" if flags else "")
        )
        label = (
            s.stream_id[len(at.asset_id) + 1 :]
            if s.stream_id.startswith(at.asset_id + ".")
            else s.stream_id
        )
        lanes.append(plots.Lane(f"{label} ({s.modality})", marks, tip, "streams"))
    legend: list[tuple[str, list[tuple[str, str]]]] = [
        (
            "streams",
            [
                (c, m)
                for m, c in _MOD_COLORS.items()
                if m != "video" and any(s.modality == m for s in at.lanes)
            ],
        )
    ]
    b = at.bins
    if b is not None:
        times += [int(b.start_ns[0]), int(b.end_ns.max())]
        quality, labels, splits = [], [], []
        for k in range(len(b.n)):
            a, z = int(b.start_ns[k]), int(b.end_ns[k])
            span = f"{when(a)} to {when(z)}: {int(b.n[k])} windows"
            color, tip = _quality_color(b, k)
            quality.append(plots.Mark(a, z, color, f"{span}; {tip}"))
            if b.labels:
                best, tip = _majority(b.labels, k)
                labels.append(plots.Mark(a, z, label_color(best, tl.classes), f"{span}; {tip}"))
                best, tip = _majority(b.splits, k)
                splits.append(
                    plots.Mark(a, z, _SPLIT_COLORS.get(best, "#ececec"), f"{span}; {tip}")
                )
        lanes.append(plots.Lane("quality (flags, coverage)", quality, "", "windows"))
        legend.append(("quality", [(c, name) for name, c in _QUALITY]))
        if labels:
            lanes.append(plots.Lane("label (majority)", labels, "", "windows"))
            lanes.append(plots.Lane("split", splits, "", "windows"))
            names = [n for n in [*tl.classes, "(unlabeled)", "(not in dataset)"] if n in b.labels]
            names += sorted(set(b.labels) - set(names))
            legend.append(("label", [(label_color(n, tl.classes), n) for n in names]))
            legend.append(("split", [(c, s) for s, c in _SPLIT_COLORS.items() if s in b.splits]))
    if not times:
        return '<p class="muted">No data on this asset\'s timeline.</p>'
    return plots.timeline(
        f"timeline-{at.asset_id}",
        f"Timeline of {at.asset_id}",
        lanes,
        min(times),
        max(times),
        legend=legend,
    )


def label_color(name: str, classes: list[str]) -> str:
    if name in ("(unlabeled)", "(not in dataset)", ""):
        return {"(unlabeled)": "#bdbdbd", "(not in dataset)": "#ececec"}.get(name, "#ffffff")
    if name == "normal":
        return "#9cc5a1"
    rest = [c for c in classes if c != "normal"]
    idx = rest.index(name) if name in rest else len(rest) + sum(map(ord, name))
    return (
        PALETTE[1],
        PALETTE[2],
        PALETTE[6],
        PALETTE[0],
        PALETTE[8],
        PALETTE[3],
        PALETTE[7],
        PALETTE[5],
    )[idx % 8]
