"""Progress bars for long work: one ``tqdm.auto`` bar, or nothing.

Library calls show no bar unless asked (``progress=True``); the command line asks
when stderr is a terminal. ``tqdm.auto`` gives notebooks a widget and terminals a
text bar. tqdm is a dependency (docs/decisions.md, "Progress bars").
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from contextlib import suppress
from typing import Any

__all__ = ["Progress", "counted"]


class Progress:
    """Counts records and bytes; draws a bar with records/s, MB/s and an ETA when enabled.

    Parameters
    ----------
    enabled
        ``False`` makes every method a no-op (and imports nothing).
    total
        Records expected, when known (gives the ETA).
    desc
        Label in front of the bar.
    unit
        What ``update`` counts (``"rec"`` for records, ``"part"`` for verify).
    """

    def __init__(
        self, enabled: bool, total: int | None = None, desc: str = "", unit: str = "rec"
    ) -> None:
        self.bytes = 0
        self.count = 0
        self._bar: Any = None
        if enabled:
            tqdm = _tqdm_class()
            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, smoothing=0.1)

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def total(self, total: int) -> None:
        """Set the expected count once it is known (gives the bar an ETA)."""
        if self._bar is not None:
            self._bar.reset(total=total)

    def update(self, count: int, nbytes: int) -> None:
        self.count += count
        self.bytes += nbytes
        if self._bar is not None:
            self._bar.update(count)
            elapsed = self._bar.format_dict.get("elapsed") or 0.0
            if elapsed > 0:
                self._bar.set_postfix_str(f"{self.bytes / elapsed / 1e6:.1f} MB/s", refresh=False)

    def advance_to(self, done: int, count: int) -> None:
        """For a bar of bytes (``unit="B"``): ``done`` of the total read, ``count``
        records so far (shown beside it)."""
        self.count = count
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            elapsed = self._bar.format_dict.get("elapsed") or 0.0
            rates = (
                f", {count / elapsed:,.0f} rec/s, {done / elapsed / 1e6:.1f} MB/s"
                if elapsed > 0
                else ""
            )
            self._bar.set_postfix_str(f"{count:,} rec{rates}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _tqdm_class() -> Any:
    """``tqdm.auto``'s class: a widget in notebooks that have ipywidgets, else text.

    Without ipywidgets, ``tqdm.auto`` warns "IProgress not found" before it falls back
    to text; the text bar is what the user gets either way, so the warning is dropped.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm
    return tqdm


def counted(records: Iterable[Any], progress: Progress, every: int = 256) -> Iterator[Any]:
    """Yield ``records`` unchanged, counting them (and their bytes) into ``progress``."""
    n = size = 0
    for rec in records:
        n += 1
        with suppress(TypeError):  # not bytes-like: the writer names it and its position
            size += memoryview(rec).nbytes
        if n == every:
            progress.update(n, size)
            n = size = 0
        yield rec
    progress.update(n, size)
