from thing_models.proto import thing_message_pb2 as _thing_message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CommandKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_KIND_UNSPECIFIED: _ClassVar[CommandKind]
    COMMAND_KIND_SET_PROPERTIES: _ClassVar[CommandKind]
    COMMAND_KIND_INVOKE_SERVICE: _ClassVar[CommandKind]

class CommandStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMMAND_STATUS_UNSPECIFIED: _ClassVar[CommandStatus]
    COMMAND_STATUS_QUEUED: _ClassVar[CommandStatus]
    COMMAND_STATUS_SENT: _ClassVar[CommandStatus]
    COMMAND_STATUS_SUCCEEDED: _ClassVar[CommandStatus]
    COMMAND_STATUS_FAILED: _ClassVar[CommandStatus]
    COMMAND_STATUS_EXPIRED: _ClassVar[CommandStatus]
    COMMAND_STATUS_REJECTED: _ClassVar[CommandStatus]
COMMAND_KIND_UNSPECIFIED: CommandKind
COMMAND_KIND_SET_PROPERTIES: CommandKind
COMMAND_KIND_INVOKE_SERVICE: CommandKind
COMMAND_STATUS_UNSPECIFIED: CommandStatus
COMMAND_STATUS_QUEUED: CommandStatus
COMMAND_STATUS_SENT: CommandStatus
COMMAND_STATUS_SUCCEEDED: CommandStatus
COMMAND_STATUS_FAILED: CommandStatus
COMMAND_STATUS_EXPIRED: CommandStatus
COMMAND_STATUS_REJECTED: CommandStatus

class PropertyState(_message.Message):
    __slots__ = ("value", "ts_ms", "quality")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    value: _thing_message_pb2.Value
    ts_ms: int
    quality: _thing_message_pb2.Quality
    def __init__(self, value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ..., ts_ms: _Optional[int] = ..., quality: _Optional[_Union[_thing_message_pb2.Quality, str]] = ...) -> None: ...

class Location(_message.Message):
    __slots__ = ("has_coordinates", "latitude", "longitude", "floor", "room")
    HAS_COORDINATES_FIELD_NUMBER: _ClassVar[int]
    LATITUDE_FIELD_NUMBER: _ClassVar[int]
    LONGITUDE_FIELD_NUMBER: _ClassVar[int]
    FLOOR_FIELD_NUMBER: _ClassVar[int]
    ROOM_FIELD_NUMBER: _ClassVar[int]
    has_coordinates: bool
    latitude: float
    longitude: float
    floor: str
    room: str
    def __init__(self, has_coordinates: _Optional[bool] = ..., latitude: _Optional[float] = ..., longitude: _Optional[float] = ..., floor: _Optional[str] = ..., room: _Optional[str] = ...) -> None: ...

class Device(_message.Message):
    __slots__ = ("id", "model", "edge_id", "site", "building", "labels", "location", "online", "revision", "created_ms", "updated_ms", "last_seen_ms")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    model: str
    edge_id: str
    site: str
    building: str
    labels: _containers.ScalarMap[str, str]
    location: Location
    online: bool
    revision: int
    created_ms: int
    updated_ms: int
    last_seen_ms: int
    def __init__(self, id: _Optional[str] = ..., model: _Optional[str] = ..., edge_id: _Optional[str] = ..., site: _Optional[str] = ..., building: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., location: _Optional[_Union[Location, _Mapping]] = ..., online: _Optional[bool] = ..., revision: _Optional[int] = ..., created_ms: _Optional[int] = ..., updated_ms: _Optional[int] = ..., last_seen_ms: _Optional[int] = ...) -> None: ...

class ModelRecord(_message.Message):
    __slots__ = ("name", "version", "title", "vendor", "description", "document_yaml", "published_ms", "property_count", "event_count", "service_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_YAML_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_MS_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_COUNT_FIELD_NUMBER: _ClassVar[int]
    EVENT_COUNT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    title: str
    vendor: str
    description: str
    document_yaml: str
    published_ms: int
    property_count: int
    event_count: int
    service_count: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., title: _Optional[str] = ..., vendor: _Optional[str] = ..., description: _Optional[str] = ..., document_yaml: _Optional[str] = ..., published_ms: _Optional[int] = ..., property_count: _Optional[int] = ..., event_count: _Optional[int] = ..., service_count: _Optional[int] = ...) -> None: ...

class EventRecord(_message.Message):
    __slots__ = ("id", "device_id", "name", "level", "ts_ms", "params", "acknowledged", "acknowledged_by", "acknowledged_ms", "comment")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _thing_message_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_BY_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_MS_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    id: str
    device_id: str
    name: str
    level: str
    ts_ms: int
    params: _containers.MessageMap[str, _thing_message_pb2.Value]
    acknowledged: bool
    acknowledged_by: str
    acknowledged_ms: int
    comment: str
    def __init__(self, id: _Optional[str] = ..., device_id: _Optional[str] = ..., name: _Optional[str] = ..., level: _Optional[str] = ..., ts_ms: _Optional[int] = ..., params: _Optional[_Mapping[str, _thing_message_pb2.Value]] = ..., acknowledged: _Optional[bool] = ..., acknowledged_by: _Optional[str] = ..., acknowledged_ms: _Optional[int] = ..., comment: _Optional[str] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("id", "device_id", "edge_id", "kind", "service", "params", "status", "result", "error", "created_ms", "updated_ms", "expires_ms", "sequence", "envelope")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _thing_message_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ...) -> None: ...
    class ResultEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _thing_message_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_MS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ENVELOPE_FIELD_NUMBER: _ClassVar[int]
    id: str
    device_id: str
    edge_id: str
    kind: CommandKind
    service: str
    params: _containers.MessageMap[str, _thing_message_pb2.Value]
    status: CommandStatus
    result: _containers.MessageMap[str, _thing_message_pb2.Value]
    error: str
    created_ms: int
    updated_ms: int
    expires_ms: int
    sequence: int
    envelope: bytes
    def __init__(self, id: _Optional[str] = ..., device_id: _Optional[str] = ..., edge_id: _Optional[str] = ..., kind: _Optional[_Union[CommandKind, str]] = ..., service: _Optional[str] = ..., params: _Optional[_Mapping[str, _thing_message_pb2.Value]] = ..., status: _Optional[_Union[CommandStatus, str]] = ..., result: _Optional[_Mapping[str, _thing_message_pb2.Value]] = ..., error: _Optional[str] = ..., created_ms: _Optional[int] = ..., updated_ms: _Optional[int] = ..., expires_ms: _Optional[int] = ..., sequence: _Optional[int] = ..., envelope: _Optional[bytes] = ...) -> None: ...
