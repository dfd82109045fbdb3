"""The outbox's small policies and seams: which messages are kept, the payload codec, and the
replay pacer.

* :func:`is_kept` splits messages in two classes. Property reports are *telemetry*: the
  overflow policy may drop them. Everything else (events, which carry alarms, service and
  property-set replies, and any other kind) is *kept*: dropped only past the hard size limit.
* :class:`PayloadCodec` is the seam for encryption at rest: the outbox stores
  ``codec.encode(to_bytes(message))`` and reads ``from_bytes(codec.decode(stored))``. The
  default :class:`IdentityCodec` stores the protobuf bytes as they are. An AES-GCM codec plugs
  in without changing the outbox; the codec's ``name`` is recorded in the outbox file, and
  opening it with another codec is refused (drain the outbox before switching codecs).
* :class:`ReplayPacer` is a token bucket the uplink uses to drain a backlog at a controlled
  rate while live data keeps flowing (see :mod:`edge_agent.outbox`, "Replay and live data").
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final, Protocol

from thing_models.messages import Message, MessageKind

__all__ = [
    "KEPT",
    "TELEMETRY",
    "IdentityCodec",
    "PayloadCodec",
    "ReplayPacer",
    "is_kept",
]

#: Names of the two classes, as used in the drop counters.
TELEMETRY: Final = "telemetry"
KEPT: Final = "kept"


def is_kept(message: Message) -> bool:
    """True for the *kept* class (everything but property reports)."""
    return message.kind is not MessageKind.PROPERTY_REPORT


class PayloadCodec(Protocol):
    """Transforms stored payloads (e.g. encryption at rest).

    ``decode(encode(data)) == data``. ``decode`` raises (any exception) on a payload it cannot
    read, e.g. a failed authentication tag: the outbox then quarantines that row. ``name``
    identifies the format in the outbox file.
    """

    @property
    def name(self) -> str: ...

    def encode(self, data: bytes) -> bytes: ...

    def decode(self, data: bytes) -> bytes: ...


class IdentityCodec:
    """Stores payloads unchanged (the default)."""

    @property
    def name(self) -> str:
        return "identity"

    def encode(self, data: bytes) -> bytes:
        return data

    def decode(self, data: bytes) -> bytes:
        if not isinstance(data, bytes):
            raise TypeError(f"stored payload is {type(data).__name__}, not bytes")
        return data


class ReplayPacer:
    """A token bucket of messages: ``rate_msgs_per_s`` tokens a second, at most ``burst``.

    The bucket starts full. ``available()`` is the whole number of messages the caller may send
    now; ``consume(n)`` takes them; ``delay_s(n)`` is how long until ``n`` (capped at the burst)
    are available. Not thread-safe: one uplink task owns it.
    """

    def __init__(
        self,
        rate_msgs_per_s: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(rate_msgs_per_s) and rate_msgs_per_s > 0):
            raise ValueError(f"rate_msgs_per_s must be a positive number, got {rate_msgs_per_s}")
        burst = rate_msgs_per_s if burst is None else burst
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be at least 1 message, got {burst}")
        self.rate = float(rate_msgs_per_s)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)

    def available(self) -> int:
        """Messages that may be sent now."""
        self._refill()
        return int(self._tokens)

    def consume(self, n: int) -> None:
        """Take ``n`` tokens (``0 <= n <= available()``)."""
        self._refill()
        if n < 0 or n > int(self._tokens):
            raise ValueError(f"cannot consume {n} tokens: {int(self._tokens)} available")
        self._tokens -= n

    def delay_s(self, n: int = 1) -> float:
        """Seconds until ``min(n, burst)`` tokens are available (0.0 if they are now)."""
        self._refill()
        missing = min(float(n), self.burst) - self._tokens
        return 0.0 if missing <= 0 else missing / self.rate
