"""Epoch plans: which record each rank and each DataLoader worker reads, in what order.

The plans are pure arithmetic over a dataset's bin sizes and need neither torch nor
I/O; they live in :mod:`splitdask._dataset._plan` and are public here. Mixtures of
datasets (:class:`Mixture`, :func:`audit`) open their sources' manifests once, then
are arithmetic too (:mod:`splitdask._dataset._mixture`).
"""

from splitdask._dataset._mixstate import MixtureAudit, SourceAudit, audit
from splitdask._dataset._mixture import STOPPING, Mixture, MixtureSource
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
    "STOPPING",
    "EpochOrder",
    "Mixture",
    "MixtureAudit",
    "MixtureSource",
    "RankPlan",
    "ShuffleQuality",
    "SourceAudit",
    "audit",
    "default_window",
    "epoch_seed",
    "normalise_shuffle",
    "shuffle_quality",
]
