"""What a loader tells about the snapshot it reads (counts, sizes, codec, metadata,
its description, its integrity), apart from reading records: :class:`SnapshotFacts`."""

from __future__ import annotations

from typing import Any

from splitdask._dataset._snapshot import Snapshot
from splitdask._format import Manifest
from splitdask._format._codec import DEFAULT_CODEC
from splitdask._read._describe import Description, describe
from splitdask._read._verify import VerifyReport, verify
from splitdask._store import Store, cache_report
from splitdask._util._closing import Closing

__all__ = ["SnapshotFacts"]


class SnapshotFacts(Closing):
    """The facts of :attr:`snapshot`, for a reader that holds one in ``snapshot``."""

    _store: Store

    @property
    def snapshot(self) -> Snapshot:
        raise NotImplementedError

    @property
    def version(self) -> int | None:
        """The version this loader reads (``None`` for a splitdataloader dataset)."""
        return self.snapshot.version

    @property
    def codec(self) -> str:
        """The name of the codec the dataset's records are stored with (``"bytes"``:
        as written, which every dataset from before codecs is)."""
        manifest = self.snapshot.manifest
        return manifest.codec if manifest is not None else DEFAULT_CODEC

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._store.urlpath!r}: {self.describe().summary()})"

    def cache_info(self) -> dict[str, Any] | None:
        """The local part cache: this loader's ``hits`` and ``misses`` (parts served
        from it, and fetched into it), ``bytes_from_cache``, ``bytes_downloaded`` and
        ``damaged`` (copies that failed a check and were fetched again), and what the
        directory holds for every process: ``directory``, ``entries``, ``bytes``,
        ``limit``. ``None`` when no cache serves this loader (none configured, or a
        local dataset)."""
        return cache_report(self._store.cache)

    def describe(self) -> Description:
        """Records, bins, parts, sizes, generation and bin balance of this snapshot."""
        return describe(self.snapshot)

    # -- shape ----------------------------------------------------------------------

    @property
    def urlpath(self) -> str:
        return self._store.urlpath

    @property
    def storage_options(self) -> dict[str, Any]:
        return dict(self._store.storage_options)

    @property
    def manifest(self) -> Manifest | None:
        """The manifest of the snapshot (``None`` for a splitdataloader dataset)."""
        return self.snapshot.manifest

    def __len__(self) -> int:
        return self.snapshot.num_records

    @property
    def num_bins(self) -> int:
        return self.snapshot.num_bins

    @property
    def bin_counts(self) -> list[int]:
        """Number of records in each bin."""
        return self.snapshot.bin_counts()

    @property
    def nbytes(self) -> int:
        """Total size of the records (payload bytes, without framing)."""
        return self.snapshot.nbytes

    @property
    def metadata(self) -> dict[str, Any]:
        """User metadata stored in the manifest (empty for legacy datasets)."""
        return self.snapshot.metadata

    # -- integrity ---------------------------------------------------------------------

    def verify(self, progress: bool = False) -> VerifyReport:
        """Read every part whole and check its size, checksum and footer.

        ``progress=True`` shows a bar (``tqdm.auto``) with records/s, MB/s and an ETA.

        Raises
        ------
        CorruptDatasetError
            Naming every missing, truncated or altered file found.
        """
        return verify(self.snapshot, progress)
