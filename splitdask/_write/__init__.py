"""Writing: parts streamed out, then one commit that names them.

* ``_changes``: what a commit does to the manifest it finds, as pure functions.
* ``_cleanup``: write tags (whose a file is), orphans, and the one cleanup rule
  (``tidy``: remove, and on failure warn).
* ``_commit``: :class:`Transaction`, the one code path that replaces a manifest and
  collects a write's leftovers; :func:`commit_results` for the Dask and Ray engines.
* ``_options``: the options every writer shares (``mode=``, ``retries=``, ``splits=``)
  and their older aliases.
* ``_binwrite``: records dealt into per-bin batches and streamed into parts.
* ``_compact``: a bin's small parts rewritten as few (it reads bins through ``_read``).
* ``_gc``: removing what no retained reader needs.
* ``_writer``: :class:`SplitWriter` and ``write_split_data``.

Each module imports only those listed before it; below this package, ``_read`` (for
compaction), ``_dataset``, ``_store``, ``_format`` and ``_util``.
"""
