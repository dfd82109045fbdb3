"""Replay state of the command verifier: the last accepted sequence and the nonces seen.

Nonces are kept only while their command could still be accepted (until its expiry plus the
skew; later the expiry check refuses it anyway), and at most ``max_nonces`` of them (the
earliest-expiring are forgotten first; the strictly increasing sequence still refuses those
commands). :class:`MemoryReplayState` lives in memory; :class:`JsonFileReplayState` persists
the same state to a JSON file (0600), rewritten atomically on each accepted command.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from security.errors import KeyStoreError, StateFileError
from security.files import write_private

__all__ = ["JsonFileReplayState", "MemoryReplayState", "ReplayState"]


class ReplayState(Protocol):
    """What :class:`~security.commands.CommandVerifier` needs to refuse replays."""

    def last_sequence(self) -> int:
        """The highest sequence accepted so far (-1 when none)."""
        ...

    def seen(self, nonce: bytes) -> bool: ...

    def record(
        self, sequence: int, nonce: bytes, expires_at_ms: int, forget_before_ms: int
    ) -> None:
        """Remember an accepted command; nonces expiring before ``forget_before_ms`` may go."""
        ...


class MemoryReplayState:
    """Bounded in-memory replay state."""

    def __init__(self, max_nonces: int = 10_000) -> None:
        if max_nonces < 1:
            raise ValueError(f"max_nonces must be at least 1, got {max_nonces}")
        self.max_nonces = max_nonces
        self._last = -1
        self._nonces: dict[bytes, int] = {}

    def last_sequence(self) -> int:
        return self._last

    def seen(self, nonce: bytes) -> bool:
        return nonce in self._nonces

    def __len__(self) -> int:
        return len(self._nonces)

    def record(
        self, sequence: int, nonce: bytes, expires_at_ms: int, forget_before_ms: int
    ) -> None:
        self._last = max(self._last, sequence)
        self._nonces[nonce] = expires_at_ms
        stale = [n for n, exp in self._nonces.items() if exp < forget_before_ms]
        for n in stale:
            del self._nonces[n]
        if len(self._nonces) > self.max_nonces:
            ordered = sorted(self._nonces.items(), key=lambda item: item[1])
            for n, _ in ordered[: len(self._nonces) - self.max_nonces]:
                del self._nonces[n]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "last_sequence": self._last,
            "nonces": {n.hex(): exp for n, exp in self._nonces.items()},
        }

    def load_dict(self, data: Any, where: str) -> None:
        try:
            if data["version"] != 1:
                raise ValueError(f"unsupported version {data['version']!r}")
            last = data["last_sequence"]
            nonces = {bytes.fromhex(k): v for k, v in data["nonces"].items()}
            if not isinstance(last, int) or not all(isinstance(v, int) for v in nonces.values()):
                raise ValueError("wrong types")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateFileError(f"{where}: not a replay state file: {exc}") from exc
        self._last, self._nonces = last, nonces


class JsonFileReplayState(MemoryReplayState):
    """:class:`MemoryReplayState` persisted to ``path`` after every accepted command."""

    def __init__(self, path: Path, max_nonces: int = 10_000) -> None:
        super().__init__(max_nonces)
        self.path = path
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise StateFileError(f"{path}: cannot read replay state: {exc}") from exc
            self.load_dict(data, str(path))

    def record(
        self, sequence: int, nonce: bytes, expires_at_ms: int, forget_before_ms: int
    ) -> None:
        super().record(sequence, nonce, expires_at_ms, forget_before_ms)
        try:
            write_private(self.path, json.dumps(self.to_dict()).encode("utf-8"))
        except KeyStoreError as exc:
            raise StateFileError(f"{self.path}: cannot save replay state: {exc}") from exc
