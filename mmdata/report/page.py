"""The run report page: one self-contained HTML file from :func:`~mmdata.report.build.collect`.

Inline CSS, the sections of :mod:`mmdata.report.sections` with their inline SVG plots, and
two small inline scripts: the first counts script errors and Content-Security-Policy
violations, the last — once the page has laid out — counts the plots the browser rendered
with a non-zero size and sets ``data-ready``, ``data-plots``, ``data-plots-total`` and
``data-errors`` on ``<body>`` (what the headless-browser test reads). The policy forbids
every external fetch, so the file works offline and a stray external reference shows as
an error instead of a silent request. The page carries no timestamp but those in the run's
own files, so the same run always renders to the same bytes.

>>> "data-ready" in READY_SCRIPT
True
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from mmdata import atomic
from mmdata.report.build import Absent, collect
from mmdata.report.sections import SECTIONS, render_sections

__all__ = ["READY_SCRIPT", "render_report", "write_report"]

REPORT_NAME = "report.html"
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fff}
header{background:#1f3b5c;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;opacity:.85}nav{padding:8px 24px;background:#eef2f6;position:sticky;
top:0;z-index:1}nav a{margin-right:14px;color:#1f3b5c}main{padding:0 24px 40px;max-width:1200px}
section{margin-top:28px;border-top:1px solid #ddd}h2{font-size:18px;margin:14px 0 8px}
h3{font-size:15px;margin:14px 0 6px}table{border-collapse:collapse;margin:6px 0 12px;
font-size:13px}th,td{border:1px solid #d5d5d5;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.not-run{color:#8a5a00;background:#fff6e0;border:1px solid #f0d9a0;padding:6px 10px;
display:inline-block}.bad{color:#b00020;font-weight:600}.ok{color:#2e7d32;font-weight:600}
svg.plot{display:block;max-width:100%;height:auto;margin:6px 0 14px}.card{border:1px solid
#ddd;padding:4px 16px;background:#fcfcfc}pre{background:#f5f5f5;padding:8px;overflow:auto}
code{background:#f3f3f3;padding:0 3px}.muted{color:#666}
"""
#: Counts script errors and blocked fetches from the start of the page.
ERRORS_SCRIPT = """window.mmdataErrors=0;
window.addEventListener("error",function(){window.mmdataErrors++;},true);
document.addEventListener("securitypolicyviolation",function(){window.mmdataErrors++;});"""
#: Once laid out: counts the plots with a non-zero box, records their boxes (page
#: coordinates) and the error count, and marks the page ready.
READY_SCRIPT = """(function(){
function done(){
var all=document.querySelectorAll("svg.plot"),shown=0,boxes=[];
for(var i=0;i<all.length;i++){
var r=all[i].getBoundingClientRect();if(r.width>0&&r.height>0)shown++;
boxes.push([Math.round(r.left+window.scrollX),Math.round(r.top+window.scrollY),
Math.round(r.width),Math.round(r.height)]);}
var b=document.body;b.setAttribute("data-plots",String(shown));
b.setAttribute("data-plots-total",String(all.length));
b.setAttribute("data-plot-boxes",JSON.stringify(boxes));
b.setAttribute("data-errors",String(window.mmdataErrors||0));
b.setAttribute("data-ready","1");}
if(document.readyState==="complete"){done();}else{window.addEventListener("load",done);}
})();"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _section(key: str, title: str, body: str) -> str:
    return f'<section id="{key}"><h2>{_e(title)}</h2>\n{body}\n</section>'


def render_report(run_dir: Path | str, out: Path | str | None = None) -> str:
    """The report page of ``run_dir`` as HTML text (``out``: where it will be written,
    for the relative link to the audit report).

    >>> html_text = render_report("runs/demo")  # doctest: +SKIP
    """
    run = Path(run_dir)
    rep = collect(run)
    dest = Path(out) if out is not None else run / REPORT_NAME
    link = None
    if not isinstance(rep.audit, Absent) and rep.audit.get("report_html"):
        target = (run / "audit" / "report.html").resolve()
        link = Path(os.path.relpath(target, dest.resolve().parent)).as_posix()
    m = rep.manifest
    sub = (
        f"mmdata {m.get('mmdata_version', '?')} · config {str(m.get('config_hash') or '-')[:12]}"
        f" · Python {m.get('python', '?')} · {m.get('platform', '?')}"
    )
    parts = render_sections(rep, link)
    nav = "".join(f'<a href="#{k}">{_e(t)}</a>' for k, t in SECTIONS)
    sections = "\n".join(_section(k, t, parts[k]) for k, t in SECTIONS)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>mmdata report: {_e(rep.name)}</title><style>{_CSS}</style>"
        f"<script>{ERRORS_SCRIPT}</script></head>\n"
        f"<body><header><h1>mmdata run report: {_e(rep.name)}</h1><p>{_e(sub)}</p></header>"
        f"<nav>{nav}</nav>\n<main>\n{sections}\n</main>\n"
        f"<script>{READY_SCRIPT}</script></body></html>\n"
    )


def write_report(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Render ``run_dir``'s report and write it atomically to ``out`` (default
    ``RUN/report.html``); return the path written.

    >>> write_report("runs/demo")  # doctest: +SKIP
    PosixPath('runs/demo/report.html')
    """
    dest = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    text = render_report(run_dir, dest)
    atomic.write_text(dest, text)
    return dest
