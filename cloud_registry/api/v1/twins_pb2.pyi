from cloud_registry.api.v1 import common_pb2 as _common_pb2
from thing_models.proto import thing_message_pb2 as _thing_message_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Twin(_message.Message):
    __slots__ = ("device_id", "model", "reported", "desired", "delta", "revision")
    class ReportedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.PropertyState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.PropertyState, _Mapping]] = ...) -> None: ...
    class DesiredEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.PropertyState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.PropertyState, _Mapping]] = ...) -> None: ...
    class DeltaEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _thing_message_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REPORTED_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    model: str
    reported: _containers.MessageMap[str, _common_pb2.PropertyState]
    desired: _containers.MessageMap[str, _common_pb2.PropertyState]
    delta: _containers.MessageMap[str, _thing_message_pb2.Value]
    revision: int
    def __init__(self, device_id: _Optional[str] = ..., model: _Optional[str] = ..., reported: _Optional[_Mapping[str, _common_pb2.PropertyState]] = ..., desired: _Optional[_Mapping[str, _common_pb2.PropertyState]] = ..., delta: _Optional[_Mapping[str, _thing_message_pb2.Value]] = ..., revision: _Optional[int] = ...) -> None: ...

class GetTwinRequest(_message.Message):
    __slots__ = ("device_id",)
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    def __init__(self, device_id: _Optional[str] = ...) -> None: ...

class SetDesiredRequest(_message.Message):
    __slots__ = ("device_id", "desired", "expected_revision")
    class DesiredEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _thing_message_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ...) -> None: ...
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    DESIRED_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    desired: _containers.MessageMap[str, _thing_message_pb2.Value]
    expected_revision: int
    def __init__(self, device_id: _Optional[str] = ..., desired: _Optional[_Mapping[str, _thing_message_pb2.Value]] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("device_id", "property", "from_ms", "to_ms", "bucket_ms", "limit")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    PROPERTY_FIELD_NUMBER: _ClassVar[int]
    FROM_MS_FIELD_NUMBER: _ClassVar[int]
    TO_MS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_MS_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    property: str
    from_ms: int
    to_ms: int
    bucket_ms: int
    limit: int
    def __init__(self, device_id: _Optional[str] = ..., property: _Optional[str] = ..., from_ms: _Optional[int] = ..., to_ms: _Optional[int] = ..., bucket_ms: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryPoint(_message.Message):
    __slots__ = ("ts_ms", "value", "quality")
    TS_MS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    ts_ms: int
    value: _thing_message_pb2.Value
    quality: _thing_message_pb2.Quality
    def __init__(self, ts_ms: _Optional[int] = ..., value: _Optional[_Union[_thing_message_pb2.Value, _Mapping]] = ..., quality: _Optional[_Union[_thing_message_pb2.Quality, str]] = ...) -> None: ...

class HistoryBucket(_message.Message):
    __slots__ = ("start_ms", "min", "max", "avg", "count")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    AVG_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    min: float
    max: float
    avg: float
    count: int
    def __init__(self, start_ms: _Optional[int] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., avg: _Optional[float] = ..., count: _Optional[int] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("points", "buckets", "truncated")
    POINTS_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    points: _containers.RepeatedCompositeFieldContainer[HistoryPoint]
    buckets: _containers.RepeatedCompositeFieldContainer[HistoryBucket]
    truncated: bool
    def __init__(self, points: _Optional[_Iterable[_Union[HistoryPoint, _Mapping]]] = ..., buckets: _Optional[_Iterable[_Union[HistoryBucket, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("device_id", "levels", "from_ms", "to_ms", "unacknowledged_only", "page_size", "page_token", "site")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    FROM_MS_FIELD_NUMBER: _ClassVar[int]
    TO_MS_FIELD_NUMBER: _ClassVar[int]
    UNACKNOWLEDGED_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    levels: _containers.RepeatedScalarFieldContainer[str]
    from_ms: int
    to_ms: int
    unacknowledged_only: bool
    page_size: int
    page_token: str
    site: str
    def __init__(self, device_id: _Optional[str] = ..., levels: _Optional[_Iterable[str]] = ..., from_ms: _Optional[int] = ..., to_ms: _Optional[int] = ..., unacknowledged_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., site: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_common_pb2.EventRecord]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[_common_pb2.EventRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AckAlarmRequest(_message.Message):
    __slots__ = ("event_id", "comment")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    comment: str
    def __init__(self, event_id: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...
