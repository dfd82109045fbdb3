from cloud_registry.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OnlineFilter(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ONLINE_FILTER_ANY: _ClassVar[OnlineFilter]
    ONLINE_FILTER_ONLINE: _ClassVar[OnlineFilter]
    ONLINE_FILTER_OFFLINE: _ClassVar[OnlineFilter]
ONLINE_FILTER_ANY: OnlineFilter
ONLINE_FILTER_ONLINE: OnlineFilter
ONLINE_FILTER_OFFLINE: OnlineFilter

class RegisterDeviceRequest(_message.Message):
    __slots__ = ("device",)
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    device: _common_pb2.Device
    def __init__(self, device: _Optional[_Union[_common_pb2.Device, _Mapping]] = ...) -> None: ...

class GetDeviceRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListDevicesRequest(_message.Message):
    __slots__ = ("model", "site", "edge_id", "building", "label_selector", "online", "page_size", "page_token")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    BUILDING_FIELD_NUMBER: _ClassVar[int]
    LABEL_SELECTOR_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    model: str
    site: str
    edge_id: str
    building: str
    label_selector: str
    online: OnlineFilter
    page_size: int
    page_token: str
    def __init__(self, model: _Optional[str] = ..., site: _Optional[str] = ..., edge_id: _Optional[str] = ..., building: _Optional[str] = ..., label_selector: _Optional[str] = ..., online: _Optional[_Union[OnlineFilter, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDevicesResponse(_message.Message):
    __slots__ = ("devices", "next_page_token")
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    devices: _containers.RepeatedCompositeFieldContainer[_common_pb2.Device]
    next_page_token: str
    def __init__(self, devices: _Optional[_Iterable[_Union[_common_pb2.Device, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateDeviceRequest(_message.Message):
    __slots__ = ("device", "expected_revision", "update_mask")
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    device: _common_pb2.Device
    expected_revision: int
    update_mask: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, device: _Optional[_Union[_common_pb2.Device, _Mapping]] = ..., expected_revision: _Optional[int] = ..., update_mask: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteDeviceRequest(_message.Message):
    __slots__ = ("id", "expected_revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    expected_revision: int
    def __init__(self, id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...

class DeleteDeviceResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MoveDeviceRequest(_message.Message):
    __slots__ = ("id", "edge_id", "expected_revision")
    ID_FIELD_NUMBER: _ClassVar[int]
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_REVISION_FIELD_NUMBER: _ClassVar[int]
    id: str
    edge_id: str
    expected_revision: int
    def __init__(self, id: _Optional[str] = ..., edge_id: _Optional[str] = ..., expected_revision: _Optional[int] = ...) -> None: ...
