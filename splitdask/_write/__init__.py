"""Writing: parts streamed out, then one commit that names them.

* ``_changes``: what a commit does to the manifest it finds, as pure functions.
* ``_commit``: :class:`Transaction`, the one code path that replaces a manifest,
  collects orphans and cleans up (``tidy``); :func:`commit_results` for engines.
* ``_binwrite``: records dealt into per-bin batches and streamed into parts.
* ``_compact``: a bin's small parts rewritten as few (it reads bins through ``_read``).
* ``_gc``: removing what no retained reader needs.
* ``_writer``: :class:`SplitWriter` and ``write_split_data``.

Each module imports only those listed before it; below this package, ``_read`` (for
compaction), ``_dataset``, ``_store``, ``_format`` and ``_util``.
"""
