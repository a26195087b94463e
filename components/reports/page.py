"""The page every HTML report is: self-contained, with its tables, figures and colours.

The Vertex AI console shows HTML artifacts in a sandbox and users may be offline, so a report
is one file: plots are embedded as base64 PNG, the CSS is inline, and there is no script and
no external reference. Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas
(never pyplot), so rendering touches no global state and a figure is freed with its last
reference.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies.
BLUE = "#0072B2"  # this model, reference data

ORANGE = "#E69F00"  # champion, current data

WARN = "#D55E00"  # drifted features

GREY = "#9AA5B1"  # everything not highlighted

_DPI = 100

_PAD_INCHES = 0.1  # matplotlib's default for tight bboxes

_MISSING = "\u2014"  # em dash

# A browser that honours this refuses any fetch, so a stray external reference fails loudly.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
  color: #1f2933; line-height: 1.45; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin: 0 0 1rem; }
h2 { font-size: 1.2rem; margin-top: 2.2rem; padding-bottom: .25rem;
  border-bottom: 1px solid #d9e2ec; }
.summary { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1.5rem; margin: 0;
  padding: .8rem 1rem; background: #f0f4f8; border: 1px solid #d9e2ec; border-radius: 6px; }
.summary dt { font-weight: 600; }
.summary dd { margin: 0; }
table { border-collapse: collapse; font-size: .9rem; margin: .75rem 0; }
th, td { padding: .3rem .7rem; text-align: left; border-bottom: 1px solid #d9e2ec; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.selected td { font-weight: 600; background: #e3f0fa; }
tr.drifted td { background: #fde8dc; }
img { max-width: 100%; height: auto; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; }
.note { color: #52606d; }
"""


def figure_to_html(fig: Figure) -> str:
    """<img> tag with the figure as embedded PNG, so the report needs no other file.

    The figure's label (``fig.set_label``) becomes the alt text.
    """
    # An explicit bbox gives the same PNG as bbox_inches="tight" without its extra draw pass
    # (a third of the render time); a layout engine only runs in that pass, so keep it then.
    bbox = "tight" if fig.get_layout_engine() else fig.get_tightbbox().padded(_PAD_INCHES)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches=bbox, metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    alt = html.escape(fig.get_label() or "figure")
    return f'<img src="data:image/png;base64,{data}" alt="{alt}">'


def html_table(rows: list[dict[str, object]], columns: list[str] | None = None) -> str:
    """Escaped HTML table, so names from configs or data can never inject markup.

    Columns default to every key in order of first appearance; floats are shown to 4
    significant digits, dicts as ``key=value`` lists and missing values (None, NaN) as a dash.
    """
    return data_table(rows, columns)


def html_page(
    title: str, sections: list[tuple[str, str]], summary: dict[str, object] | None = None
) -> str:
    """Whole self-contained HTML document: <h1>title, optional summary box, then each section.

    Titles, headings and summary entries are escaped; section bodies are trusted HTML (built
    with the helpers of this module).
    """
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if summary:
        items = "".join(
            f"<dt>{html.escape(str(key))}</dt><dd>{html.escape(_format_value(value))}</dd>"
            for key, value in summary.items()
        )
        parts.append(f'<dl class="summary">{items}</dl>')
    parts.extend(
        f"<section>\n<h2>{html.escape(heading)}</h2>\n{body}\n</section>"
        for heading, body in sections
    )
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _format_value(value: object) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, float | np.floating):
        return _MISSING if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, Mapping):  # e.g. a candidate's hyper-parameters
        return ", ".join(f"{key}={_format_value(item)}" for key, item in value.items())
    return str(value)


def data_table(
    rows: Sequence[dict[str, object]],
    columns: list[str] | None = None,
    row_classes: Sequence[str] | None = None,
) -> str:
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    if not rows or not columns:
        return '<p class="note">No rows.</p>'
    head = "".join(f"<th>{html.escape(str(column))}</th>" for column in columns)
    body = []
    for i, row in enumerate(rows):
        css = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(_cell(row.get(column)) for column in columns)
        body.append(f"<tr{css}>{cells}</tr>\n")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{''.join(body)}</tbody>\n</table>"


def _cell(value: object) -> str:
    numeric = isinstance(value, int | float | np.number) and not isinstance(value, bool)
    css = ' class="num"' if numeric else ""
    return f"<td{css}>{html.escape(_format_value(value))}</td>"


def as_float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def sort_key(value: float) -> tuple[bool, float]:
    """Largest first, missing values last."""
    return (math.isnan(value), 0.0 if math.isnan(value) else -value)


def new_figure(label: str, width: float = 5.0, height: float = 3.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    fig.set_label(label)
    return fig
