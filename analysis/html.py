"""The HTML of the report: tables, embedded images, sections and the page.

Pure string building: nothing here reads results or writes files (that is
`analysis.report`). Every PNG or GIF is embedded as a base64 data URI and the
page loads nothing from the network, so the one file works offline.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

import pandas as pd

from analysis import tables
from analysis.load import Results
from sweep import metrics as m

STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table.table { border-collapse: collapse; font-size: 12px; margin: 0.5em 0 1.5em; }
.scroll { overflow-x: auto; }
table.table td, table.table th { border: 1px solid #ccc; padding: 2px 6px;
  white-space: nowrap; }
table.table th { background: #f0f0f0; }
figure { margin: 0.5em 0 1.5em; } img { max-width: 100%; }
img.movie { width: 256px; image-rendering: pixelated; }
figcaption { font-size: 11px; color: #666; }
#warnings { background: #fff4e0; padding: 0.5em 1em; }
"""


def section(key: str, title: str, note: str, parts: list[str]) -> str:
    """One <section>: its title, its note (if any), then the parts, a line each."""
    lines = [f"<section id='{key}'><h2>{escape(title)}</h2>"]
    if note:
        lines.append(f"<p>{escape(note)}</p>")
    return "\n".join([*lines, *parts, "</section>"])


def titled_table(name: str, frame: pd.DataFrame) -> str:
    """A table under its name, formatted as `tables.display` shows it."""
    return f"<h3>{escape(name)}</h3>{table(frame)}"


def table(frame: pd.DataFrame) -> str:
    """The table, scrolling sideways when wide; NA for missing cells."""
    index = not isinstance(frame.index, pd.RangeIndex)
    html = tables.display(frame).to_html(
        index=index, border=0, classes="table", na_rep="NA"
    )
    return f"<div class='scroll'>{html}</div>"


def image(path: Path, mime: str, alt: str) -> str:
    """The image file embedded as a data URI, captioned with its file name."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    kind = " class='movie'" if mime == "image/gif" else ""
    return (
        f"<figure><img{kind} src='data:{mime};base64,{data}' "
        f"alt='{escape(alt)}'>"
        f"<figcaption>{escape(path.name)}</figcaption></figure>"
    )


def warning_list(warnings: list[str]) -> str:
    """The loader's warnings as a highlighted list; nothing when there are none."""
    if not warnings:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in warnings)
    return f"<section id='warnings'><h2>Warnings</h2><ul>{items}</ul></section>"


def page(body: str, results: Results) -> str:
    """The whole document: title naming the sweeps, the style sheet, the body."""
    names = ", ".join(results.sweeps["sweep"]) if not results.sweeps.empty else ""
    title = escape(f"Associative memory sweep: {names}")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{STYLE}</style></head><body>"
        f"<h1>{title}</h1>"
        f"<p>{len(results.trials)} trials; metric names as in sweep.metrics "
        f"(e.g. {m.N_ATTRACTORS}, {m.N_SPURIOUS}).</p>{body}</body></html>"
    )
