"""The format: every byte layout splitdask reads or writes, and no I/O.

* ``_names``: where a part lives (``bins/00003-<uid>.bin``) and its temp name.
* ``_jsonbound``: a JSON document's size and depth, checked before it is parsed.
* ``_partcodec``: what a part's footer says (:class:`Footer`) and how each part kind's
  records are checked (one :class:`PartCodec` class per kind).
* ``_compression``: zstd frames with a dictionary per part: the v3 codec, the writers' encoder.
* ``_codecbase``, ``_msgcols``, ``_msgpack``, ``_codec``: record codecs (how a
  record's value is stored: bytes, JSON, msgpack, .npy, pickle, a user's), their
  registry, and a batch's records as columns (msgpack's column-wise in ``_msgcols``).
* ``_footer``: bin-part footers, versions 1 to 3.
* ``_grouped``: version 4 compressed parts, small records sharing a zstd frame.
* ``_segtable``: the global order's segments, and as NumPy columns (:class:`SegmentTable`).
* ``_manifest``: the manifest's schema and limits.
* ``_parttable``: a manifest's parts as NumPy columns (:class:`PartTable`).
* ``_checkpoint``: a version's whole manifest in one binary file.
* ``_log``: the version log's entries (the change each commit made) and their replay.

Each module imports only those listed before it. ``docs/format.md`` is the prose
specification; this package re-exports the names its users need.
"""

from splitdask._format._footer import (
    COMPRESSED_PART_VERSION,
    DATA_START,
    MAGIC,
    PART_VERSIONS,
    TRAILER_SIZE,
    WRITE_PART_VERSION,
    decode_footer,
    decode_footer_v2,
    decode_footer_v3,
    encode_footer,
    encode_footer_v2,
    encode_footer_v3,
    entry_tables,
    footer_hash,
    footer_hash_at,
    footer_size,
    min_footer_v3,
    payload_size,
)
from splitdask._format._grouped import (
    GROUPED_PART_VERSION,
    decode_footer_v4,
    encode_footer_v4,
    min_footer_v4,
)
from splitdask._format._manifest import (
    COMPRESSED_MANIFEST_VERSION,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MAX_BINS,
    MAX_DEPTH,
    MAX_MANIFEST_BYTES,
    MAX_METADATA_BYTES,
    MAX_PARTS,
    MAX_SEGMENTS,
    Manifest,
    PartInfo,
    Retired,
    Segment,
)
from splitdask._format._names import BINS_DIR, parse_part_name, part_name, temp_name
from splitdask._format._partcodec import Footer, PartCodec, record_sum

__all__ = [
    "BINS_DIR",
    "COMPRESSED_MANIFEST_VERSION",
    "COMPRESSED_PART_VERSION",
    "DATA_START",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "GROUPED_PART_VERSION",
    "MAGIC",
    "MANIFEST_NAME",
    "MAX_BINS",
    "MAX_DEPTH",
    "MAX_MANIFEST_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_PARTS",
    "MAX_SEGMENTS",
    "PART_VERSIONS",
    "TRAILER_SIZE",
    "WRITE_PART_VERSION",
    "Footer",
    "Manifest",
    "PartInfo",
    "PartCodec",
    "Retired",
    "Segment",
    "decode_footer",
    "decode_footer_v2",
    "decode_footer_v3",
    "decode_footer_v4",
    "encode_footer",
    "encode_footer_v2",
    "encode_footer_v3",
    "encode_footer_v4",
    "entry_tables",
    "footer_hash",
    "footer_hash_at",
    "footer_size",
    "min_footer_v3",
    "min_footer_v4",
    "parse_part_name",
    "part_name",
    "payload_size",
    "record_sum",
    "temp_name",
]
