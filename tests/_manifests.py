"""Manifests as JSON documents, for tests written against the pre-version format.

A v4 dataset keeps its versions in ``_log/``; its ``splitdask.json`` is only a stub.
Tests that inspect a manifest read the newest version's (or one version's) state as
the pre-version JSON document (:func:`manifest_doc`). Tests that forge or damage a
manifest turn the dataset back into a pre-version one holding their document
(:func:`write_manifest_doc`): the library still reads those, through the same parser
as before, so what such a test checks about the parser is unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from typing import Any

from splitdask._dataset import _versions
from splitdask._dataset._snapshot import read_manifest
from splitdask._format import MANIFEST_NAME
from splitdask._format._log import LOG_DIR, entry_name
from splitdask._store import open_store

__all__ = ["entry_path", "forget_versions", "log_files", "manifest_doc", "write_manifest_doc"]


def manifest_doc(
    urlpath: str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
    version: int | str | None = None,
) -> dict[str, Any]:
    """The manifest of ``version`` (``None``: the newest) as the pre-version JSON doc."""
    manifest = read_manifest(open_store(urlpath, storage_options), version)
    assert manifest is not None, f"nothing committed at {urlpath}"
    doc: dict[str, Any] = json.loads(manifest.to_json())
    return doc


def log_files(
    urlpath: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None
) -> list[str]:
    """The names in the dataset's ``_log/`` (entries and checkpoints), sorted."""
    return sorted(open_store(urlpath, storage_options).list_dir(LOG_DIR))


def write_manifest_doc(
    urlpath: str | os.PathLike[str],
    doc: Mapping[str, Any] | bytes,
    storage_options: Mapping[str, Any] | None = None,
) -> None:
    """Make the dataset at ``urlpath`` a pre-version one whose ``splitdask.json`` is
    ``doc`` (a JSON document, or raw bytes written as they are): ``_log/`` goes."""
    store = open_store(urlpath, storage_options)
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    store.remove([f"{LOG_DIR}/{name}" for name in store.list_dir(LOG_DIR)])
    store.write_atomic(MANIFEST_NAME, data)
    if not isinstance(urlpath, str) or "://" not in urlpath:
        # A local dataset: drop the (now empty) directory too, as a pre-version one lacks it.
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(os.path.join(os.fspath(urlpath), LOG_DIR))


def entry_path(root: str | os.PathLike[str], version: int | None = None) -> str:
    """The local path of the log entry of ``version`` (``None``: the newest)."""
    if version is None:
        version = max(
            int(n.split(".")[0]) for n in log_files(root) if n[0] != "." and n.endswith(".json")
        )
    return os.path.join(os.fspath(root), entry_name(version))


def forget_versions() -> None:
    """Drop the versions and entries this process keeps (they never change once
    written): a test that damages a log file in place then reads the file again."""
    with _versions._LOCK:
        _versions._BUILT.clear()
        _versions._ENTRIES.clear()
