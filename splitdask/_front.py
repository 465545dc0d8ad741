"""The public :class:`SplitDataLoader`: the read layer's :class:`Loader` with the
shortcuts into the engines (a Dask bag), which the read layer itself does not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from splitdask._read._loader import Loader

__all__ = ["SplitDataLoader"]


class SplitDataLoader(Loader):
    __doc__ = Loader.__doc__

    def to_bag(
        self,
        shuffle: bool = False,
        seed: int | None = None,
        bins: Sequence[int] | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """This dataset as a ``dask.bag.Bag`` with one partition per bin.

        The same as :func:`splitdask.bag.read_split_bins` with this loader's
        location and storage options, except that the Bag reads the snapshot this
        loader holds, so it agrees with ``len(self)`` and indexing, and hands out
        records as this loader does (decoded or not, transformed).
        """
        from splitdask.bag import snapshot_bag  # dask is imported only when used

        snapshot = self.snapshot  # opens the loader: its decoder is set
        return snapshot_bag(snapshot, shuffle, seed, bins, batch_size, self._dec)
