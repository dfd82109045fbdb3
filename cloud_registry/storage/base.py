"""The registry's storage interface: records, filters, errors, and the :class:`Storage` protocol.

Two engines implement it: SQLite (:mod:`cloud_registry.storage.sqlite`, the default, one
machine) and PostgreSQL (:mod:`cloud_registry.storage.postgres`, several stateless replicas).
The same contract test suite runs against both.

Rules every engine follows:

* Methods are synchronous and thread-safe; the gRPC layer calls them from worker threads.
* Every mutation that others may watch appends :class:`ChangeEntry` rows **in the same
  transaction**, so the change feed (``changes_after``) is exactly the committed history, in
  commit order, with strictly increasing ``seq`` and no gaps visible to readers that could be
  filled later.
* After a commit that appended changes, and (PostgreSQL) when another replica committed some,
  the engine calls every listener registered with ``add_change_listener`` (from any thread; a
  listener must be quick and never block).
* Values are JSON-compatible Python values (None, bool, int, float, str, list, dict); ints and
  floats stay distinct (``2`` vs ``2.0``) and bool is never stored as an int.
* Times are integers: milliseconds since the Unix epoch, UTC.
* ``expected_revision`` of 0 means unconditional; otherwise a mismatch raises
  :class:`StaleRevision`.
* Errors are this module's :class:`StorageError` subclasses, never driver exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

if TYPE_CHECKING:
    from cloud_registry.storage.security_store import SecurityStore

__all__ = [
    "AlreadyExists",
    "ChangeEntry",
    "ChangeKind",
    "CommandEntry",
    "CommandStatus",
    "DeviceFilter",
    "DeviceRecord",
    "EventEntry",
    "EventFilter",
    "HistoryBucket",
    "HistoryPoint",
    "IngestBatch",
    "IngestResult",
    "LabelRequirement",
    "Location",
    "ModelEntry",
    "NotFound",
    "Page",
    "PropertyValue",
    "ReportedValue",
    "StaleRevision",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "TwinRecord",
]

JsonValue = Any
T = TypeVar("T")


# --------------------------------------------------------------------------- errors


class StorageError(Exception):
    """Base of every storage error."""


class NotFound(StorageError):
    """The record does not exist."""


class AlreadyExists(StorageError):
    """A record with that key exists already."""


class StaleRevision(StorageError):
    """``expected_revision`` did not match; ``current`` is the stored revision."""

    def __init__(self, message: str, current: int) -> None:
        super().__init__(message)
        self.current = current


class StorageUnavailable(StorageError):
    """The database cannot be reached or is shutting down."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of results and the opaque cursor of the next (empty on the last page)."""

    items: tuple[T, ...]
    next_cursor: str = ""


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A published model version. ``document`` is the canonical YAML form as plain data
    (``thing_models.yaml_format.model_to_dict``)."""

    name: str
    version: str
    document: Mapping[str, Any]
    published_ms: int
    title: str = ""
    vendor: str = ""
    description: str = ""
    property_count: int = 0
    event_count: int = 0
    service_count: int = 0


@dataclass(frozen=True, slots=True)
class Location:
    latitude: float | None = None
    longitude: float | None = None
    floor: str = ""
    room: str = ""


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A registered device; ``model`` is an exact reference ``name@version``."""

    id: str
    model: str
    edge_id: str
    site: str
    building: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    location: Location = Location()
    online: bool = False
    revision: int = 0
    created_ms: int = 0
    updated_ms: int = 0
    last_seen_ms: int = 0

    @property
    def model_name(self) -> str:
        return self.model.partition("@")[0]


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One term of a label selector: ``op`` is ``=``, ``!=``, ``exists``, ``!exists``, ``in``
    or ``notin``; ``values`` holds one value for ``=``/``!=`` and several for ``in``/``notin``."""

    key: str
    op: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """Every given criterion must hold. ``model`` is a name (any version) or ``name@version``."""

    model: str = ""
    site: str = ""
    edge_id: str = ""
    building: str = ""
    labels: tuple[LabelRequirement, ...] = ()
    online: bool | None = None
    sites: tuple[str, ...] | None = None  # authorization: restrict to these sites (None: all)


@dataclass(frozen=True, slots=True)
class PropertyValue:
    value: JsonValue
    ts_ms: int
    quality: str = "good"  # good | uncertain | bad


@dataclass(frozen=True, slots=True)
class TwinRecord:
    device_id: str
    model: str
    reported: Mapping[str, PropertyValue]
    desired: Mapping[str, PropertyValue]
    revision: int

    @property
    def delta(self) -> dict[str, JsonValue]:
        """Desired values that differ from the reported ones (type-exact comparison)."""
        result: dict[str, JsonValue] = {}
        for name, wanted in self.desired.items():
            have = self.reported.get(name)
            if have is None or not _same(have.value, wanted.value):
                result[name] = wanted.value
        return result


def _same(a: JsonValue, b: JsonValue) -> bool:
    return type(a) is type(b) and a == b


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    ts_ms: int
    value: JsonValue
    quality: str


@dataclass(frozen=True, slots=True)
class HistoryBucket:
    start_ms: int
    min: float
    max: float
    avg: float
    count: int


@dataclass(frozen=True, slots=True)
class EventEntry:
    id: str
    device_id: str
    name: str
    level: str  # info | alert | error
    ts_ms: int
    params: Mapping[str, JsonValue] = field(default_factory=dict)
    acknowledged: bool = False
    acknowledged_by: str = ""
    acknowledged_ms: int = 0
    comment: str = ""


@dataclass(frozen=True, slots=True)
class EventFilter:
    device_id: str = ""
    site: str = ""
    levels: tuple[str, ...] = ()
    from_ms: int = 0
    to_ms: int = 0  # exclusive; 0: no upper bound
    unacknowledged_only: bool = False
    sites: tuple[str, ...] | None = None  # authorization: restrict to these sites (None: all)


class CommandStatus(StrEnum):
    QUEUED = "queued"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"

    @property
    def final(self) -> bool:
        return self not in (CommandStatus.QUEUED, CommandStatus.SENT)


@dataclass(frozen=True, slots=True)
class CommandEntry:
    """A command; ``kind`` is ``set_properties`` or ``invoke_service``. ``sequence`` is assigned
    by the engine on creation: 1, 2, 3... per edge."""

    id: str
    device_id: str
    edge_id: str
    kind: str
    service: str
    params: Mapping[str, JsonValue]
    status: CommandStatus
    created_ms: int
    expires_ms: int
    updated_ms: int = 0
    result: Mapping[str, JsonValue] = field(default_factory=dict)
    error: str = ""
    sequence: int = 0


class ChangeKind(StrEnum):
    TWIN_REPORTED = "twin_reported"
    TWIN_DESIRED = "twin_desired"
    EVENT = "event"
    DEVICE_CREATED = "device_created"
    DEVICE_UPDATED = "device_updated"
    DEVICE_DELETED = "device_deleted"
    MODEL_PUBLISHED = "model_published"
    COMMAND_UPDATED = "command_updated"  # created or status changed
    ALARM_ACKNOWLEDGED = "alarm_acknowledged"
    EDGE_REVOKED = "edge_revoked"  # security: not shown to Watch; replicas close its streams


@dataclass(frozen=True, slots=True)
class ChangeEntry:
    """One committed change. ``payload`` is plain JSON data:

    * twin_reported / twin_desired: ``{"properties": {name: {"value", "ts_ms", "quality"}},
      "revision": int}``
    * event / alarm_acknowledged: the event's fields (as EventEntry, params included)
    * device_*: the device's fields (device_deleted: at least ``id``, ``site``, ``model``)
    * model_published: ``{"name", "version", "title", "vendor"}``
    * command_updated: the command's fields (as CommandEntry; status as its string value)

    ``edge_id`` names the edge concerned (devices, twins, commands) so an edge's sync session
    can pick what it must forward (commands, desired changes)."""

    seq: int
    kind: ChangeKind
    ts_ms: int
    device_id: str = ""
    site: str = ""
    model: str = ""
    edge_id: str = ""
    payload: Mapping[str, Any] = field(default_factory=dict)


class ReportedValue(NamedTuple):
    """One value of a property report, flattened for ingest (a named tuple: ingest builds
    hundreds of thousands per second)."""

    device_id: str
    property: str
    value: JsonValue
    ts_ms: int
    quality: str = "good"


@dataclass(frozen=True, slots=True)
class IngestBatch:
    """A telemetry batch from an edge: reported values and events, stored in one transaction."""

    edge_id: str
    sequence: int
    values: Sequence[ReportedValue]
    events: Sequence[EventEntry]


@dataclass(frozen=True, slots=True)
class IngestResult:
    duplicate: bool
    stored_values: int = 0
    stored_events: int = 0
    rejected: tuple[str, ...] = ()  # "device_id: reason" for values/events of unknown devices


# --------------------------------------------------------------------------- the protocol


class Storage(Protocol):
    """What the registry needs from a database. See the module docstring for the rules."""

    # ---- lifecycle
    def migrate(self) -> int:
        """Apply pending schema migrations; return the schema version now in force."""
        ...

    def schema_version(self) -> int: ...

    def close(self) -> None: ...

    def add_change_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (no arguments) after changes were committed, here or elsewhere."""
        ...

    # ---- models
    def put_model(self, entry: ModelEntry) -> tuple[ModelEntry, bool]:
        """Store a model version; returns (stored entry, unchanged). The same name@version with
        an equal document is ``unchanged=True`` (idempotent); with another document:
        AlreadyExists. Appends MODEL_PUBLISHED when stored."""
        ...

    def get_model(self, name: str, version: str = "") -> ModelEntry:
        """An exact version, or the newest by semantic-version order when ``version`` is empty."""
        ...

    def list_models(self, name_prefix: str, cursor: str, limit: int) -> Page[ModelEntry]:
        """The newest version of each model name, ordered by name."""
        ...

    def list_model_versions(self, name: str) -> list[ModelEntry]:
        """Every version of ``name``, newest first (semantic-version order)."""
        ...

    # ---- devices
    def create_device(self, device: DeviceRecord, now_ms: int) -> DeviceRecord:
        """Insert (revision 1, created/updated = now). AlreadyExists on a duplicate id.
        Appends DEVICE_CREATED."""
        ...

    def get_device(self, device_id: str) -> DeviceRecord: ...

    def get_devices(self, device_ids: Sequence[str]) -> dict[str, DeviceRecord]:
        """The devices that exist among ``device_ids`` (ingest uses it; must be fast)."""
        ...

    def list_devices(self, flt: DeviceFilter, cursor: str, limit: int) -> Page[DeviceRecord]:
        """Devices matching ``flt`` ordered by id, keyset-paged (cursor = last id, opaque)."""
        ...

    def update_device(
        self, device_id: str, changes: Mapping[str, Any], expected_revision: int, now_ms: int
    ) -> DeviceRecord:
        """Set the given fields (model, edge_id, site, building, labels, location); bump the
        revision. Appends DEVICE_UPDATED."""
        ...

    def delete_device(self, device_id: str, expected_revision: int, now_ms: int) -> None:
        """Delete the device, its twin, history and events. Appends DEVICE_DELETED."""
        ...

    def set_devices_online(self, edge_id: str, states: Mapping[str, bool], now_ms: int) -> None:
        """Record online/offline for devices of ``edge_id`` (others are ignored); appends
        DEVICE_UPDATED for each device whose state changed."""
        ...

    # ---- twins, history, events
    def get_twin(self, device_id: str) -> TwinRecord: ...

    def set_desired(
        self,
        device_id: str,
        values: Mapping[str, JsonValue],
        expected_revision: int,
        now_ms: int,
    ) -> TwinRecord:
        """Set desired values (None clears one); bump the twin revision. Appends
        TWIN_DESIRED (payload properties: the set values; cleared ones with value None)."""
        ...

    def history(
        self, device_id: str, prop: str, from_ms: int, to_ms: int, limit: int
    ) -> tuple[list[HistoryPoint], bool]:
        """Raw points in [from_ms, to_ms) oldest first, at most ``limit``; and whether more
        existed."""
        ...

    def history_buckets(
        self, device_id: str, prop: str, from_ms: int, to_ms: int, bucket_ms: int
    ) -> list[HistoryBucket]:
        """min/max/avg/count of numeric values (bool counts as 0/1) per bucket of
        ``bucket_ms`` aligned to multiples of bucket_ms, oldest first; empty buckets omitted."""
        ...

    def list_events(self, flt: EventFilter, cursor: str, limit: int) -> Page[EventEntry]:
        """Events newest first (ts desc, id desc), keyset-paged."""
        ...

    def acknowledge_event(self, event_id: str, by: str, comment: str, now_ms: int) -> EventEntry:
        """Mark an event acknowledged (idempotent: a second call returns it unchanged).
        Appends ALARM_ACKNOWLEDGED on the first call."""
        ...

    # ---- ingest (edge sync)
    def ingest(self, batch: IngestBatch, now_ms: int) -> IngestResult:
        """Store a telemetry batch atomically and durably (the caller acknowledges after this
        returns). A batch whose (edge_id, sequence) was stored before returns
        ``duplicate=True`` and stores nothing. Values and events of devices that do not exist
        are rejected (listed), the rest stored: history rows for every value; the twin's
        reported value updated when the value is not older than the stored one; one
        TWIN_REPORTED change per device (its changed properties) and one EVENT change per
        event; the devices' last_seen_ms updated."""
        ...

    def last_sequence(self, edge_id: str) -> int:
        """The highest batch sequence stored for ``edge_id`` (0: none)."""
        ...

    # ---- commands
    def create_command(self, command: CommandEntry) -> CommandEntry:
        """Insert; assigns ``sequence`` (per edge). Appends COMMAND_UPDATED."""
        ...

    def get_command(self, command_id: str) -> CommandEntry: ...

    def update_command(
        self,
        command_id: str,
        status: CommandStatus,
        now_ms: int,
        result: Mapping[str, JsonValue] | None = None,
        error: str = "",
    ) -> CommandEntry:
        """Change a command's status. A command already in a final status is returned
        unchanged (first final status wins). Appends COMMAND_UPDATED when changed."""
        ...

    def pending_commands(self, edge_id: str, now_ms: int) -> list[CommandEntry]:
        """QUEUED commands of ``edge_id`` not yet expired, by sequence."""
        ...

    def expire_commands(self, now_ms: int) -> int:
        """Mark QUEUED/SENT commands past ``expires_ms`` EXPIRED; return how many."""
        ...

    # ---- edges
    def edge_connected(self, edge_id: str, replica_id: str, now_ms: int) -> None:
        """Record that ``edge_id`` is connected to ``replica_id`` (lease refreshed by calling
        again)."""
        ...

    def edge_disconnected(self, edge_id: str, replica_id: str, now_ms: int) -> None:
        """Forget the connection if it is still held by ``replica_id``."""
        ...

    def edge_connection(self, edge_id: str, now_ms: int, lease_ms: int) -> str | None:
        """The replica holding ``edge_id``'s stream if its lease is fresh, else None."""
        ...

    # ---- change feed
    def changes_after(self, seq: int, limit: int) -> list[ChangeEntry]:
        """Committed changes with seq > ``seq``, oldest first."""
        ...

    def latest_change_seq(self) -> int: ...

    def oldest_change_seq(self) -> int:
        """The smallest seq still retained (0 when the feed is empty)."""
        ...

    def prune_changes(self, before_ms: int) -> int:
        """Delete changes committed before ``before_ms``; return how many."""
        ...

    @property
    def security(self) -> SecurityStore:
        """The security records (edges, tokens, revocations, API keys, audit)."""
        ...
