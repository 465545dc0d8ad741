"""``describe()``, the one-line ``repr`` and the HTML view; the view in a real Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from splitdask import Description, SplitDataLoader, write_split_data
from splitdask._read._html import balance_svg

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
    assert "ff fe 00 62" in html  # binary records are shown as hex
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


@pytest.mark.timeout(120)
@pytest.mark.parametrize("bins", [4, 4096])
def test_view_renders_in_chromium_without_running_scripts(tmp_path: Path, bins: int) -> None:
    counts_path = tmp_path / "ds"
    records = [HOSTILE] + [b"x" * (i % 5) for i in range(bins * 2)]
    write_split_data(counts_path, records, splits=bins)
    loader = SplitDataLoader(counts_path)
    page = tmp_path / "view.html"
    # A page that would show a script's effect: a script that ran sets data-ran.
    page.write_text(f"<!doctype html><html><body>{loader._repr_html_()}</body></html>")
    t0 = time.perf_counter()
    out = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    print(f"chromium rendered {bins} bins in {time.perf_counter() - t0:.2f} s")
    assert len(re.findall(r'<rect class="bin"', dom)) == bins  # parsed as SVG, one per bin
    assert "data-ran" not in dom.split("<body", 1)[1].split(">", 1)[0]  # the body attribute
    assert "<script" not in dom
    assert "&lt;script&gt;document.body.setAttribute" in dom  # shown as text
