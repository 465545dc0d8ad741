"""The notebook view of a dataset: ``SplitDataLoader._repr_html_``.

Plain HTML with an inline SVG bar chart, so it needs nothing installed and shows the
same in JupyterLab, VS Code and a static HTML export. Everything taken from the
dataset (its location, metadata and records) is HTML-escaped: a record holding
``<script>`` shows as text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape

from splitdask._read._describe import Description, cost_rows, preview, sizeof

__all__ = ["dataset_html", "balance_svg"]

_W, _H = 480, 80  # chart size in CSS pixels
_TITLED_BINS = 512  # per-bar tooltips up to this many bins (beyond, they only bloat the page)


def balance_svg(counts: Sequence[int]) -> str:
    """One bar per bin, height proportional to its records, with the mean as a line.

    The drawing is in bin units (bar ``i`` spans ``x = i .. i + 1``) stretched to a
    fixed width, so 4 bins show four wide bars and 4,096 bins a dense profile in
    which an uneven stretch of bins is still plain to see.
    """
    n = max(len(counts), 1)
    top = max(max(counts, default=0), 1)
    mean = sum(counts) / n
    gap = 0.1 if len(counts) <= 64 else 0.0
    bars = []
    for i, c in enumerate(counts):
        h = _H * c / top
        title = f"<title>bin {i}: {c:,} records</title>" if len(counts) <= _TITLED_BINS else ""
        bars.append(
            f'<rect class="bin" x="{i + gap / 2:g}" y="{_H - h:.3f}" width="{1 - gap:g}" '
            f'height="{h:.3f}">{title}</rect>'
        )
    y_mean = _H - _H * mean / top
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="splitdask-balance" width="{_W}" '
        f'height="{_H}" viewBox="0 0 {n} {_H}" preserveAspectRatio="none" role="img" '
        f'aria-label="records per bin, {len(counts)} bins">'
        f'<g fill="#4c78a8">{"".join(bars)}</g>'
        f'<line x1="0" x2="{n}" y1="{y_mean:.3f}" y2="{y_mean:.3f}" stroke="#e45756" '
        'stroke-width="1" stroke-dasharray="4 3" vector-effect="non-scaling-stroke"/></svg>'
    )


def dataset_html(desc: Description, first: Sequence[bytes]) -> str:
    """The whole view: facts, bin balance chart, metadata and a preview of ``first``."""
    gen = "splitdataloader 0.0.1 (read only)" if desc.generation is None else str(desc.generation)
    rows = [
        ("location", desc.urlpath),
        ("records", f"{desc.num_records:,}"),
        ("bins", f"{desc.num_bins:,} ({desc.num_parts:,} parts)"),
        ("payload", f"{sizeof(desc.payload_bytes)} ({sizeof(desc.stored_bytes)} stored)"),
        ("generation", gen),
        (
            "bin balance",
            f"min {desc.bin_min:,} / mean {desc.bin_mean:,.1f} / max {desc.bin_max:,} "
            f"records (max / mean {desc.imbalance:.2f})",
        ),
    ]
    if desc.metadata:
        rows.append(("metadata", json.dumps(desc.metadata, sort_keys=True)[:200]))
    costs = cost_rows(desc.epoch)
    rows += costs[:1] + [(f"\u2003{key}", value) for key, value in costs[1:]]
    facts = "".join(
        f'<tr><th style="text-align:left;padding-right:1em">{escape(k)}</th>'
        f'<td style="text-align:left">{escape(v)}</td></tr>'
        for k, v in rows
    )
    shown = []
    for i, rec in enumerate(first):
        kind, text = preview(rec)
        shown.append(
            f'<tr class="record"><td>{i}</td><td>{len(rec):,} B</td><td>{kind}</td>'
            f'<td style="text-align:left"><code>{escape(text)}</code></td></tr>'
        )
    records = (
        "<details open><summary>first records</summary><table>"
        "<tr><th>index</th><th>size</th><th>as</th><th>content</th></tr>"
        f"{''.join(shown)}</table></details>"
        if shown
        else ""
    )
    return (
        '<div class="splitdask-dataset"><strong>SplitDataLoader</strong>'
        f"<table>{facts}</table>"
        f"<div>records per bin (dashed: mean)</div>{balance_svg(desc.bin_counts)}"
        f"{records}</div>"
    )
