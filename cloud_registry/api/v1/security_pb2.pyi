from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EnrollRequest(_message.Message):
    __slots__ = ("token", "csr_pem")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    token: str
    csr_pem: str
    def __init__(self, token: _Optional[str] = ..., csr_pem: _Optional[str] = ...) -> None: ...

class RenewRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: str
    def __init__(self, csr_pem: _Optional[str] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("edge_id", "site", "certificate_pem", "chain_pem", "trust_roots_pem", "not_after_ms", "command_keys_pem")
    class CommandKeysPemEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EDGE_ID_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    CHAIN_PEM_FIELD_NUMBER: _ClassVar[int]
    TRUST_ROOTS_PEM_FIELD_NUMBER: _ClassVar[int]
    NOT_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    COMMAND_KEYS_PEM_FIELD_NUMBER: _ClassVar[int]
    edge_id: str
    site: str
    certificate_pem: str
    chain_pem: _containers.RepeatedScalarFieldContainer[str]
    trust_roots_pem: _containers.RepeatedScalarFieldContainer[str]
    not_after_ms: int
    command_keys_pem: _containers.ScalarMap[str, str]
    def __init__(self, edge_id: _Optional[str] = ..., site: _Optional[str] = ..., certificate_pem: _Optional[str] = ..., chain_pem: _Optional[_Iterable[str]] = ..., trust_roots_pem: _Optional[_Iterable[str]] = ..., not_after_ms: _Optional[int] = ..., command_keys_pem: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetCrlRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCrlResponse(_message.Message):
    __slots__ = ("crl_pem",)
    CRL_PEM_FIELD_NUMBER: _ClassVar[int]
    crl_pem: str
    def __init__(self, crl_pem: _Optional[str] = ...) -> None: ...

class AuditEvent(_message.Message):
    __slots__ = ("id", "time_ms", "kind", "subject", "detail", "peer")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    id: int
    time_ms: int
    kind: str
    subject: str
    detail: str
    peer: str
    def __init__(self, id: _Optional[int] = ..., time_ms: _Optional[int] = ..., kind: _Optional[str] = ..., subject: _Optional[str] = ..., detail: _Optional[str] = ..., peer: _Optional[str] = ...) -> None: ...

class ListAuditEventsRequest(_message.Message):
    __slots__ = ("kind", "subject", "since_ms", "page_size", "page_token")
    KIND_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    SINCE_MS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kind: str
    subject: str
    since_ms: int
    page_size: int
    page_token: str
    def __init__(self, kind: _Optional[str] = ..., subject: _Optional[str] = ..., since_ms: _Optional[int] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListAuditEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[AuditEvent]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[AuditEvent, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
