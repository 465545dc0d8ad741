"""The mpq exceptions, without processes: hierarchy and pickle round trips."""

from __future__ import annotations

import pickle

import pytest

from splitdask import errors
from splitdask.errors import SplitDaskError
from splitdask.mpq import MpQItrError, MpQItrTimeoutError, RemoteTraceback, WorkerDiedError

PROTOCOLS = range(2, pickle.HIGHEST_PROTOCOL + 1)


def test_mpq_errors_live_in_errors_and_are_reexported() -> None:
    import splitdask
    import splitdask.mpq

    for name in ("MpQItrError", "MpQItrTimeoutError", "RemoteTraceback", "WorkerDiedError"):
        assert name in errors.__all__
        assert name in splitdask.mpq.__all__
        assert getattr(splitdask.mpq, name) is getattr(errors, name)
        assert getattr(splitdask, name) is getattr(errors, name)


def test_hierarchy() -> None:
    assert issubclass(MpQItrError, SplitDaskError)
    assert issubclass(MpQItrError, RuntimeError)
    assert issubclass(WorkerDiedError, MpQItrError)
    assert issubclass(MpQItrTimeoutError, MpQItrError)
    assert issubclass(MpQItrTimeoutError, TimeoutError)
    assert not issubclass(RemoteTraceback, SplitDaskError)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_worker_died_error_keeps_exitcode_and_pid(protocol: int) -> None:
    err = WorkerDiedError("worker 3 died", worker_id=3, exitcode=-9, pid=4242)
    back = pickle.loads(pickle.dumps(err, protocol=protocol))
    assert type(back) is WorkerDiedError
    assert str(back) == "worker 3 died"
    assert back.args == ("worker 3 died",)
    assert (back.worker_id, back.exitcode, back.pid) == (3, -9, 4242)
    assert (back.remote_type, back.remote_traceback) == (None, None)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_mpq_itr_error_keeps_its_attributes(protocol: int) -> None:
    err = MpQItrError(
        "worker 1 raised X", worker_id=1, remote_type="m.X", remote_traceback="Traceback ..."
    )
    back = pickle.loads(pickle.dumps(err, protocol=protocol))
    assert type(back) is MpQItrError
    assert str(back) == "worker 1 raised X"
    assert (back.worker_id, back.remote_type, back.remote_traceback) == (
        1,
        "m.X",
        "Traceback ...",
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_timeout_error_keeps_message_and_stays_a_timeout(protocol: int) -> None:
    err = MpQItrTimeoutError("no item within 1.5 s", worker_id=0)
    back = pickle.loads(pickle.dumps(err, protocol=protocol))
    assert type(back) is MpQItrTimeoutError
    assert isinstance(back, TimeoutError)
    assert str(back) == "no item within 1.5 s"
    assert back.args == ("no item within 1.5 s",)
    assert back.worker_id == 0


def test_attributes_set_after_construction_survive() -> None:
    err = WorkerDiedError("gone", exitcode=1)
    err.note = "extra"  # type: ignore[attr-defined]
    back = pickle.loads(pickle.dumps(err))
    assert back.note == "extra"
    assert back.exitcode == 1
    assert back.pid is None


class _MyDied(WorkerDiedError):
    """A user subclass: must round-trip as itself, with the inherited attributes."""


def test_subclass_round_trips_as_itself() -> None:
    back = pickle.loads(pickle.dumps(_MyDied("sub", worker_id=2, exitcode=-15, pid=7)))
    assert type(back) is _MyDied
    assert (str(back), back.worker_id, back.exitcode, back.pid) == ("sub", 2, -15, 7)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_remote_traceback_round_trips(protocol: int) -> None:
    tb = 'Traceback (most recent call last):\n  File "w.py", line 1\nValueError: x\n'
    back = pickle.loads(pickle.dumps(RemoteTraceback(tb), protocol=protocol))
    assert type(back) is RemoteTraceback
    assert back.tb == tb
    assert str(back) == "\n\n" + tb.rstrip("\n") + "\n(end of worker traceback)"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_timeout_error_round_trips_through_tblib_as_dask_installs_it(protocol: int) -> None:
    import copyreg

    from tblib import pickling_support

    copyreg.pickle(MpQItrTimeoutError, pickling_support.pickle_exception)  # what install() does
    try:
        err = MpQItrTimeoutError("no item within 1.5 s", worker_id=3)
        back = pickle.loads(pickle.dumps(err, protocol=protocol))
    finally:
        copyreg.dispatch_table.pop(MpQItrTimeoutError, None)
    assert type(back) is MpQItrTimeoutError
    assert str(back) == "no item within 1.5 s"
    assert back.worker_id == 3
