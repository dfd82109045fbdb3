from cloud_registry.api.v1 import common_pb2 as _common_pb2
from thing_models.proto import thing_message_pb2 as _thing_message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OfflinePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OFFLINE_POLICY_QUEUE: _ClassVar[OfflinePolicy]
    OFFLINE_POLICY_FAIL_FAST: _ClassVar[OfflinePolicy]
OFFLINE_POLICY_QUEUE: OfflinePolicy
OFFLINE_POLICY_FAIL_FAST: OfflinePolicy

class SendCommandRequest(_message.Message):
    __slots__ = ("device_id", "kind", "service", "params", "wait", "timeout_ms", "offline", "ttl_ms")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _thing_message_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    kind: _common_pb2.CommandKind
    service: str
    params: _containers.MessageMap[str, _thing_message_pb2.Value]
    wait: bool
    timeout_ms: int
    offline: OfflinePolicy
    ttl_ms: int
    def __init__(self, device_id: _Optional[str] = ..., kind: _Optional[_Union[_common_pb2.CommandKind, str]] = ..., service: _Optional[str] = ..., params: _Optional[_Mapping[str, _thing_message_pb2.Value]] = ..., wait: _Optional[bool] = ..., timeout_ms: _Optional[int] = ..., offline: _Optional[_Union[OfflinePolicy, str]] = ..., ttl_ms: _Optional[int] = ...) -> None: ...

class GetCommandRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...
