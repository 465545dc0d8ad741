"""The notebook view of a dataset: ``SplitDataLoader._repr_html_``.

Plain HTML with inline SVG, so it needs nothing installed and shows the same in
JupyterLab, VS Code and a static HTML export. Everything taken from the dataset (its
location, metadata and records) is HTML-escaped: a record holding ``<script>`` shows
as text.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import Any

import numpy as np

from splitdask._read._describe import Description, SizeSample, cost_rows, preview, sizeof
from splitdask._read._schema import summarize_fields, to_json

__all__ = ["balance_svg", "dataset_html", "heaviest_bins", "size_histogram_html"]

_H = 80  # plot height in CSS pixels (and in the bars' own units)
_LEFT, _TOP, _BOTTOM, _RIGHT = 64, 24, 30, 24  # margins for the axes and their labels
_HEAVY = 3  # heaviest bins named and marked
_BAR, _MARK = "#4c78a8", "#f58518"


def _plot_width(n: int) -> int:
    """480 px, or twice that for more bins than pixels (a denser profile stays legible)."""
    return 480 if n <= 480 else 960


def _nice_step(n: int, most: int = 8) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that cuts ``n`` bins into ``most`` ticks
    at most."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if n <= most * step * m:
                return step * m
        step *= 10


def heaviest_bins(counts: Sequence[int], k: int = _HEAVY) -> list[int]:
    """The ``k`` bins holding the most records (ties: the lowest bin), those above the
    mean only: none when the bins are even."""
    if not len(counts):
        return []
    arr = np.asarray(counts, dtype=np.int64)
    mean = arr.mean()
    order = np.argsort(-arr, kind="stable")[:k]
    return [int(b) for b in order if arr[b] > mean]


def balance_svg(counts: Sequence[int]) -> str:
    """One bar per bin, height proportional to its records, with the mean as a line,
    bin ticks, the record axis, a tooltip on every bar and the heaviest bins marked.

    The bars are drawn in bin units (bar ``i`` spans ``x = i .. i + 1``) in an inner
    SVG stretched to the plot's width, so 4 bins show four wide bars and 4,096 bins a
    dense profile in which an uneven stretch of bins is still plain to see; the axes
    and labels are in pixels around it, so text is never stretched.
    """
    n = max(len(counts), 1)
    top = max(max(counts, default=0), 1)
    mean = sum(counts) / n
    gap = 0.1 if len(counts) <= 64 else 0.0
    heavy = set(heaviest_bins(counts))
    bars = []
    for i, c in enumerate(counts):
        h = _H * c / top
        fill = f' fill="{_MARK}"' if i in heavy else ""
        bars.append(
            f'<rect class="bin" x="{i + gap / 2:g}" y="{_H - h:.3f}" width="{1 - gap:g}" '
            f'height="{h:.3f}"{fill}><title>bin {i}: {c:,} records</title></rect>'
        )
    y_mean = _H - _H * mean / top
    w = _plot_width(n)

    def x_of(b: int) -> float:  # the centre of bin b's bar
        return _LEFT + (b + 0.5) * w / n

    steps = range(0, n, _nice_step(n))
    lines = [f'<line x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_TOP + _H}"/>']
    lines.append(f'<line x1="{_LEFT}" x2="{_LEFT + w}" y1="{_TOP + _H}" y2="{_TOP + _H}"/>')
    lines += [
        f'<line x1="{x_of(b):.1f}" x2="{x_of(b):.1f}" y1="{_TOP + _H}" y2="{_TOP + _H + 4}"/>'
        for b in steps
    ]
    labels = [
        f'<text x="{x_of(b):.1f}" y="{_TOP + _H + 15}" text-anchor="middle">{b:,}</text>'
        for b in steps
    ]
    labels += [
        f'<text x="{_LEFT - 4}" y="{_TOP + 4}" text-anchor="end">{top:,}</text>',
        f'<text x="{_LEFT - 4}" y="{_TOP + _H}" text-anchor="end">0</text>',
        f'<text x="{_LEFT + w / 2:.0f}" y="{_TOP + _H + _BOTTOM - 2}" '
        'text-anchor="middle">bin</text>',
        f'<text x="12" y="{_TOP + _H / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 12 {_TOP + _H / 2:.0f})">records</text>',
    ]
    # Each heavy bin gets a marker in pixels (its bar may be a fraction of a pixel);
    # names of bins closer than a label's width share one label.
    marks = [
        f'<path d="M{x_of(b) - 3:.1f},{_TOP - 6} h6 l-3,5 z" fill="{_MARK}"/>'
        for b in sorted(heavy)
    ]
    groups: list[list[int]] = []
    for b in sorted(heavy):
        if groups and x_of(b) - x_of(groups[-1][-1]) < 48:
            groups[-1].append(b)
        else:
            groups.append([b])
    marks += [
        f'<text class="heavy" x="{(x_of(g[0]) + x_of(g[-1])) / 2:.1f}" y="{_TOP - 8}" '
        f'text-anchor="middle" fill="{_MARK}">{"bin" if len(g) == 1 else "bins"} '
        f"{', '.join(f'{b:,}' for b in g)}</text>"
        for g in groups
    ]
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="splitdask-balance" '
        f'width="{_LEFT + w + _RIGHT}" height="{_TOP + _H + _BOTTOM}" role="img" '
        f'aria-label="records per bin, {len(counts)} bins" font-size="10" '
        'font-family="sans-serif">'
        f'<svg x="{_LEFT}" y="{_TOP}" width="{w}" height="{_H}" viewBox="0 0 {n} {_H}" '
        f'preserveAspectRatio="none"><g fill="{_BAR}">{"".join(bars)}</g>'
        f'<line x1="0" x2="{n}" y1="{y_mean:.3f}" y2="{y_mean:.3f}" stroke="#e45756" '
        'stroke-width="1" stroke-dasharray="4 3" vector-effect="non-scaling-stroke"/></svg>'
        f'<g stroke="#666">{"".join(lines)}</g><g fill="#333">{"".join(labels)}</g>'
        f"{''.join(marks)}</svg>"
    )


def size_histogram_html(sample: SizeSample | None) -> str:
    """Record sizes in power-of-two buckets, as a table of bars."""
    if sample is None:
        return (
            "<div>record sizes: not sampled for a remote dataset (each part's footer "
            "would cost a request)</div>"
        )
    sizes = sample.sizes
    if not len(sizes):
        return "<div>record sizes: no records</div>"
    buckets = np.where(sizes > 0, np.floor(np.log2(np.maximum(sizes, 1))).astype(np.int64) + 1, 0)
    counts = np.bincount(buckets)
    lo_b, hi_b = int(buckets.min()), int(buckets.max())
    most = int(counts.max())
    rows = []
    for k in range(lo_b, hi_b + 1):
        c = int(counts[k]) if k < len(counts) else 0
        lo, hi = (0, 0) if k == 0 else (1 << (k - 1), (1 << k) - 1)
        label = sizeof(lo) if lo == hi else f"{sizeof(lo)} to {sizeof(hi)}"
        width = 200 * c / most
        rows.append(
            f'<tr class="size"><td style="text-align:right">{escape(label)}</td>'
            f'<td style="text-align:right">{c:,}</td><td style="text-align:left">'
            f'<div style="background:{_BAR};height:0.8em;width:{width:.1f}px"></div></td></tr>'
        )
    of = (
        "all parts"
        if sample.parts == sample.of_parts
        else f"{sample.parts:,} of {sample.of_parts:,} parts, spread over the dataset"
    )
    return (
        f"<details open><summary>record sizes (stored bytes; {len(sizes):,} records of "
        f"{of}: min {sizeof(int(sizes.min()))}, median {sizeof(float(np.median(sizes)))}, "
        f"max {sizeof(int(sizes.max()))})</summary><table>"
        f"<tr><th>size</th><th>records</th><th></th></tr>{''.join(rows)}</table></details>"
    )


def _fact_rows(desc: Description) -> list[tuple[str, str]]:
    if desc.generation is None:
        version = "splitdataloader 0.0.1 (read only)"
    else:
        version = f"{desc.generation} (format {desc.format_version})"
    if desc.compression is None:
        compression = "none"
    else:
        compression = (
            f"{desc.compression}: {desc.compressed_parts:,} of {desc.num_parts:,} parts; "
            f"{sizeof(desc.stored_bytes)} stored for {sizeof(desc.payload_bytes)} of records"
        )
    heavy = heaviest_bins(desc.bin_counts)
    mean = desc.bin_mean
    rows = [
        ("location", desc.urlpath),
        ("records", f"{desc.num_records:,}"),
        ("bins", f"{desc.num_bins:,} ({desc.num_parts:,} parts)"),
        ("payload", f"{sizeof(desc.payload_bytes)} ({sizeof(desc.stored_bytes)} stored)"),
        ("version", version),
        ("compression", compression),
        ("codec", desc.codec),
    ]
    rows += [
        (
            "bin balance",
            f"min {desc.bin_min:,} / mean {mean:,.1f} / max {desc.bin_max:,} "
            f"records (max / mean {desc.imbalance:.2f})",
        ),
        (
            "heaviest bins",
            ", ".join(
                f"bin {b:,}: {desc.bin_counts[b]:,} records ({desc.bin_counts[b] / mean:.2f}x mean)"
                for b in heavy
            )
            or "none above the mean: the bins are even",
        ),
    ]
    if desc.metadata:
        rows.append(("metadata", json.dumps(desc.metadata, sort_keys=True)[:200]))
    costs = cost_rows(desc.epoch)
    return rows + costs[:1] + [(f"\u2003{key}", value) for key, value in costs[1:]]


def dataset_html(
    desc: Description,
    first: Sequence[bytes],
    sizes: SizeSample | None = None,
    values: Sequence[Any] | None = None,
) -> str:
    """The whole view: facts, bin balance chart, record sizes, metadata and a preview
    of ``first`` (the stored records); with ``values`` (the same records decoded by
    the dataset's codec) their fields, dtypes and shapes, and the values as JSON."""
    facts = "".join(
        f'<tr><th style="text-align:left;padding-right:1em">{escape(k)}</th>'
        f'<td style="text-align:left">{escape(v)}</td></tr>'
        for k, v in _fact_rows(desc)
    )
    shown = []
    for i, rec in enumerate(first):
        if values is None:
            kind, text = preview(rec)
        else:
            kind, text = desc.codec, _clip(to_json(values[i]))
        shown.append(
            f'<tr class="record"><td>{i}</td><td>{len(rec):,} B</td><td>{escape(kind)}</td>'
            f'<td style="text-align:left"><code>{escape(text)}</code></td></tr>'
        )
    records = (
        "<details open><summary>first records</summary><table>"
        "<tr><th>index</th><th>size</th><th>as</th><th>content</th></tr>"
        f"{''.join(shown)}</table></details>"
        if shown
        else ""
    )
    records = _fields_html(values) + records
    return (
        '<div class="splitdask-dataset"><strong>SplitDataLoader</strong>'
        f"<table>{facts}</table>"
        "<div>records per bin (dashed: mean; orange: the heaviest bins; hover a bar "
        f"for its bin)</div>{balance_svg(desc.bin_counts)}"
        f"{size_histogram_html(sizes)}{records}</div>"
    )


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _fields_html(values: Sequence[Any] | None) -> str:
    """The fields of the first decoded records: name, type, dtype and shape."""
    fields = summarize_fields(list(values or ()))
    if not fields:
        return ""
    rows = "".join(
        f'<tr class="field"><td style="text-align:left">{escape(f.name or "(record)")}</td>'
        f'<td style="text-align:left"><code>{escape(f.describe())}</code></td></tr>'
        for f in fields
    )
    return (
        f"<details open><summary>fields of the first {len(values or ())} records</summary>"
        f"<table><tr><th>field</th><th>type</th></tr>{rows}</table></details>"
    )
