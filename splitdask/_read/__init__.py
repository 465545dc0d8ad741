"""Reading a snapshot: records one at a time, in batches, by bin, and the loader.

* ``_batch``: :class:`RecordBatch`, columnar records, and re-cutting batch streams.
* ``_openpart``: an opened part: its buffer, its extents, how its records are checked.
* ``_bins``: whole bins as :class:`BinData`: records, views or batches, stored or
  seeded order, released as a context manager.
* ``_entries``: a remote part's footer fetched by the entry, as reads need it.
* ``_ranged``: records of parts read by range, a batch at a time.
* ``_records``: :class:`RecordReader`, the part cache (its only owner), and reads of
  one record, many, or a whole bin.
* ``_binwise``: passes over a reader's bins, one after another or in write order.
* ``_verify``: every part read whole and checked.
* ``_describe``, ``_html``: what a dataset holds, as numbers, text and a notebook view.
* ``_history``: :func:`versions`, a dataset's kept versions.
* ``_epochs``: the epoch clock (each epoch's number and version) and key reader the
  training adapters share, and the check of a resume state.
* ``_handout``: what one process of a training pass handed out, and a DataLoader
  worker's share of a resume state.
* ``_pinned``: :class:`Pinned`, a dataset's location and pinned version, opened again
  in each process it is pickled to.
* ``_loader``: :class:`Loader`, the front of all the above (the public
  ``SplitDataLoader`` adds the engines' shortcuts, in ``splitdask._front``).

Each module imports only those listed before it; below this package, ``_dataset``,
``_store``, ``_format`` and ``_util``. Nothing here knows Dask, Ray or torch.
"""
