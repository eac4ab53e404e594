"""Render a report (a list of blocks) to a self-contained ``index.html`` and to ``report.md``.

Blocks are plain tuples: ``("h1"|"h2"|"h3"|"p", text)``, ``("table", Table)`` and
``("figure", png_name, caption)``. The HTML embeds every PNG as a ``data:`` URI and its CSS inline,
so the page has no external resource (it opens offline, as an e-mail attachment, in CI); the PNG
files are also written under ``plots/`` for the markdown and for reuse.
"""

from __future__ import annotations

import base64
import html
import os
from typing import Any

from kvlab.report.tables import Table

Block = tuple[Any, ...]

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .8em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
tr:nth-child(even) td { background: #fafafa; }
td.missing { color: #999; font-style: italic; }
td.failed { color: #b00; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, p.note { color: #555; font-size: 13px; }
nav a { margin-right: 1em; }
"""


def to_html(blocks: list[Block], pngs: dict[str, bytes], title: str) -> str:
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"]
    anchors = [(i, b[1]) for i, b in enumerate(blocks) if b[0] == "h2"]
    for i, block in enumerate(blocks):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f'<{kind} id="s{i}">{html.escape(block[1])}</{kind}>')
            if kind == "h1" and anchors:
                out.append("<nav>" + "".join(f'<a href="#s{j}">{html.escape(t)}</a>' for j, t in anchors) + "</nav>")
        elif kind == "p":
            out.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "table":
            out.append(_html_table(block[1]))
        elif kind == "figure":
            _, name, caption = block
            data = base64.b64encode(pngs[name]).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        else:
            raise AssertionError(f"unknown block {kind}")
    out.append("</body></html>")
    return "\n".join(out)


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = []
    for row in table.rows:
        cells = []
        for value in row:
            cls = ' class="missing"' if value in ("missing", "-", "pending") else (
                ' class="failed"' if value == "failed" else "")
            cells.append(f"<td{cls}>{html.escape(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return (f"<h3>{html.escape(table.title)}</h3><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}")


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            out.append(f"# {block[1]}\n")
        elif kind == "h2":
            out.append(f"## {block[1]}\n")
        elif kind == "h3":
            out.append(f"### {block[1]}\n")
        elif kind == "p":
            out.append(f"{block[1]}\n")
        elif kind == "table":
            out.append(markdown_table(block[1]))
        elif kind == "figure":
            out.append(f"![{block[2]}](plots/{block[1]})\n")
    return "\n".join(out)


def markdown_table(table: Table) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    lines = [f"**{table.title}**\n", "| " + " | ".join(map(esc, table.header)) + " |",
             "|" + "|".join("---" for _ in table.header) + "|"]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in table.rows]
    if table.note:
        lines.append(f"\n{table.note}")
    return "\n".join(lines) + "\n"


def write(out_dir: str, blocks: list[Block], pngs: dict[str, bytes], title: str) -> tuple[str, str]:
    """Write ``index.html``, ``report.md`` and ``plots/*.png`` under ``out_dir``; returns the two paths."""
    plots = os.path.join(out_dir, "plots")
    os.makedirs(plots, exist_ok=True)
    for name, png in pngs.items():
        with open(os.path.join(plots, name), "wb") as fh:
            fh.write(png)
    index, md = os.path.join(out_dir, "index.html"), os.path.join(out_dir, "report.md")
    _atomic_write(index, to_html(blocks, pngs, title))
    _atomic_write(md, to_markdown(blocks))
    return index, md


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
