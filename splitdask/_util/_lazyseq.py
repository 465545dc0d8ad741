"""A sequence whose items are made when first asked for, then kept.

What a large dataset's metadata is built from (its bins' parts, its segments, the
parts of a snapshot): an open makes no object per item, and code written for tuples
reads these unchanged.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar, TypeVar, overload

__all__ = ["LazySequence"]

T = TypeVar("T")


class LazySequence(Sequence[T]):
    """Items ``0 .. len - 1``, each made by :meth:`_make` on first use and kept."""

    _what: ClassVar[str] = "item"
    """What an item is, for the ``IndexError`` of an index out of range."""

    def __init__(self, length: int) -> None:
        self._length = length
        self._made: dict[int, T] = {}

    @abstractmethod
    def _make(self, i: int) -> T:
        """Item ``i`` (a valid, non-negative index)."""

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, i: int) -> T: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[T]: ...

    def __getitem__(self, i: int | slice) -> T | Sequence[T]:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._length))]
        hit = self._made.get(i)
        if hit is not None:
            return hit
        k = i + self._length if i < 0 else i
        if not 0 <= k < self._length:
            raise IndexError(f"{self._what} {i} out of range")
        hit = self._made[k] = self._make(k)
        return hit

    def __iter__(self) -> Iterator[T]:
        return (self[k] for k in range(self._length))
