"""A hypothesis state machine over append / overwrite / compact / gc from two writers.

Two ``SplitWriter`` s begin, write and commit in any interleaving, alongside
compaction, gc and readers opened at any point. The model is the list of records
the committed writes say the dataset holds: after every step the dataset equals it,
every part the manifest names exists, and a reader opened earlier still reads its
own snapshot unless gc removed it (then it says so).
"""

from __future__ import annotations

import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from splitdask import SnapshotExpiredError, SplitDataLoader, SplitWriter, compact, gc


class TwoWriters(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="splitdask-model-")
        self.url = f"{self.dir}/ds"
        self.model: list[bytes] = []
        self.writers: dict[int, tuple[SplitWriter, bool, list[bytes]]] = {}
        self.readers: list[tuple[SplitDataLoader, list[bytes]]] = []
        self.expired_since = 0  # readers opened before this many gc-after-replace are void
        self.replaced = False
        self.n = 0

    def teardown(self) -> None:
        for w, _, _ in self.writers.values():
            w.abort()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _records(self, k: int) -> list[bytes]:
        out = [f"r{self.n + i}".encode() for i in range(k)]
        self.n += k
        return out

    @rule(
        w=st.sampled_from([0, 1]),
        overwrite=st.booleans(),
        k=st.integers(0, 30),
        splits=st.sampled_from([None, 1, 3]),
    )
    def begin(self, w: int, overwrite: bool, k: int, splits: int | None) -> None:
        if w in self.writers:
            return
        mode = "w" if overwrite else "a"
        writer = SplitWriter(self.url, splits, mode=mode)
        recs = self._records(k)
        writer.write_many(recs)
        self.writers[w] = (writer, overwrite, recs)

    @rule(w=st.sampled_from([0, 1]))
    def commit(self, w: int) -> None:
        if w not in self.writers:
            return
        writer, overwrite, recs = self.writers.pop(w)
        info = writer.commit()
        if overwrite:
            self.model = list(recs)
            self.replaced = True
        else:
            self.model += recs
        assert info.num_records == len(self.model)
        assert info.records_written == len(recs)

    @precondition(lambda self: self.model)
    @rule()
    def compact(self) -> None:
        compact(self.url)
        self.replaced = True

    @rule()
    def collect(self) -> None:
        gc(self.url, older_than=0)
        if self.replaced:  # the replaced parts are gone now: older readers expire
            self.expired_since = len(self.readers)
            self.replaced = False

    @precondition(lambda self: self.model)
    @rule()
    def open_reader(self) -> None:
        self.readers.append((SplitDataLoader(self.url), list(self.model)))

    @invariant()
    def dataset_is_the_model(self) -> None:
        if not self.model and not self.readers and not self.n:
            return
        try:
            loader = SplitDataLoader(self.url)
        except FileNotFoundError:
            assert not self.model
            return
        assert list(loader) == self.model
        loader.verify()

    @invariant()
    def readers_keep_their_snapshot(self) -> None:
        for k, (reader, want) in enumerate(self.readers):
            reader.close()  # drop the maps, so every read opens the parts again
            try:
                got = list(reader)
            except SnapshotExpiredError:
                assert k < self.expired_since, "a reader expired without gc"
                continue
            assert got == want


TwoWriters.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    derandomize=True,  # the same interleavings every run: CI can't pass by luck
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_two_writers = TwoWriters.TestCase
