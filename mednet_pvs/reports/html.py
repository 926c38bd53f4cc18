"""Small HTML building blocks shared by the subject and group reports (self-contained: inline CSS only)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mednet_pvs import __version__

__all__ = ["data_uri", "definition_table", "escape", "figure", "flag_list", "page", "relative", "table"]

escape = html.escape

_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #222;
       background: #fafafa; line-height: 1.45; }
header { background: #16324f; color: white; padding: 14px 24px; }
header h1 { margin: 0; font-size: 1.5em; }
header p { margin: 4px 0 0 0; color: #c8d6e5; font-size: 0.9em; }
nav { position: sticky; top: 0; background: #e8eef4; padding: 6px 24px; border-bottom: 1px solid #c5d3e0;
      z-index: 10; font-size: 0.9em; }
nav a { margin-right: 14px; color: #16324f; text-decoration: none; }
main { padding: 8px 24px 40px 24px; max-width: 1400px; }
section { background: white; border: 1px solid #e1e4e8; border-radius: 6px; padding: 8px 18px 14px 18px;
          margin: 16px 0; }
h2 { color: #16324f; border-bottom: 2px solid #e1e4e8; padding-bottom: 4px; }
h3 { color: #2d5277; margin-bottom: 6px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 6px 0 10px 0; }
th, td { border: 1px solid #d8dee4; padding: 3px 8px; text-align: right; }
th { background: #f0f3f6; }
td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #fbfcfd; }
table.kv td:first-child { font-weight: 600; text-align: left; background: #f6f8fa; }
table.kv td { text-align: left; }
figure { margin: 10px 0 18px 0; }
figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.85em; color: #555; margin-top: 3px; }
ul.flags { list-style: none; padding: 0; }
ul.flags li { padding: 6px 10px; margin: 4px 0; border-radius: 4px; }
li.warning { background: #fff4e5; border-left: 5px solid #f0a020; }
li.info { background: #eaf3fb; border-left: 5px solid #4a90d9; }
li.ok { background: #eaf7ee; border-left: 5px solid #3fa35b; }
.note { background: #fff8d6; border: 1px solid #f0dc82; padding: 6px 10px; border-radius: 4px;
        font-size: 0.9em; }
.muted { color: #666; font-size: 0.85em; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 0.8em; }
"""


def data_uri(png: bytes) -> str:
    """A PNG embedded as a ``data:`` URI (for single-file reports)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cell(value: Any, digits: int) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        if float(value).is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.0f}" if abs(value) >= 10**digits else f"{value:.{digits}g}"
    return escape(str(value))


def table(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    headers: Mapping[str, str] | None = None,
    digits: int = 3,
    raw_html_columns: Iterable[str] = (),
) -> str:
    """An HTML table of ``frame`` (selected ``columns``); numbers right-aligned, text left-aligned."""
    columns = [c for c in (columns or frame.columns) if c in frame.columns]
    headers = headers or {}
    raw = set(raw_html_columns)
    text_columns = {
        c
        for c in columns
        if c in raw or not pd.api.types.is_numeric_dtype(frame[c]) or frame[c].dtype == bool
    }
    head = "".join(
        f'<th class="{"text" if c in text_columns else ""}">{escape(headers.get(c, c))}</th>' for c in columns
    )
    body = []
    for row in frame[columns].itertuples(index=False, name=None):
        cells = []
        for column, value in zip(columns, row, strict=True):
            content = str(value) if column in raw else _cell(value, digits)
            cells.append(f'<td class="{"text" if column in text_columns else ""}">{content}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def definition_table(items: Mapping[str, Any]) -> str:
    """A two-column key/value table; None values are left out."""
    rows = [
        f"<tr><td>{escape(key)}</td><td>{escape(v) if isinstance(v, str) else _cell(v, 4)}</td></tr>"
        for key, v in items.items()
        if v is not None
    ]
    return f'<table class="kv"><tbody>{"".join(rows)}</tbody></table>'


def figure(src: str, caption: str, alt: str) -> str:
    """An image with its caption; ``src`` is a relative path or a data URI."""
    return (
        f'<figure><img src="{escape(src)}" alt="{escape(alt)}" loading="lazy">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


def flag_list(flags: Sequence[Any]) -> str:
    """QC flags as a coloured list (a green line when there is none)."""
    if not flags:
        return '<ul class="flags"><li class="ok">No QC flag raised.</li></ul>'
    items = "".join(
        f'<li class="{escape(f.level)}"><b>{escape(f.code)}</b>: {escape(f.message)}</li>' for f in flags
    )
    return f'<ul class="flags">{items}</ul>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A complete HTML document: header, navigation, and (anchor, heading, body) sections."""
    nav = "".join(f'<a href="#{escape(anchor)}">{escape(heading)}</a>' for anchor, heading, _ in sections)
    body = "".join(
        f'<section id="{escape(anchor)}"><h2>{escape(heading)}</h2>{content}</section>'
        for anchor, heading, content in sections
    )
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)} · generated {stamp} by mednet-pvs "
        f"{escape(__version__)}</p></header><nav>{nav}</nav><main>{body}</main></body></html>\n"
    )


def relative(path: Path, start: Path) -> str:
    """POSIX relative path from folder ``start`` (for links inside the output folder)."""
    return Path(path).resolve().relative_to(Path(start).resolve()).as_posix()
