"""What travels through a worker's two pipes: both halves of every format, side by side.

Each worker has two pipes and shares no lock, semaphore or queue with the parent,
so a worker killed at any instant cannot leave the parent blocked.

* The *data* pipe, worker -> parent, carries messages. A message is either one
  frame (a pickle of ``(tag, payload)``, which starts with byte ``0x80``) or a
  batch: ``b"B"`` followed by ``[u32 length][frame]...``. The worker's feeder
  thread sends whatever frames are pending through :func:`pack_frames`, so small
  items are batched exactly when the consumer is behind and sent one by one when
  it is waiting; the parent takes a message apart with :func:`split_message`.
* The *control* pipe, parent -> worker, carries one byte per consumed item:
  :data:`CREDIT` gives a credit back, :data:`CREDIT_AND_FREE` also frees the
  oldest shared-memory allocation of that worker. End of file means "stop".

Nothing here touches a pipe or a process, so every format can be tested alone.
"""

from __future__ import annotations

import contextlib
import pickle
import struct
import traceback
from collections.abc import Iterable, Iterator
from typing import Any

from splitdask.errors import MpQItrError, RemoteTraceback

# Frame tags. READY's payload is the worker's pid, ITEM's the item, SHM's a
# ``(skeleton, offsets)`` pair (see _shm), ERROR's an error dict, DONE's the count.
READY, ITEM, SHM, ERROR, DONE = range(5)
# Control bytes.
CREDIT = b"\x01"
CREDIT_AND_FREE = b"\x02"

PICKLE_PROTOCOL = pickle.HIGHEST_PROTOCOL
BATCH_MARK = b"B"
_LEN = struct.Struct("<I")
# Frames at least this big are sent alone; smaller ones are coalesced into batch
# messages of up to BATCH_BYTES: batching saves a syscall per small item, and
# copying a big frame into a batch would cost more than its own send.
ALONE_BYTES = 64 << 10
BATCH_BYTES = 256 << 10


# ----------------------------------------------------------------- frames


def encode_frame(tag: int, payload: Any) -> bytes:
    """Pickle one ``(tag, payload)`` frame; pickling errors propagate."""
    return pickle.dumps((tag, payload), protocol=PICKLE_PROTOCOL)


def decode_frame(frame: bytes | memoryview) -> tuple[int, Any]:
    """Unpickle a frame made by :func:`encode_frame`; unpickling errors propagate."""
    tag, payload = pickle.loads(frame)
    return tag, payload


# --------------------------------------------------------------- messages


def pack_frames(frames: Iterable[bytes]) -> Iterator[bytes]:
    """Group frames into the messages to send, in order.

    A frame of at least :data:`ALONE_BYTES` is a message of its own. The small
    frames between two such frames are joined into batches of up to about
    :data:`BATCH_BYTES`; a group of one frame is sent as that frame, unwrapped.

    Parameters
    ----------
    frames
        Frames from :func:`encode_frame` (or any bytes not starting with ``b"B"``).

    Yields
    ------
    bytes
        Messages that :func:`split_message` turns back into ``frames``.
    """
    group: list[bytes] = []
    size = 0
    for frame in frames:
        if len(frame) >= ALONE_BYTES:
            if group:
                yield _batch(group)
                group, size = [], 0
            yield frame
            continue
        group.append(frame)
        size += len(frame)
        if size >= BATCH_BYTES:
            yield _batch(group)
            group, size = [], 0
    if group:
        yield _batch(group)


def _batch(group: list[bytes]) -> bytes:
    if len(group) == 1:
        return group[0]
    parts = [BATCH_MARK]
    pack = _LEN.pack
    for frame in group:
        parts.append(pack(len(frame)))
        parts.append(frame)
    return b"".join(parts)


def split_message(msg: bytes) -> list[memoryview]:
    """Return the frames of a message from :func:`pack_frames`, as views into it.

    Parameters
    ----------
    msg
        One message as received. Anything not starting with ``b"B"`` is a single
        frame (a pickle starts with ``0x80``), even an empty one.

    Returns
    -------
    list of memoryview
        The frames, in the order they were packed; they share ``msg``'s memory.
    """
    view = memoryview(msg)
    if msg[:1] != BATCH_MARK:
        return [view]
    frames = []
    pos, end = 1, len(view)
    unpack = _LEN.unpack_from
    while pos < end:
        (size,) = unpack(view, pos)
        pos += _LEN.size
        frames.append(view[pos : pos + size])
        pos += size
    return frames


# ----------------------------------------------------------------- errors


def encode_error(exc: BaseException) -> bytes:
    """Describe a worker's exception as an ERROR frame that never fails to pickle.

    The exception itself travels only if it pickles; its type name, message and
    formatted traceback always do, so the parent can report it either way.
    """
    try:
        exc_bytes: bytes | None = pickle.dumps(exc, protocol=PICKLE_PROTOCOL)
    except Exception:
        exc_bytes = None
    try:
        message = str(exc)
    except Exception:
        message = "<str() failed>"
    t = type(exc)
    payload = {
        "exc": exc_bytes,
        "type": f"{t.__module__}.{t.__qualname__}",
        "msg": message,
        "tb": "".join(traceback.format_exception(t, exc, exc.__traceback__)),
    }
    return encode_frame(ERROR, payload)


def decode_error(worker_id: int, payload: dict[str, Any]) -> BaseException:
    """Turn an ERROR frame's payload into the exception to raise in the parent.

    Parameters
    ----------
    worker_id
        The worker that sent it, for the message of a substitute error.
    payload
        The payload of a frame made by :func:`encode_error`.

    Returns
    -------
    BaseException
        The worker's own exception if it unpickles and is an ``Exception`` other
        than ``StopIteration``/``StopAsyncIteration`` (which would end the loop
        quietly); otherwise an :class:`MpQItrError` naming its type. Either way
        ``__cause__`` is a :class:`RemoteTraceback` with the worker's traceback,
        which is also set as ``remote_traceback`` where possible.
    """
    tb_text: str = payload["tb"]
    type_name: str = payload["type"]
    message: str = payload["msg"]
    exc: object = None
    if payload["exc"] is not None:
        try:
            exc = pickle.loads(payload["exc"])
        except Exception:
            exc = None
    cause = RemoteTraceback(tb_text)
    if isinstance(exc, Exception) and not isinstance(exc, StopIteration | StopAsyncIteration):
        with contextlib.suppress(Exception):
            exc.remote_traceback = tb_text  # type: ignore[attr-defined]
        exc.__cause__ = cause
        return exc
    reason = (
        "cannot be re-raised in the parent"
        if exc is not None
        else "could not be pickled or unpickled"
    )
    err = MpQItrError(
        f"MpQItr worker {worker_id} raised {type_name}: {message} (the exception {reason}; "
        "its traceback is attached)",
        worker_id=worker_id,
        remote_type=type_name,
        remote_traceback=tb_text,
    )
    err.__cause__ = cause
    return err
