"""HTML building blocks of the report: escaped text, tables, embedded PNGs, the page.

The page is one file: figures are ``<img src="data:image/png;base64,...">``, the style is a
short inline ``<style>`` block, there is no script and nothing is loaded from elsewhere.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 1.5em auto; padding: 0 1em; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 1.8em; }
h3 { font-size: 1.05em; margin: 1.2em 0 0.4em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.88em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f4f6; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0; }
code { background: #f3f4f6; padding: 0 3px; border-radius: 3px; }
.meta { color: #555; font-size: 0.9em; }
.note { color: #555; font-style: italic; margin: 0.3em 0; }
.absent { color: #777; margin: 0.2em 0; }
.problems { color: #a33; }
nav ul { columns: 2; padding-left: 1.2em; }
td.text { max-width: 620px; }
mark { background: #ffe08a; font-weight: 600; padding: 0 2px; }
.verdict-holds { color: #1a7f37; font-weight: 600; }
.verdict-not { color: #b42318; font-weight: 600; }
.verdict-noisy { color: #8a6d00; font-weight: 600; }
"""


@dataclass
class Section:
    """One part of the page. ``body`` is HTML; ``figures`` counts its embedded PNGs. An absent
    section has no body, only ``note`` (which command makes its results). ``summary``: a
    few words for the printed summary (``2 rankings``)."""

    key: str
    title: str
    body: str = ""
    figures: int = 0
    note: str = ""
    summary: str = ""

    @property
    def present(self) -> bool:
        return bool(self.body)


def esc(x: object) -> str:
    """``x`` as text, HTML-escaped (quotes included)."""
    return html.escape("" if x is None else str(x), quote=True)


def fmt(v: object, digits: int = 4) -> str:
    """A cell's text: floats to ``digits`` significant digits, NaN/None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return "—" if not math.isfinite(float(v)) else f"{float(v):.{digits}g}"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if v is pd.NA or v is pd.NaT:
        return "—"
    return str(v)


def table(df: pd.DataFrame, columns: Sequence[str] | None = None,
          formats: Mapping[str, Callable[[object], str]] | None = None,
          headers: Mapping[str, str] | None = None, text_columns: Sequence[str] = (),
          raw_columns: Sequence[str] = ()) -> str:
    """An HTML table of ``df``: numbers right-aligned, every cell escaped.

    ``formats``: per-column functions giving a cell's text; ``headers``: shown column names;
    ``text_columns``: columns of long text (kept wide); ``raw_columns``: columns whose cells
    are HTML already escaped by whoever made them (e.g. a context with a ``<mark>``).
    """
    cols = [c for c in (columns or list(df.columns)) if c in df.columns]
    formats = formats or {}
    headers = headers or {}
    head = "".join(f"<th>{esc(headers.get(c, c))}</th>" for c in cols)
    body = []
    for row in df[cols].itertuples(index=False, name=None):
        cells = []
        for c, v in zip(cols, row):
            text = formats[c](v) if c in formats else fmt(v)
            num = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
                v, (bool, np.bool_))
            cls = ' class="num"' if num else ' class="text"' if c in text_columns else ""
            cells.append(f"<td{cls}>{text if c in raw_columns else esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>\n"


def image(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG embedded as base64."""
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">\n'


def para(text: str, cls: str = "") -> str:
    """A paragraph of escaped ``text`` (``cls``: its CSS class)."""
    c = f' class="{cls}"' if cls else ""
    return f"<p{c}>{esc(text)}</p>\n"


def heading(text: str, level: int = 3) -> str:
    return f"<h{level}>{esc(text)}</h{level}>\n"


def definition_table(items: Sequence[tuple[str, object]]) -> str:
    """A two-column table of ``(label, value)`` pairs."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt(v))}</td></tr>" for k, v in items)
    return f"<table>{rows}</table>\n"


def page(title: str, header: str, sections: Sequence[Section], footer: str = "") -> str:
    """The whole document: title, header HTML, a table of contents, each present section in
    order and, where a section is absent, its one-line note in its place."""
    toc = "".join(f'<li><a href="#{esc(s.key)}">{esc(s.title)}</a></li>'
                  for s in sections if s.present)
    parts = []
    for s in sections:
        if s.present:
            parts.append(f'<section id="{esc(s.key)}">\n<h2>{esc(s.title)}</h2>\n{s.body}</section>\n')
        else:
            parts.append(f'<p class="absent" id="{esc(s.key)}">{esc(s.title)}: {esc(s.note)}</p>\n')
    nav = f"<nav><ul>{toc}</ul></nav>\n" if toc else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{esc(title)}</h1>\n{header}{nav}{''.join(parts)}{footer}</body>\n</html>\n")
