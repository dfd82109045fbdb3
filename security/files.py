"""Private files: created 0600 atomically, refused when group/other permission bits are set."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from security.errors import KeyFilePermissionError, KeyStoreError

__all__ = ["check_private", "read_private", "write_private", "write_public"]


def check_private(path: Path) -> None:
    """Raise :class:`KeyFilePermissionError` when ``path`` has any group/other bit set."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot stat private file: {exc.strerror}") from exc
    if mode & 0o077:
        raise KeyFilePermissionError(
            f"{path}: private file has mode {stat.S_IMODE(mode):04o}; "
            "refusing it: group/other must have no access (chmod 600)"
        )


def read_private(path: Path) -> bytes:
    """Read a private file after checking its permissions."""
    check_private(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot read private file: {exc.strerror}") from exc


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # umask-proof
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise KeyStoreError(f"{path}: cannot write file: {exc.strerror}") from exc


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600."""
    _write(path, data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Write ``data`` (a certificate, a CRL) atomically with mode 0644."""
    _write(path, data, 0o644)
