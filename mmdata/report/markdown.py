"""A safe Markdown subset for the dataset card: headings, pipe tables, lists, fenced code,
inline code and bold. Everything is escaped first; no links, images or raw HTML are ever
emitted, so a card cannot inject markup or make the report fetch anything.

>>> markdown_to_html("# Title\\n\\n| a | b |\\n|---|---|\\n| 1 | `<x>` |")
'<h3>Title</h3>\\n<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td><code>&lt;x&gt;</code></td></tr></tbody></table>'
"""

from __future__ import annotations

import html
import re

__all__ = ["markdown_to_html"]


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_BOLD = re.compile(r"\*\*(.+?)\*\*")


def _inline(text: str) -> str:
    """Escaped text with `code` and **bold**; nothing else is interpreted."""
    out = []
    for i, part in enumerate(text.split("`")):
        if i % 2:
            out.append(f"<code>{_e(part)}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", _e(part)))
    if text.count("`") % 2:  # an unpaired backtick: show the text as it is
        return _BOLD.sub(r"<strong>\1</strong>", _e(text))
    return "".join(out)


def _cells(line: str) -> list[str]:
    s = line.strip()
    s = s[1:] if s.startswith("|") else s
    s = s[:-1] if s.endswith("|") else s
    return [c.strip() for c in s.split("|")]


def markdown_to_html(text: str) -> str:
    """Render a safe Markdown subset: ``#`` headings (shifted two levels down), pipe
    tables, ``-``/``*``/``1.`` lists, fenced code blocks, paragraphs, `code`, **bold**.
    Everything else is text, escaped.

    >>> markdown_to_html("- a <b>\\n- **c**")
    '<ul><li>a &lt;b&gt;</li><li><strong>c</strong></li></ul>'
    """
    lines = text.splitlines()
    out: list[str] = []
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre><code>{_e(chr(10).join(block))}</code></pre>")
            i += 1
            continue
        heading = re.match(r"(#{1,6})\s+(.*)", stripped)
        if heading:
            flush()
            level = min(len(heading.group(1)) + 2, 6)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif (
            stripped.startswith("|")
            and i + 1 < len(lines)
            and re.fullmatch(r"\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?", lines[i + 1].strip())
        ):
            flush()
            head = "".join(f"<th>{_inline(c)}</th>" for c in _cells(stripped))
            body = []
            i += 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                body.append(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(lines[i])) + "</tr>"
                )
                i += 1
            out.append(
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
            )
            continue
        elif re.match(r"([-*]|\d+\.)\s+", stripped):
            flush()
            ordered = stripped[0].isdigit()
            items = []
            while i < len(lines) and re.match(r"([-*]|\d+\.)\s+", lines[i].strip()):
                items.append(
                    f"<li>{_inline(re.sub(r'^([-*]|[0-9]+[.])[ ]+', '', lines[i].strip()))}</li>"
                )
                i += 1
            tag = "ol" if ordered else "ul"
            out.append(f"<{tag}>{''.join(items)}</{tag}>")
            continue
        elif not stripped:
            flush()
        else:
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out)
