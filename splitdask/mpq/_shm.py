"""Big NumPy arrays through shared memory: the slot allocator and the item tree walk.

A worker replaces each big array of an item by a :class:`ShmArray` placeholder
(:func:`extract`), copies the arrays into its slice of the run's pool
(:class:`Slots`, :func:`write_arrays`) and pickles the rest, the *skeleton*. The
parent puts copies of the arrays back into the skeleton (:func:`rebuild`). Both
directions go through the one walk, :func:`walk`, so they agree on which
containers are entered. The functions take any writable buffer, not only a
``SharedMemory``'s, so they can be tested on a ``bytearray``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import numpy as np

# Containers are searched for arrays this deep and up to this many elements, so a
# huge list of small objects costs the pickle alone, not a walk too.
MAX_DEPTH = 4
MAX_SCAN = 1024
# Every array starts on a cache line (and on any dtype's alignment).
ALIGN = 64

_Order = Literal["C", "F"]


class ShmArray(NamedTuple):
    """Placeholder for an array that was written to the shared-memory pool."""

    slot: int  # position in the frame's offsets list
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    order: _Order


class Slots:
    """Allocator over one worker's slice of the pool: first fit, freed in FIFO order.

    The parent frees a worker's allocations in the order they were made (it reads
    that worker's frames in order), so the live allocations are a short FIFO (at
    most the worker's credit plus one). First fit from the start of the slice
    keeps the pages in use down to the bytes actually in flight, however large
    the slice, and uses every gap, whatever the mix of sizes.

    Parameters
    ----------
    base : int
        Offset of the slice in the pool; :meth:`alloc` returns absolute offsets.
    size : int
        Bytes in the slice.
    """

    def __init__(self, base: int, size: int) -> None:
        self.base = base
        self.size = size
        self._live: deque[tuple[int, int]] = deque()  # (start, end), oldest first

    @property
    def live(self) -> int:
        """Allocations not yet released."""
        return len(self._live)

    def release(self, count: int) -> None:
        """Free the ``count`` oldest allocations."""
        for _ in range(count):
            self._live.popleft()

    def alloc(self, n: int) -> int | None:
        """Return the absolute offset of ``n`` free bytes, or None if none are free."""
        pos = 0
        for start, end in sorted(self._live):
            if start - pos >= n:
                break
            pos = max(pos, end)
        else:
            if self.size - pos < n:
                return None
        self._live.append((pos, pos + n))
        return self.base + pos


# -------------------------------------------------------------- tree walk


def walk(x: Any, leaf: Callable[[Any], object | None], depth: int = 0) -> Any:
    """Return ``x`` with each node for which ``leaf`` returns a value replaced by it.

    Lists, tuples, named tuples and dicts (exact types; subclasses are opaque) are
    entered up to :data:`MAX_DEPTH` levels below ``x`` and when they have at most
    :data:`MAX_SCAN` elements. A container in which nothing was replaced is
    returned as itself, so untouched parts of an item keep their identity (and
    pickle's sharing of them).

    Parameters
    ----------
    x
        The item, or a part of it.
    leaf
        Called on every node visited, containers included, before entering it;
        returns the replacement, or ``None`` to keep the node (and enter it).
    depth
        Depth of ``x`` in the item.

    Returns
    -------
    Any
        ``x`` itself, or a copy of its containers with the leaves replaced.
    """
    new = leaf(x)
    if new is not None:
        return new
    if depth >= MAX_DEPTH:
        return x
    t = type(x)
    if t is list or t is tuple or (isinstance(x, tuple) and hasattr(t, "_fields")):
        if len(x) > MAX_SCAN:
            return x
        out = [walk(v, leaf, depth + 1) for v in x]
        if all(a is b for a, b in zip(out, x, strict=True)):
            return x
        if t is list:
            return out
        if t is tuple:
            return tuple(out)
        return t._make(out)
    if t is dict:
        if len(x) > MAX_SCAN:
            return x
        new_dict = {k: walk(v, leaf, depth + 1) for k, v in x.items()}
        if all(new_dict[k] is v for k, v in x.items()):
            return x
        return new_dict
    return x


def layout(a: np.ndarray[Any, Any]) -> _Order:
    """The memory order to copy ``a`` with: ``"F"`` only if it is Fortran- but not C-ordered."""
    return "F" if a.flags.f_contiguous and not a.flags.c_contiguous else "C"


def extract(item: Any, threshold: int) -> tuple[Any, list[np.ndarray[Any, Any]]]:
    """Take the arrays of at least ``threshold`` bytes out of ``item``.

    Only exact ``np.ndarray`` objects without object fields qualify (a subclass
    such as ``np.matrix`` would come back as a plain array).

    Returns
    -------
    skeleton
        ``item`` with each such array replaced by a :class:`ShmArray` whose
        ``slot`` is its index in ``arrays``; ``item`` itself if there were none.
    arrays : list of numpy.ndarray
        The arrays taken out, in walk order.
    """
    found: list[np.ndarray[Any, Any]] = []

    def take(x: Any) -> ShmArray | None:
        if type(x) is np.ndarray and x.nbytes >= threshold and not x.dtype.hasobject:
            found.append(x)
            return ShmArray(len(found) - 1, x.shape, x.dtype, layout(x))
        return None

    return walk(item, take), found


def footprint(arrays: list[np.ndarray[Any, Any]]) -> list[int]:
    """Bytes each array takes in the pool: its size rounded up to :data:`ALIGN`."""
    return [-(-a.nbytes // ALIGN) * ALIGN for a in arrays]


def write_arrays(buf: memoryview, start: int, arrays: list[np.ndarray[Any, Any]]) -> list[int]:
    """Copy ``arrays`` into ``buf`` one after the other from offset ``start``.

    ``start`` must be :data:`ALIGN`-aligned and ``sum(footprint(arrays))`` bytes
    from it must be free.

    Returns
    -------
    list of int
        The offset of each array in ``buf``: the ``offsets`` that
        :func:`rebuild` takes.
    """
    offsets = []
    pos = start
    for a, size in zip(arrays, footprint(arrays), strict=True):
        dst: np.ndarray[Any, Any] = np.ndarray(
            a.shape, dtype=a.dtype, buffer=buf, offset=pos, order=layout(a)
        )
        np.copyto(dst, a, casting="no")
        del dst  # no view may outlive the call: the pool could not be closed
        offsets.append(pos)
        pos += size
    return offsets


def rebuild(skeleton: Any, buf: memoryview, offsets: list[int]) -> Any:
    """Return the item of ``skeleton``, with copies of its arrays read from ``buf``.

    The arrays returned own their memory (no view into ``buf`` escapes) and keep
    the dtype, shape and C/Fortran order they had in the worker.
    """

    def copy_out(x: Any) -> np.ndarray[Any, Any] | None:
        if type(x) is not ShmArray:
            return None
        src: np.ndarray[Any, Any] = np.ndarray(
            x.shape, dtype=x.dtype, buffer=buf, offset=offsets[x.slot], order=x.order
        )
        out: np.ndarray[Any, Any] = src.copy(order=x.order)
        return out

    return walk(skeleton, copy_out)
