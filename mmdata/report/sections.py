"""The report's sections as HTML fragments, one function per section.

Each takes the collected :class:`~mmdata.report.build.RunReport` and returns escaped HTML
with its plots inline; a part that is :class:`~mmdata.report.build.Absent` renders as a
``stage not run`` (or failed / unreadable) note. Only counts, flags, timestamps, ids and
metrics are shown — never notes, frames, transcripts or model answers.

>>> _table(["a"], [[1234]], [True])
'<table><thead><tr><th>a</th></tr></thead><tbody><tr><td class="n">1,234</td></tr></tbody></table>'
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from mmdata.report import plots
from mmdata.report.build import (
    COVERAGE,
    FLAGS,
    MAX_BINS,
    STAGE_ORDER,
    Absent,
    QuarantineGroup,
    RunReport,
)
from mmdata.report.markdown import markdown_to_html
from mmdata.report.plots import PALETTE, fmt_num
from mmdata.report.timeline import asset_svg, when

__all__ = ["SECTIONS", "render_sections"]

SECTIONS = (
    ("stages", "Stages"),
    ("timeline", "Timeline"),
    ("clocks", "Clocks"),
    ("coverage", "Coverage"),
    ("audit", "PII audit"),
    ("dataset", "Dataset"),
    ("features", "Features"),
    ("training", "Training"),
    ("evaluation", "Evaluation"),
    ("ablation", "Ablation"),
)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


# -- helpers ---------------------------------------------------------------------------
def _not_run(part: Absent) -> str:
    return f'<p class="not-run">{_e(part.reason)}</p>'


def _table(
    header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool] = ()
) -> str:
    """Escaped table; ``numeric[j]`` right-aligns column ``j`` (numbers via fmt_num)."""
    th = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        tds = []
        for j, v in enumerate(row):
            num = j < len(numeric) and numeric[j]
            text = fmt_num(v) if num and (v is None or isinstance(v, int | float)) else v
            tds.append(f'<td class="n">{_e(text)}</td>' if num else f"<td>{_e(text)}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _m3(x: Any) -> str:
    """A metric in [0, 1] with three decimals."""
    return "n/a" if x is None else f"{float(x):.3f}"


def _signed(x: Any) -> str:
    """A metric difference with its sign and three decimals."""
    return "n/a" if x is None else f"{float(x):+.3f}"


def _ms(ns: Any, sign: bool = False) -> str:
    """Nanoseconds as milliseconds with three decimals (``n/a`` when unknown)."""
    if ns is None:
        return "n/a"
    return f"{float(ns) / 1e6:+,.3f}" if sign else f"{float(ns) / 1e6:,.3f}"


# -- sections --------------------------------------------------------------------------
def _stages(rep: RunReport) -> str:
    stages: dict[str, Any] = rep.manifest.get("stages", {})
    names = [s for s in STAGE_ORDER if s in stages] + sorted(set(stages) - set(STAGE_ORDER))
    rows, bars = [], []
    for name in names:
        rec = stages[name]
        counts = rec.get("counts") or {}
        cin, cout, cq = (counts.get(k) for k in ("in", "out", "quarantined"))
        started = when(int(rec["started_ns"])) if rec.get("started_ns") else "-"
        elapsed = None if rec.get("elapsed_ns") is None else round(rec["elapsed_ns"] / 1e9, 2)
        rows.append(
            [
                name,
                rec.get("status", "?"),
                started,
                elapsed,
                cin,
                cout,
                cq,
                (rec.get("error") or "")[:300],
            ]
        )
        if counts:
            bars.append(
                plots.StackRow(
                    name, int(cin or 0), int(cout or 0), int(cq or 0), rec.get("status", "?")
                )
            )
    missing = [s for s in STAGE_ORDER if s not in stages]
    body = _table(
        ["stage", "status", "started (UTC)", "seconds", "in", "out", "quarantined", "error"],
        rows,
        [False, False, False, True, True, True, True],
    )
    if missing:
        body += f'<p class="muted">Not run: {_e(", ".join(missing))}.</p>'
    if bars:
        body += plots.stacked_bars("stage-counts", "Items out and quarantined per stage", bars)
    body += "<h3>Quarantine</h3>"
    if isinstance(rep.quarantine, Absent):
        body += _not_run(rep.quarantine)
    elif not any(g.count for g in rep.quarantine):
        body += "<p>No item was quarantined.</p>"
    else:
        body += _quarantine_table(rep.quarantine)
    return body


def _quarantine_table(groups: list[QuarantineGroup]) -> str:
    rows = [[g.stage, g.error_class, g.count, g.example] for g in groups if g.count]
    return (
        _table(
            ["stage", "error class", "items", "first message"], rows, [False, False, True, False]
        )
        + '<p class="muted">All rows: <code>quarantine/&lt;stage&gt;.parquet</code>.</p>'
    )


def _timeline(rep: RunReport) -> str:
    tl = rep.timeline
    if isinstance(tl, Absent):
        return _not_run(tl)
    notes = []
    if not tl.reference_time:
        notes.append("No clock models (sync not run): streams are shown in device time.")
    if tl.windows is not None:
        notes.append(f"Windows: {tl.windows.reason}.")
    elif tl.labels is not None:
        notes.append(f"Labels and splits: dataset {tl.labels.reason}.")
    body = "".join(f'<p class="not-run">{_e(n)}</p>' for n in notes)
    body += (
        '<p class="muted">One lane per ingested stream (its time span on reference time, '
        "notes as ticks) and the windows of the aligner, aggregated into at most "
        f"{MAX_BINS} bins per lane; hover for details. Times are "
        "offsets from the first item of each asset.</p>"
    )
    for at in tl.assets:
        first = [m for s in at.lanes for m, _ in s.spans] + [
            t for s in at.lanes for t, _ in s.ticks
        ]
        if at.bins is not None:
            first.append(int(at.bins.start_ns[0]))
        start = f" (starts {when(min(first))})" if first else ""
        body += f"<h3>{_e(at.asset_id)}{_e(start)}</h3>" + asset_svg(at, tl, rep.clocks)
    return body


def _clocks(rep: RunReport) -> str:
    c = rep.clocks
    if isinstance(c, Absent):
        return _not_run(c)
    head = (
        f"<p>Reference device <code>{_e(c.get('reference'))}</code>; tolerance "
        f"{_e(fmt_num(c.get('tolerance_ms')))} ms; evidence order "
        f"{_e(', '.join(c.get('evidence_order', [])))}. <code>{_e(c.get('formula', ''))}"
        "</code></p>"
    )
    rows = []
    for dev, d in c.get("devices", {}).items():
        flags = [
            f
            for f in ("clock_uncertain", "exceeds_tolerance", "evidence_conflict", "clock_jump")
            if d.get(f)
        ]
        rows.append(
            [
                dev,
                d.get("evidence"),
                d.get("drift_evidence") or "-",
                _ms(d.get("offset_ns"), sign=True),
                "n/a" if d.get("drift_ppm") is None else f"{float(d['drift_ppm']):+.3f}",
                _ms(d.get("error_bound_ns")),
                _ms(d.get("residual_rms_ns")),
                d.get("n_used"),
                ", ".join(flags) or "-",
                "; ".join(map(str, d.get("reasons") or [])),
            ]
        )
    return head + _table(
        [
            "device",
            "evidence",
            "drift evidence",
            "offset (ms)",
            "drift (ppm)",
            "error bound (ms)",
            "residual rms (ms)",
            "events/pairs used",
            "flags",
            "reasons",
        ],
        rows,
        [False, False, False, True, True, True, True, True],
    )


def _coverage(rep: RunReport) -> str:
    tl = rep.timeline
    if isinstance(tl, Absent):
        return _not_run(tl)
    if tl.windows is not None:
        return _not_run(tl.windows)
    rows = [
        [
            at.asset_id,
            at.windows,
            *(at.coverage_mean.get(m) for m in COVERAGE),
            *(at.flag_counts.get(f, 0) for f in FLAGS),
        ]
        for at in tl.assets
    ]
    return "<p>Mean fraction of each window a modality covers, and windows per flag.</p>" + _table(
        ["asset", "windows", *(f"coverage {m}" for m in COVERAGE), *FLAGS],
        rows,
        [False] + [True] * (1 + len(COVERAGE) + len(FLAGS)),
    )


def _counts(d: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in (d or {}).items()) or "none"


def _audit(rep: RunReport, link: str | None) -> str:
    a = rep.audit
    if isinstance(a, Absent):
        return _not_run(a)
    body = (
        f"<p>{fmt_num(a.get('findings'))} findings anonymized in "
        f"{fmt_num(a.get('records_with_findings'))} records (counts only: the audit holds "
        "keyed hashes, never the text).</p>"
    )
    em = a.get("by_entity_modality", {})
    mods = sorted({m for v in em.values() for m in v})
    body += _table(
        ["entity", *mods, "total"],
        [[e, *(v.get(m, 0) for m in mods), sum(v.values())] for e, v in em.items()],
        [False] + [True] * (len(mods) + 1),
    )
    body += f"<p>By operator: {_e(_counts(a.get('by_operator')))}.</p>"
    unchecked = (a.get("pii_unchecked") or {}).get("records", 0)
    body += (
        f"<p>Records with speech but no transcript (pii_unchecked): {_e(fmt_num(unchecked))}.</p>"
    )
    residual = a.get("residual")
    if residual is None:
        body += (
            '<p class="not-run">Not re-scanned yet: run <code>mmdata audit RUN</code> for '
            "residual findings.</p>"
        )
    else:
        cls = "ok" if not residual.get("findings") else "bad"
        body += (
            f'<p class="{cls}">Residual findings of the re-scan: '
            f"{_e(fmt_num(residual.get('findings')))} in "
            f"{_e(fmt_num(residual.get('records')))} records ("
            f"{_e(_counts(residual.get('by_entity')))}).</p>"
        )
    if link is not None:
        body += f'<p>Reviewer report with sampled findings: <a href="{_e(link)}">{_e(link)}</a></p>'
    return body


def _dataset(rep: RunReport) -> str:
    d = rep.dataset
    if isinstance(d, Absent):
        return _not_run(d)
    r = d["report"]
    leak = r.get("leakage", {})
    verdict = (
        '<span class="ok">passed</span>' if leak.get("ok") else '<span class="bad">FAILED</span>'
    )
    sizes = (r.get("splits") or {}).get("sizes", {})
    body = (
        f"<p>{fmt_num(r.get('samples'))} samples from {fmt_num(r.get('records_used'))} of "
        f"{fmt_num(r.get('records'))} windows; splits: {_e(_counts(sizes))}; leakage check "
        f"{verdict}.</p>"
    )
    if d.get("card"):
        body += f'<h3>Dataset card</h3><div class="card">{markdown_to_html(d["card"])}</div>'
    return body


def _features(rep: RunReport) -> str:
    f = rep.features
    if isinstance(f, Absent):
        return _not_run(f)
    rows = [
        [
            m,
            s.get("encoder"),
            s.get("revision"),
            s.get("items"),
            s.get("computed"),
            s.get("cache_hits"),
            s.get("corrupt_recomputed"),
            s.get("quarantined"),
            s.get("device"),
            "; ".join("x".join(map(str, sh)) for sh in s.get("shapes", [])),
            s.get("seconds"),
        ]
        for m, s in f.get("modalities", {}).items()
    ]
    warm = "warm (nothing computed)" if f.get("warm") else "cold"
    return f"<p>Cache: {_e(warm)}.</p>" + _table(
        [
            "modality",
            "encoder",
            "revision",
            "items",
            "computed",
            "cache hits",
            "corrupt",
            "quarantined",
            "device",
            "shapes",
            "seconds",
        ],
        rows,
        [False, False, False, True, True, True, True, True, False, False, True],
    )


def _curve(history: list[dict[str, Any]], key: str) -> list[tuple[float, float | None]]:
    return [(float(h["step"]), h.get(key)) for h in history if key in h and "step" in h]


def _training(rep: RunReport) -> str:
    t = rep.train
    if isinstance(t, Absent):
        return _not_run(t)
    hist = t["history"]
    s = t.get("summary") or {}
    body = "".join(f"<p>{_e(line)}</p>" for line in s.get("console", []))
    series = [
        plots.Series("train loss", _curve(hist, "loss"), PALETTE[0]),
        plots.Series("validation loss", _curve(hist, "val_loss"), PALETTE[1], markers=True),
    ]
    body += plots.line_chart(
        "train-loss",
        "Training and validation loss",
        series,
        x_label="optimizer step",
        y_label="loss",
    )
    body += plots.line_chart(
        "train-lr",
        "Learning rate",
        [plots.Series("learning rate", _curve(hist, "lr"), PALETTE[4])],
        x_label="optimizer step",
        y_label="lr",
        height=200,
    )
    ev = rep.eval
    if not isinstance(ev, Absent) and ev.get("histories"):
        abl = [
            plots.Series(f"{name} train loss", _curve(h, "loss"), PALETTE[(i + 2) % 10])
            for i, (name, h) in enumerate(ev["histories"].items())
        ]
        abl += [
            plots.Series(
                f"{name} validation loss",
                _curve(h, "val_loss"),
                PALETTE[(i + 2) % 10],
                dashed=True,
                markers=True,
            )
            for i, (name, h) in enumerate(ev["histories"].items())
        ]
        body += "<h3>Single-modality trainings of the ablation</h3>"
        body += plots.line_chart(
            "ablation-loss",
            "Ablation trainings: loss",
            abl,
            x_label="optimizer step",
            y_label="loss",
        )
    return body


def _evaluation(rep: RunReport) -> str:
    ev = rep.eval
    if isinstance(ev, Absent):
        return _not_run(ev)
    m = ev["metrics"]
    body = (
        f"<p>Split <code>{_e(m.get('split'))}</code>, {fmt_num(m.get('n'))} samples; "
        f"primary task <code>{_e(m.get('task'))}</code>: accuracy "
        f"{_e(_m3(m.get('accuracy')))}, macro-F1 {_e(_m3(m.get('macro_f1')))}.</p>"
    )
    body += "".join(f'<p class="muted">note: {_e(n)}</p>' for n in m.get("notes", []))
    for task, tm in m.get("tasks", {}).items():
        body += f"<h3>{_e(task)}</h3>"
        head = {
            k: tm[k]
            for k in (
                "n",
                "accuracy",
                "macro_f1",
                "mean_iou",
                "median_iou",
                "no_change_accuracy",
                "exact_match",
                "unparseable",
            )
            if k in tm
        }
        body += _table(
            list(head),
            [[v if isinstance(v, int) else _m3(v) for v in head.values()]],
            [True] * len(head),
        )
        if "per_class" in tm:
            body += _table(
                ["class", "precision", "recall", "F1", "support"],
                [
                    [
                        c,
                        _m3(p.get("precision")),
                        _m3(p.get("recall")),
                        _m3(p.get("f1")),
                        p.get("support"),
                    ]
                    for c, p in tm["per_class"].items()
                ],
                [False, True, True, True, True],
            )
        cm = tm.get("confusion")
        if cm:
            body += plots.heatmap(
                f"confusion-{task}",
                f"Confusion matrix: {task}",
                cm["rows"],
                cm["columns"],
                cm["matrix"],
                x_label="predicted",
                y_label="true",
            )
    return body


def _ablation(rep: RunReport) -> str:
    ev = rep.eval
    if isinstance(ev, Absent):
        return _not_run(ev)
    ab = ev.get("ablation")
    if ab is None:
        notes = [n for n in ev["metrics"].get("notes", []) if "ablation" in n]
        return _not_run(Absent("; ".join(notes) or "ablation not run (train.eval.ablation: false)"))
    metric = ab.get("metric", "macro_f1")
    rows = [
        [
            r["variant"],
            "+".join(r.get("trained_on", [])),
            "+".join(r.get("masked", [])) or "-",
            _m3(r.get("macro_f1")),
            _m3(r.get("accuracy")),
        ]
        for r in ab.get("rows", [])
    ]
    body = (
        f"<p>{_e(ab.get('task'))} on {_e(ab.get('split'))} ({fmt_num(ab.get('n'))} samples, "
        f"seed {fmt_num(ab.get('seed'))}). Fused minus the best single-modality model "
        f"({_e(ab.get('best_single'))}): {_e(_signed(ab.get('fused_minus_best_single')))}"
        ".</p>"
    )
    body += _table(
        ["variant", "trained on", "masked", "macro-F1", "accuracy"],
        rows,
        [False, False, False, True, True],
    )
    bars = [
        plots.Bar(
            r["variant"],
            r.get(metric),
            PALETTE[0]
            if r["variant"] == "fused"
            else PALETTE[1]
            if "masked" in r["variant"]
            else PALETTE[4],
        )
        for r in ab.get("rows", [])
    ]
    body += plots.bar_chart(
        "ablation",
        f"Ablation: {metric.replace('_', '-')} per variant",
        bars,
        x_label=metric.replace("_", "-"),
        max_value=1.0,
        legend=[
            (PALETTE[0], "fused"),
            (PALETTE[1], "fused, one modality masked"),
            (PALETTE[4], "trained on one modality"),
        ],
    )
    body += "".join(f'<p class="muted">note: {_e(n)}</p>' for n in ab.get("notes", []))
    return body


def render_sections(rep: RunReport, audit_link: str | None) -> dict[str, str]:
    """Section key → HTML body, for every key of :data:`SECTIONS`."""
    return {
        "stages": _stages(rep),
        "timeline": _timeline(rep),
        "clocks": _clocks(rep),
        "coverage": _coverage(rep),
        "audit": _audit(rep, audit_link),
        "dataset": _dataset(rep),
        "features": _features(rep),
        "training": _training(rep),
        "evaluation": _evaluation(rep),
        "ablation": _ablation(rep),
    }
