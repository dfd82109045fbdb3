from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MessageKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MESSAGE_KIND_UNSPECIFIED: _ClassVar[MessageKind]
    MESSAGE_KIND_PROPERTY_REPORT: _ClassVar[MessageKind]
    MESSAGE_KIND_EVENT: _ClassVar[MessageKind]
    MESSAGE_KIND_SERVICE_CALL: _ClassVar[MessageKind]
    MESSAGE_KIND_SERVICE_REPLY: _ClassVar[MessageKind]
    MESSAGE_KIND_PROPERTY_SET: _ClassVar[MessageKind]
    MESSAGE_KIND_PROPERTY_SET_REPLY: _ClassVar[MessageKind]

class Quality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QUALITY_UNSPECIFIED: _ClassVar[Quality]
    QUALITY_GOOD: _ClassVar[Quality]
    QUALITY_UNCERTAIN: _ClassVar[Quality]
    QUALITY_BAD: _ClassVar[Quality]

class NullValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NULL_VALUE: _ClassVar[NullValue]
MESSAGE_KIND_UNSPECIFIED: MessageKind
MESSAGE_KIND_PROPERTY_REPORT: MessageKind
MESSAGE_KIND_EVENT: MessageKind
MESSAGE_KIND_SERVICE_CALL: MessageKind
MESSAGE_KIND_SERVICE_REPLY: MessageKind
MESSAGE_KIND_PROPERTY_SET: MessageKind
MESSAGE_KIND_PROPERTY_SET_REPLY: MessageKind
QUALITY_UNSPECIFIED: Quality
QUALITY_GOOD: Quality
QUALITY_UNCERTAIN: Quality
QUALITY_BAD: Quality
NULL_VALUE: NullValue

class Value(_message.Message):
    __slots__ = ("null_value", "bool_value", "int_value", "double_value", "string_value", "list_value", "map_value")
    NULL_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    LIST_VALUE_FIELD_NUMBER: _ClassVar[int]
    MAP_VALUE_FIELD_NUMBER: _ClassVar[int]
    null_value: NullValue
    bool_value: bool
    int_value: int
    double_value: float
    string_value: str
    list_value: ListValue
    map_value: MapValue
    def __init__(self, null_value: _Optional[_Union[NullValue, str]] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., string_value: _Optional[str] = ..., list_value: _Optional[_Union[ListValue, _Mapping]] = ..., map_value: _Optional[_Union[MapValue, _Mapping]] = ...) -> None: ...

class ListValue(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[Value]
    def __init__(self, values: _Optional[_Iterable[_Union[Value, _Mapping]]] = ...) -> None: ...

class MapValue(_message.Message):
    __slots__ = ("fields",)
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    fields: _containers.MessageMap[str, Value]
    def __init__(self, fields: _Optional[_Mapping[str, Value]] = ...) -> None: ...

class ThingMessage(_message.Message):
    __slots__ = ("id", "kind", "model", "device_id", "ts_ms", "quality", "params", "name", "correlation_id", "status", "status_message", "param_quality")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...
    class ParamQualityEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Quality
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Quality, str]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CORRELATION_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PARAM_QUALITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: MessageKind
    model: str
    device_id: str
    ts_ms: int
    quality: Quality
    params: _containers.MessageMap[str, Value]
    name: str
    correlation_id: str
    status: str
    status_message: str
    param_quality: _containers.ScalarMap[str, Quality]
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[MessageKind, str]] = ..., model: _Optional[str] = ..., device_id: _Optional[str] = ..., ts_ms: _Optional[int] = ..., quality: _Optional[_Union[Quality, str]] = ..., params: _Optional[_Mapping[str, Value]] = ..., name: _Optional[str] = ..., correlation_id: _Optional[str] = ..., status: _Optional[str] = ..., status_message: _Optional[str] = ..., param_quality: _Optional[_Mapping[str, Quality]] = ...) -> None: ...

class ThingMessageBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ThingMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ThingMessage, _Mapping]]] = ...) -> None: ...
