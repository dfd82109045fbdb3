"""The audit event model (storage and queries are the registry's).

An :class:`AuditEvent` is a frozen record: when, what kind, about whom (``subject``, e.g.
``edge:gw-01``), a human ``detail``, and optional string ``fields``. ``to_dict``/``from_dict``
round-trip through JSON-ready dicts; times are ISO 8601 UTC.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from security.errors import AuditError

__all__ = ["AuditEvent", "AuditKind"]


class AuditKind(StrEnum):
    ENROLLED = "enrolled"
    RENEWED = "renewed"
    REVOKED = "revoked"
    ACCESS_REFUSED = "access_refused"
    CERTIFICATE_REFUSED = "certificate_refused"
    TOKEN_REFUSED = "token_refused"
    COMMAND_REPLAYED = "command_replayed"
    COMMAND_TAMPERED = "command_tampered"
    COMMAND_REFUSED = "command_refused"
    CA_ROTATED = "ca_rotated"


@dataclass(frozen=True)
class AuditEvent:
    time: datetime
    kind: AuditKind
    subject: str
    detail: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.time.tzinfo is None:
            raise ValueError("audit event time must be timezone-aware")

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time.astimezone(UTC).isoformat(),
            "kind": self.kind.value,
            "subject": self.subject,
            "detail": self.detail,
            "fields": dict(self.fields),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditEvent:
        try:
            fields = data.get("fields", {})
            if not isinstance(fields, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in fields.items()
            ):
                raise ValueError("fields must map strings to strings")
            subject, detail = data["subject"], data.get("detail", "")
            if not isinstance(subject, str) or not isinstance(detail, str):
                raise ValueError("subject and detail must be strings")
            return cls(
                time=datetime.fromisoformat(data["time"]),
                kind=AuditKind(data["kind"]),
                subject=subject,
                detail=detail,
                fields=dict(fields),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise AuditError(f"audit record {data!r:.200}: {exc}") from exc
