from cloud_registry.api.v1 import common_pb2 as _common_pb2
from thing_models.proto import thing_message_pb2 as _thing_message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class InventoryItem(_message.Message):
    __slots__ = ("device_id", "model", "online")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    model: str
    online: bool
    def __init__(self, device_id: _Optional[str] = ..., model: _Optional[str] = ..., online: _Optional[bool] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("edge_id", "agent_version", "config_version", "devices")
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    agent_version: str
    config_version: str
    devices: _containers.RepeatedCompositeFieldContainer[InventoryItem]
    def __init__(self, edge_id: _Optional[str] = ..., agent_version: _Optional[str] = ..., config_version: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[InventoryItem, _Mapping]]] = ...) -> None: ...

class TelemetryBatch(_message.Message):
    __slots__ = ("sequence", "messages")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    messages: _containers.RepeatedCompositeFieldContainer[_thing_message_pb2.ThingMessage]
    def __init__(self, sequence: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[_thing_message_pb2.ThingMessage, _Mapping]]] = ...) -> None: ...

class CommandResult(_message.Message):
    __slots__ = ("command_id", "status", "result", "error")
    class ResultEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _thing_message_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ...) -> None: ...
    COMMAND_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    command_id: str
    status: _common_pb2.CommandStatus
    result: _containers.MessageMap[str, _thing_message_pb2.Value]
    error: str
    def __init__(self, command_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.CommandStatus, str]] = ..., result: _Optional[_Mapping[str, _thing_message_pb2.Value]] = ..., error: _Optional[str] = ...) -> None: ...

class DeviceStatus(_message.Message):
    __slots__ = ("device_id", "online", "detail")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    online: bool
    detail: str
    def __init__(self, device_id: _Optional[str] = ..., online: _Optional[bool] = ..., detail: _Optional[str] = ...) -> None: ...

class EdgeMessage(_message.Message):
    __slots__ = ("hello", "batch", "command_result", "device_status")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    COMMAND_RESULT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_STATUS_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    batch: TelemetryBatch
    command_result: CommandResult
    device_status: DeviceStatus
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[TelemetryBatch, _Mapping]] = ..., command_result: _Optional[_Union[CommandResult, _Mapping]] = ..., device_status: _Optional[_Union[DeviceStatus, _Mapping]] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("last_sequence", "max_in_flight", "max_batch_messages")
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    max_in_flight: int
    max_batch_messages: int
    def __init__(self, last_sequence: _Optional[int] = ..., max_in_flight: _Optional[int] = ..., max_batch_messages: _Optional[int] = ...) -> None: ...

class BatchAck(_message.Message):
    __slots__ = ("sequence", "duplicate", "stored", "rejected")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    duplicate: bool
    stored: int
    rejected: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, sequence: _Optional[int] = ..., duplicate: _Optional[bool] = ..., stored: _Optional[int] = ..., rejected: _Optional[_Iterable[str]] = ...) -> None: ...

class DesiredChange(_message.Message):
    __slots__ = ("device_id", "desired", "revision")
    class DesiredEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _thing_message_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    desired: _containers.MessageMap[str, _thing_message_pb2.Value]
    revision: int
    def __init__(self, device_id: _Optional[str] = ..., desired: _Optional[_Mapping[str, _thing_message_pb2.Value]] = ..., revision: _Optional[int] = ...) -> None: ...

class ConfigUpdate(_message.Message):
    __slots__ = ("config_version", "document")
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    config_version: str
    document: str
    def __init__(self, config_version: _Optional[str] = ..., document: _Optional[str] = ...) -> None: ...

class RegistryMessage(_message.Message):
    __slots__ = ("welcome", "ack", "command", "desired", "config")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    ack: BatchAck
    command: _common_pb2.Command
    desired: DesiredChange
    config: ConfigUpdate
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., ack: _Optional[_Union[BatchAck, _Mapping]] = ..., command: _Optional[_Union[_common_pb2.Command, _Mapping]] = ..., desired: _Optional[_Union[DesiredChange, _Mapping]] = ..., config: _Optional[_Union[ConfigUpdate, _Mapping]] = ...) -> None: ...
