"""The pure Modbus register codec: registers in, typed values out, and back. No I/O.

:func:`compile_point` turns a :class:`~thing_models.model.ModbusPoint` (with its binding, and
optionally the property's :class:`~thing_models.model.DataSchema`) into a :class:`PointCodec`
whose struct formats, orders, masks and mappings are worked out once::

    codec = compile_point(point, binding, schema=prop.schema)
    codec.decode([0x42F6, 0xE979])        # Decoded(value=123.456..., quality='good', reason='')
    codec.write_request(230.0)            # WriteRequest(function=16, address=..., values=(...))

Decoding follows the model's order (docs/model-format.md, "Decoding order"):

1. registers -> bytes -> an integer, float, string or bytes value (``byte_order`` = order of
   the two bytes inside each register, ``word_order`` = order of the registers of a 32- or
   64-bit value, ``big`` = most significant first; all four combinations, 64-bit included);
   ``int8``/``uint8`` take the low byte of the register after ``byte_order``;
2. ``mask`` (AND, on the unsigned bit pattern), then ``shift`` (right; without a mask a signed
   value shifts arithmetically), then ``bit`` (one bit of that value, a boolean);
3. ``sentinel``, compared with that raw value: a match gives bad quality and no value. For an
   integer type without mask/shift/bit the sentinel matches the raw bit pattern, so ``0xFFFF``
   and ``-1`` both work on an ``int16``; on a float type an integer sentinel may also name the
   raw bit pattern (``0xFFFFFFFF``). A NaN or infinite float reading is bad quality too;
4. ``enum`` mapping (a raw value it does not map: bad quality), else ``value * scale + offset``,
   done in exact integer arithmetic when the raw value is an integer and scale and offset are
   integral (a uint64 counter keeps all its digits);
5. ``rounding`` decimals (half to even on ``value * 10**decimals``); then the *result type
   rule*:

   - bit points (coils, discrete inputs, ``bit:``) give ``bool``;
   - with the property's schema: ``bool`` property -> ``value != 0``; an integer property
     (``int32``, ``int64``, ``timestamp``, or an ``enum`` with integer members) ->
     ``int(round(value))``, so ``uint16`` with ``scale: 10`` or a float register feeding an int
     property still gives an ``int`` and no identity ``enum`` map is needed; ``float``/
     ``double`` -> ``float``;
   - without a schema: an integer raw value with integral scale and offset stays an ``int``,
     everything else is a ``float``;
   - an ``enum`` mapping's values are returned as mapped;
6. ``valid_min``/``valid_max``: outside, the value is returned with bad quality and a reason.

``string`` points: ``count`` registers, two characters each in address order (``byte_order:
little`` = low byte first), trailing NULs and spaces stripped, decoded with the point's
``encoding``; bytes that do not decode give bad quality. ``bytes`` points give a lowercase hex
string (``"0a1b"``), or a list of byte values when the property is an ``array``.

Malformed input (a wrong number of registers, a register that is not an integer in 0..65535,
a value that does not fit on encode) raises :class:`ModbusCodecError` naming the point and what
was expected, and nothing else: the fuzz tests hold the codec to that.

Encoding reverses the steps: the ``enum`` map reversed, ``(value - offset) / scale`` rounded
(half to even) to the integer type and range-checked against the raw type (or the mask's
field), encoded with the same orders. Points that share a register (``bit``, ``mask``,
``shift``) need the register's current contents: :meth:`PointCodec.encode_into` does the
read-modify-write, :meth:`PointCodec.encode` refuses them. :meth:`PointCodec.write_request`
picks the function code: 5 (single coil) or 15 for coils, 6 for one holding register or 16 for
more, and always the point's ``write_function`` when it names one. Read-back is the caller's:
plan a read of the same point (``plan_reads([point], binding)``) and decode it.

Addresses here are PDU addresses: with ``addressing: one-based`` the model's address minus one.
"""

from __future__ import annotations

import codecs
import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from protocol_adapters.base import Reading
from protocol_adapters.modbus.errors import ModbusCodecError, ModbusConfigError
from thing_models.messages import Quality
from thing_models.model import (
    ByteOrder,
    DataSchema,
    DataType,
    ModbusBinding,
    ModbusPoint,
    ModbusServiceWrite,
    ModbusTable,
    ModbusType,
    ThingModel,
)

__all__ = [
    "Decoded",
    "PointCodec",
    "ServiceWriteCodec",
    "WriteRequest",
    "compile_binding",
    "compile_point",
    "compile_service_write",
    "pdu_address",
]

#: Most registers one read or write may carry (the Modbus limit for function 3/4/16).
MAX_REGISTERS = 125

# type -> (struct code, unsigned struct code, bits, registers); int8/uint8 skip the high byte.
_NUMERIC: dict[ModbusType, tuple[str, str, int, int]] = {
    ModbusType.INT8: ("xb", "xB", 8, 1),
    ModbusType.UINT8: ("xB", "xB", 8, 1),
    ModbusType.INT16: ("h", "H", 16, 1),
    ModbusType.UINT16: ("H", "H", 16, 1),
    ModbusType.FLOAT16: ("e", "H", 16, 1),
    ModbusType.INT32: ("i", "I", 32, 2),
    ModbusType.UINT32: ("I", "I", 32, 2),
    ModbusType.FLOAT32: ("f", "I", 32, 2),
    ModbusType.INT64: ("q", "Q", 64, 4),
    ModbusType.UINT64: ("Q", "Q", 64, 4),
    ModbusType.FLOAT64: ("d", "Q", 64, 4),
}
_FLOATS = frozenset({ModbusType.FLOAT16, ModbusType.FLOAT32, ModbusType.FLOAT64})
_SIGNED = frozenset({ModbusType.INT8, ModbusType.INT16, ModbusType.INT32, ModbusType.INT64})

_GOOD = Quality.GOOD
_BAD = Quality.BAD
_EXACT = 2.0**52  # floats at or beyond this have no fraction left to round
_new = tuple.__new__  # builds a Decoded without NamedTuple's Python-level __new__

_Kind = Literal["auto", "bool", "int", "float", "enum", "str", "hex", "list"]


#: One decoded reading (the adapters' shared :class:`~protocol_adapters.base.Reading`):
#: ``value`` is None when there is no value (sentinel, unmapped enum raw value, NaN,
#: undecodable string); a reading outside ``valid_min``/``valid_max`` keeps its value.
Decoded = Reading


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One Modbus write: function 5 or 15 (``values`` are booleans) or 6 or 16 (registers).

    ``address`` is the PDU address. Function 5 and 6 carry exactly one value.
    """

    unit_id: int
    table: ModbusTable
    function: int
    address: int
    values: tuple[int, ...] | tuple[bool, ...]


def pdu_address(address: int, binding: ModbusBinding, what: str = "point") -> int:
    """The PDU address of a model ``address`` (one-based bindings subtract one)."""
    pdu = address if binding.zero_based else address - 1
    if not 0 <= pdu <= 65535:
        base = "zero" if binding.zero_based else "one"
        raise ModbusConfigError(
            f"{what}: address {address} is outside the {base}-based range "
            f"{0 if binding.zero_based else 1}..{65535 if binding.zero_based else 65536}"
        )
    return pdu


def _schema_kind(schema: DataSchema | None) -> _Kind:
    if schema is None:
        return "auto"
    kind = schema.type
    if kind is DataType.BOOL:
        return "bool"
    if kind.is_integer:
        return "int"
    if kind is DataType.ENUM:
        return "int" if all(type(m.value) is int for m in schema.enum) else "auto"
    if kind in (DataType.FLOAT, DataType.DOUBLE):
        return "float"
    return "auto"


def _describe(values: object) -> str:
    text = repr(values)
    return text if len(text) <= 60 else text[:57] + "..."


class PointCodec:
    """A compiled point: ``decode``/:meth:`decode_bits` and :meth:`encode`/
    :meth:`encode_into`/:meth:`write_request`. Build it with :func:`compile_point`.

    ``decode(registers) -> Decoded`` decodes the point's registers (for a bit table: its one
    bit, as :meth:`decode_bits`); it raises :class:`ModbusCodecError` for malformed input, and
    bad readings come back as a :class:`Decoded` with bad quality. It is an attribute holding
    a function specialized at compile time for the point's steps.
    """

    decode: Callable[[Sequence[int]], Decoded]

    __slots__ = (
        "_bit",
        "_enum",
        "_enum_reverse",
        "_field_range",
        "_full",
        "_int_scale",
        "_kind",
        "_low_byte",
        "_mask",
        "_raw_range",
        "_regs",
        "_round_factor",
        "_rounding",
        "_scaled",
        "_sentinel_bits",
        "_sentinels",
        "_shift",
        "_signed",
        "_uvalue",
        "_value",
        "_width",
        "_write_mask",
        "address",
        "count",
        "decode",
        "encoding",
        "is_bits",
        "name",
        "needs_current",
        "offset",
        "point",
        "scale",
        "table",
        "type",
        "unit_id",
        "valid_max",
        "valid_min",
        "write_function",
    )

    def __init__(
        self, point: ModbusPoint, binding: ModbusBinding, schema: DataSchema | None = None
    ) -> None:
        self.point = point
        self.name = name = point.property
        self.table = table = point.table
        mtype = point.type
        self.is_bits = table.is_bit_table
        if self.is_bits and mtype is not ModbusType.BIT:
            raise ModbusConfigError(f"{name}: {table.value} holds single bits, not {mtype.value}")
        if not self.is_bits and mtype is ModbusType.BIT:
            # A whole register read as a flag: non-zero is True, writes 1 or 0.
            mtype = ModbusType.UINT16
            schema = DataSchema(DataType.BOOL)
        self.type = mtype
        self.unit_id = point.unit_id if point.unit_id is not None else binding.unit_id
        self.scale = float(point.scale)
        self.offset = float(point.offset)
        self.valid_min = point.valid_min
        self.valid_max = point.valid_max
        self.encoding = point.encoding
        self._rounding = point.rounding
        # rounding: half to even on value * 10**decimals (5x faster than round(value, n), and
        # the same except on values within an ulp of a tie)
        self._round_factor = 10.0 ** min(max(point.rounding or 0, 0), 22)
        if self.scale == 0 or not math.isfinite(self.scale) or not math.isfinite(self.offset):
            raise ModbusConfigError(f"{name}: scale must be a finite non-zero number")
        self.count = self._count(point, mtype)
        self.address = pdu_address(point.address, binding, name)
        if self.address + self.count - 1 > 65535:
            raise ModbusConfigError(f"{name}: registers run past address 65535")
        self.write_function = self._write_function(point)
        self._enum: dict[int, Any] = dict(point.enum_map)
        self._enum_reverse: dict[Any, int] = {}
        for raw, mapped in point.enum_map:
            self._enum_reverse.setdefault(mapped, raw)
        byte_order = point.byte_order or binding.byte_order
        word_order = point.word_order or binding.word_order
        # Registers are packed so that the bytes come out in the value's order for one
        # unpack: '>' when byte and word order agree, '<' when one of them is swapped; the
        # value is then unpacked big-endian when words are big-endian, else little-endian.
        regs_endian = ">" if byte_order == word_order else "<"
        value_endian = ">" if word_order is ByteOrder.BIG else "<"
        self._bit = point.bit
        self._mask = point.mask
        self._shift = point.shift
        self._sentinels: frozenset[float] = frozenset()
        self._sentinel_bits: int | None = None
        self._int_scale: tuple[int, int] | None = None
        self._low_byte = False
        self._signed = mtype in _SIGNED
        self._width = 16 * self.count
        self._full = (1 << self._width) - 1
        self._raw_range: tuple[int, int] = (0, self._full)
        self._field_range: tuple[int, int] = (0, self._full)
        self._write_mask = self._full
        self.needs_current = False
        self._scaled = False
        if mtype in (ModbusType.STRING, ModbusType.BYTES) or self.is_bits:
            self._check_not_numeric(point, mtype)
            endian = ">" if byte_order is ByteOrder.BIG else "<"
            self._regs = struct.Struct(f"{endian}{self.count}H")
            self._value = self._uvalue = self._regs
            if mtype is ModbusType.STRING:
                try:
                    codecs.lookup(point.encoding)
                except LookupError:
                    raise ModbusConfigError(
                        f"{name}: unknown encoding {point.encoding!r}"
                    ) from None
                self._kind: _Kind = "str"
            elif mtype is ModbusType.BYTES:
                self._kind = (
                    "list" if schema is not None and schema.type is DataType.ARRAY else "hex"
                )
            else:
                self._kind = "enum" if self._enum else _bits_kind(schema)
                self._scaled = False
            self.decode = self.decode_bits if self.is_bits else self._decode
            return
        code, ucode, bits, _ = _NUMERIC[mtype]
        if mtype in (ModbusType.INT8, ModbusType.UINT8):
            # One register: its two bytes in value order (after byte_order), skip the high one.
            regs_endian = ">" if byte_order is ByteOrder.BIG else "<"
            value_endian = ">"
            self._low_byte = True
        self._regs = struct.Struct(f"{regs_endian}{self.count}H")
        self._value = struct.Struct(value_endian + code)
        self._uvalue = struct.Struct(value_endian + ucode)
        self._full = (1 << bits) - 1
        self._width = bits
        is_float = mtype in _FLOATS
        if self._signed:
            self._raw_range = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        else:
            self._raw_range = (0, self._full)
        self._compile_picks(point, mtype, bits, is_float)
        self._compile_sentinel(point, bits, is_float)
        integral = self.scale.is_integer() and self.offset.is_integer()
        if not is_float and integral:
            self._int_scale = (int(self.scale), int(self.offset))
        self._scaled = self.scale != 1.0 or self.offset != 0.0
        if self._enum:
            self._kind = "enum"
        elif self._bit is not None:
            self._kind = _bits_kind(schema)
        else:
            kind = _schema_kind(schema)
            if kind == "auto":
                kind = "int" if self._int_scale is not None else "float"
            self._kind = kind
        self.decode = self._fast_decoder() or self._decode

    # ------------------------------------------------------------------ compiling

    @staticmethod
    def _count(point: ModbusPoint, mtype: ModbusType) -> int:
        if point.table.is_bit_table:
            return 1
        if mtype in (ModbusType.STRING, ModbusType.BYTES):
            if point.count is None or not 1 <= point.count <= MAX_REGISTERS:
                raise ModbusConfigError(
                    f"{point.property}: {mtype.value} needs count: 1..{MAX_REGISTERS} registers "
                    f"(got {point.count})"
                )
            return point.count
        expected = _NUMERIC[mtype][3]
        if point.count is not None and point.count != expected:
            raise ModbusConfigError(
                f"{point.property}: count {point.count} disagrees with {mtype.value} "
                f"({expected} register(s))"
            )
        return expected

    def _write_function(self, point: ModbusPoint) -> int:
        function = point.write_function
        table = self.table
        if table is ModbusTable.COIL:
            allowed: tuple[int, ...] = (5, 15)
            default = 5
        elif table is ModbusTable.HOLDING_REGISTER:
            allowed = (6, 16) if self.count == 1 else (16,)
            default = 6 if self.count == 1 else 16
        else:
            allowed, default = (), 0  # read-only: write_request refuses
        if function is None:
            return default
        if function not in allowed:
            raise ModbusConfigError(
                f"{self.name}: write_function {function} cannot write {self.count} "
                f"{table.value}(s); expected one of {allowed or 'none (read-only table)'}"
            )
        return function

    def _check_not_numeric(self, point: ModbusPoint, mtype: ModbusType) -> None:
        what = "bits" if self.is_bits else mtype.value
        if point.mask is not None or point.shift or point.bit is not None:
            raise ModbusConfigError(f"{self.name}: bit, mask and shift do not apply to {what}")
        if not self.is_bits and (
            point.enum_map or point.sentinel is not None or self.scale != 1 or self.offset != 0
        ):
            raise ModbusConfigError(
                f"{self.name}: enum, sentinel, scale and offset do not apply to {what}"
            )

    def _compile_picks(
        self, point: ModbusPoint, mtype: ModbusType, bits: int, is_float: bool
    ) -> None:
        name = self.name
        mask, shift, bit = point.mask, point.shift, point.bit
        if not 0 <= shift < bits:
            raise ModbusConfigError(f"{name}: shift {shift} outside 0..{bits - 1}")
        if mask is not None and (is_float or not 0 <= mask <= self._full):
            raise ModbusConfigError(
                f"{name}: mask {mask:#x} does not fit {mtype.value} (integer types only)"
            )
        if is_float and shift:
            raise ModbusConfigError(f"{name}: shift does not apply to {mtype.value}")
        if bit is not None and not 0 <= bit < bits:
            raise ModbusConfigError(f"{name}: bit {bit} outside 0..{bits - 1} of {mtype.value}")
        if mask is None and bit is None and not shift:
            return
        self.needs_current = True
        if mask is None and not shift:
            # bit alone: taken from the unsigned bit pattern (floats included).
            self._write_mask = 1 << bit if bit is not None else self._full
            self._field_range = (0, 1)
            return
        low = (1 << shift) - 1
        self._write_mask = mask if mask is not None else self._full & ~low
        if mask is not None:
            self._field_range = (0, mask >> shift)
        elif self._signed:
            self._field_range = (self._raw_range[0] >> shift, self._raw_range[1] >> shift)
        else:
            self._field_range = (0, self._full >> shift)
        if bit is not None:
            position = bit + shift
            if position >= bits or not self._write_mask >> position & 1:
                raise ModbusConfigError(f"{name}: bit {bit} lies outside mask/shift's field")
            self._write_mask = 1 << position
            self._field_range = (0, 1)

    def _compile_sentinel(self, point: ModbusPoint, bits: int, is_float: bool) -> None:
        sentinel = point.sentinel
        if sentinel is None or isinstance(sentinel, bool):
            return
        if is_float:
            if isinstance(sentinel, int) and 0 <= sentinel <= self._full:
                self._sentinel_bits = sentinel
            self._sentinels = frozenset({float(sentinel)})
            return
        if not float(sentinel).is_integer():
            return  # an integer reading can never equal it
        value = int(sentinel)
        matches = {value}
        plain = point.mask is None and point.bit is None and not point.shift
        if plain and -(1 << (bits - 1)) <= value <= self._full:
            pattern = value & self._full
            matches = {pattern - (1 << bits) if self._signed and pattern >> (bits - 1) else pattern}
        self._sentinels = frozenset(matches)

    # ------------------------------------------------------------------ decoding

    def _malformed(self, registers: object, what: str = "register") -> ModbusCodecError:
        expected = f"{self.count} {what}(s) " + (
            "(booleans or 0/1)" if what == "bit" else "(integers 0..65535)"
        )
        where = f"{self.name} ({self.table.value} {self.address})"
        try:
            got = len(registers)  # type: ignore[arg-type]
        except TypeError:
            return ModbusCodecError(f"{where}: expected {expected}, got {_describe(registers)}")
        if got != self.count:
            return ModbusCodecError(f"{where}: expected {expected}, got {got}")
        return ModbusCodecError(f"{where}: expected {expected}, got {_describe(registers)}")

    def _decode(self, registers: Sequence[int]) -> Decoded:
        """Every decoding step; :meth:`_fast_decoder` specializes the common cases."""
        if self.is_bits:
            return self.decode_bits(registers)
        try:
            data = self._regs.pack(*registers)
        except (struct.error, TypeError, OverflowError):
            raise self._malformed(registers) from None
        kind = self._kind
        if kind == "str":
            return self._decode_string(data)
        if kind == "hex":
            return Decoded(data.hex(), _GOOD)
        if kind == "list":
            return Decoded(list(data), _GOOD)
        raw: Any
        if self.needs_current:
            raw = self._uvalue.unpack(data)[0]
            if self._mask is not None:
                raw &= self._mask
            if self._shift:
                if self._mask is None and self._signed and raw >> (self._width - 1):
                    raw -= 1 << self._width
                raw >>= self._shift
            if self._bit is not None:
                raw = raw >> self._bit & 1
        else:
            raw = self._value.unpack(data)[0]
        if self._sentinels and raw in self._sentinels:
            return Decoded(None, _BAD, f"sentinel {self.point.sentinel!r}: no value")
        if self._sentinel_bits is not None and self._uvalue.unpack(data)[0] == self._sentinel_bits:
            return Decoded(None, _BAD, f"sentinel {self.point.sentinel!r}: no value")
        return self._finish(raw)

    def _fast_decoder(self) -> Callable[[Sequence[int]], Decoded] | None:
        """One closure for the common numeric case (no sentinel, enum, mask, shift or bit):
        unpack, scale, round, convert, range check. Anything unusual on the way (NaN,
        overflow) falls back to :meth:`_decode`, so both give the same results."""
        if (
            self.needs_current
            or self._sentinels
            or self._sentinel_bits is not None
            or self._kind not in ("int", "float")
        ):
            return None
        pack, unpack = self._regs.pack, self._value.unpack
        general, malformed = self._decode, self._malformed
        is_float = self.type in _FLOATS
        to_float = self._kind == "float" and not is_float
        to_int = self._kind == "int" and (is_float or self._int_scale is None)
        int_scale = self._int_scale
        scale, offset = self.scale, self.offset
        float_scaled = self._scaled and int_scale is None
        int_scaled = self._scaled and int_scale is not None
        factor, shift = int_scale if int_scale is not None else (1, 0)
        rounding = self._rounding
        factor10 = self._round_factor
        low, high = self.valid_min, self.valid_max
        checked = low is not None or high is not None
        new, good = _new, (_GOOD, "")
        errors = (struct.error, TypeError, OverflowError)

        def decode(registers: Sequence[int]) -> Decoded:
            try:
                value = unpack(pack(*registers))[0]
            except errors:
                raise malformed(registers) from None
            if int_scaled:
                value = value * factor + shift
            elif float_scaled:
                value = value * scale + offset
            if is_float or float_scaled:
                if value - value != 0:  # NaN or infinite: bad quality, said by the general path
                    return general(registers)
                if rounding is not None:
                    shifted = value * factor10
                    if -_EXACT < shifted < _EXACT:
                        value = round(shifted) / factor10
                if to_int:
                    value = round(value)
            if to_float:
                try:
                    value = float(value)
                except OverflowError:
                    return general(registers)
            if checked and (
                (low is not None and value < low) or (high is not None and value > high)
            ):
                return general(registers)  # bad quality with its reason
            return new(Decoded, (value, *good))

        return decode

    def decode_bits(self, bits: Sequence[bool] | Sequence[int]) -> Decoded:
        """Decode a coil or discrete input from its one bit (``True``/``False`` or 1/0)."""
        if not self.is_bits:
            raise ModbusCodecError(f"{self.name}: {self.table.value} is not a bit table")
        try:
            (bit,) = bits
        except (TypeError, ValueError):
            raise self._malformed(bits, "bit") from None
        if type(bit) is not bool and not (type(bit) is int and bit in (0, 1)):
            raise self._malformed(bits, "bit")
        if self._kind == "enum":
            return self._finish(int(bit))
        value = bool(bit)
        if self._kind == "int":
            return Decoded(int(value), _GOOD)
        return Decoded(value, _GOOD)

    def _decode_string(self, data: bytes) -> Decoded:
        try:
            return Decoded(data.rstrip(b"\x00 ").decode(self.encoding), _GOOD)
        except UnicodeDecodeError as exc:
            return Decoded(
                None, _BAD, f"not {self.encoding} text: {exc.reason} at byte {exc.start}"
            )

    def _finish(self, raw: Any) -> Decoded:
        kind = self._kind
        if kind == "enum":
            key = raw
            if type(raw) is float:
                if not raw.is_integer():
                    return Decoded(None, _BAD, f"raw value {raw!r} is not in the enum map")
                key = int(raw)
            try:
                mapped = self._enum[key]
            except KeyError:
                return Decoded(None, _BAD, f"raw value {raw!r} is not in the enum map")
            return self._check_range(mapped)
        if type(raw) is float and not math.isfinite(raw):
            return Decoded(None, _BAD, f"raw value is {raw!r}")
        if kind == "bool" and self._bit is not None:
            return Decoded(bool(raw), _GOOD)
        value: Any = raw
        if self._scaled:
            int_scale = self._int_scale
            if int_scale is not None:
                value = raw * int_scale[0] + int_scale[1]
            else:
                value = raw * self.scale + self.offset
                if not math.isfinite(value):
                    return Decoded(None, _BAD, f"raw value {raw!r} overflows when scaled")
        if self._rounding is not None and type(value) is float:
            shifted = value * self._round_factor
            if -_EXACT < shifted < _EXACT:
                value = round(shifted) / self._round_factor
        if kind == "int":
            if type(value) is not int:
                value = round(value)
        elif kind == "float" and type(value) is not float:
            try:
                value = float(value)
            except OverflowError:
                return Decoded(None, _BAD, f"raw value {raw!r} overflows when scaled")
        elif kind == "bool":
            value = value != 0
        return self._check_range(value)

    def _check_range(self, value: Any) -> Decoded:
        if type(value) is bool or not isinstance(value, int | float):
            return _new(Decoded, (value, _GOOD, ""))
        low, high = self.valid_min, self.valid_max
        if low is not None and value < low:
            return Decoded(value, _BAD, f"{value!r} below valid_min {low!r}")
        if high is not None and value > high:
            return Decoded(value, _BAD, f"{value!r} above valid_max {high!r}")
        return _new(Decoded, (value, _GOOD, ""))

    # ------------------------------------------------------------------ encoding

    def _reject(self, value: object, why: str) -> ModbusCodecError:
        return ModbusCodecError(f"{self.name}: cannot write {_describe(value)}: {why}")

    def encode(self, value: object) -> list[int] | list[bool]:
        """The registers (or the one coil) that carry ``value``.

        Points that share their register (``bit``, ``mask``, ``shift``) raise: use
        :meth:`encode_into` with the register's current contents.
        """
        if self.needs_current:
            raise ModbusCodecError(
                f"{self.name}: bit/mask/shift points share their register: read it and use "
                "encode_into(value, current_registers)"
            )
        return self._encode(value, None)

    def encode_into(self, value: object, current: Sequence[int]) -> list[int] | list[bool]:
        """Like :meth:`encode`, keeping the bits of ``current`` (the registers as last read)
        that the point does not own: the read-modify-write of ``bit``/``mask``/``shift``
        points, and the high byte of ``int8``/``uint8``."""
        if self.is_bits:
            return self._encode(value, None)
        try:
            data = self._regs.pack(*current)
        except (struct.error, TypeError, OverflowError):
            raise self._malformed(current) from None
        return self._encode(value, data)

    def _encode(self, value: object, current: bytes | None) -> list[int] | list[bool]:
        kind = self._kind
        if self.is_bits:
            raw = self._to_raw(value)
            return [bool(raw)]
        if kind == "str":
            return self._pack_bytes(self._string_bytes(value), value)
        if kind in ("hex", "list"):
            return self._pack_bytes(self._bytes_value(value), value)
        raw = self._to_raw(value)
        if self.needs_current:
            if current is None:  # pragma: no cover - encode() refuses earlier
                raise self._reject(value, "needs the current registers")
            low, high = self._field_range
            if not low <= raw <= high:
                raise self._reject(value, f"raw {raw} outside the field's range {low}..{high}")
            bits = raw << (self._shift + (self._bit or 0))
            if bits & self._full & ~self._write_mask or (bits & ~self._full and raw >= 0):
                raise self._reject(value, f"raw {raw} does not fit mask {self._write_mask:#x}")
            pattern = self._uvalue.unpack(current)[0]
            pattern = (pattern & ~self._write_mask) | (bits & self._write_mask)
            data = self._uvalue.pack(pattern & self._full)
        else:
            try:
                data = self._value.pack(raw)
            except (struct.error, OverflowError):
                raise self._reject(value, f"raw {raw!r} does not fit {self.type.value}") from None
        if self._low_byte and current is not None:
            data = current[:1] + data[1:]
        return list(self._regs.unpack(data))

    def _to_raw(self, value: object) -> Any:
        """Enum reversed, or the inverse scaling rounded to the raw type (not range-checked
        against the register width here; packing does that)."""
        if self._enum_reverse or self._kind == "enum":
            try:
                return self._enum_reverse[value]
            except (KeyError, TypeError):
                expected = ", ".join(map(repr, list(self._enum_reverse)[:10]))
                raise self._reject(value, f"not a value of the enum map ({expected})") from None
        if self.is_bits or self._bit is not None:
            if type(value) is bool or (type(value) is int and value in (0, 1)):
                return int(value)
            raise self._reject(value, "expected a boolean")
        if type(value) is bool:
            value = int(value)
        if not isinstance(value, int | float):
            raise self._reject(value, "expected a number")
        is_float = self.type in _FLOATS
        if isinstance(value, int) and self._int_scale is not None:
            scale, offset = self._int_scale
            raw: Any = value - offset
            if scale != 1:
                raw = round(Fraction(raw, scale))
        else:
            try:
                raw = (value - self.offset) / self.scale if self._scaled else float(value)
            except OverflowError:
                raise self._reject(value, f"too large for {self.type.value}") from None
            if not is_float:
                if not math.isfinite(raw):
                    raise self._reject(value, f"{self.type.value} needs a finite number")
                raw = round(raw)
        if not is_float and not self.needs_current:
            low, high = self._raw_range
            if not low <= raw <= high:
                raise self._reject(value, f"raw {raw} outside {self.type.value} ({low}..{high})")
        if raw in self._sentinels:
            raise self._reject(value, f"raw {raw!r} is the sentinel (means 'no value')")
        return raw

    def _string_bytes(self, value: object) -> bytes:
        if not isinstance(value, str):
            raise self._reject(value, "expected text")
        try:
            return value.encode(self.encoding)
        except UnicodeEncodeError as exc:
            raise self._reject(value, f"not encodable as {self.encoding}: {exc.reason}") from None

    def _bytes_value(self, value: object) -> bytes:
        try:
            if isinstance(value, str):
                return bytes.fromhex(value)
            if isinstance(value, bytes | bytearray):
                return bytes(value)
            if isinstance(value, Sequence):
                return bytes(value)
        except (ValueError, TypeError) as exc:
            raise self._reject(value, f"expected hex text or byte values 0..255 ({exc})") from None
        raise self._reject(value, "expected hex text or a list of byte values")

    def _pack_bytes(self, data: bytes, value: object) -> list[int]:
        size = 2 * self.count
        if len(data) > size:
            raise self._reject(value, f"{len(data)} bytes do not fit {self.count} registers")
        return list(self._regs.unpack(data.ljust(size, b"\x00")))

    def write_request(self, value: object, current: Sequence[int] | None = None) -> WriteRequest:
        """The write that sets the point to ``value``: function 5/15 for a coil, 6/16 for
        holding registers (the point's ``write_function`` when it names one). ``current`` (the
        registers as last read) is required for bit/mask/shift points."""
        if not self.table.writable:
            raise ModbusCodecError(f"{self.name}: {self.table.value} is read-only")
        values = self.encode(value) if current is None else self.encode_into(value, current)
        return WriteRequest(
            self.unit_id, self.table, self.write_function, self.address, tuple(values)
        )

    def __repr__(self) -> str:
        return (
            f"PointCodec({self.name!r}, {self.table.value} {self.address}, {self.type.value}, "
            f"unit {self.unit_id})"
        )


def _bits_kind(schema: DataSchema | None) -> _Kind:
    return "int" if _schema_kind(schema) == "int" else "bool"


class ServiceWriteCodec:
    """A compiled :class:`~thing_models.model.ModbusServiceWrite`: the value (fixed, or the
    service's input ``param``) written as is, with the binding's orders, no scale/offset."""

    __slots__ = ("_codec", "write")

    def __init__(self, write: ModbusServiceWrite, binding: ModbusBinding) -> None:
        self.write = write
        if write.type in (ModbusType.STRING, ModbusType.BYTES):
            raise ModbusConfigError(
                f"{write.service}: service writes carry numbers or booleans, not {write.type.value}"
            )
        if (write.value is None) == (write.param is None):
            raise ModbusConfigError(f"{write.service}: give exactly one of value or param")
        if not write.table.writable:
            raise ModbusConfigError(f"{write.service}: {write.table.value} is read-only")
        point = ModbusPoint(
            property=write.service,
            table=write.table,
            address=write.address,
            type=write.type,
            write_function=write.write_function,
            byte_order=binding.byte_order,
            word_order=binding.word_order,
        )
        self._codec = PointCodec(point, binding)

    def write_request(self, inputs: Mapping[str, object] | None = None) -> WriteRequest:
        """The write for one call of the service; ``inputs`` are the call's input values."""
        write = self.write
        if write.param is None:
            return self._codec.write_request(write.value)
        if inputs is None or write.param not in inputs:
            raise ModbusCodecError(f"{write.service}: the call lacks input {write.param!r}")
        return self._codec.write_request(inputs[write.param])


def compile_point(
    point: ModbusPoint, binding: ModbusBinding, *, schema: DataSchema | None = None
) -> PointCodec:
    """Compile ``point`` of ``binding``; ``schema`` (the property's) selects the result type.

    Raises :class:`ModbusConfigError` for a point the codec cannot decode.
    """
    return PointCodec(point, binding, schema)


def compile_service_write(write: ModbusServiceWrite, binding: ModbusBinding) -> ServiceWriteCodec:
    """Compile one service write of ``binding``."""
    return ServiceWriteCodec(write, binding)


def compile_binding(
    binding: ModbusBinding, model: ThingModel | None = None
) -> tuple[PointCodec, ...]:
    """Every point of ``binding`` compiled, in order, with its property's schema from
    ``model`` (a flattened model, so that component properties ``instance:id`` are found)."""
    codecs_: list[PointCodec] = []
    for point in binding.points:
        prop = model.property(point.property) if model is not None else None
        codecs_.append(compile_point(point, binding, schema=prop.schema if prop else None))
    return tuple(codecs_)
