"""What the engines' readers (Dask, Ray, torch) share: the decoder of one snapshot's
records, made on the driver so that a codec this process cannot decode fails there,
before any task runs, and carried to the tasks (it pickles)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from splitdask._dataset._snapshot import Snapshot
from splitdask._format._codec import DEFAULT_CODEC
from splitdask._read._decode import Decoder, open_decoder

__all__ = ["snapshot_decoder"]


def snapshot_decoder(
    snapshot: Snapshot,
    decode: bool = True,
    allow_pickle: bool = False,
    transform: Callable[[Any], Any] | None = None,
) -> Decoder:
    """The decoder of ``snapshot``'s records (its manifest names their codec; a
    splitdataloader dataset's are bytes).

    Raises
    ------
    ValueError
        As :func:`~splitdask._read._decode.open_decoder`: an unregistered codec, or
        pickle without ``allow_pickle``.
    """
    manifest = snapshot.manifest
    codec = manifest.codec if manifest is not None else DEFAULT_CODEC
    return open_decoder(
        codec,
        snapshot.store.urlpath,
        decode=decode,
        allow_pickle=allow_pickle,
        transform=transform,
    )
