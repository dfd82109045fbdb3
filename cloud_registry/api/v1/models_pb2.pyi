from cloud_registry.api.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishModelRequest(_message.Message):
    __slots__ = ("document", "dry_run")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    document: str
    dry_run: bool
    def __init__(self, document: _Optional[str] = ..., dry_run: _Optional[bool] = ...) -> None: ...

class PublishModelResponse(_message.Message):
    __slots__ = ("model", "notes", "unchanged")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    model: _common_pb2.ModelRecord
    notes: _containers.RepeatedScalarFieldContainer[str]
    unchanged: bool
    def __init__(self, model: _Optional[_Union[_common_pb2.ModelRecord, _Mapping]] = ..., notes: _Optional[_Iterable[str]] = ..., unchanged: _Optional[bool] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: str
    def __init__(self, ref: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "name_prefix")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    name_prefix: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., name_prefix: _Optional[str] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "latest_version", "title", "vendor", "version_count")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    VENDOR_FIELD_NUMBER: _ClassVar[int]
    VERSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    name: str
    latest_version: str
    title: str
    vendor: str
    version_count: int
    def __init__(self, name: _Optional[str] = ..., latest_version: _Optional[str] = ..., title: _Optional[str] = ..., vendor: _Optional[str] = ..., version_count: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListModelVersionsRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListModelVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelRecord]
    def __init__(self, versions: _Optional[_Iterable[_Union[_common_pb2.ModelRecord, _Mapping]]] = ...) -> None: ...

class DiffModelsRequest(_message.Message):
    __slots__ = ("old_ref", "new_ref")
    OLD_REF_FIELD_NUMBER: _ClassVar[int]
    NEW_REF_FIELD_NUMBER: _ClassVar[int]
    old_ref: str
    new_ref: str
    def __init__(self, old_ref: _Optional[str] = ..., new_ref: _Optional[str] = ...) -> None: ...

class ModelChange(_message.Message):
    __slots__ = ("severity", "path", "description")
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    severity: str
    path: str
    description: str
    def __init__(self, severity: _Optional[str] = ..., path: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class DiffModelsResponse(_message.Message):
    __slots__ = ("changes", "required", "declared", "ok")
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DECLARED_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    changes: _containers.RepeatedCompositeFieldContainer[ModelChange]
    required: str
    declared: str
    ok: bool
    def __init__(self, changes: _Optional[_Iterable[_Union[ModelChange, _Mapping]]] = ..., required: _Optional[str] = ..., declared: _Optional[str] = ..., ok: _Optional[bool] = ...) -> None: ...

class ExportModelRequest(_message.Message):
    __slots__ = ("ref", "format")
    REF_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ref: str
    format: str
    def __init__(self, ref: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class ExportModelResponse(_message.Message):
    __slots__ = ("document", "losses", "media_type")
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    document: str
    losses: _containers.RepeatedScalarFieldContainer[str]
    media_type: str
    def __init__(self, document: _Optional[str] = ..., losses: _Optional[_Iterable[str]] = ..., media_type: _Optional[str] = ...) -> None: ...
