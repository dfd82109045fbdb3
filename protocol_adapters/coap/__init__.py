"""CoAP: a pure payload mapping (this package) and the asyncio driver and simulator.

- :mod:`protocol_adapters.coap.mapping`: JSON / CBOR / text payloads and paths into them
  <-> thing-model values; response codes -> errors; size limits
- :mod:`protocol_adapters.coap.errors`: the exception tree
- :mod:`protocol_adapters.coap.driver`: GET polling, Observe, PUT/POST over aiocoap
- :mod:`protocol_adapters.coap.simulator`: an aiocoap server following a model's binding

Importing this package does not import aiocoap; the driver and simulator modules do.
"""

from protocol_adapters.coap.errors import (
    CoapConfigError,
    CoapConnectionError,
    CoapError,
    CoapPayloadError,
    CoapResponseError,
    CoapTimeoutError,
    CoapTransportError,
    CoapValueError,
)
from protocol_adapters.coap.mapping import (
    CONTENT_FORMAT_NUMBERS,
    MAX_PAYLOAD_BYTES,
    PointMapping,
    ResourceMapping,
    check_response,
    code_text,
    compile_binding,
    decode_payload,
    document_outputs,
    encode_payload,
    from_model,
    parse_path,
    point_for,
    to_model,
)

__all__ = [
    "CONTENT_FORMAT_NUMBERS",
    "MAX_PAYLOAD_BYTES",
    "CoapConfigError",
    "CoapConnectionError",
    "CoapError",
    "CoapPayloadError",
    "CoapResponseError",
    "CoapTimeoutError",
    "CoapTransportError",
    "CoapValueError",
    "PointMapping",
    "ResourceMapping",
    "check_response",
    "code_text",
    "compile_binding",
    "decode_payload",
    "document_outputs",
    "encode_payload",
    "from_model",
    "parse_path",
    "point_for",
    "to_model",
]
