"""The options every writer shares, one spelling each, and the older names they replace.

Every write entry point takes ``mode=`` (``"a"`` append, ``"w"`` replace, ``"x"``
create) and ``retries=`` (how often a commit that lost a race re-bases), as
:class:`~splitdask.SplitWriter` always did, and ``splits=`` for the bin count. The
older names stay as aliases that work as they always did (docs/decisions.md, "One
spelling per idea"):

* ``start_clean=True`` (``write_split_data``, the predecessor's name) is ``mode="w"``;
* ``append=True`` / ``overwrite=True`` (``to_split_bins``, ``to_split_bins_ray``) are
  ``mode="a"`` / ``mode="w"``;
* ``commit_retries=`` (the same two) is ``retries=``;
* ``num_bins=`` (``SplitWriter``, ``write_split_data``) is ``splits=``.

An alias and the new name may both be given only when they agree; otherwise a
``TypeError`` names both, as Python does for an argument given twice.
"""

from __future__ import annotations

from typing import get_args

from splitdask._format import Manifest
from splitdask._format._codec import DEFAULT_CODEC, Codec, get_codec
from splitdask._util._validate import check_int
from splitdask._write._changes import Mode, check_same_codec
from splitdask._write._commit import DEFAULT_RETRIES

__all__ = ["resolve_bin_count", "resolve_codec", "resolve_mode", "resolve_retries"]

# The mode each alias flag stands for when it is true.
_MODE_ALIASES: dict[str, Mode] = {"append": "a", "overwrite": "w", "start_clean": "w"}


def resolve_mode(mode: Mode | None, default: Mode, **aliases: object) -> Mode:
    """The write mode from ``mode=`` and the alias flags (``append=`` etc.) a caller got.

    Parameters
    ----------
    mode
        The ``mode=`` argument; ``None`` when not given.
    default
        The entry point's mode when neither ``mode`` nor a true alias is given.
    **aliases
        Alias flags by name (``append``, ``overwrite``, ``start_clean``); a false one
        (their default) says nothing.

    Raises
    ------
    ValueError
        If ``mode`` is not one of ``"a"``, ``"w"``, ``"x"``, or two alias flags are
        true (``append and overwrite are mutually exclusive``).
    TypeError
        If a true alias stands for another mode than ``mode``.
    """
    if mode is not None and mode not in get_args(Mode):
        raise ValueError(f"mode must be 'a', 'w' or 'x', got {mode!r}")
    given = [name for name, on in aliases.items() if on]
    if len(given) > 1:
        raise ValueError(f"{' and '.join(given)} are mutually exclusive")
    if not given:
        return default if mode is None else mode
    implied = _MODE_ALIASES[given[0]]
    if mode is not None and mode != implied:
        raise TypeError(
            f"{given[0]}=True (mode={implied!r}) and mode={mode!r} disagree: pass mode= alone"
        )
    return implied


def resolve_retries(retries: int | None, commit_retries: int | None) -> int:
    """``retries=``, or its alias ``commit_retries=``, checked; the default if neither."""
    if retries is not None and commit_retries is not None and retries != commit_retries:
        raise TypeError(
            f"retries={retries} and commit_retries={commit_retries} disagree: pass retries= "
            "alone (commit_retries is its older name)"
        )
    if retries is not None:
        return check_int(retries, "retries", minimum=0)
    if commit_retries is not None:
        return check_int(commit_retries, "commit_retries", minimum=0)
    return DEFAULT_RETRIES


def resolve_bin_count(splits: int | None, num_bins: int | None) -> int | None:
    """``splits=``, or its alias ``num_bins=``; ``None`` if neither was given."""
    if num_bins is None:
        return splits
    if splits is not None and splits != num_bins:
        raise TypeError(f"splits={splits} and num_bins={num_bins} disagree: pass one of them")
    return num_bins


def resolve_codec(codec: str | None, base: Manifest | None, where: str) -> Codec:
    """The codec a write encodes its records with: ``codec=``, or (``None``) the codec
    of the dataset it appends to (``base``), ``"bytes"`` for a new one.

    Raises
    ------
    ValueError
        If no codec is called ``codec`` (the message lists the known ones), or
        ``base`` holds records in another codec (naming both).
    """
    if codec is None:
        return get_codec(base.codec if base is not None else DEFAULT_CODEC)
    if not isinstance(codec, str):
        raise TypeError(f"codec must be a codec's name (a str), not {type(codec).__name__}")
    found = get_codec(codec)
    if base is not None:
        check_same_codec(base, codec, where)
    return found
