"""The reviewer's HTML report: one self-contained file (inline CSS and SVG, images as
``data:`` URIs, no scripts or external assets) with counts per entity type and modality,
records whose speech went unchecked, residual findings of the re-scan, and a reproducible
random sample of findings shown in context *after* scrubbing: the scrubbed text around the
replacement token, a crop of the scrubbed image, the scrubbed audio's envelope with the
replaced range shaded. The original never reaches the report (it is built from the
scrubbed output and the audit rows only).

>>> import tempfile, pathlib
>>> from mmdata.scrub.audit import AuditWriter, audit_summary
>>> from mmdata.scrub.findings import Finding
>>> w = AuditWriter("0" * 64)
>>> _ = w.add("r1", [Finding("text", "PERSON", 0.9, "names", "placeholder", "", 5, 8,
...                          field="text[0].text")], out_spans=[(5, 13)])
>>> ctx = text_context("call <PERSON> now", (5, 13))
>>> (ctx.before, ctx.token, ctx.after)
('call ', '<PERSON>', ' now')
>>> p = pathlib.Path(tempfile.mkdtemp()) / "report.html"
>>> write_report(p, audit_summary(w.rows), [SampleItem(w.rows[0], ctx)])
>>> "&lt;PERSON&gt;" in p.read_text()
True
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmdata import atomic
from mmdata.errors import InputDataError
from mmdata.scrub.audio import read_wav
from mmdata.scrub.audit import OPERATOR_TOKEN, AuditRow, pick_sample
from mmdata.scrub.transcript import transcript_from_field

_COLORS = {"text": "#4e79a7", "image": "#f28e2b", "audio": "#59a14f", "metadata": "#b07aa1"}
_MODALITIES = ("text", "image", "audio", "metadata")


@dataclass(frozen=True)
class SampleContext:
    """A finding's surroundings in the *scrubbed* output."""

    before: str = ""  # scrubbed text before the replacement token
    token: str = ""  # the replacement token ("" when its position is unknown)
    after: str = ""
    image_png: bytes | None = None  # crop of the scrubbed image around the box
    envelope: tuple[float, ...] = ()  # peak envelope (0..1) of the scrubbed audio nearby
    span: tuple[float, float] | None = None  # the replaced range, as fractions of envelope
    note: str = ""


@dataclass(frozen=True)
class SampleItem:
    """One sampled audit row and its scrubbed context (None where none could be built)."""

    row: AuditRow
    context: SampleContext | None = None


# --- contexts -------------------------------------------------------------------------------


def text_context(
    scrubbed: str, out_span: tuple[int, int] | None = None, near: int = 0, width: int = 80
) -> SampleContext:
    """Scrubbed text around the token at ``out_span`` (else around position ``near``)."""
    if out_span is not None:
        s, e = (min(max(0, v), len(scrubbed)) for v in out_span)
        token, note = scrubbed[s:e], ""
    else:
        s = e = min(max(0, near), len(scrubbed))
        token, note = "", "token position not recorded; operator tokens highlighted"
    before = ("…" if s > width else "") + scrubbed[max(0, s - width) : s]
    after = scrubbed[e : e + width] + ("…" if len(scrubbed) > e + width else "")
    return SampleContext(before=before, token=token, after=after, note=note)


def image_context(
    scrubbed: bytes, bbox: tuple[int, int, int, int], margin: int = 24, max_side: int = 320
) -> SampleContext:
    """A PNG crop of the scrubbed image around ``bbox`` (pixels only: no metadata)."""
    try:
        with Image.open(io.BytesIO(scrubbed)) as im:
            im.load()
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError):
        return SampleContext(note="scrubbed image does not decode")
    x0, y0, x1, y1 = bbox
    box = (max(0, x0 - margin), max(0, y0 - margin),
           min(rgb.width, x1 + margin), min(rgb.height, y1 + margin))  # fmt: skip
    if box[2] <= box[0] or box[3] <= box[1]:
        return SampleContext(note="box outside the image")
    crop = rgb.crop(box)
    crop.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    crop.save(buf, format="PNG")
    return SampleContext(image_png=buf.getvalue())


def audio_context(
    scrubbed_wav: bytes,
    t0_ns: int,
    t1_ns: int,
    transcript_text: str | None = None,
    out_span: tuple[int, int] | None = None,
    around_ns: int = 1_000_000_000,
) -> SampleContext:
    """The scrubbed audio's envelope around ``[t0_ns, t1_ns)`` (+ the scrubbed transcript)."""
    text = text_context(transcript_text, out_span) if transcript_text else SampleContext()
    try:
        wav = read_wav(scrubbed_wav)
    except InputDataError:
        return SampleContext(text.before, text.token, text.after, note="audio does not decode")
    x = np.abs(wav.as_float()).max(axis=1)
    rate = wav.sample_rate
    a = max(0, (t0_ns - around_ns) * rate // 1_000_000_000)
    b = min(x.size, (t1_ns + around_ns) * rate // 1_000_000_000 + 1)
    if b <= a:
        return SampleContext(text.before, text.token, text.after, note="range outside the audio")
    seg = x[a:b]
    chunks = np.array_split(seg, min(200, seg.size))
    env = tuple(round(float(c.max()), 4) for c in chunks)
    i0 = t0_ns * rate // 1_000_000_000
    i1 = t1_ns * rate // 1_000_000_000
    span = (max(0.0, (i0 - a) / (b - a)), min(1.0, (i1 - a) / (b - a)))
    return SampleContext(text.before, text.token, text.after, envelope=env, span=span,
                         note=text.note)  # fmt: skip


_PATH = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def field_value(record: Mapping[str, Any], field: str) -> Any:
    """The value at a finding's ``field`` path ("text[2].text", "frames[0]", "audio").

    >>> field_value({"text": [{"text": "a"}, {"text": "b"}]}, "text[1].text")
    'b'
    """
    value: Any = record
    for name, index in _PATH.findall(field):
        if name:
            value = value.get(name) if isinstance(value, Mapping) else None
        else:
            ok = isinstance(value, Sequence) and not isinstance(value, str)
            value = value[int(index)] if ok and int(index) < len(value) else None
        if value is None:
            return None
    return value


def _out_span(row: AuditRow) -> tuple[int, int] | None:
    if row.out_start is None or row.out_end is None:
        return None
    return row.out_start, row.out_end


def record_resolver(
    records: Mapping[str, Mapping[str, Any]], transcript_field: str = "transcript"
) -> Callable[[AuditRow], SampleContext | None]:
    """A resolver for :func:`build_sample` over *scrubbed* records keyed by record id.

    Text rows read the scrubbed string at ``row.field``; image rows the ``bytes`` there;
    audio rows the WAV at ``row.field`` and the scrubbed transcript in
    ``record[transcript_field]`` (the record column's word list, or a sidecar JSON string).
    """

    def resolve(row: AuditRow) -> SampleContext | None:
        record = records.get(row.record_id)
        if record is None or not row.field:
            return None
        value = field_value(record, row.field)
        if isinstance(value, Mapping):
            value = value.get("bytes")
        if row.modality == "metadata":
            return SampleContext(note="metadata field removed from the output")
        if row.modality == "text" and isinstance(value, str):
            return text_context(value, _out_span(row), near=row.char_start or 0)
        if row.modality == "image" and isinstance(value, bytes) and row.bbox_x0 is not None:
            bbox = (row.bbox_x0, row.bbox_y0 or 0, row.bbox_x1 or 0, row.bbox_y1 or 0)
            return image_context(value, bbox)
        if row.modality == "audio" and isinstance(value, bytes) and row.t0_ns is not None:
            transcript = transcript_from_field(record.get(transcript_field))
            text = transcript.joined()[0] if transcript is not None else None
            return audio_context(value, row.t0_ns, row.t1_ns or row.t0_ns, text, _out_span(row))
        return None

    return resolve


def build_sample(
    rows: Sequence[AuditRow],
    n: int,
    seed: int,
    resolve: Callable[[AuditRow], SampleContext | None],
) -> list[SampleItem]:
    """Draw ``n`` rows with ``seed`` (see :func:`pick_sample`) and attach their contexts.

    A resolver that fails gives a note with the error class only (messages may quote data).
    """
    items = []
    for row in pick_sample(rows, n, seed):
        try:
            ctx = resolve(row)
        except Exception as err:  # a broken context must not stop the report
            ctx = SampleContext(note=f"context unavailable ({type(err).__name__})")
        items.append(SampleItem(row, ctx))
    return items


# --- HTML -----------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{border:1px solid #ddd;border-radius:6px;
padding:8px 14px;min-width:120px}.card b{display:block;font-size:22px}
.ok{color:#1a7f37}.bad{color:#cf222e}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f6f8fa}
.item{border:1px solid #ddd;border-radius:6px;padding:8px 12px;margin:10px 0}
.meta{color:#555;font-size:12px}.ctx{font-family:ui-monospace,Menlo,monospace;white-space:
pre-wrap;background:#f6f8fa;padding:6px;margin-top:6px}mark.repl{background:#ffd33d}
mark.tok{background:#fff5b1}.note{color:#8a6d3b;font-size:12px}code{font-size:12px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _marked(text: str) -> str:
    out, pos = [], 0
    for m in OPERATOR_TOKEN.finditer(text):
        out += [_e(text[pos : m.start()]), f'<mark class="tok">{_e(m.group())}</mark>']
        pos = m.end()
    return "".join([*out, _e(text[pos:])])


def location(row: AuditRow) -> str:
    """Human-readable location of a row (audio: time range, then transcript characters)."""
    if row.modality == "audio" and row.t0_ns is not None:
        when = f"{row.t0_ns / 1e9:.3f}-{(row.t1_ns or row.t0_ns) / 1e9:.3f} s"
        chars = (
            f" (transcript chars {row.char_start}-{row.char_end})"
            if row.char_start is not None
            else ""
        )
        return when + chars
    if row.char_start is not None:
        return f"chars {row.char_start}-{row.char_end}"
    if row.bbox_x0 is not None:
        return f"box {row.bbox_x0},{row.bbox_y0}-{row.bbox_x1},{row.bbox_y1}"
    if row.t0_ns is not None:
        return f"{row.t0_ns / 1e9:.3f}-{(row.t1_ns or row.t0_ns) / 1e9:.3f} s"
    return "-"


def _bar_chart(data: Mapping[str, Mapping[str, int]], title: str) -> str:
    """Horizontal stacked bars: one bar per key, one colour per modality."""
    if not data:
        return '<p class="meta">none</p>'
    total = {k: sum(v.values()) for k, v in data.items()}
    top = max(total.values()) or 1
    label_w, bar_w, row_h = 190, 420, 22
    parts = [f'<svg width="{label_w + bar_w + 60}" height="{row_h * len(data) + 30}" '
             f'role="img" aria-label="{_e(title)}">']  # fmt: skip
    for i, (key, counts) in enumerate(data.items()):
        y = 4 + i * row_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" '
                     f'font-size="12">{_e(key)}</text>')  # fmt: skip
        x = float(label_w)
        for mod in _MODALITIES:
            n = counts.get(mod, 0)
            if n:
                w = bar_w * n / top
                tip = f"<title>{_e(mod)}: {n}</title>"
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row_h - 6}" '
                             f'fill="{_COLORS[mod]}">{tip}</rect>')  # fmt: skip
                x += w
        parts.append(f'<text x="{x + 4:.1f}" y="{y + 14}" font-size="12">{total[key]}</text>')
    y = 10 + len(data) * row_h
    for j, mod in enumerate(_MODALITIES):
        parts.append(f'<rect x="{label_w + j * 90}" y="{y}" width="10" height="10" '
                     f'fill="{_COLORS[mod]}"/><text x="{label_w + j * 90 + 14}" y="{y + 9}" '
                     f'font-size="11">{mod}</text>')  # fmt: skip
    return "".join(parts) + "</svg>"


def _envelope_svg(ctx: SampleContext) -> str:
    w, h = 400, 50
    n = len(ctx.envelope)
    bars = "".join(
        f'<rect x="{i * w / n:.1f}" y="{h / 2 - v * h / 2:.1f}" width="{max(w / n, 1):.1f}" '
        f'height="{max(v * h, 0.5):.1f}" fill="#59a14f"/>'
        for i, v in enumerate(ctx.envelope)
    )
    shade = ""
    if ctx.span is not None:
        a, b = ctx.span
        shade = (f'<rect x="{a * w:.1f}" y="0" width="{max((b - a) * w, 1):.1f}" height="{h}" '
                 f'fill="#cf222e" fill-opacity="0.18"/>')  # fmt: skip
    return f'<svg width="{w}" height="{h}" role="img" aria-label="waveform">{shade}{bars}</svg>'


def _sample_html(item: SampleItem) -> str:
    r = item.row
    head = (f"<b>{_e(r.entity)}</b> · {_e(r.modality)} · record <code>{_e(r.record_id)}</code>"
            f" · {_e(r.field or '-')} · {_e(location(r))}")  # fmt: skip
    meta = (f'<div class="meta">recognizer {_e(r.recognizer)} · model {_e(r.model or "-")} · '
            f"score {r.score:.2f} · operator {_e(r.operator)} · "
            f"hmac {_e(r.original_hmac[:12] or '-')}</div>")  # fmt: skip
    body = ""
    c = item.context
    if c is None:
        body = '<div class="note">no scrubbed context available</div>'
    else:
        if c.before or c.token or c.after:
            shown = "[kept by config]" if r.operator.endswith("keep") else c.token
            token = f'<mark class="repl">{_e(shown)}</mark>' if c.token else ""
            body += f'<div class="ctx">{_marked(c.before)}{token}{_marked(c.after)}</div>'
        if c.image_png is not None:
            uri = "data:image/png;base64," + base64.b64encode(c.image_png).decode("ascii")
            body += f'<div><img alt="scrubbed crop" src="{uri}"></div>'
        if c.envelope:
            body += f"<div>{_envelope_svg(c)}</div>"
        if c.note:
            body += f'<div class="note">{_e(c.note)}</div>'
    return f'<div class="item">{head}{meta}{body}</div>'


def _residual_html(summary: Mapping[str, Any]) -> str:
    res = summary.get("residual", {})
    if not res.get("findings"):
        return '<p class="ok">No residual findings: the re-scan found no PII in the output.</p>'
    rows = "".join(
        f"<tr><td><code>{_e(i.get('record_id'))}</code></td><td>{_e(i.get('modality'))}</td>"
        f"<td>{_e(i.get('entity'))}</td><td>{_e(i.get('field') or '-')}</td>"
        f"<td>{_e(location(AuditRow.model_validate(i)))}</td><td>{_e(i.get('recognizer'))}</td>"
        f"<td>{float(i.get('score', 0)):.2f}</td></tr>"
        for i in res.get("items", [])
    )
    shown = len(res.get("items", []))
    return (f'<p class="bad">{res["findings"]} residual finding(s) in {res.get("records", 0)} '
            f"record(s) (showing {shown}).</p><table><tr><th>record</th><th>modality</th>"
            f"<th>entity</th><th>field</th><th>location</th><th>recognizer</th><th>score</th>"
            f"</tr>{rows}</table>")  # fmt: skip


def render_report(
    summary: Mapping[str, Any], sample: Sequence[SampleItem], title: str = "PII audit report"
) -> str:
    """The report as one HTML string (see the module docstring)."""
    res = summary.get("residual", {})
    unchecked = summary.get("pii_unchecked", {})
    cards = [("findings", summary.get("findings", 0), ""),
             ("records with findings", summary.get("records_with_findings", 0), ""),
             ("residual findings", res.get("findings", 0), "bad" if res.get("findings") else "ok"),
             ("records with unchecked speech", unchecked.get("records", 0),
              "bad" if unchecked.get("records") else "ok")]  # fmt: skip
    cards_html = "".join(
        f'<div class="card {cls}"><b>{_e(v)}</b>{_e(k)}</div>' for k, v, cls in cards
    )
    by_mod = {m: {m: n} for m, n in summary.get("by_modality", {}).items()}
    ops = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
                  for k, v in summary.get("by_operator", {}).items())  # fmt: skip
    ids = unchecked.get("record_ids", [])
    unchecked_html = (
        "<p>Audio with speech but no (or incomplete) transcript: PII in it was not checked.</p>"
        + "".join(f"<code>{_e(i)}</code> " for i in ids)
        if ids
        else '<p class="ok">None.</p>'
    )
    samples = "".join(_sample_html(i) for i in sample) or '<p class="meta">empty sample</p>'
    meta = (f"schema {_e(summary.get('schema_version', ''))} · config "
            f"{_e(', '.join(h[:12] for h in summary.get('config_hashes', [])) or '-')} · key id "
            f"{_e(', '.join(summary.get('key_ids', [])) or '-')}")  # fmt: skip
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{_e(title)}</h1><p class="meta">{meta}</p>
<div class="cards">{cards_html}</div>
<h2>Findings per entity type</h2>{_bar_chart(summary.get("by_entity_modality", {}), "entities")}
<h2>Findings per modality</h2>{_bar_chart(by_mod, "modalities")}
<h2>Operators applied</h2><table><tr><th>operator</th><th>findings</th></tr>{ops}</table>
<h2>Residual findings (re-scan of the scrubbed output)</h2>{_residual_html(summary)}
<h2>Unchecked speech</h2>{unchecked_html}
<h2>Review sample ({len(sample)} findings, shown after scrubbing)</h2>{samples}
</body></html>
"""


def write_report(
    path: Path | str,
    summary: Mapping[str, Any],
    sample: Sequence[SampleItem],
    title: str = "PII audit report",
) -> None:
    """Atomically write the self-contained HTML report to ``path``."""
    atomic.write_text(path, render_report(summary, sample, title))
