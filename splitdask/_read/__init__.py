"""Reading a snapshot: records one at a time, in batches, by bin, and the loader.

* ``_batch``: :class:`RecordBatch`, columnar records, and re-cutting batch streams.
* ``_openpart``: an opened part: its buffer, its extents, how its records are checked.
* ``_records``: :class:`RecordReader`, the part cache, and reads of one or many records.
* ``_bins``: whole bins as :class:`BinData`, sliced in stored or seeded order.
* ``_verify``: every part read whole and checked.
* ``_describe``, ``_html``: what a dataset holds, as numbers, text and a notebook view.
* ``_epochs``: the epoch clock and key reader the training adapters share.
* ``_loader``: :class:`SplitDataLoader`, the front of all the above.

Each module imports only those listed before it; below this package, ``_dataset``,
``_store``, ``_format`` and ``_util``. Nothing here knows Dask, Ray or torch.
"""
