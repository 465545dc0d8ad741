"""A dataset as a commit left it: index arithmetic, seeded orders, parts and snapshots.

* ``_index``: from a global record index to (part, record in part); no I/O.
* ``_order``: seeded bin orders and in-bin permutations; no I/O.
* ``_plan``: epoch plans for ranks and workers (public as :mod:`splitdask.plan`); no I/O.
* ``_parts``: the kinds of part a snapshot holds, and what each owns of the footer.
* ``_legacy``: splitdataloader 0.0.1 directories, read-only.
* ``_versions``: the version log: which versions exist, and any one's manifest
  (a checkpoint and the entries after it), cached per process.
* ``_snapshot``: :class:`Snapshot`, one committed state, and the one reader of a
  manifest or a legacy index.

Each module imports only those listed before it, and below this package only
``_format``, ``_store`` and ``_util``.
"""
