"""Opaque keyset cursors and sortable keys shared by the storage engines.

A cursor is the base64url (unpadded) text of a small JSON object ``{"v": 1, "k": kind,
"p": [key parts...]}``: ``kind`` names the listing (so a devices cursor is refused by the events
listing) and ``p`` holds the last row's sort key. :func:`decode_cursor` checks everything and
raises :class:`InvalidCursor` (a :class:`~cloud_registry.storage.base.StorageError` and a
``ValueError``; the API maps it to INVALID_ARGUMENT) for anything it did not produce. A cursor
carries no authority: it only moves the start of a keyset scan whose filters the server applies
again.

:func:`version_sort_key` turns a semantic version into text whose byte order is the semantic
version precedence (engines store it next to the version and ``ORDER BY`` it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Sequence

from cloud_registry.storage.base import StorageError

__all__ = [
    "DEVICES",
    "EVENTS",
    "MODELS",
    "InvalidCursor",
    "decode_cursor",
    "encode_cursor",
    "version_sort_key",
]

DEVICES = "devices"
EVENTS = "events"
MODELS = "models"

_VERSION = 1
_MAX_CURSOR = 4096

KeyPart = str | int


class InvalidCursor(StorageError, ValueError):
    """A page cursor that this engine did not produce (tampered, truncated or of another list)."""


def encode_cursor(kind: str, parts: Sequence[KeyPart]) -> str:
    """The opaque cursor for a scan of ``kind`` resuming after the key ``parts``."""
    raw = json.dumps({"v": _VERSION, "k": kind, "p": list(parts)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, types: Sequence[type]) -> tuple[KeyPart, ...] | None:
    """The key parts of ``cursor`` (None for the empty cursor: start from the beginning).

    ``types`` gives the expected type of each part (``str`` or ``int``)."""
    if not cursor:
        return None
    if not isinstance(cursor, str) or len(cursor) > _MAX_CURSOR:
        raise InvalidCursor("invalid page cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw.decode())
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("invalid page cursor: it does not decode") from exc
    if not isinstance(data, dict) or set(data) != {"v", "k", "p"} or data["v"] != _VERSION:
        raise InvalidCursor("invalid page cursor: unknown format")
    if data["k"] != kind:
        raise InvalidCursor(f"invalid page cursor: it belongs to another listing, not {kind}")
    parts = data["p"]
    if not isinstance(parts, list) or len(parts) != len(types):
        raise InvalidCursor("invalid page cursor: wrong key")
    for part, want in zip(parts, types, strict=True):
        # bool is an int subclass: refuse it where an int is expected
        if type(part) is not want:
            raise InvalidCursor("invalid page cursor: wrong key")
    return tuple(parts)


# --------------------------------------------------------------------------- version keys

_SEMVER_RE = re.compile(
    r"^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?\Z"
)


def _num(text: str) -> str:
    # length-prefixed digits sort numerically as text: "1" < "9" < "10"
    return f"{len(text):02d}{text}"


def version_sort_key(version: str) -> str:
    """Text whose order (binary, as SQLite and PostgreSQL's ``COLLATE "C"`` compare) is the
    semantic-version precedence of ``version`` (SemVer 2.0: numeric prerelease identifiers
    compare numerically and before alphanumeric ones, a release after its prereleases, build
    metadata ignored). Text that is no semantic version sorts before every version, by text."""
    match = _SEMVER_RE.match(version)
    if match is None:
        return "0" + version
    major, minor, patch, pre = match.groups()
    core = "1" + "".join(_num(x) for x in (major, minor, patch))
    if not pre:
        return core + "~"
    idents = []
    for ident in pre.split("."):
        if ident.isdigit():
            idents.append("0" + _num(ident.lstrip("0") or "0"))
        else:
            idents.append("1" + ident)
    # " " sorts below every identifier character, so a shorter identifier list sorts first
    return core + "!" + " ".join(idents)
