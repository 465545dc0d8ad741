"""The mpq wire formats, without processes: frames, batch messages, error frames."""

from __future__ import annotations

import pickle
import struct
from typing import Any

import pytest

from splitdask.errors import MpQItrError, RemoteTraceback
from splitdask.mpq import _wire


def _round_trip(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Pack ``frames``; return the messages and the frames split back out of them."""
    messages = list(_wire.pack_frames(frames))
    back = [bytes(f) for msg in messages for f in _wire.split_message(msg)]
    return messages, back


# ----------------------------------------------------------------- frames


@pytest.mark.parametrize(
    ("tag", "payload"),
    [
        (_wire.READY, 1234),
        (_wire.ITEM, {"a": [1, 2.5, b"x"], "b": None}),
        (_wire.DONE, 0),
        (_wire.ITEM, b""),
    ],
)
def test_frame_round_trip(tag: int, payload: Any) -> None:
    frame = _wire.encode_frame(tag, payload)
    assert frame[:1] == b"\x80"  # never mistaken for a batch
    assert _wire.decode_frame(frame) == (tag, payload)
    assert _wire.decode_frame(memoryview(frame)) == (tag, payload)


def test_frame_of_unpicklable_payload_raises() -> None:
    with pytest.raises((TypeError, pickle.PicklingError, AttributeError)):
        _wire.encode_frame(_wire.ITEM, lambda: None)


# --------------------------------------------------------------- messages


def test_no_frames_no_messages() -> None:
    assert list(_wire.pack_frames([])) == []


def test_one_small_frame_is_sent_unwrapped() -> None:
    frame = _wire.encode_frame(_wire.ITEM, 7)
    messages, back = _round_trip([frame])
    assert messages == [frame]
    assert back == [frame]


def test_small_frames_share_one_batch() -> None:
    frames = [_wire.encode_frame(_wire.ITEM, i) for i in range(100)]
    messages, back = _round_trip(frames)
    assert len(messages) == 1
    assert messages[0][:1] == _wire.BATCH_MARK
    assert len(messages[0]) == 1 + sum(4 + len(f) for f in frames)
    assert back == frames


def test_batch_layout_is_length_prefixed() -> None:
    a, b = b"\x80first", b"\x80second!"
    (msg,) = _wire.pack_frames([a, b])
    assert msg == b"B" + struct.pack("<I", len(a)) + a + struct.pack("<I", len(b)) + b


def test_empty_frames_survive_inside_a_batch() -> None:
    frames = [b"", b"\x80x", b""]
    _, back = _round_trip(frames)
    assert back == frames


def test_an_empty_message_is_one_empty_frame() -> None:
    assert [bytes(f) for f in _wire.split_message(b"")] == [b""]


def test_batches_are_cut_near_batch_bytes() -> None:
    frame = b"\x80" + bytes(10_000)
    frames = [frame] * 100  # 1 MB of small frames
    messages, back = _round_trip(frames)
    assert back == frames
    payloads = [sum(len(f) for f in _wire.split_message(msg)) for msg in messages]
    assert len(payloads) == -(-len(frames) * len(frame) // _wire.BATCH_BYTES)
    # A batch is closed by the frame that reaches BATCH_BYTES, not later.
    assert all(_wire.BATCH_BYTES <= p < _wire.BATCH_BYTES + len(frame) for p in payloads[:-1])
    assert 0 < payloads[-1] < _wire.BATCH_BYTES


def test_large_frames_go_alone_and_keep_their_place() -> None:
    big = b"\x80" + bytes(_wire.ALONE_BYTES)
    small = [b"\x80" + bytes([i]) for i in range(6)]
    frames = [small[0], small[1], big, small[2], big, big, small[3], small[4], small[5]]
    messages, back = _round_trip(frames)
    assert back == frames
    expected = [
        b"B" + b"".join(struct.pack("<I", 2) + f for f in small[:2]),
        big,
        small[2],  # a group of one is not wrapped
        big,
        big,
        b"B" + b"".join(struct.pack("<I", 2) + f for f in small[3:]),
    ]
    assert messages == expected


def test_frame_just_below_the_alone_size_is_batched() -> None:
    edge = b"\x80" + bytes(_wire.ALONE_BYTES - 2)
    messages, back = _round_trip([edge, edge])
    assert len(messages) == 1
    assert messages[0][:1] == _wire.BATCH_MARK
    assert back == [edge, edge]


def test_split_frames_are_views_into_the_message() -> None:
    (msg,) = _wire.pack_frames([b"\x80aa", b"\x80bbb"])
    frames = _wire.split_message(msg)
    assert all(isinstance(f, memoryview) and f.obj is msg for f in frames)


def test_decoded_items_match_after_packing() -> None:
    items: list[Any] = [i * 3 for i in range(50)] + ["x" * 100_000, (1, "a")]
    frames = [_wire.encode_frame(_wire.ITEM, it) for it in items]
    _, back = _round_trip(frames)
    assert [_wire.decode_frame(f) for f in back] == [(_wire.ITEM, it) for it in items]


# ----------------------------------------------------------------- errors


class _Unpicklable(Exception):
    def __reduce__(self) -> Any:
        raise TypeError("refuses to pickle")


class _Custom(Exception):
    pass


def _raised(exc: BaseException) -> BaseException:
    """``exc`` after it was raised and caught here, so it carries a traceback."""

    def raise_it_in_worker() -> None:
        raise exc

    try:
        raise_it_in_worker()
    except BaseException as caught:
        return caught
    raise AssertionError("unreachable")


def _error_payload(exc: BaseException) -> dict[str, Any]:
    tag, payload = _wire.decode_frame(_wire.encode_error(_raised(exc)))
    assert tag == _wire.ERROR
    assert isinstance(payload, dict)
    return payload


def test_picklable_exception_comes_back_as_itself() -> None:
    payload = _error_payload(_Custom("bad record 17"))
    assert payload["type"] == f"{__name__}._Custom"
    err = _wire.decode_error(3, payload)
    assert type(err) is _Custom
    assert str(err) == "bad record 17"
    cause = err.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_it_in_worker" in cause.tb
    assert "_Custom: bad record 17" in cause.tb
    assert err.remote_traceback == cause.tb  # type: ignore[attr-defined]


def test_unpicklable_exception_becomes_mpq_itr_error() -> None:
    payload = _error_payload(_Unpicklable("no wire for me"))
    assert payload["exc"] is None
    err = _wire.decode_error(5, payload)
    assert type(err) is MpQItrError
    assert err.worker_id == 5
    assert err.remote_type == f"{__name__}._Unpicklable"
    assert "worker 5 raised" in str(err)
    assert "no wire for me" in str(err)
    assert "could not be pickled or unpickled" in str(err)
    assert err.remote_traceback is not None
    assert "raise_it_in_worker" in err.remote_traceback
    assert isinstance(err.__cause__, RemoteTraceback)
    assert err.__cause__.tb == err.remote_traceback


@pytest.mark.parametrize(
    "exc", [StopIteration("early"), SystemExit(3), KeyboardInterrupt()], ids=type
)
def test_exceptions_that_must_not_be_reraised_become_mpq_itr_error(exc: BaseException) -> None:
    err = _wire.decode_error(0, _error_payload(exc))
    assert type(err) is MpQItrError
    assert err.remote_type == f"builtins.{type(exc).__name__}"
    assert "cannot be re-raised in the parent" in str(err)
    assert isinstance(err.__cause__, RemoteTraceback)


def test_exception_that_does_not_unpickle_becomes_mpq_itr_error() -> None:
    payload = _error_payload(_Custom("x"))
    payload["exc"] = b"\x80\x05garbage"
    err = _wire.decode_error(1, payload)
    assert type(err) is MpQItrError
    assert "could not be pickled or unpickled" in str(err)


def test_exception_whose_str_fails_still_travels() -> None:
    class BadStr(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str")

    payload = _error_payload(BadStr())
    assert payload["msg"] == "<str() failed>"
    assert payload["exc"] is None  # a local class does not pickle
    err = _wire.decode_error(2, payload)
    assert isinstance(err, MpQItrError)
    assert "BadStr" in str(err)


def test_error_frame_survives_a_batch() -> None:
    frames = [_wire.encode_frame(_wire.ITEM, 1), _wire.encode_error(_raised(_Custom("late")))]
    _, back = _round_trip(frames)
    tag, payload = _wire.decode_frame(back[1])
    assert tag == _wire.ERROR
    assert str(_wire.decode_error(0, payload)) == "late"
