"""The report as one self-contained HTML file: every plot embedded as a base64 PNG.

`render_html` turns the same title, overview and `analysis.report.sections.Section` list that
report.md is written from into a page with inline CSS and no external resource, so the file can be
mailed, attached to a ticket or opened offline; `write_html` saves it (atomically, like every
result). A section's rows to browse (a large sweep's trials) become a sortable, filterable table
(`analysis.report.browse_table`), whose library is inlined once.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd

from analysis.report.browse_table import browse_library, browse_table
from analysis.report.sections import Section, numeric_looking

HTML_FILE = "report.html"
_CODE = re.compile(r"`([^`]+)`")
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1200px; padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; }
p, li { overflow-wrap: anywhere; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .85rem; }
th, td { border: 1px solid #d0d7de; padding: .25rem .55rem; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
figure { display: inline-block; width: 48%; margin: .5rem 1% .5rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-size: .85rem; color: #57606a; }
code { background: #f6f8fa; padding: 0 .25rem; border-radius: 3px; }
.overview { color: #57606a; }
@media (max-width: 760px) {
  body { margin: 1rem auto; padding: 0 .6rem; }
  figure { width: 100%; margin: .5rem 0; }
}
"""
_BOLD = re.compile(r"\*\*(.+?)\*\*")
# *emphasis*: asterisks hugging a word on both sides, as Markdown reads them (not `a * b`).
_EMPHASIS = re.compile(r"(?<![*\w])\*(?=\S)([^*]+?)(?<=\S)\*(?![*\w])")


def render_html(title: str, overview: str, sections: list[Section]) -> str:
    """The page: title, overview and every section, images inlined."""
    body = [f"<h1>{_inline(title)}</h1>", f'<p class="overview">{_inline(overview)}</p>']
    for section in sections:
        body.append(f"<h2>{_inline(section.title)}</h2>")
        if section.text:
            body.append(f"<p>{_inline(section.text)}</p>")
        if section.items:
            body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in section.items) + "</ul>")
        if section.table is not None:
            body.append(_table(section.table))
        if section.browse is not None:
            caption = f"every row is in {section.browse_csv}"
            body.append(f'<div class="scroll">{browse_table(section.browse, caption)}</div>')
        body.extend(_figure(image.title, image.path) for image in section.images)
    if any(section.browse is not None for section in sections):
        body.insert(0, browse_library())  # DataTables, inlined once for every browse table
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_html(path: Path, title: str, overview: str, sections: list[Section]) -> Path:
    """Render and save the page at `path`; returns the path."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(title, overview, sections), encoding="utf-8")
    tmp.replace(path)
    return path


def _table(frame: pd.DataFrame) -> str:
    cells = frame.astype(str)
    numeric = [numeric_looking(cells[c]) for c in cells]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = [
        "<tr>"
        + "".join(
            f'<td class="num">{html.escape(v)}</td>' if num else f"<td>{_inline(v)}</td>"
            for v, num in zip(row, numeric, strict=True)
        )
        + "</tr>"
        for row in cells.itertuples(index=False)
    ]
    body = "\n".join(rows)
    return (
        f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n'
        "</tbody>\n</table></div>"
    )


def _figure(title: str, path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = html.escape(title, quote=True)
    return (
        f'<figure><img alt="{alt}" src="data:image/png;base64,{data}">'
        f"<figcaption>{alt}</figcaption></figure>"
    )


def _inline(text: str) -> str:
    """Escaped text with Markdown `code`, **bold** and *emphasis* as <code>, <strong>, <em>.

    A code span is kept as written: asterisks inside it (`workload.*`) are text.
    """
    parts = _CODE.split(html.escape(str(text)))  # even: prose, odd: the inside of a code span
    return "".join(
        f"<code>{part}</code>"
        if i % 2
        else _EMPHASIS.sub(r"<em>\1</em>", _BOLD.sub(r"<strong>\1</strong>", part))
        for i, part in enumerate(parts)
    )
