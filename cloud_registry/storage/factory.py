"""Open a storage engine from a URL.

* ``sqlite:///relative/or/absolute/path.db`` (``sqlite:////abs/path.db`` works too), or a bare
  file path: :class:`~cloud_registry.storage.sqlite.SqliteStorage`.
* ``postgresql://...`` or ``postgres://...``: ``PostgresStorage(dsn, replica_id=...)``, imported
  only when asked for (psycopg is not loaded for SQLite deployments).

The engine is opened, not migrated: call ``migrate()`` (the ``serve`` command does).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import cast
from urllib.parse import unquote

from cloud_registry.storage.base import Storage

__all__ = ["open_storage"]

_SQLITE_PREFIX = "sqlite://"
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def _sqlite_path(url: str) -> str:
    rest = url[len(_SQLITE_PREFIX) :]
    if not rest.startswith("/"):
        # sqlite://host/... names a host: there is none for a local file
        raise ValueError(f"storage URL {url!r}: use sqlite:///path/to/file.db (three slashes)")
    path = unquote(rest[1:].partition("?")[0])
    if not path:
        raise ValueError(f"storage URL {url!r} names no database file")
    return path


def open_storage(url: str, *, replica_id: str = "") -> Storage:
    """The storage engine ``url`` names (see the module docstring); ValueError names an URL
    this build cannot open."""
    text = url.strip()
    if not text:
        raise ValueError("storage URL is empty")
    lowered = text.lower()
    if lowered.startswith(_POSTGRES_SCHEMES):
        module = importlib.import_module("cloud_registry.storage.postgres")
        engine = module.PostgresStorage(text, replica_id=replica_id)
        return cast(Storage, engine)
    from cloud_registry.storage.sqlite import SqliteStorage

    if lowered.startswith(_SQLITE_PREFIX):
        return SqliteStorage(_sqlite_path(text))
    if "://" in text or (":" in text.split("/")[0] and not Path(text).drive):
        raise ValueError(f"storage URL {url!r}: unknown scheme (use sqlite:/// or postgresql://)")
    return SqliteStorage(Path(text).expanduser())
