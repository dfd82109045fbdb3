"""Verifies each registry command's signed envelope before anything touches a device.

The registry signs (``security.commands``) the edge, the device, a sequence number, a nonce, an
expiry and a *payload*: the deterministic serialization of a ``Command`` holding only its
``id``, ``kind``, ``service`` and ``params`` (:mod:`cloud_registry.api.command_envelope`).
:meth:`CommandGuard.check` verifies the envelope
(:class:`~security.commands.CommandVerifier`: signature by a command key received at
enrollment, addressed to this edge, not expired, nonce unseen and sequence above the last
accepted one, the replay state persisted in the identity folder) and returns the command to
run **built from the signed bytes**, so that nothing the transport could alter reaches a device.

Unsigned commands (empty ``envelope``) are refused, unless the agent runs insecure
(``registry.insecure: true``, development only): then they run, with a warning. Every refusal
raises :class:`CommandRefused` with a ``reason`` (``unsigned``, ``malformed``, ``unknown_key``,
``tampered``, ``wrong_target``, ``expired``, ``replayed``, ``mismatch``, ``state``,
``no_keys``) and is
counted in :attr:`CommandGuard.refused`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.message import DecodeError

from cloud_registry.api.v1 import common_pb2
from edge_agent.config import EdgeConfig
from edge_agent.errors import AgentError
from edge_agent.identity_store import IdentityError, IdentityStore, load_public_keys
from security.commands import CommandVerifier
from security.errors import (
    CommandRejected,
    ExpiredCommand,
    MalformedCommand,
    ReplayedCommand,
    StateFileError,
    TamperedCommand,
    UnknownSigningKey,
    WrongTarget,
)
from security.replay import JsonFileReplayState

__all__ = ["CommandGuard", "CommandRefused", "guard_for"]

_log = logging.getLogger(__name__)
_REASONS: tuple[tuple[type[CommandRejected], str], ...] = (
    (MalformedCommand, "malformed"),
    (UnknownSigningKey, "unknown_key"),
    (TamperedCommand, "tampered"),
    (WrongTarget, "wrong_target"),
    (ExpiredCommand, "expired"),
    (ReplayedCommand, "replayed"),
)


class CommandRefused(AgentError):
    """A registry command refused before it reached a device; ``reason`` is a short key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CommandGuard:
    """Checks commands for one edge (see the module doc). ``verifier`` None: no command keys,
    so every command is refused (``no_keys``), or let through with ``allow_unsigned``."""

    def __init__(self, verifier: CommandVerifier | None, *, allow_unsigned: bool = False) -> None:
        self._verifier = verifier
        self.allow_unsigned = allow_unsigned
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.last_refusal = ""

    @classmethod
    def for_identity(
        cls,
        store: IdentityStore,
        *,
        allow_unsigned: bool = False,
        clock: Callable[[], datetime] = _utc_now,
    ) -> CommandGuard:
        """A guard trusting the command keys of the enrolled identity in ``store``, its replay
        state in ``store``'s folder. Not enrolled, or no command keys: a guard without a
        verifier (see the class doc)."""
        if not store.enrolled():
            return cls(None, allow_unsigned=allow_unsigned)
        creds = store.load()
        keys = load_public_keys(creds.command_keys, str(store.folder))
        if not keys:
            return cls(None, allow_unsigned=allow_unsigned)
        try:
            state = JsonFileReplayState(store.replay_state_path)
        except StateFileError as exc:
            raise IdentityError(str(exc)) from exc
        verifier = CommandVerifier(keys, creds.edge_id, state, clock=clock)
        return cls(verifier, allow_unsigned=allow_unsigned)

    def _refuse(self, command: common_pb2.Command, reason: str, message: str) -> CommandRefused:
        self.refused[reason] += 1
        self.last_refusal = f"{reason}: {message}"
        _log.warning("command %s for device %s refused: %s", command.id, command.device_id, message)
        return CommandRefused(reason, f"command refused ({reason}): {message}")

    def check(self, command: common_pb2.Command) -> common_pb2.Command:
        """The command to run (from the signed payload), or :class:`CommandRefused`."""
        if not command.envelope:
            if self.allow_unsigned:
                self.accepted += 1
                _log.warning("command %s is unsigned; accepted (insecure mode)", command.id)
                return command
            raise self._refuse(command, "unsigned", "the command carries no signed envelope")
        if self._verifier is None:
            if self.allow_unsigned:
                self.accepted += 1
                _log.warning("command %s: no command keys to verify it (insecure mode)", command.id)
                return command
            raise self._refuse(command, "no_keys", "no command keys: enroll this edge first")
        try:
            verified = self._verifier.verify(command.envelope)
        except CommandRejected as exc:
            reason = next((r for t, r in _REASONS if isinstance(exc, t)), "rejected")
            raise self._refuse(command, reason, str(exc)) from exc
        except StateFileError as exc:
            raise self._refuse(command, "state", f"replay state unusable: {exc}") from exc
        signed = common_pb2.Command()
        try:
            signed.ParseFromString(verified.payload)
        except DecodeError as exc:
            raise self._refuse(command, "malformed", "signed payload is not a Command") from exc
        if (signed.id, verified.device_id, verified.sequence) != (
            command.id,
            command.device_id,
            command.sequence,
        ):
            raise self._refuse(
                command,
                "mismatch",
                f"signed for command {signed.id!r} on device {verified.device_id!r} "
                f"(sequence {verified.sequence}), received as {command.id!r} on "
                f"{command.device_id!r} (sequence {command.sequence})",
            )
        out = common_pb2.Command(
            id=signed.id,
            device_id=verified.device_id,
            edge_id=verified.edge_id,
            kind=signed.kind,
            service=signed.service,
            sequence=verified.sequence,
            expires_ms=verified.expires_at_ms,
            envelope=command.envelope,
        )
        for name, value in signed.params.items():
            out.params[name].CopyFrom(value)
        self.accepted += 1
        return out


def guard_for(config: EdgeConfig) -> CommandGuard | None:
    """The agent's guard: the identity folder's command keys; unsigned commands allowed only
    with ``registry.insecure``. None for a configuration built in code without a ``security``
    section that runs insecure (tests)."""
    insecure = config.registry.insecure
    if config.security is None:
        return None if insecure else CommandGuard(None)
    store = IdentityStore(config.security.identity_dir)
    return CommandGuard.for_identity(store, allow_unsigned=insecure)
