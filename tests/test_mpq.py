"""Tests of ``splitdask.mpq``: real processes, real signals, every start method."""

from __future__ import annotations

import gc
import importlib
import itertools
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _mpq_helpers as h
import numpy as np
import psutil
import pytest
from conftest import wait_for

from splitdask import SplitDataLoader, write_split_data
from splitdask.errors import SplitDaskError
from splitdask.mpq import (
    MpQItr,
    MpQItrError,
    MpQItrTimeoutError,
    MpQOptions,
    RemoteTraceback,
    WorkerDiedError,
    WorkerInfo,
    get_worker_info,
)

METHODS = ["fork", "spawn", "forkserver"]
ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
# Start forkserver workers with these already imported (as an application would).
multiprocessing.get_context("forkserver").set_forkserver_preload(
    ["numpy", "splitdask.mpq", "_mpq_helpers"]
)


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _shm_entries() -> set[str]:
    return {name for name in os.listdir("/dev/shm") if name.startswith("psm_")}


def _shm_mapped_by(pid: int) -> set[str]:
    """The ``psm_`` segments process ``pid`` has mapped."""
    with open(f"/proc/{pid}/maps") as maps:
        paths = [line.split(maxsplit=5)[-1].strip() for line in maps]
    # (" (deleted)": the name was unlinked already, as the pool is once attached)
    names = {os.path.basename(p.removesuffix(" (deleted)")) for p in paths}
    return {n for n in names if n.startswith("psm_")}


def _helper_processes() -> set[int]:
    """Long-lived multiprocessing helpers (forkserver, resource tracker): not leaks."""
    pids = set()
    for child in psutil.Process().children(recursive=False):
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "forkserver" in cmd or "resource_tracker" in cmd:
            pids.add(child.pid)
    return pids


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Every test must leave no worker, zombie or shared-memory segment behind."""
    before = _shm_entries()
    yield
    gc.collect()
    assert multiprocessing.active_children() == []
    leftovers = [
        (c.pid, c.status())
        for c in psutil.Process().children(recursive=True)
        if c.pid not in _helper_processes() and c.ppid() == os.getpid()
    ]
    assert leftovers == []
    # /dev/shm is shared by every process on the machine: a segment another process
    # holds for a moment must not fail this test, one this test leaked never goes.
    wait_for(lambda: not (_shm_entries() - before), "the test's shared memory to go", 10)


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether process ``pid`` no longer exists (or is a zombie not ours) within ``within`` s."""
    try:
        proc = psutil.Process(pid)
        proc.wait(timeout=within)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return False
    return True


def _collect(items: Any, into: list[Any]) -> None:
    """Append the items of ``items`` to ``into`` until it ends or raises."""
    for x in items:
        into.append(x)


def _opts(method: str, **kw: Any) -> MpQOptions:
    return MpQItr.configure(start_method=method, **kw)


# ------------------------------------------------------------------ basics


@pytest.mark.timeout(30)
def test_items_in_order_and_fresh_run_per_iter(method: str) -> None:
    itr = _opts(method, queue_size=3)(h.count, 500, start=7)
    first = iter(itr)
    assert list(first) == list(range(7, 507))
    assert first.closed
    assert first.items_delivered == 500
    second = iter(itr)
    assert second is not first
    assert list(second) == list(range(7, 507))
    assert set(first.worker_pids).isdisjoint(second.worker_pids)
    assert list(second) == []  # an exhausted run stays exhausted


@pytest.mark.timeout(30)
def test_kwargs_named_like_options_reach_the_generator() -> None:
    kwargs = {"queue_size": 1, "timeout": "t", "num_workers": 9, "generator_fn": "g"}
    assert list(MpQItr(h.echo_kwargs, **kwargs)) == [kwargs]
    typed: MpQItr[dict[str, Any]] = MpQItr[dict[str, Any]](h.echo_kwargs, a=1)
    assert list(typed) == [{"a": 1}]
    opts = MpQItr.configure(queue_size=2, num_workers=1)
    assert opts.queue_size == 2
    assert opts(h.count, 3).options is opts
    assert list(opts.replace(queue_size=5)(h.count, 3)) == [0, 1, 2]


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="queue_size"):
        MpQItr.configure(queue_size=0)
    with pytest.raises(ValueError, match="num_workers"):
        MpQItr.configure(num_workers=0)
    with pytest.raises(ValueError, match="timeout"):
        MpQItr.configure(timeout=0)
    with pytest.raises(ValueError, match="start_method"):
        MpQItr.configure(start_method="teleport")
    with pytest.raises(TypeError, match="callable"):
        MpQItr(42)  # type: ignore[arg-type]


def test_get_worker_info_is_none_in_the_parent() -> None:
    assert get_worker_info() is None


# --------------------------------------------------------------- errors


@pytest.mark.timeout(30)
def test_exception_reraised_after_all_items_before_it(method: str) -> None:
    got: list[int] = []
    with pytest.raises(ValueError, match="generator failed after 40 items") as info:
        _collect(_opts(method, queue_size=4)(h.fail_after, 40), got)
    assert got == list(range(40))
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "raise_value_error_in_child" in cause.tb
    assert "fail_after" in str(cause)
    assert info.value.remote_traceback == cause.tb  # type: ignore[attr-defined]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("fn", "type_name"),
    [(h.fail_unpicklable, "Unpicklable"), (h.fail_holds_lock, "HoldsLock")],
)
def test_exception_that_cannot_cross_becomes_mpqitr_error(
    method: str, fn: Any, type_name: str
) -> None:
    got: list[int] = []
    with pytest.raises(MpQItrError, match=type_name) as info:
        _collect(_opts(method)(fn, 3), got)
    assert got == [0, 1, 2]
    err = info.value
    assert isinstance(err, SplitDaskError)
    assert isinstance(err, RuntimeError)
    assert err.remote_type is not None
    assert err.remote_type.endswith(type_name)
    assert err.remote_traceback is not None
    assert fn.__name__ in err.remote_traceback
    assert isinstance(err.__cause__, RemoteTraceback)


@pytest.mark.timeout(30)
def test_stop_iteration_and_system_exit_are_not_a_silent_end() -> None:
    with pytest.raises(MpQItrError, match="StopIteration"):
        list(MpQItr(h.raise_stop_iteration))
    got: list[int] = []
    with pytest.raises(MpQItrError, match="SystemExit"):
        _collect(MpQItr(h.call_sys_exit, 2), got)
    assert got == [0, 1]


@pytest.mark.timeout(30)
def test_unpicklable_item_is_an_error_at_its_position() -> None:
    got: list[int] = []
    with pytest.raises(MpQItrError, match="item 5 yielded by the generator could not be pickled"):
        _collect(MpQItr(h.yield_unpicklable, 5), got)
    assert got == [0, 1, 2, 3, 4]


# ---------------------------------------------------------- dying workers


@pytest.mark.timeout(30)
def test_sigkill_mid_stream_is_reported_within_5s(method: str) -> None:
    run = iter(_opts(method, queue_size=4)(h.pid_then_count))
    pid = next(run)
    assert run.worker_pids == (pid,)
    got = [next(run) for _ in range(20)]
    assert got == list(range(20))
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(WorkerDiedError) as info:
        _collect(run, got)
    assert time.monotonic() - t0 < 5
    assert got == list(range(len(got)))  # what was already sent still arrives, in order
    assert info.value.exitcode == -9
    assert "-9" in str(info.value)
    assert "SIGKILL" in str(info.value)
    assert info.value.worker_id == 0
    assert run.closed


@pytest.mark.timeout(30)
def test_os_exit_names_the_exit_code(method: str) -> None:
    got: list[int] = []
    with pytest.raises(WorkerDiedError, match="exit code 3") as info:
        _collect(_opts(method)(h.exit_after, 6, 3), got)
    assert info.value.exitcode == 3
    assert got == list(range(len(got)))  # a prefix: a dying process may lose its last sends


@pytest.mark.timeout(30)
def test_timeout_when_the_generator_stalls() -> None:
    t0 = time.monotonic()
    with pytest.raises(MpQItrTimeoutError) as info:
        next(iter(MpQItr.configure(timeout=0.5)(h.never_yields)))
    assert isinstance(info.value, TimeoutError)
    assert 0.4 < time.monotonic() - t0 < 5


# --------------------------------------------------------------- stopping


@pytest.mark.timeout(30)
def test_break_stops_a_blocked_worker_and_runs_its_finally(method: str, tmp_path: Path) -> None:
    marker = tmp_path / "finally"
    pid = -1
    for item in _opts(method)(h.blocked_after_first, str(marker)):
        pid = item
        t0 = time.monotonic()
        break
    # In CPython the run lost its last reference at `break`: the worker is stopped.
    assert time.monotonic() - t0 < 5
    assert multiprocessing.active_children() == []
    assert _gone(pid, 0)
    assert marker.read_text() == "finally ran"


@pytest.mark.timeout(30)
def test_close_with_and_gc_stop_the_worker(method: str) -> None:
    opts = _opts(method, queue_size=2)
    itr = opts(h.pid_then_count)

    run = iter(itr)
    pid = next(run)
    run.close()
    assert _gone(pid, 0)
    with pytest.raises(StopIteration):
        next(run)

    with opts(h.pid_then_count) as ctx_itr:
        pid = next(iter(ctx_itr))
    assert _gone(pid, 0)

    run = iter(itr)
    pid = next(run)
    del run
    gc.collect()
    assert _gone(pid, 0)

    run = iter(itr)
    pid = next(run)
    itr.close()  # closes every live run of this iterable
    assert run.closed
    assert _gone(pid, 0)


@pytest.mark.timeout(30)
def test_two_live_iterators_do_not_interfere(method: str) -> None:
    opts = _opts(method, queue_size=2)
    a = iter(opts(h.count, 300))
    b = iter(opts(h.count, 200, start=1000))
    pairs = list(zip(a, b, strict=False))
    assert pairs == list(zip(range(300), range(1000, 1200), strict=False))
    assert list(a) == list(range(201, 300))  # zip consumed one more item of `a`
    assert b.closed
    b2 = iter(opts(h.pid_then_count))
    c = iter(opts(h.pid_then_count))
    pid_b, pid_c = next(b2), next(c)
    b2.close()
    assert _gone(pid_b, 0)
    assert [next(c) for _ in range(5)] == [0, 1, 2, 3, 4]
    c.close()
    assert _gone(pid_c, 0)


# -------------------------------------------------------------- subprocesses


def _run_scenario(code: str, **popen: Any) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def _ready_pid(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY "), (line, proc.stderr.read() if proc.stderr else "")
    return int(line.split()[1])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("where", ["next", "body"])
def test_keyboard_interrupt_stops_the_worker_and_frees_shm(method: str, where: str) -> None:
    proc = _run_scenario(f"import _mpq_helpers as h; h.scenario_interrupt({method!r}, {where!r})")
    pid = _ready_pid(proc)
    assert proc.pid in [p.pid for p in psutil.Process(pid).parents()]  # forkserver in between
    # The pool this run made, as its worker maps it (other processes on the machine
    # may create and remove segments of their own meanwhile).
    pool = _shm_mapped_by(pid)
    assert len(pool) == 1, pool
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert "KeyboardInterrupt" in err
    assert _gone(pid)
    assert pool & _shm_entries() == set()
    assert "leaked" not in err
    assert "resource_tracker" not in err


@pytest.mark.timeout(60)
def test_worker_exits_when_its_parent_is_killed(method: str) -> None:
    proc = _run_scenario(f"import _mpq_helpers as h; h.scenario_parent_killed({method!r})")
    pid = _ready_pid(proc)
    proc.kill()
    proc.communicate(timeout=30)
    assert _gone(pid), "orphaned worker kept running"


@pytest.mark.timeout(90)
def test_no_resource_tracker_warnings(method: str) -> None:
    proc = _run_scenario(f"import _mpq_helpers as h; h.scenario_everything({method!r})")
    out, err = proc.communicate(timeout=80)
    assert proc.returncode == 0, err
    assert out.strip() == "DONE"
    assert "leaked" not in err
    assert "Traceback" not in err, err


# ----------------------------------------------------------- start methods


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_unpicklable_generator_fails_at_iter_time(method: str) -> None:
    def local_gen() -> Iterator[int]:
        yield 1

    itr = _opts(method)(local_gen)
    with pytest.raises(MpQItrError, match="module level"):
        iter(itr)
    with pytest.raises(MpQItrError, match="module level"):
        iter(_opts(method)(lambda: iter([1])))
    with pytest.raises(MpQItrError, match="arguments"):
        iter(_opts(method)(h.count, threading.Lock()))  # type: ignore[arg-type]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_worker_that_cannot_import_the_generator(
    method: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The generator pickles in the parent, but its module is gone when the child
    # looks for it: the child dies before running it, and the error says so.
    name = f"vanishing_{method}"
    (tmp_path / f"{name}.py").write_text("def gen():\n    yield 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    (tmp_path / f"{name}.py").unlink()
    with pytest.raises(WorkerDiedError, match="before it started running generator_fn") as info:
        list(_opts(method)(module.gen))
    assert info.value.exitcode == 1
    assert "import the module" in str(info.value)


@pytest.mark.timeout(30)
def test_fork_needs_no_pickling() -> None:
    def local_gen(n: int) -> Iterator[int]:
        yield from range(n)

    assert list(MpQItr.configure(start_method="fork")(local_gen, 4)) == [0, 1, 2, 3]


# ------------------------------------------------------------ many workers


@pytest.mark.timeout(30)
def test_workers_share_the_work_and_interleave(method: str) -> None:
    ctx = multiprocessing.get_context(method)
    turn, cond = ctx.Value("i", 0), ctx.Condition()
    run = iter(_opts(method, num_workers=2, queue_size=4)(h.lockstep, 60, turn, cond))
    got = list(run)
    assert sorted(x for _, x, _ in got) == list(range(60))
    for w in (0, 1):
        mine = [x for wid, x, _ in got if wid == w]
        assert mine == list(range(w, 60, 2))  # each worker's order is kept
    seeds = {wid: seed for wid, _, seed in got}
    assert seeds[1] == seeds[0] + 1
    switches = sum(1 for a, b in itertools.pairwise(got) if a[0] != b[0])
    assert switches >= 10, [wid for wid, _, _ in got]
    assert len(run.worker_pids) == 2


@pytest.mark.timeout(30)
def test_error_in_one_of_several_workers(method: str) -> None:
    got: list[tuple[int, int]] = []
    with pytest.raises(KeyError, match="worker 1 failed"):
        _collect(_opts(method, num_workers=2, queue_size=4)(h.worker_fails, 10, 1, "raise"), got)
    assert [i for w, i in got if w == 1] == list(range(10))


@pytest.mark.timeout(30)
def test_death_of_one_of_several_workers(method: str) -> None:
    with pytest.raises(WorkerDiedError) as info:
        for _ in _opts(method, num_workers=2, queue_size=4)(h.worker_fails, 10, 1, "exit"):
            pass
    assert info.value.worker_id == 1
    assert info.value.exitcode == 5


def test_worker_info_shard() -> None:
    info = WorkerInfo(id=1, num_workers=3, seed=0, start_method="fork")
    assert list(info.shard(range(10))) == [1, 4, 7]


# ------------------------------------------------------------ shared memory


def _assert_same(a: Any, b: Any) -> None:
    assert type(a) is type(b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        if a.dtype.hasobject:
            assert a.tolist() == b.tolist()
        else:
            np.testing.assert_array_equal(a, b)
        assert a.flags.f_contiguous == b.flags.f_contiguous or not b.flags.contiguous
        assert a.flags.writeable
        assert a.flags.owndata or not isinstance(a.base, memoryview)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b


@pytest.mark.timeout(30)
def test_numpy_arrays_cross_through_shared_memory(method: str) -> None:
    expected = list(h.arrays(6))
    run = iter(_opts(method, queue_size=3)(h.arrays, 6))
    got = list(run)
    assert len(got) == 6
    for a, b in zip(got, expected, strict=True):
        _assert_same(a, b)
    assert run.shm_items_delivered == 6
    assert got[0]["fortran"].flags.f_contiguous


@pytest.mark.timeout(30)
def test_shared_memory_reuse_without_corruption(method: str) -> None:
    # A 4 MiB pool and items of 0.3-1.7 MiB: space is reused constantly while the
    # worker runs ahead; any overwrite before the parent's copy shows as wrong bytes.
    rng = np.random.default_rng(1)
    sizes = [int(s) for s in rng.integers(300_000, 1_700_000, size=60)]
    sizes[10] = 5 << 20  # bigger than the pool: goes through the pipe instead
    opts = _opts(method, queue_size=6, shm_pool_bytes=4 << 20)
    run = iter(opts(h.sized_arrays, sizes))
    for k, arr in enumerate(run):
        assert arr.nbytes == sizes[k]
        assert arr.min() == arr.max() == k % 251
        arr[:] = 0  # the copy is the caller's to modify
    assert run.items_delivered == 60
    assert run.shm_items_delivered == 59


@pytest.mark.timeout(30)
def test_shared_memory_can_be_disabled() -> None:
    run = iter(MpQItr.configure(shm_threshold=None)(h.big_batches, 3, 1 << 20))
    assert [int(a[0]) for a in run] == [0, 1, 2]
    assert run.shm_items_delivered == 0


def _pool_bytes_in_use() -> int:
    """Pages allocated to this process's (unlinked) shared-memory pools, in bytes."""
    total = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("/dev/shm/psm_"):
                total += os.fstat(int(fd)).st_blocks * 512
        except OSError:
            continue
    return total


@pytest.mark.timeout(30)
def test_pool_pages_in_use_follow_the_items_in_flight() -> None:
    # 120 items of 1 MiB through a 512 MiB pool, at most 4 in flight: the pages the
    # pool ever touched must stay near what was in flight, not grow to the pool size.
    run = iter(MpQItr.configure(queue_size=4)(h.big_batches, 120, 1 << 20))
    peak = 0
    for arr in run:
        assert arr.nbytes == 1 << 20
        peak = max(peak, _pool_bytes_in_use())
    assert run.shm_items_delivered == 120
    assert 0 < peak <= 8 << 20


# --------------------------------------------------------------- datasets


@pytest.mark.timeout(60)
def test_split_data_loader_as_an_argument_under_spawn(tmp_path: Path) -> None:
    records = [f"record {i}: ".encode() + bytes([i % 256]) * i for i in range(120)]
    write_split_data(tmp_path / "ds", records, splits=4)
    loader = SplitDataLoader(tmp_path / "ds")
    opts = MpQItr.configure(start_method="spawn", num_workers=2, queue_size=8)
    got = list(opts(h.with_loader, loader))
    assert sorted((i, rec) for i, rec, _ in got) == list(enumerate(records))
    assert len({pid for _, _, pid in got}) == 2  # both spawned workers reopened the dataset
    assert os.getpid() not in {pid for _, _, pid in got}
