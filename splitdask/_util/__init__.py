"""Small helpers every layer may use; they import nothing else of splitdask but
:mod:`splitdask.errors`.

* ``_validate``: argument checks, so one mistake reads the same at every entry point.
* ``_progress``: one optional ``tqdm`` bar for long work.
* ``_split``: which worker takes which batch, the rule every reader (and MpQItr) uses.
* ``_closing``: :class:`Closing`, the base of objects a ``with`` block closes.
* ``_lazyseq``: :class:`LazySequence`, items made on first use (large metadata).
* ``_extras``: optional packages, and the error naming the extra that installs one.
"""
