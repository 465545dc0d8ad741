"""The public front: :class:`MpQItr` and :class:`MpQOptions`.

They sit together because each builds the other (``MpQItr.configure`` returns
options, calling options returns an ``MpQItr``). Nothing here starts a process:
``iter()`` hands over to :class:`~splitdask.mpq.MpQRun` (:mod:`._run`).
"""

from __future__ import annotations

import multiprocessing
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Generic, ParamSpec, TypeVar

from splitdask._util._closing import Closing
from splitdask.mpq._run import MpQRun

T = TypeVar("T")
P = ParamSpec("P")

_KIB = 1 << 10
_MIB = 1 << 20


@dataclass(frozen=True)
class MpQOptions:
    """Settings of an :class:`MpQItr`; calling it builds one.

    Get one from :meth:`MpQItr.configure` (or construct it directly). Options
    never travel through ``MpQItr(...)``'s own arguments, which are passed
    untouched to ``generator_fn``, so no option name can collide with a keyword
    argument of the generator.

    Parameters
    ----------
    queue_size : int
        Items produced but not yet consumed, over all workers (each worker gets
        ``ceil(queue_size / num_workers)``). Default 16.
    start_method : str or None
        ``"fork"``, ``"spawn"`` or ``"forkserver"``; ``None`` uses
        multiprocessing's default for the platform.
    num_workers : int
        Worker processes; each runs ``generator_fn(*args, **kwargs)`` and should
        take its share via :func:`get_worker_info`. Default 1.
    timeout : float or None
        Longest wait, in seconds, for the next item before
        :class:`MpQItrTimeoutError`; ``None`` waits as long as the workers live.
    shm_threshold : int or None
        NumPy arrays of at least this many bytes (in the item itself or inside
        its tuples, lists, dicts and named tuples) travel through shared memory
        instead of the pipe. ``None`` disables shared memory. Default 256 KiB.
    shm_pool_bytes : int
        Size of the shared-memory pool of one run, split evenly between workers.
        Pages are only committed when used. Default 512 MiB; shrunk to half of
        the free space of ``/dev/shm`` if that is smaller.
    seed : int or None
        Base seed for the workers (see :class:`WorkerInfo`); ``None`` draws it
        from Python's ``random`` in the parent at every ``iter()``.
    """

    queue_size: int = 16
    start_method: str | None = None
    num_workers: int = 1
    timeout: float | None = None
    shm_threshold: int | None = 256 * _KIB
    shm_pool_bytes: int = 512 * _MIB
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.queue_size <= 65536:
            raise ValueError(f"queue_size must be in 1..65536, got {self.queue_size}")
        if not 1 <= self.num_workers <= 1024:
            raise ValueError(f"num_workers must be in 1..1024, got {self.num_workers}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be positive or None, got {self.timeout}")
        if self.shm_threshold is not None and self.shm_threshold < 1:
            raise ValueError(f"shm_threshold must be >= 1 or None, got {self.shm_threshold}")
        if self.shm_pool_bytes < 0:
            raise ValueError(f"shm_pool_bytes must be >= 0, got {self.shm_pool_bytes}")
        if self.start_method is not None:
            methods = multiprocessing.get_all_start_methods()
            if self.start_method not in methods:
                raise ValueError(
                    f"start_method {self.start_method!r} is not available here; "
                    f"choose one of {methods}"
                )

    def replace(self, **changes: Any) -> MpQOptions:
        """Return a copy with some options changed (same names as the fields)."""
        return replace(self, **changes)

    def __call__(
        self, generator_fn: Callable[P, Iterable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> MpQItr[T]:
        """Build an :class:`MpQItr` with these options; arguments go to ``generator_fn``."""
        itr = MpQItr(generator_fn, *args, **kwargs)
        itr._options = self
        return itr


_DEFAULTS = MpQOptions()


class MpQItr(Closing, Generic[T]):
    """Run ``generator_fn(*args, **kwargs)`` in worker processes and iterate its items.

    Each ``iter()`` starts a fresh run (an :class:`MpQRun`) with its own workers;
    runs of the same or different ``MpQItr`` objects are independent.

    Parameters
    ----------
    generator_fn
        A callable returning an iterable: usually a generator function. Under
        ``spawn`` and ``forkserver`` it, ``args`` and ``kwargs`` are pickled, so
        it must be defined at module level of an importable module.
    *args, **kwargs
        Passed unchanged to ``generator_fn``. ``generator_fn`` is positional-only,
        so even a keyword argument named ``generator_fn`` reaches the generator.

    See Also
    --------
    MpQItr.configure : set queue size, start method, workers, timeout, shared memory.

    Examples
    --------
    >>> for batch in MpQItr(batches, "train", batch_size=32):  # doctest: +SKIP
    ...     step(batch)
    >>> loader = MpQItr.configure(num_workers=2, start_method="spawn")
    >>> with loader(batches, "train", batch_size=32) as itr:  # doctest: +SKIP
    ...     for batch in itr:
    ...         step(batch)
    """

    _options: MpQOptions

    def __init__(
        self, generator_fn: Callable[P, Iterable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        if not callable(generator_fn):
            raise TypeError(f"generator_fn must be callable, got {generator_fn!r}")
        self._fn: Callable[..., Iterable[T]] = generator_fn
        self._args: tuple[Any, ...] = args
        self._kwargs: dict[str, Any] = kwargs
        self._options = MpQOptions()
        self._runs: weakref.WeakSet[MpQRun[T]] = weakref.WeakSet()

    # The defaults are MpQOptions' own (_DEFAULTS): the dataclass fields are the one
    # source of truth. The names are spelled out so that type checkers see them.
    @classmethod
    def configure(
        cls,
        *,
        queue_size: int = _DEFAULTS.queue_size,
        start_method: str | None = _DEFAULTS.start_method,
        num_workers: int = _DEFAULTS.num_workers,
        timeout: float | None = _DEFAULTS.timeout,
        shm_threshold: int | None = _DEFAULTS.shm_threshold,
        shm_pool_bytes: int = _DEFAULTS.shm_pool_bytes,
        seed: int | None = _DEFAULTS.seed,
    ) -> MpQOptions:
        """Return an :class:`MpQOptions` that builds ``MpQItr`` objects with these settings.

        ``MpQItr.configure(num_workers=2)(fn, *args, **kwargs)`` is the configured
        form of ``MpQItr(fn, *args, **kwargs)``. The parameters are described in
        :class:`MpQOptions`.
        """
        return MpQOptions(
            queue_size=queue_size,
            start_method=start_method,
            num_workers=num_workers,
            timeout=timeout,
            shm_threshold=shm_threshold,
            shm_pool_bytes=shm_pool_bytes,
            seed=seed,
        )

    @property
    def options(self) -> MpQOptions:
        """The settings this iterable runs with."""
        return self._options

    def __iter__(self) -> MpQRun[T]:
        """Start a new run: fresh workers calling ``generator_fn``."""
        run = MpQRun(self._fn, self._args, self._kwargs, self._options)
        self._runs.add(run)
        return run

    def close(self) -> None:
        """Stop every run of this iterable that is still alive (idempotent)."""
        for run in list(self._runs):
            run.close()

    def __repr__(self) -> str:
        name = getattr(self._fn, "__qualname__", repr(self._fn))
        return f"MpQItr({name}, {self._options!r})"
