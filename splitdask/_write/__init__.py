"""Writing: parts streamed out, then one commit that names them.

* ``_changes``: what a commit does to the manifest it finds, as pure functions.
* ``_cleanup``: write tags (whose a file is), orphans, and the one cleanup rule
  (``tidy``: remove, and on failure warn).
* ``_retention``: how long versions are kept; checkpoints.
* ``_gc``: removing the versions, and the files, no retained reader needs.
* ``_commit``: :class:`Transaction`, the one code path that makes a version (a log
  entry created only if absent) and collects a write's leftovers.
* ``_parallel``: :func:`commit_results` for the Dask and Ray engines' parallel tasks.
* ``_options``: the options every writer shares (``mode=``, ``retries=``, ``splits=``)
  and their older aliases.
* ``_binwrite``: records dealt into per-bin batches and streamed into parts.
* ``_compact``: a bin's small parts rewritten as few (it reads bins through ``_read``).
* ``_writer``: :class:`SplitWriter` and ``write_split_data``.

Each module imports only those listed before it; below this package, ``_read`` (for
compaction), ``_dataset``, ``_store``, ``_format`` and ``_util``.
"""
