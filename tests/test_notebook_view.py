"""``describe()``, the one-line ``repr`` and the HTML view; the view in a real Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from splitdask import Description, SplitDataLoader, write_split_data
from splitdask._read._describe import preview
from splitdask._read._html import balance_svg, heaviest_bins

HOSTILE = b"<script>document.body.setAttribute('data-ran', 'yes')</script>"


@pytest.fixture(scope="module")
def loader(tmp_path_factory: pytest.TempPathFactory) -> SplitDataLoader:
    path = tmp_path_factory.mktemp("view") / "ds"
    records = [HOSTILE, b"\xff\xfe\x00binary", b"plain text " * 20] + [
        b"r%d" % i for i in range(97)
    ]
    write_split_data(path, records, splits=4, metadata={"owner": "<b>me</b>"})
    write_split_data(path, [b"more"] * 3)
    return SplitDataLoader(path)


def test_describe_holds_the_same_numbers_as_the_loader(loader: SplitDataLoader) -> None:
    d = loader.describe()
    assert isinstance(d, Description)
    assert (d.num_records, d.num_bins, d.generation) == (len(loader), loader.num_bins, 2)
    assert d.num_parts == len(loader.snapshot.parts)
    assert d.payload_bytes == loader.nbytes == sum(len(r) for r in loader)
    assert d.stored_bytes == sum(p.size for p in loader.snapshot.parts)
    assert list(d.bin_counts) == loader.bin_counts
    assert (d.bin_min, d.bin_max) == (min(loader.bin_counts), max(loader.bin_counts))
    assert d.bin_mean == len(loader) / 4
    assert d.metadata == {"owner": "<b>me</b>"}


def test_repr_is_one_line_with_the_facts(loader: SplitDataLoader) -> None:
    text = repr(loader)
    assert "\n" not in text
    d = loader.describe()
    assert text.startswith(f"SplitDataLoader({loader.urlpath!r}: ")
    for fact in (
        "103 records",
        "4 bins",
        "generation 2",
        f"{d.bin_min}/{d.bin_mean:.1f}/{d.bin_max}",
    ):
        assert fact in text


def test_html_escapes_records_and_metadata(loader: SplitDataLoader) -> None:
    html = loader._repr_html_()
    assert "<script" not in html
    assert "&lt;script&gt;document.body.setAttribute" in html
    assert "&lt;b&gt;me&lt;/b&gt;" in html
    # binary records are shown as Python shows bytes, not as hex
    assert "b&#x27;\\xff\\xfe\\x00binary&#x27;" in html
    assert "ff fe 00 62" not in html
    assert "plain text plain text" in html
    assert "…" in html  # long records are cut
    assert len(re.findall(r'<tr class="record">', html)) == 5
    assert len(re.findall(r'<rect class="bin"', html)) == 4


@pytest.mark.parametrize("bins", [4, 4096])
def test_one_bar_per_bin_scaled_to_the_fullest(bins: int) -> None:
    counts = [10 + (i % 7) for i in range(bins)]
    svg = balance_svg(counts)
    heights = [float(h) for h in re.findall(r'<rect class="bin"[^>]* height="([0-9.]+)"', svg)]
    assert len(heights) == bins
    assert max(heights) == 80.0
    assert heights[0] == pytest.approx(80.0 * 10 / max(counts), abs=1e-3)
    assert f'viewBox="0 0 {bins} 80"' in svg


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is required (ci/test.sh installs it)"
    return path


def test_preview_shows_binary_records_as_python_bytes() -> None:
    assert preview(b"sample 00000|\xcf\x01\xff") == ("bytes", "b'sample 00000|\\xcf\\x01\\xff'")
    kind, text = preview(b"\xcf" + b"a" * 200)
    assert (kind, len(text), text[:7], text[-1]) == ("bytes", 60, "b'\\xcfa", "…")
    assert preview("héllo\n".encode()) == ("text", "héllo\\n")


def test_heaviest_bins_are_the_ones_above_the_mean() -> None:
    assert heaviest_bins([5, 9, 5, 9, 12, 5]) == [4, 1, 3]
    assert heaviest_bins([3, 3, 3]) == []  # even: none named
    assert heaviest_bins([1, 1, 7, 1]) == [2]


def _render(tmp_path: Path, html: str) -> str:
    """``html`` loaded in headless Chromium: the DOM it built (a screenshot next to it)."""
    page = tmp_path / "view.html"
    # A page that would show a script's effect: a script that ran sets data-ran.
    page.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"></head><body>{html}</body></html>'
    )
    common = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = subprocess.run(
        [*common, f"--screenshot={tmp_path / 'view.png'}", "--window-size=1200,900", page.as_uri()],
        capture_output=True,
        timeout=90,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert (tmp_path / "view.png").stat().st_size > 1000
    out = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=90
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _sample_records(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    sizes = rng.lognormal(4, 1, n).astype(int)  # 1 B to a few KiB
    return [b"sample %05d|\xcf" % i + rng.bytes(int(s)) for i, s in enumerate(sizes)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("bins", [8, 4096])
def test_view_at_scale_in_chromium(tmp_path: Path, bins: int) -> None:
    """At 8 and at 4,096 bins: bin ticks and the record axis, a tooltip on every bar,
    the heaviest bins named and marked, a record-size histogram, the compression and
    the version; records shown as Python bytes; no script runs."""
    path = tmp_path / "ds"
    records = [HOSTILE, *_sample_records(bins * 2 + 2)]  # bins 0, 1, 2 get one more
    write_split_data(path, records, splits=bins, compression="zstd" if bins == 8 else None)
    loader = SplitDataLoader(path)
    assert heaviest_bins(loader.bin_counts) == [0, 1, 2]
    t0 = time.perf_counter()
    dom = _render(tmp_path, loader._repr_html_())
    print(f"chromium rendered {bins} bins in {time.perf_counter() - t0:.2f} s")
    assert len(re.findall(r'<rect class="bin"', dom)) == bins  # parsed as SVG, one per bin
    titles = re.findall(r"<title>bin (\d+): 3 records</title>", dom)
    assert titles == ["0", "1", "2"]  # every bar has its tooltip, the last ones too
    assert len(re.findall(r"<title>bin \d+: [\d,]+ records</title>", dom)) == bins
    assert f"<title>bin {bins - 1}: 2 records</title>" in dom
    ticks = re.findall(r'<text x="[\d.]+" y="\d+" text-anchor="middle">([\d,]+)</text>', dom)
    assert ticks == (
        [str(b) for b in range(8)] if bins == 8 else ["0", "1,000", "2,000", "3,000", "4,000"]
    )
    heavy = re.findall(r'<text class="heavy"[^>]*>(bins? [\d, ]+)</text>', dom)
    assert heavy == (["bin 0", "bin 1", "bin 2"] if bins == 8 else ["bins 0, 1, 2"])
    ratio = 3 / (len(records) / bins)
    assert f"bin 0: 3 records ({ratio:.2f}x mean), bin 1: 3 records" in dom  # in the facts
    assert len(re.findall(r'<tr class="size">', dom)) >= 4  # the size histogram
    of = "all parts" if bins == 8 else "64 of 4,096 parts, spread over the dataset"
    assert re.search(rf"record sizes \(stored bytes; [\d,]+ records of {of}: min", dom)
    assert '<th style="text-align:left;padding-right:1em">version</th>' in dom
    assert "1 (format 4)" in dom
    assert ("zstd: 8 of 8 parts" if bins == 8 else '<td style="text-align:left">none</td>') in dom
    assert "<code>b'sample 00000|\\xcf" in dom  # binary records as Python bytes
    assert "data-ran" not in dom.split("<body", 1)[1].split(">", 1)[0]  # the body attribute
    assert "<script" not in dom
    assert "&lt;script&gt;document.body.setAttribute" in dom  # shown as text


def test_codec_shows_the_dataset_s_codec(loader: SplitDataLoader) -> None:
    from dataclasses import replace

    from splitdask._read._html import dataset_html

    desc = loader.describe()
    assert desc.codec == "bytes"
    assert 'codec</th><td style="text-align:left">bytes</td>' in dataset_html(desc, [])
    html = dataset_html(replace(desc, codec="my<codec>"), [])
    assert 'codec</th><td style="text-align:left">my&lt;codec&gt;</td>' in html


def test_typed_records_show_their_fields_dtypes_and_shapes(tmp_path: Path) -> None:

    recs = [{"ids": np.arange(i, i + 4, dtype=np.int32), "label": i, "text": "t"} for i in range(8)]
    write_split_data(tmp_path / "typed", recs, splits=2, codec="msgpack", mode="w")
    html = SplitDataLoader(tmp_path / "typed")._repr_html_()
    fields = html.split("fields of the first 5 records", 1)[1].split("</table>", 1)[0]
    assert (
        '<td style="text-align:left">ids</td><td style="text-align:left"><code>int32 (4,)' in fields
    )
    assert 'label</td><td style="text-align:left"><code>int</code>' in fields
    assert 'text</td><td style="text-align:left"><code>str</code>' in fields
    assert "&quot;ids&quot;: [0, 1, 2, 3]" in html  # the first record, decoded, as JSON
    assert 'codec</th><td style="text-align:left">msgpack</td>' in html
    plain = SplitDataLoader(tmp_path / "typed", decode=False)._repr_html_()
    assert "fields of the first" not in plain


def test_size_histogram_counts_decoded_sizes_of_compressed_records(tmp_path: Path) -> None:
    from splitdask._read._describe import sample_sizes

    recs = [b"line %d " % i + b"x" * (i % 37) for i in range(3000)]  # small: frames shared
    write_split_data(tmp_path / "z", recs, splits=3, compression="zstd", mode="w")
    loader = SplitDataLoader(tmp_path / "z")
    sample = sample_sizes(loader._reader or loader._open())
    assert sample is not None
    assert sorted(sample.sizes.tolist()) == sorted(len(r) for r in recs)
