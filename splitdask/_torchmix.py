"""The PyTorch face of a mixture (:class:`SplitMixtureDataset`, re-exported by
:mod:`splitdask.torch`): the stream of ``_read._mixstream`` with torch's rank and
DataLoader worker information."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
import torch.utils.data as tud

from splitdask._read._mixstream import MixtureStream

__all__ = ["SplitMixtureDataset"]


class SplitMixtureDataset(MixtureStream, tud.IterableDataset[Any]):
    __doc__ = MixtureStream.__doc__

    def _topology(self) -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _worker(self) -> tuple[int, int, int]:
        info = tud.get_worker_info()
        if info is None:
            return super()._worker()
        # As SplitIterableDataset: a pass's workers share a base seed and a pass count.
        token = hash((info.seed - info.id, self._iters)) & ((1 << 62) - 1)
        return info.id, info.num_workers, token
