"""Mixture plans without I/O: proportions in every window, rank shares, resumes and the
audit, as properties over weights, sizes, world sizes, workers and resume points."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitdask import ResumeStateError, SplitDataLoader, write_split_data
from splitdask._dataset._mixrank import MixtureRanks
from splitdask._dataset._mixstate import mixture_state, read_state
from splitdask.plan import STOPPING, Mixture, MixtureSource, audit


def source(n: int, i: int = 0, bins: int = 4, shuffle: str = "window") -> MixtureSource:
    """A source of ``n`` records in ``bins`` bins, without a dataset behind it."""
    counts = [n // bins + (b < n % bins) for b in range(bins)]
    return MixtureSource(
        f"mem://s{i}", {}, 1, f"id{i}", tuple(counts), 8 * n, shuffle, 0, 2, f"s{i}"
    )


def mixture(sizes: list[int], weights: list[float], **kw: object) -> Mixture:
    return Mixture([source(n, i) for i, n in enumerate(sizes)], weights, **kw)  # type: ignore[arg-type]


weights_st = st.lists(st.floats(0.01, 1.0), min_size=1, max_size=6)
sizes_st = st.lists(st.integers(1, 300), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None)
@given(weights_st, st.integers(0, 2**32))
def test_every_window_holds_each_share(weights: list[float], seed: int) -> None:
    mix = mixture([100] * len(weights), weights, seed=seed)
    n = 100_000
    src, draw = mix._interleave.sources(np.arange(n))
    depth = max(1, (len(weights) - 1).bit_length())
    for s, w in enumerate(mix.weights):
        mine = src == s
        assert abs(mine.mean() - w) < 0.01
        cum = np.concatenate([[0], np.cumsum(mine)])
        windows = cum[1000:] - cum[:-1000]
        assert np.abs(windows / 1000 - w).max() <= 0.05
        assert np.abs(windows - 1000 * w).max() < depth + 1  # off by under 1 per level
        # Closed forms agree with the stream: draw indices count up, counts match.
        assert (draw[mine] == np.arange(mine.sum())).all()
        at = np.asarray([0, 1, 777, n])
        assert mix._interleave.count(s, at).tolist() == cum[at].tolist()


@settings(max_examples=40, deadline=None)
@given(
    sizes_st,
    st.data(),
    st.sampled_from(STOPPING),
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(1, 9),
)
def test_ranks_equal_lengths_each_position_once_any_worker_count(
    sizes: list[int], data: st.DataObject, stopping: str, world: int, workers: int, batch: int
) -> None:
    weights = data.draw(st.lists(st.floats(0.05, 1), min_size=len(sizes), max_size=len(sizes)))
    mix = mixture(sizes, weights, stopping=stopping, seed=5)
    endless = stopping == "never"
    seen: list[int] = []
    for epoch in range(3):
        ranks = [MixtureRanks(mix, world, r, epoch, endless=endless) for r in range(world)]
        n = ranks[0].epoch_len(epoch)
        assert {r.epoch_len(epoch) for r in ranks} == {n}
        if not endless:
            assert len(ranks[0]) == n
        for r in ranks:
            direct = r.positions(np.arange(n)).tolist()
            assert worker_stream(r, workers, batch, n) == direct
            seen += direct
    # Every position once, and only the last fewer-than-world ones still to come.
    assert len(set(seen)) == len(seen)
    assert sorted(seen) == list(range(len(seen)))
    assert 3 * mix.epoch_length - len(seen) < world
    src, k = mix.draws(np.asarray(seen))
    for s in range(len(sizes)):
        assert len(set(k[src == s].tolist())) == int((src == s).sum())


def worker_stream(ranks: MixtureRanks, workers: int, batch: int, n: int) -> list[int]:
    """What a DataLoader collects from ``workers`` workers (batches round robin)."""
    per = []
    for w in range(workers):
        got: list[int] = []
        for samples in ranks.worker_samples(w, workers, batch, chunk=5):
            got += ranks.positions(samples).tolist()
            if len(got) >= n:
                break
        per.append([got[i : i + batch] for i in range(0, len(got), batch)])
    out: list[int] = []
    for t in range(max(map(len, per))):
        for w in range(workers):
            out += per[w][t] if t < len(per[w]) else []
    return out[:n]


@settings(max_examples=40, deadline=None)
@given(
    sizes_st,
    st.sampled_from(STOPPING),
    st.integers(1, 4),
    st.integers(1, 4),
    st.floats(0, 1),
)
def test_resume_same_topology_is_the_tail_other_is_the_same_set(
    sizes: list[int], stopping: str, w1: int, w2: int, frac: float
) -> None:
    mix = mixture(sizes, [1.0] * len(sizes), stopping=stopping, seed=2)
    endless = stopping == "never"
    first = [MixtureRanks(mix, w1, r, 0, endless=endless) for r in range(w1)]
    n = first[0].epoch_len(0)
    seen = int(frac * n)
    epoch, left = first[0].state_after(seen)
    state = json.loads(json.dumps(mixture_state(mix, epoch, left)))
    again, e, spans = read_state(mix, state)
    assert e == epoch
    assert spans == left
    # The same topology: each rank's rest is exactly its uninterrupted tail.
    for r in range(w1):
        rest = MixtureRanks(again, w1, r, e, (e, left), endless)
        whole = first[r].positions(np.arange(n)).tolist()
        if seen < n:
            assert rest.positions(np.arange(n - seen)).tolist() == whole[seen:]
    # Another: equal lengths, nothing consumed again, and with the carried positions
    # everything of the epoch is there.
    rests = [MixtureRanks(again, w2, r, e, (e, left), endless) for r in range(w2)]
    m = rests[0].epoch_len(e)
    assert {x.epoch_len(e) for x in rests} == {m}
    done = {p for r in first for p in r.positions(np.arange(seen)).tolist()}
    rest = [p for r in rests for p in r.positions(np.arange(m)).tolist()]
    assert len(set(rest)) == len(rest)
    assert not done & set(rest)
    carried = {p for a, b in left for p in range(a, b)} - set(rest)
    assert len(carried) < w2
    assert audit(mix, states=[state]).ok


def test_stopping_rules_set_the_epoch() -> None:
    sizes, weights = [1000, 300, 50], [0.5, 0.3, 0.2]
    first = mixture(sizes, weights, stopping="first_exhausted")
    every = mixture(sizes, weights, stopping="all_exhausted")
    never = mixture(sizes, weights, stopping="never", epoch_length=777)
    assert abs(first.epoch_length - 50 / 0.2) <= 1  # the small source runs out first
    assert abs(every.epoch_length - 1000 / 0.5) <= 1  # the big one last
    assert never.epoch_length == 777
    # All exhausted: the small source repeats, each epoch a fresh order of it.
    src, ep, idx = every.locate(np.arange(every.epoch_length))
    small = [every.keys(2, e, idx[(src == 2) & (ep == e)]).tolist() for e in range(3)]
    assert all(sorted(k) == list(range(50)) for k in small)
    assert small[0] != small[1] != small[2]
    assert (ep[src == 0] == 0).all()
    with pytest.raises(TypeError, match="endless"):
        len(MixtureRanks(never, 1, 0, 0, endless=True))


def test_reweight_reads_what_was_left_first_and_nothing_twice() -> None:
    mix = mixture([400, 200, 100], [0.5, 0.3, 0.2], seed=1)
    ranks = MixtureRanks(mix, 3, 0, 0)
    state = mixture_state(mix, *ranks.state_after(150))
    with pytest.raises(ResumeStateError, match="reweight=True"):
        read_state(mixture([400, 200, 100], [0.2, 0.2, 0.6], seed=1), state)
    heavy = mixture([400, 200, 100], [0.2, 0.2, 0.6], seed=1)
    new, epoch, left = read_state(heavy, state, reweight=True)
    assert (epoch, left, new.start_epoch) == (1, None, 1)
    assert new.weights == heavy.weights
    rest = MixtureRanks(new, 2, 0, 1)
    state2 = mixture_state(new, *rest.state_after(rest.epoch_len(1)))
    report = audit(mix, states=[state, state2], records=True)
    assert report.ok
    assert report.grows
    # Each source's first draws under the new weights are the ones left unconsumed.
    left_before = tuple(zip(state["remaining"][::2], state["remaining"][1::2], strict=True))
    src, k = new.draws(np.arange(new.epoch_length))
    for s in range(3):
        holes = [d for a, b in mix.source_draws(s, left_before) for d in range(a, b)]
        assert holes
        assert k[src == s][: len(holes)].tolist() == holes
    done = audit(mix, states=[state])
    total_before = sum(x.consumed for x in done.sources)
    assert total_before == 450
    assert sum(x.consumed for x in report.sources) == 450 + 2 * rest.epoch_len(1)


@settings(max_examples=25, deadline=None)
@given(
    sizes_st,
    st.data(),
    st.sampled_from(STOPPING),
    st.integers(1, 4),
    st.integers(1, 4),
    st.floats(0, 1),
)
def test_reweight_at_any_point_consumes_each_draw_once(
    sizes: list[int], data: st.DataObject, stopping: str, w1: int, w2: int, frac: float
) -> None:
    k = len(sizes)
    old_w = data.draw(st.lists(st.floats(0.05, 1), min_size=k, max_size=k))
    some = st.one_of(st.just(0.0), st.floats(0.05, 1))
    new_w = data.draw(st.lists(some, min_size=k, max_size=k).filter(any))
    old, new = mixture(sizes, old_w, stopping=stopping), mixture(sizes, new_w, stopping=stopping)
    endless = stopping == "never"
    ranks = MixtureRanks(old, w1, 0, 0, endless=endless)
    state = mixture_state(old, *ranks.state_after(int(frac * ranks.epoch_len(0))))
    seg, epoch, left = read_state(new, json.loads(json.dumps(state)), reweight=True)
    assert left is None
    rest = MixtureRanks(seg, w2, 0, epoch, endless=endless)
    later = mixture_state(seg, *rest.state_after(rest.epoch_len(epoch)))
    report = audit(old, states=[state, later], records=True)
    assert report.ok
    before = audit(old, states=[state])
    run_positions = w2 * rest.epoch_len(epoch)
    consumed = [s.consumed for s in report.sources]
    assert sum(consumed) == sum(s.consumed for s in before.sources) + run_positions
    # A source of weight 0 draws nothing more.
    for s, w in enumerate(new_w):
        if w == 0:
            assert consumed[s] == before.sources[s].consumed


def test_audit_of_a_run_counts_and_proves(tmp_path: Path) -> None:
    mix = mixture([120, 30], [0.6, 0.4], stopping="all_exhausted", seed=3)
    report = audit(mix, samples=mix.epoch_length // 2, world_size=2, records=True)
    assert report.ok
    assert sum(s.consumed for s in report.sources) == report.positions == mix.epoch_length
    assert report.sources[0].epochs == {0: 120}
    assert report.sources[1].epochs == {0: 30, 1: 30, 2: 20}  # the small one repeats
    with pytest.raises(ValueError, match="either states= or samples="):
        audit(mix)


def test_sources_resolve_urls_loaders_and_versions(tmp_path: Path) -> None:
    def write(name: str, n: int) -> str:
        path = str(tmp_path / name)
        write_split_data(path, (struct.pack("<q", i) for i in range(n)), splits=3)
        return path

    a, b = write("a", 90), write("b", 30)
    write_split_data(b, [struct.pack("<q", 99)], mode="a")
    mix = Mixture(
        [a, SplitDataLoader(b, version=1), {"urlpath": b, "name": "newest", "shuffle": None}],
        [1, 1, 1],
    )
    assert [s.num_records for s in mix.sources] == [90, 30, 31]
    assert mix.names == ["a", "b", "newest"]
    assert [s.version for s in mix.sources] == [1, 1, 2]
    assert mix.sources[2].shuffle == "none"
    state = mixture_state(mix, 0, ((0, mix.epoch_length),))
    other = Mixture([a, b, b], [1, 1, 1])
    with pytest.raises(ResumeStateError, match="another dataset of source 1 \\(b\\)"):
        read_state(other, state)
    with pytest.raises(ValueError, match="one weight per source"):
        Mixture([a, b], [1])
    with pytest.raises(ValueError, match="stopping must be one of"):
        Mixture([a], stopping="sometimes")
    with pytest.raises(ValueError, match="epoch_length is for stopping='never'"):
        Mixture([a], epoch_length=10)
    with pytest.raises(ResumeStateError, match="damaged"):
        read_state(mix, {**state, "remaining": [5]})


def test_a_negative_seed_is_a_value_error(tmp_path: Path) -> None:
    write_split_data(tmp_path / "a", [b"x"] * 4, splits=2, mode="w")
    with pytest.raises(ValueError, match="seed"):
        Mixture([str(tmp_path / "a")], seed=-1)
    with pytest.raises(ValueError, match="seed"):
        Mixture([{"urlpath": str(tmp_path / "a"), "seed": -1}])
    with pytest.raises(TypeError, match="seed"):
        Mixture([str(tmp_path / "a")], seed="0")  # type: ignore[arg-type]
