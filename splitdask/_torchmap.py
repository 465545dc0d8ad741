"""The map-style PyTorch dataset (:class:`SplitMapDataset`, re-exported by
:mod:`splitdask.torch`): random access for samplers, a batch fetched at once."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch.utils.data as tud

from splitdask._format._codec import Codec
from splitdask._read._decode import Decoder
from splitdask._read._engine import snapshot_decoder
from splitdask._read._pinned import Pinned
from splitdask._store import CacheDir, UrlPath

__all__ = ["SplitMapDataset", "codec_state"]


class SplitMapDataset(Pinned, tud.Dataset[Any]):
    """Random access for a ``DataLoader`` with a sampler (e.g. ``DistributedSampler``).

    Parameters
    ----------
    urlpath, storage_options
        The dataset's location.
    transform
        Called on each record, once decoded, in the worker (picklable, for spawned
        workers: a module-level function).
    cache_dir, cache_bytes
        A local part cache shared by the workers (see :class:`splitdask.SplitDataLoader`):
        parts already in it are read locally; random reads do not fill it.
    version
        The dataset version to read (its number or tag, as for
        :class:`splitdask.SplitDataLoader`); default the newest.
    decode, allow_pickle
        As for :class:`splitdask.SplitDataLoader`: records are decoded with the
        dataset's codec (a ``"msgpack"`` dict of arrays and numbers, which the
        default collate makes a dict of tensors); ``decode=False``: the stored
        bytes. Pickle decodes only with ``allow_pickle=True``.

    Raises
    ------
    SnapshotExpiredError
        If ``version`` (or, in a worker, the version the main process opened) was
        removed by ``gc``; the error names it and the oldest version kept.

    Notes
    -----
    ``__getitems__`` serves a whole batch with one batched read: one request per
    part touched on remote stores. The dataset pickles as its location and version:
    forked and spawned workers read the version the main process opened.
    """

    def __init__(
        self,
        urlpath: UrlPath,
        storage_options: Mapping[str, Any] | None = None,
        *,
        transform: Callable[[Any], Any] | None = None,
        cache_dir: CacheDir = None,
        cache_bytes: int | str | None = None,
        version: int | str | None = None,
        decode: bool = True,
        allow_pickle: bool = False,
    ) -> None:
        super().__init__(urlpath, storage_options, cache_dir, cache_bytes, version)
        self.transform = transform
        self._codec = snapshot_decoder(self.snapshot, decode, allow_pickle).codec
        self._len = self.snapshot.num_records

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        idx = np.asarray(indices, dtype=np.int64)
        bad = (idx < 0) | (idx >= self._len)
        if bad.any():
            raise IndexError(f"index {int(idx[bad][0])} is out of range for {self._len} records")
        return Decoder(self._codec, self.transform).many(self.reader.records(idx))

    def __getstate__(self) -> dict[str, Any]:
        return {
            **self._location(),
            "transform": self.transform,
            "len": self._len,
            **codec_state(self),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._open_location(state)
        self.transform, self._len = state["transform"], state["len"]
        self._codec = state.get("codec")


def codec_state(ds: Any) -> dict[str, Codec | None]:
    """The codec a pickled dataset decodes with (``None``: records as stored); a
    user's travels as its functions, so workers need not have registered it."""
    return {"codec": ds._codec}
