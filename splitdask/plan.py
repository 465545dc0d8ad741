"""Epoch plans: which record each rank and each DataLoader worker reads, in what order.

The plans are pure arithmetic over a dataset's bin sizes and need neither torch nor
I/O; they live in :mod:`splitdask._dataset._plan` and are public here.
"""

from splitdask._dataset._plan import (
    SHUFFLES,
    EpochOrder,
    RankPlan,
    ShuffleQuality,
    default_window,
    epoch_seed,
    normalise_shuffle,
    shuffle_quality,
)

__all__ = [
    "SHUFFLES",
    "EpochOrder",
    "RankPlan",
    "ShuffleQuality",
    "default_window",
    "epoch_seed",
    "normalise_shuffle",
    "shuffle_quality",
]
