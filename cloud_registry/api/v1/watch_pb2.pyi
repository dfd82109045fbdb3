from cloud_registry.api.v1 import common_pb2 as _common_pb2
from thing_models.proto import thing_message_pb2 as _thing_message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_TWIN_REPORTED: _ClassVar[ChangeKind]
    CHANGE_KIND_TWIN_DESIRED: _ClassVar[ChangeKind]
    CHANGE_KIND_EVENT: _ClassVar[ChangeKind]
    CHANGE_KIND_DEVICE_CREATED: _ClassVar[ChangeKind]
    CHANGE_KIND_DEVICE_UPDATED: _ClassVar[ChangeKind]
    CHANGE_KIND_DEVICE_DELETED: _ClassVar[ChangeKind]
    CHANGE_KIND_MODEL_PUBLISHED: _ClassVar[ChangeKind]
    CHANGE_KIND_COMMAND_UPDATED: _ClassVar[ChangeKind]
    CHANGE_KIND_ALARM_ACKNOWLEDGED: _ClassVar[ChangeKind]
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_TWIN_REPORTED: ChangeKind
CHANGE_KIND_TWIN_DESIRED: ChangeKind
CHANGE_KIND_EVENT: ChangeKind
CHANGE_KIND_DEVICE_CREATED: ChangeKind
CHANGE_KIND_DEVICE_UPDATED: ChangeKind
CHANGE_KIND_DEVICE_DELETED: ChangeKind
CHANGE_KIND_MODEL_PUBLISHED: ChangeKind
CHANGE_KIND_COMMAND_UPDATED: ChangeKind
CHANGE_KIND_ALARM_ACKNOWLEDGED: ChangeKind

class WatchRequest(_message.Message):
    __slots__ = ("kinds", "device_ids", "site", "model", "resume_token")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_IDS_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[ChangeKind]
    device_ids: _containers.RepeatedScalarFieldContainer[str]
    site: str
    model: str
    resume_token: str
    def __init__(self, kinds: _Optional[_Iterable[_Union[ChangeKind, str]]] = ..., device_ids: _Optional[_Iterable[str]] = ..., site: _Optional[str] = ..., model: _Optional[str] = ..., resume_token: _Optional[str] = ...) -> None: ...

class TwinChange(_message.Message):
    __slots__ = ("properties", "revision")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.PropertyState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.PropertyState, _Mapping]] = ...) -> None: ...
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    properties: _containers.MessageMap[str, _common_pb2.PropertyState]
    revision: int
    def __init__(self, properties: _Optional[_Mapping[str, _common_pb2.PropertyState]] = ..., revision: _Optional[int] = ...) -> None: ...

class Change(_message.Message):
    __slots__ = ("resume_token", "kind", "ts_ms", "device_id", "site", "model", "twin", "event", "device", "model_record", "command")
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TWIN_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MODEL_RECORD_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    resume_token: str
    kind: ChangeKind
    ts_ms: int
    device_id: str
    site: str
    model: str
    twin: TwinChange
    event: _common_pb2.EventRecord
    device: _common_pb2.Device
    model_record: _common_pb2.ModelRecord
    command: _common_pb2.Command
    def __init__(self, resume_token: _Optional[str] = ..., kind: _Optional[_Union[ChangeKind, str]] = ..., ts_ms: _Optional[int] = ..., device_id: _Optional[str] = ..., site: _Optional[str] = ..., model: _Optional[str] = ..., twin: _Optional[_Union[TwinChange, _Mapping]] = ..., event: _Optional[_Union[_common_pb2.EventRecord, _Mapping]] = ..., device: _Optional[_Union[_common_pb2.Device, _Mapping]] = ..., model_record: _Optional[_Union[_common_pb2.ModelRecord, _Mapping]] = ..., command: _Optional[_Union[_common_pb2.Command, _Mapping]] = ...) -> None: ...
