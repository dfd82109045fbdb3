"""The Modbus register codec: exact register vectors per type and order, the decoding steps,
writes, and hypothesis round trips and fuzzing ("decode it, or raise ModbusCodecError")."""

from __future__ import annotations

import contextlib
import inspect
import math
import struct
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import protocol_adapters.modbus as modbus
from protocol_adapters.modbus import (
    Decoded,
    ModbusCodecError,
    ModbusConfigError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusTransportError,
    PointCodec,
    WriteRequest,
    compile_binding,
    compile_point,
    compile_service_write,
)
from thing_models import load_model_file
from thing_models.messages import Quality
from thing_models.model import (
    ByteOrder,
    DataSchema,
    DataType,
    EnumValue,
    ModbusBinding,
    ModbusPoint,
    ModbusServiceWrite,
    ModbusTable,
    ModbusType,
)

BIG, LITTLE = ByteOrder.BIG, ByteOrder.LITTLE
HR, IR = ModbusTable.HOLDING_REGISTER, ModbusTable.INPUT_REGISTER
COIL, DI = ModbusTable.COIL, ModbusTable.DISCRETE_INPUT
BINDING = ModbusBinding()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "models"
ORDERS = {  # common name -> (word_order, byte_order)
    "ABCD": (BIG, BIG),
    "CDAB": (LITTLE, BIG),
    "BADC": (BIG, LITTLE),
    "DCBA": (LITTLE, LITTLE),
}
INT = DataSchema(DataType.INT64)
FLOAT = DataSchema(DataType.DOUBLE)


def codec(
    mtype: ModbusType = ModbusType.UINT16,
    *,
    table: ModbusTable = HR,
    schema: DataSchema | None = None,
    binding: ModbusBinding = BINDING,
    **kwargs: Any,
) -> PointCodec:
    point = ModbusPoint(property="p", table=table, address=kwargs.pop("address", 10), type=mtype)
    return compile_point(replace(point, **kwargs), binding, schema=schema)


def good(value: Any) -> Decoded:
    return Decoded(value, Quality.GOOD, "")


# --------------------------------------------------------------------------- exact vectors

# (type, order, registers, value): byte_order/word_order per the vendor table in
# docs/model-format.md, values A..H written most significant byte first.
VECTORS: list[tuple[ModbusType, str, list[int], Any]] = [
    # float32 123.456 = 0x42F6E979
    (ModbusType.FLOAT32, "ABCD", [0x42F6, 0xE979], 123.45600128173828),
    (ModbusType.FLOAT32, "CDAB", [0xE979, 0x42F6], 123.45600128173828),
    (ModbusType.FLOAT32, "BADC", [0xF642, 0x79E9], 123.45600128173828),
    (ModbusType.FLOAT32, "DCBA", [0x79E9, 0xF642], 123.45600128173828),
    # int32 -123456789 = 0xF8A432EB
    (ModbusType.INT32, "ABCD", [0xF8A4, 0x32EB], -123456789),
    (ModbusType.INT32, "CDAB", [0x32EB, 0xF8A4], -123456789),
    (ModbusType.INT32, "BADC", [0xA4F8, 0xEB32], -123456789),
    (ModbusType.INT32, "DCBA", [0xEB32, 0xA4F8], -123456789),
    # uint32 0x12345678
    (ModbusType.UINT32, "ABCD", [0x1234, 0x5678], 0x12345678),
    (ModbusType.UINT32, "CDAB", [0x5678, 0x1234], 0x12345678),
    (ModbusType.UINT32, "BADC", [0x3412, 0x7856], 0x12345678),
    (ModbusType.UINT32, "DCBA", [0x7856, 0x3412], 0x12345678),
    # float64 123.456 = 0x405EDD2F1A9FBE77
    (ModbusType.FLOAT64, "ABCD", [0x405E, 0xDD2F, 0x1A9F, 0xBE77], 123.456),
    (ModbusType.FLOAT64, "CDAB", [0xBE77, 0x1A9F, 0xDD2F, 0x405E], 123.456),
    (ModbusType.FLOAT64, "BADC", [0x5E40, 0x2FDD, 0x9F1A, 0x77BE], 123.456),
    (ModbusType.FLOAT64, "DCBA", [0x77BE, 0x9F1A, 0x2FDD, 0x5E40], 123.456),
    # float64 -1.5 = 0xBFF8000000000000
    (ModbusType.FLOAT64, "CDAB", [0, 0, 0, 0xBFF8], -1.5),
    (ModbusType.FLOAT64, "DCBA", [0, 0, 0, 0xF8BF], -1.5),
    # int64 0x0102030405060708
    (ModbusType.INT64, "ABCD", [0x0102, 0x0304, 0x0506, 0x0708], 72623859790382856),
    (ModbusType.INT64, "CDAB", [0x0708, 0x0506, 0x0304, 0x0102], 72623859790382856),
    (ModbusType.INT64, "BADC", [0x0201, 0x0403, 0x0605, 0x0807], 72623859790382856),
    (ModbusType.INT64, "DCBA", [0x0807, 0x0605, 0x0403, 0x0201], 72623859790382856),
    # int64 -2 = 0xFFFFFFFFFFFFFFFE
    (ModbusType.INT64, "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], -2),
    (ModbusType.INT64, "CDAB", [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF], -2),
    (ModbusType.INT64, "BADC", [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], -2),
    (ModbusType.INT64, "DCBA", [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF], -2),
    # uint64 0xFEDCBA9876543210: every digit kept (no float on the way)
    (ModbusType.UINT64, "ABCD", [0xFEDC, 0xBA98, 0x7654, 0x3210], 0xFEDCBA9876543210),
    (ModbusType.UINT64, "CDAB", [0x3210, 0x7654, 0xBA98, 0xFEDC], 0xFEDCBA9876543210),
    (ModbusType.UINT64, "BADC", [0xDCFE, 0x98BA, 0x5476, 0x1032], 0xFEDCBA9876543210),
    (ModbusType.UINT64, "DCBA", [0x1032, 0x5476, 0x98BA, 0xDCFE], 0xFEDCBA9876543210),
    # 16-bit: word order has no effect, byte order swaps the register's two bytes
    (ModbusType.INT16, "ABCD", [0xFB2E], -1234),
    (ModbusType.INT16, "CDAB", [0xFB2E], -1234),
    (ModbusType.INT16, "BADC", [0x2EFB], -1234),
    (ModbusType.INT16, "DCBA", [0x2EFB], -1234),
    (ModbusType.UINT16, "ABCD", [0xFB2E], 0xFB2E),
    (ModbusType.UINT16, "BADC", [0x2EFB], 0xFB2E),
    # float16 (IEEE half): 1.0 = 0x3C00, -2.5 = 0xC100, 65504 = 0x7BFF
    (ModbusType.FLOAT16, "ABCD", [0x3C00], 1.0),
    (ModbusType.FLOAT16, "CDAB", [0xC100], -2.5),
    (ModbusType.FLOAT16, "BADC", [0x003C], 1.0),
    (ModbusType.FLOAT16, "DCBA", [0xFF7B], 65504.0),
    # int8/uint8: the low byte of the register (after byte order)
    (ModbusType.INT8, "ABCD", [0x12FF], -1),
    (ModbusType.UINT8, "ABCD", [0x12FF], 255),
    (ModbusType.INT8, "ABCD", [0x0080], -128),
    (ModbusType.INT8, "BADC", [0x7F12], 127),
    (ModbusType.UINT8, "DCBA", [0xFF12], 0xFF),
]


@pytest.mark.parametrize(("mtype", "order", "registers", "value"), VECTORS)
def test_decode_vectors(mtype: ModbusType, order: str, registers: list[int], value: Any) -> None:
    word, byte = ORDERS[order]
    point = codec(mtype, word_order=word, byte_order=byte)
    decoded = point.decode(registers)
    assert decoded == good(value)
    assert type(decoded.value) is type(value)


@pytest.mark.parametrize(("mtype", "order", "registers", "value"), VECTORS)
def test_encode_vectors(mtype: ModbusType, order: str, registers: list[int], value: Any) -> None:
    word, byte = ORDERS[order]
    point = codec(mtype, word_order=word, byte_order=byte)
    if mtype in (ModbusType.INT8, ModbusType.UINT8):
        # encode() writes the low byte with a zero high byte; encode_into keeps the high byte
        assert point.encode_into(value, registers) == registers
    else:
        assert point.encode(value) == registers


def test_orders_come_from_the_binding_unless_the_point_sets_them() -> None:
    binding = ModbusBinding(byte_order=LITTLE, word_order=LITTLE)
    assert codec(ModbusType.UINT32, binding=binding).decode([0x7856, 0x3412]).value == 0x12345678
    own = codec(ModbusType.UINT32, binding=binding, word_order=BIG, byte_order=BIG)
    assert own.decode([0x1234, 0x5678]).value == 0x12345678


def test_int8_encode_keeps_the_high_byte_only_with_encode_into() -> None:
    point = codec(ModbusType.INT8)
    assert point.encode(-1) == [0x00FF]
    assert point.encode_into(-1, [0xAB00]) == [0xABFF]
    assert codec(ModbusType.UINT8, byte_order=LITTLE).encode_into(0x34, [0x00AB]) == [0x34AB]


# --------------------------------------------------------------------------- decoding steps


# The lift controller's status word: b0 in service, b4 obstructed, b2..3 door, b12..13 direction
STATUS = 0b0010_0000_0000_1001  # in service, door open (01), direction down (10)


@pytest.mark.parametrize(
    ("kwargs", "value"),
    [
        ({"bit": 0}, True),
        ({"bit": 4}, False),
        ({"bit": 13}, True),
        ({"mask": 0x000C, "shift": 2}, 2),
        (
            {"mask": 0x000C, "shift": 2, "enum_map": ((0, "moving"), (1, "open"), (2, "closed"))},
            "closed",
        ),
        ({"mask": 0x3000, "shift": 12, "enum_map": ((0, "idle"), (1, "up"), (2, "down"))}, "down"),
        ({"mask": 0x00FF}, 0x09),
        ({"shift": 8}, 0x20),
    ],
)
def test_mask_shift_bit(kwargs: dict[str, Any], value: Any) -> None:
    assert codec(table=IR, **kwargs).decode([STATUS]) == good(value)


def test_mask_applies_to_the_bit_pattern_of_signed_types() -> None:
    assert codec(ModbusType.INT16, mask=0xFF00, shift=8).decode([0xFE01]).value == 0xFE
    # without a mask a signed value shifts arithmetically
    assert codec(ModbusType.INT16, shift=4).decode([0xFF00]).value == -16
    # bit of a 32-bit value, in its word order
    assert codec(ModbusType.UINT32, bit=17, word_order=LITTLE).decode([0, 2]) == good(True)
    assert codec(ModbusType.FLOAT32, bit=31).decode([0x8000, 0]) == good(True)


@pytest.mark.parametrize(
    ("mtype", "kwargs", "registers", "value"),
    [
        (ModbusType.INT16, {"scale": 0.1, "rounding": 1}, [0xFB2E], -123.4),
        (ModbusType.UINT16, {"scale": 0.01, "rounding": 2}, [5000], 50.0),
        (ModbusType.UINT16, {"scale": 0.1, "offset": -40}, [300], -10.0),
        (ModbusType.INT16, {"scale": 0.001, "rounding": 3}, [0xFC18], -1.0),
        (ModbusType.UINT32, {"scale": 0.1, "rounding": 1}, [0, 12345], 1234.5),
        (ModbusType.UINT32, {"scale": 1000}, [0x6553, 0xF100], 1700000000000),
        (ModbusType.INT16, {"scale": 2, "offset": 1}, [0xFFFF], -1),
        (ModbusType.FLOAT32, {"rounding": 2}, [0x42F6, 0xE979], 123.46),
        (ModbusType.FLOAT32, {"rounding": 0}, [0x42F6, 0xE979], 123.0),
        (ModbusType.FLOAT32, {"scale": 10, "offset": 0.5, "rounding": 1}, [0x3F80, 0], 10.5),
        (ModbusType.UINT64, {"scale": 0.001}, [0, 0, 0x0001, 0xE240], 123.456),
    ],
)
def test_scale_offset_rounding(
    mtype: ModbusType, kwargs: dict[str, Any], registers: list[int], value: Any
) -> None:
    decoded = codec(mtype, **kwargs).decode(registers)
    assert decoded == good(value)
    assert type(decoded.value) is type(value)


@pytest.mark.parametrize(
    ("mtype", "kwargs", "schema", "registers", "value"),
    [
        # integer property: int(round(x)) without an identity enum map
        (ModbusType.UINT16, {}, INT, [7], 7),
        (ModbusType.UINT16, {"scale": 0.5}, INT, [7], 4),  # 3.5 rounds half to even
        (ModbusType.FLOAT32, {}, INT, [0x42F6, 0xE979], 123),
        (ModbusType.UINT32, {"scale": 1000}, DataSchema(DataType.TIMESTAMP), [0, 2], 2000),
        (ModbusType.UINT16, {}, DataSchema(DataType.ENUM, enum=(EnumValue(1, "a"),)), [1], 1),
        (ModbusType.UINT16, {}, DataSchema(DataType.INT32), [65535], 65535),
        # float property: float even from an integer register
        (ModbusType.UINT16, {}, FLOAT, [3], 3.0),
        (ModbusType.UINT16, {}, DataSchema(DataType.FLOAT), [3], 3.0),
        # bool property on a whole register
        (ModbusType.UINT16, {}, DataSchema(DataType.BOOL), [2], True),
        (ModbusType.UINT16, {}, DataSchema(DataType.BOOL), [0], False),
        # no schema: integral scale keeps ints, otherwise float
        (ModbusType.UINT16, {"scale": 10}, None, [3], 30),
        (ModbusType.UINT16, {"scale": 0.5}, None, [4], 2.0),
        # enum maps win over the schema: values as mapped
        (ModbusType.UINT16, {"enum_map": ((1, 1), (3, 3))}, INT, [3], 3),
    ],
)
def test_result_type_rule(
    mtype: ModbusType,
    kwargs: dict[str, Any],
    schema: DataSchema | None,
    registers: list[int],
    value: Any,
) -> None:
    decoded = codec(mtype, schema=schema, **kwargs).decode(registers)
    assert decoded == good(value)
    assert type(decoded.value) is type(value)


@pytest.mark.parametrize(
    ("mtype", "kwargs", "registers"),
    [
        (ModbusType.INT16, {"sentinel": -32768}, [0x8000]),
        (ModbusType.INT16, {"sentinel": 0x8000}, [0x8000]),  # the bit pattern works too
        (ModbusType.INT16, {"sentinel": 0xFFFF}, [0xFFFF]),
        (ModbusType.UINT16, {"sentinel": 0xFFFF}, [0xFFFF]),
        (ModbusType.UINT16, {"sentinel": -1}, [0xFFFF]),
        (ModbusType.UINT32, {"sentinel": 0xFFFFFFFF}, [0xFFFF, 0xFFFF]),
        (ModbusType.INT64, {"sentinel": -1}, [0xFFFF] * 4),
        # compared in raw units, before scaling
        (ModbusType.INT16, {"sentinel": -32768, "scale": 0.1}, [0x8000]),
        # after mask and shift
        (ModbusType.UINT16, {"sentinel": 0xFF, "mask": 0xFF00, "shift": 8}, [0xFF12]),
        # before the enum map
        (ModbusType.UINT16, {"sentinel": 0xFFFF, "enum_map": ((0, 0),)}, [0xFFFF]),
        # floats: the value, or an integer naming the bit pattern
        (ModbusType.FLOAT32, {"sentinel": -1}, [0xBF80, 0]),
        (ModbusType.FLOAT32, {"sentinel": 0xFFFFFFFF}, [0xFFFF, 0xFFFF]),
    ],
)
def test_sentinel_gives_bad_quality_and_no_value(
    mtype: ModbusType, kwargs: dict[str, Any], registers: list[int]
) -> None:
    decoded = codec(mtype, **kwargs).decode(registers)
    assert decoded.quality is Quality.BAD
    assert decoded.value is None
    assert "sentinel" in decoded.reason


def test_sentinel_does_not_match_other_values() -> None:
    assert codec(ModbusType.INT16, sentinel=-32768).decode([0x8001]) == good(-32767)
    masked = codec(ModbusType.UINT16, sentinel=0xFF, mask=0xFF00, shift=8)
    assert masked.decode([0x12FF]) == good(0x12)


@pytest.mark.parametrize(
    ("registers", "expected"),
    [
        ([0x7FC0, 0], "nan"),
        ([0x7F80, 0], "inf"),
        ([0xFF80, 0], "-inf"),
    ],
)
def test_non_finite_floats_are_bad(registers: list[int], expected: str) -> None:
    decoded = codec(ModbusType.FLOAT32).decode(registers)
    assert (decoded.value, decoded.quality) == (None, Quality.BAD)
    assert expected in decoded.reason


def test_valid_range_keeps_the_value_with_bad_quality() -> None:
    point = codec(ModbusType.UINT16, valid_min=1, valid_max=150, scale=1)
    assert point.decode([150]) == good(150)
    assert point.decode([151]) == Decoded(151, Quality.BAD, "151 above valid_max 150")
    assert point.decode([0]) == Decoded(0, Quality.BAD, "0 below valid_min 1")
    # compared in property units, after scaling and rounding
    scaled = codec(ModbusType.INT16, scale=0.1, rounding=1, valid_max=32)
    assert scaled.decode([320]) == good(32.0)
    assert scaled.decode([321]).quality is Quality.BAD


def test_enum_map_and_unmapped_raw_values() -> None:
    point = codec(enum_map=((0, "moving"), (1, "open"), (2, "closed")))
    assert point.decode([1]) == good("open")
    assert point.decode([7]) == Decoded(None, Quality.BAD, "raw value 7 is not in the enum map")
    flags = codec(enum_map=((0, False), (1, True)))
    assert flags.decode([1]) == good(True)


@pytest.mark.parametrize(
    ("registers", "byte_order", "encoding", "text"),
    [
        ([0x534E, 0x3132, 0x3334, 0x3500], BIG, "ascii", "SN12345"),  # odd length, NUL pad
        ([0x534E, 0x3132, 0x3334, 0x3536], BIG, "ascii", "SN123456"),  # exactly full
        ([0x4142, 0x2020, 0x2020, 0x2020], BIG, "ascii", "AB"),  # space padding
        ([0x4142, 0x0000, 0x0000, 0x0000], BIG, "ascii", "AB"),
        ([0x0000, 0x0000, 0x0000, 0x0000], BIG, "ascii", ""),
        ([0x4E53, 0x3231, 0x3433, 0x0035], LITTLE, "ascii", "SN12345"),
        ([0x2041, 0x0042, 0x0000, 0x0000], LITTLE, "ascii", "A B"),  # inner space kept
        ([0xC3A9, 0x7465, 0x0000, 0x0000], BIG, "utf-8", "éte"),
    ],
)
def test_strings(registers: list[int], byte_order: ByteOrder, encoding: str, text: str) -> None:
    point = codec(ModbusType.STRING, count=4, byte_order=byte_order, encoding=encoding)
    assert point.decode(registers) == good(text)
    assert point.decode(point.encode(text)) == good(text)


def test_string_ignores_word_order_and_reports_undecodable_bytes() -> None:
    point = codec(ModbusType.STRING, count=2, word_order=LITTLE)
    assert point.decode([0x4142, 0x4344]) == good("ABCD")
    bad = point.decode([0x41FF, 0x0000])
    assert (bad.value, bad.quality) == (None, Quality.BAD)
    assert bad.reason.startswith("not ascii text")


def test_bytes_as_hex_text_or_byte_list() -> None:
    registers = [0x0A1B, 0x2C3D]
    assert codec(ModbusType.BYTES, count=2).decode(registers) == good("0a1b2c3d")
    text = codec(ModbusType.BYTES, count=2, schema=DataSchema(DataType.TEXT))
    assert text.decode(registers) == good("0a1b2c3d")
    array = DataSchema(DataType.ARRAY, items=DataSchema(DataType.INT32))
    assert codec(ModbusType.BYTES, count=2, schema=array).decode(registers) == good(
        [0x0A, 0x1B, 0x2C, 0x3D]
    )
    little = codec(ModbusType.BYTES, count=2, byte_order=LITTLE)
    assert little.decode(registers) == good("1b0a3d2c")
    assert little.encode("1b0a3d2c") == registers
    assert codec(ModbusType.BYTES, count=2).encode([10, 27]) == [0x0A1B, 0]
    assert codec(ModbusType.BYTES, count=2).encode(b"\x01") == [0x0100, 0]


def test_bits() -> None:
    coil = codec(ModbusType.BIT, table=COIL)
    assert coil.decode_bits([True]) == good(True)
    assert coil.decode_bits([0]) == good(False)
    assert coil.decode([1]) == good(True)  # decode() of a bit table reads its bit
    assert coil.encode(True) == [True]
    assert coil.encode(0) == [False]
    mapped = codec(ModbusType.BIT, table=DI, enum_map=((0, "closed"), (1, "open")))
    assert mapped.decode_bits([True]) == good("open")
    as_int = codec(ModbusType.BIT, table=DI, schema=INT)
    assert as_int.decode_bits([True]) == good(1)
    with pytest.raises(ModbusCodecError, match="not a bit table"):
        codec().decode_bits([True])


def test_bit_type_on_a_register_table_is_a_flag() -> None:
    flag = codec(ModbusType.BIT)
    assert flag.decode([0]) == good(False)
    assert flag.decode([3]) == good(True)
    assert flag.encode(True) == [1]


# --------------------------------------------------------------------------- malformed input


@pytest.mark.parametrize(
    ("registers", "message"),
    [
        ([1], "expected 2 register"),
        ([1, 2, 3], "got 3"),
        ([], "got 0"),
        ([1, 65536], "integers 0..65535"),
        ([1, -1], "integers 0..65535"),
        ([1, 2.0], "integers 0..65535"),
        ([1, "2"], "integers 0..65535"),
        ([1, None], "integers 0..65535"),
        (None, "got None"),
        (7, "got 7"),
    ],
)
def test_malformed_registers_raise_codec_errors_naming_the_point(
    registers: Any, message: str
) -> None:
    point = codec(ModbusType.FLOAT32, address=7)
    with pytest.raises(ModbusCodecError, match=message) as info:
        point.decode(registers)
    assert "p (holding_register 7)" in str(info.value)


@pytest.mark.parametrize("bits", [[], [True, False], [2], ["1"], [None], None, [1.0]])
def test_malformed_bits(bits: Any) -> None:
    with pytest.raises(ModbusCodecError, match="1 bit"):
        codec(ModbusType.BIT, table=COIL).decode_bits(bits)


# --------------------------------------------------------------------------- compiling


@pytest.mark.parametrize(
    ("mtype", "kwargs", "message"),
    [
        (ModbusType.STRING, {}, "needs count"),
        (ModbusType.BYTES, {"count": 126}, "needs count"),
        (ModbusType.FLOAT32, {"count": 4}, "disagrees"),
        (ModbusType.FLOAT32, {"mask": 0xFF}, "integer types only"),
        (ModbusType.UINT16, {"mask": 0x1FFFF}, "does not fit"),
        (ModbusType.UINT16, {"bit": 16}, "bit 16 outside"),
        (ModbusType.UINT16, {"shift": 16}, "shift 16 outside"),
        (ModbusType.UINT16, {"mask": 0x00F0, "shift": 4, "bit": 4}, "outside mask"),
        (ModbusType.UINT16, {"scale": 0.0}, "scale"),
        (ModbusType.STRING, {"count": 2, "bit": 1}, "do not apply"),
        (ModbusType.STRING, {"count": 2, "scale": 2.0}, "do not apply"),
        (ModbusType.STRING, {"count": 2, "encoding": "klingon"}, "unknown encoding"),
        (ModbusType.UINT32, {"write_function": 6}, "write_function 6"),
        (ModbusType.UINT16, {"write_function": 5}, "write_function 5"),
        (ModbusType.UINT16, {"address": 65536}, "outside"),
        (ModbusType.UINT32, {"address": 65535}, "past address 65535"),
    ],
)
def test_points_the_codec_cannot_compile(
    mtype: ModbusType, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModbusConfigError, match=message):
        codec(mtype, **kwargs)


def test_bit_tables_hold_bits_only() -> None:
    with pytest.raises(ModbusConfigError, match="single bits"):
        codec(ModbusType.UINT16, table=COIL)


def test_one_based_addressing_subtracts_one() -> None:
    one_based = ModbusBinding(zero_based=False)
    assert codec(binding=one_based, address=1).address == 0
    assert codec(binding=one_based, address=101).address == 100
    assert codec(binding=one_based, address=65536).address == 65535
    with pytest.raises(ModbusConfigError, match="one-based"):
        codec(binding=one_based, address=0)
    request = codec(binding=one_based, address=101).write_request(5)
    assert request.address == 100


def test_unit_id_from_the_point_or_the_binding() -> None:
    assert codec(binding=ModbusBinding(unit_id=7)).unit_id == 7
    assert codec(binding=ModbusBinding(unit_id=7), unit_id=9).unit_id == 9


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    ("mtype", "kwargs", "value", "registers"),
    [
        (ModbusType.UINT16, {"scale": 0.1}, 23.0, [230]),
        (ModbusType.UINT16, {"scale": 0.1}, 23.04, [230]),
        (ModbusType.UINT16, {"scale": 0.1}, 23.06, [231]),
        (ModbusType.UINT16, {"scale": 0.1, "offset": -40}, -10.0, [300]),
        (ModbusType.INT16, {"scale": 0.1}, -123.4, [0xFB2E]),
        (ModbusType.UINT16, {"scale": 0.5}, 1.25, [2]),  # 2.5 rounds half to even
        (ModbusType.UINT32, {"scale": 1000}, 1700000000000, [0x6553, 0xF100]),
        (ModbusType.UINT32, {"scale": 1000}, 1500, [0, 2]),  # 1.5 s -> 2 (half to even)
        (ModbusType.UINT64, {}, 0xFEDCBA9876543210, [0xFEDC, 0xBA98, 0x7654, 0x3210]),
        (ModbusType.FLOAT32, {"scale": 10}, 1234.56, [0x42F6, 0xE979]),
        (ModbusType.FLOAT16, {}, -2.5, [0xC100]),
        (ModbusType.UINT16, {}, True, [1]),
        (ModbusType.INT16, {"enum_map": ((1, "up"), (2, "down"))}, "down", [2]),
    ],
)
def test_encode(
    mtype: ModbusType, kwargs: dict[str, Any], value: Any, registers: list[int]
) -> None:
    assert codec(mtype, **kwargs).encode(value) == registers


@pytest.mark.parametrize(
    ("mtype", "kwargs", "value", "message"),
    [
        (ModbusType.UINT16, {}, 65536, r"raw 65536 outside uint16 \(0..65535\)"),
        (ModbusType.UINT16, {}, -1, "outside uint16"),
        (ModbusType.INT16, {}, 32768, "outside int16"),
        (ModbusType.INT8, {}, 128, "outside int8"),
        (ModbusType.UINT16, {"scale": 0.1}, 6553.6, "outside uint16"),
        (ModbusType.UINT16, {}, math.nan, "finite"),
        (ModbusType.UINT16, {}, "12", "expected a number"),
        (ModbusType.UINT16, {}, None, "expected a number"),
        (ModbusType.UINT16, {"enum_map": ((1, "up"),)}, "down", "not a value of the enum map"),
        (ModbusType.UINT16, {"enum_map": ((1, "up"),)}, [1], "not a value of the enum map"),
        (ModbusType.FLOAT16, {}, 1e6, "does not fit float16"),
        (ModbusType.FLOAT32, {}, 1e39, "does not fit float32"),
        (ModbusType.FLOAT32, {}, 10**400, "too large"),
        (ModbusType.INT16, {"sentinel": -32768}, -32768, "sentinel"),
        (ModbusType.STRING, {"count": 2}, "ABCDE", "5 bytes do not fit 2 registers"),
        (ModbusType.STRING, {"count": 2}, "é", "not encodable as ascii"),
        (ModbusType.STRING, {"count": 2}, 12, "expected text"),
        (ModbusType.BYTES, {"count": 1}, "zz", "expected hex text"),
        (ModbusType.BYTES, {"count": 1}, [256], "byte values"),
        (ModbusType.BYTES, {"count": 1}, 3, "expected hex text"),
        (ModbusType.BIT, {"table": COIL}, 2, "expected a boolean"),
    ],
)
def test_encode_rejects(
    mtype: ModbusType, kwargs: dict[str, Any], value: Any, message: str
) -> None:
    with pytest.raises(ModbusCodecError, match=message):
        codec(mtype, **kwargs).encode(value)


def test_bit_and_mask_writes_are_read_modify_write() -> None:
    bit = codec(bit=4)
    assert bit.needs_current
    with pytest.raises(ModbusCodecError, match="encode_into"):
        bit.encode(True)
    assert bit.encode_into(True, [0x8001]) == [0x8011]
    assert bit.encode_into(False, [0xFFFF]) == [0xFFEF]
    with pytest.raises(ModbusCodecError, match="expected a boolean"):
        bit.encode_into(2, [0])
    field = codec(mask=0x3000, shift=12, enum_map=((0, "idle"), (1, "up"), (2, "down")))
    assert field.encode_into("down", [0x1FFF]) == [0x2FFF]
    wide = codec(mask=0x0300, shift=8)
    assert wide.encode_into(3, [0x0000]) == [0x0300]
    with pytest.raises(ModbusCodecError, match=r"outside the field's range 0..3"):
        wide.encode_into(4, [0])
    sparse = codec(mask=0b1010)
    with pytest.raises(ModbusCodecError, match="does not fit mask"):
        sparse.encode_into(0b0100, [0])
    assert sparse.encode_into(0b1000, [0xFFFF]) == [0xFFFD]  # bit 1 cleared, bit 3 set
    # shift without a mask owns the bits above the shift
    shifted = codec(ModbusType.INT16, shift=4)
    assert shifted.encode_into(-1, [0x000A]) == [0xFFFA]
    assert shifted.decode([0xFFFA]) == good(-1)
    # a bit of a 32-bit value, word order respected
    wide_bit = codec(ModbusType.UINT32, bit=17, word_order=LITTLE)
    assert wide_bit.encode_into(True, [0x1234, 0]) == [0x1234, 2]
    with pytest.raises(ModbusCodecError, match="expected 2 register"):
        wide_bit.encode_into(True, [0])


def test_write_requests_pick_the_function() -> None:
    coil = codec(ModbusType.BIT, table=COIL, address=3)
    assert coil.write_request(True) == WriteRequest(1, COIL, 5, 3, (True,))
    multi_coil = codec(ModbusType.BIT, table=COIL, write_function=15)
    assert multi_coil.write_request(False).function == 15
    assert codec().write_request(7) == WriteRequest(1, HR, 6, 10, (7,))
    assert codec(write_function=16).write_request(7).function == 16
    assert codec(ModbusType.FLOAT32).write_request(1.0) == WriteRequest(1, HR, 16, 10, (0x3F80, 0))
    status = codec(bit=1)
    assert status.write_request(True, current=[0x8000]) == WriteRequest(1, HR, 6, 10, (0x8002,))
    with pytest.raises(ModbusCodecError, match="read-only"):
        codec(table=IR).write_request(1)
    with pytest.raises(ModbusCodecError, match="read-only"):
        codec(ModbusType.BIT, table=DI).write_request(True)


def test_service_writes() -> None:
    binding = ModbusBinding(unit_id=3, word_order=LITTLE)
    floor = ModbusServiceWrite(
        "call_to_floor", HR, 100, ModbusType.INT16, param="floor", write_function=6
    )
    assert compile_service_write(floor, binding).write_request({"floor": -2}) == WriteRequest(
        3, HR, 6, 100, (0xFFFE,)
    )
    with pytest.raises(ModbusCodecError, match="lacks input 'floor'"):
        compile_service_write(floor, binding).write_request({})
    reset = ModbusServiceWrite("reset", COIL, 10, ModbusType.BIT, value=True)
    assert compile_service_write(reset, binding).write_request() == WriteRequest(
        3, COIL, 5, 10, (True,)
    )
    # written as is, with the binding's word order
    limit = ModbusServiceWrite("limit", HR, 5, ModbusType.UINT32, value=0x00010002)
    assert compile_service_write(limit, binding).write_request().values == (2, 1)
    flag = ModbusServiceWrite("go", HR, 5, ModbusType.BIT, value=True)
    assert compile_service_write(flag, binding).write_request() == WriteRequest(3, HR, 6, 5, (1,))


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (ModbusServiceWrite("s", IR, 1, ModbusType.UINT16, value=1), "read-only"),
        (ModbusServiceWrite("s", HR, 1, ModbusType.UINT16), "exactly one"),
        (ModbusServiceWrite("s", HR, 1, ModbusType.STRING, value=1), "not string"),
        (ModbusServiceWrite("s", HR, 1, ModbusType.FLOAT32, value=1, write_function=6), "6"),
    ],
)
def test_service_writes_the_codec_refuses(write: ModbusServiceWrite, message: str) -> None:
    with pytest.raises(ModbusConfigError, match=message):
        compile_service_write(write, BINDING)


# --------------------------------------------------------------------------- example models


def test_energy_meter_registers_decode() -> None:
    model = load_model_file(EXAMPLES / "energy-meter-3p.yaml")
    binding = model.bindings.modbus
    assert binding is not None
    codecs = {c.name: c for c in compile_binding(binding, model)}
    assert codecs["voltage_a"].decode([0x4366, 0x8000]) == good(230.5)
    assert codecs["active_power"].decode([0xFFFF, 0xFC18]) == good(-100.0)
    assert codecs["power_factor"].decode([985]) == good(0.985)
    assert codecs["frequency"].decode([5002]) == good(50.02)
    # uint64, word order little, scale 0.001
    assert codecs["energy_import"].decode([0xE240, 0x0001, 0, 0]) == good(123.456)
    assert codecs["tariff"].decode([0xAB02]) == good(2)
    assert codecs["serial_number"].decode([0x4D54, 0x5231, 0x3233, 0, 0, 0, 0, 0]) == good("MTR123")
    assert codecs["relay_closed"].write_request(True) == WriteRequest(1, COIL, 5, 0, (True,))


def test_lift_controller_registers_decode() -> None:
    model = load_model_file(EXAMPLES / "lift-controller.yaml")
    binding = model.bindings.modbus
    assert binding is not None
    codecs = {c.name: c for c in compile_binding(binding, model)}
    assert codecs["current_floor"].decode([0xFFFE]) == good(-2)
    assert codecs["fault_code"].decode([101]) == good(101)
    assert codecs["fault_code"].decode([0xFFFF]).quality is Quality.BAD
    assert codecs["machine_temp"].decode([0x8000]).value is None
    assert codecs["machine_temp"].decode([215]) == good(21.5)
    assert codecs["car_load"].decode([151]).quality is Quality.BAD
    assert codecs["trip_count"].decode([1, 0]) == good(65536)
    assert codecs["running_hours"].decode([0, 12345]) == good(1234.5)
    assert codecs["car_speed"].decode([0xF830]) == good(-2.0)
    status = [STATUS]
    assert codecs["in_service"].decode(status) == good(True)
    assert codecs["door_state"].decode(status) == good("closed")
    assert codecs["direction"].decode(status) == good("down")


def test_water_meter_is_one_based_and_its_clock_stays_an_int() -> None:
    model = load_model_file(EXAMPLES / "water-meter.yaml")
    binding = model.bindings.modbus
    assert binding is not None
    codecs = {c.name: c for c in compile_binding(binding, model)}
    assert codecs["total_volume"].address == 0
    assert codecs["meter_clock"].decode([0x6553, 0xF100]) == good(1700000000000)
    assert codecs["leak_threshold"].write_request(120) == WriteRequest(1, HR, 6, 100, (120,))
    assert codecs["valve_state"].decode([0x0200]) == good("moving")


# --------------------------------------------------------------------------- the public surface


def test_error_tree() -> None:
    for cls in (ModbusCodecError, ModbusConfigError, ModbusTransportError):
        assert issubclass(cls, ModbusError)
    assert issubclass(ModbusExceptionResponse, ModbusTransportError)
    error = ModbusExceptionResponse(3, 2, "read 0..9")
    assert (error.function, error.code) == (3, 2)
    assert str(error) == "function 3: exception 2 (illegal data address): read 0..9"


def test_all_matches_public_names() -> None:
    # Submodules (codec, planner, driver, ...) appear as attributes once imported; not names.
    public = {
        name
        for name, value in vars(modbus).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(modbus.__all__) == public


# --------------------------------------------------------------------------- hypothesis

NUMERIC = [t for t in ModbusType if t not in (ModbusType.BIT, ModbusType.STRING, ModbusType.BYTES)]
orders = st.sampled_from(list(ORDERS.values()))


def registers_for(mtype: ModbusType) -> st.SearchStrategy[list[int]]:
    size = mtype.register_count or 1
    return st.lists(st.integers(0, 0xFFFF), min_size=size, max_size=size)


@given(data=st.data(), mtype=st.sampled_from(NUMERIC), order=orders)
def test_registers_decode_and_encode_back_exactly(
    data: st.DataObject, mtype: ModbusType, order: tuple[ByteOrder, ByteOrder]
) -> None:
    registers = data.draw(registers_for(mtype))
    if mtype in (ModbusType.INT8, ModbusType.UINT8):
        registers[0] &= 0x00FF if order[1] is BIG else 0xFF00
    point = codec(mtype, word_order=order[0], byte_order=order[1])
    decoded = point.decode(registers)
    assume(decoded.quality is Quality.GOOD)  # NaN and infinities
    assert point.encode(decoded.value) == registers


SCALES = [1.0, 10.0, 1000.0, 0.1, 0.5, 0.01, 0.001, -1.0]
OFFSETS = [0.0, -40.0, 2.5, 100.0]
INTEGERS = [t for t in NUMERIC if "float" not in t.value]


@given(
    mtype=st.sampled_from(INTEGERS),
    order=orders,
    scale=st.sampled_from(SCALES),
    offset=st.sampled_from(OFFSETS),
    value=st.floats(-1e20, 1e20, allow_nan=False) | st.integers(-(2**64), 2**64),
)
def test_integer_values_round_trip_within_half_a_step(
    mtype: ModbusType, order: tuple[ByteOrder, ByteOrder], scale: float, offset: float, value: Any
) -> None:
    point = codec(mtype, word_order=order[0], byte_order=order[1], scale=scale, offset=offset)
    bits = {"8": 8, "16": 16, "32": 32, "64": 64}[mtype.value.lstrip("uint")]
    low, high = (
        (0, 2**bits - 1)
        if mtype.value.startswith("u")
        else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    )
    raw = (value - offset) / scale
    try:
        registers = point.encode(value)
    except ModbusCodecError:
        assert not low - 1 < raw < high + 1
        return
    assert low - 1 < raw < high + 1
    decoded = point.decode(registers)
    assert decoded.quality is Quality.GOOD
    assert abs(decoded.value - value) <= abs(scale) / 2 * (1 + 1e-9) + abs(value) * 1e-12


@given(
    mtype=st.sampled_from([ModbusType.FLOAT16, ModbusType.FLOAT32, ModbusType.FLOAT64]),
    order=orders,
    value=st.floats(-60000, 60000, allow_nan=False),
)
def test_float_values_round_trip_within_precision(
    mtype: ModbusType, order: tuple[ByteOrder, ByteOrder], value: float
) -> None:
    point = codec(mtype, word_order=order[0], byte_order=order[1])
    decoded = point.decode(point.encode(value))
    precision = {ModbusType.FLOAT16: 2**-11, ModbusType.FLOAT32: 2**-24, ModbusType.FLOAT64: 0.0}
    assert abs(decoded.value - value) <= abs(value) * precision[mtype] + 2**-24


@given(raw=st.integers(0, 0xFFFF), decimals=st.integers(0, 4), signed=st.booleans())
def test_decimal_scales_give_the_decimal_value(raw: int, decimals: int, signed: bool) -> None:
    # scale 10**-n with rounding n: the double nearest the device's decimal, e.g. -123.4
    mtype = ModbusType.INT16 if signed else ModbusType.UINT16
    point = codec(mtype, scale=10.0**-decimals, rounding=decimals)
    value = raw - 0x10000 if signed and raw >= 0x8000 else raw
    assert point.decode([raw]) == good(value / 10**decimals)
    assert point.encode(value / 10**decimals) == [raw]


@given(
    text=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=10)
    | st.text(st.characters(codec="ascii"), max_size=9).map(lambda s: s + "x"),
    byte_order=st.sampled_from([BIG, LITTLE]),
)
def test_strings_round_trip(text: str, byte_order: ByteOrder) -> None:
    point = codec(ModbusType.STRING, count=5, byte_order=byte_order)
    assert point.decode(point.encode(text)) == good(text)


@given(
    field=st.integers(0, 3),
    bit=st.booleans(),
    current=st.integers(0, 0xFFFF),
)
def test_read_modify_write_touches_only_its_bits(field: int, bit: bool, current: int) -> None:
    masked = codec(mask=0x0300, shift=8)
    written = masked.encode_into(field, [current])
    assert written[0] & ~0x0300 == current & ~0x0300
    assert masked.decode(written) == good(field)
    flag = codec(bit=15)
    flagged = flag.encode_into(bit, [current])
    assert flagged[0] & 0x7FFF == current & 0x7FFF
    assert flag.decode(flagged) == good(bit)


def point_configs() -> st.SearchStrategy[PointCodec]:
    """Points the codec compiles, over every type, order and option (invalid mixes dropped)."""

    @st.composite
    def build(draw: st.DrawFn) -> PointCodec:
        mtype = draw(st.sampled_from(list(ModbusType)))
        table = COIL if mtype is ModbusType.BIT and draw(st.booleans()) else HR
        kwargs: dict[str, Any] = {
            "word_order": draw(st.sampled_from([BIG, LITTLE])),
            "byte_order": draw(st.sampled_from([BIG, LITTLE])),
        }
        if mtype in (ModbusType.STRING, ModbusType.BYTES):
            kwargs["count"] = draw(st.integers(1, 6))
            kwargs["encoding"] = draw(st.sampled_from(["ascii", "utf-8", "latin-1"]))
        elif table is HR:
            options = {
                "mask": st.integers(0, 0xFFFF),
                "shift": st.integers(0, 15),
                "bit": st.integers(0, 15),
                "scale": st.sampled_from([*SCALES, 1e300, 1e-300, 3.0, 2**70]),
                "offset": st.sampled_from([*OFFSETS, 1e308, -(2.0**80)]),
                "rounding": st.integers(0, 4),
                "sentinel": st.integers(-(2**63), 2**64) | st.floats(),
                "valid_min": st.floats(-1e6, 0),
                "valid_max": st.floats(0, 1e6),
                "enum_map": st.lists(
                    st.tuples(st.integers(0, 20), st.integers() | st.text(max_size=3)), max_size=4
                ).map(tuple),
            }
            for key, strategy in options.items():
                if draw(st.booleans()):
                    kwargs[key] = draw(strategy)
        schema = draw(
            st.none()
            | st.sampled_from(
                [DataType.INT32, DataType.FLOAT, DataType.BOOL, DataType.TEXT, DataType.ARRAY]
            ).map(DataSchema)
        )
        try:
            return codec(mtype, table=table, schema=schema, **kwargs)
        except ModbusConfigError:
            assume(False)
            raise

    return build()


@settings(max_examples=500)
@given(point=point_configs(), data=st.data())
def test_specialized_decoders_agree_with_the_general_path(
    point: PointCodec, data: st.DataObject
) -> None:
    top = 1 if point.is_bits else 0xFFFF
    registers = data.draw(st.lists(st.integers(0, top), min_size=point.count, max_size=point.count))
    fast, general = point.decode(registers), point._decode(registers)
    assert fast == general
    assert type(fast.value) is type(general.value)


ANYTHING = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(0, 0xFFFF),
    st.floats(),
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.binary(max_size=4),
)


@settings(max_examples=500)
@given(point=point_configs(), data=st.data())
def test_fuzz_well_formed_registers_decode_or_raise_codec_error(
    point: PointCodec, data: st.DataObject
) -> None:
    size = data.draw(st.just(point.count) | st.integers(0, 8))
    registers = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=size, max_size=size))
    try:
        decoded = point.decode(registers)
    except ModbusCodecError:
        assert len(registers) != point.count or point.is_bits
        return
    assert isinstance(decoded, Decoded)
    assert decoded.quality in (Quality.GOOD, Quality.BAD)
    assert (decoded.reason == "") == (decoded.quality is Quality.GOOD)


@settings(max_examples=300)
@given(point=point_configs(), registers=ANYTHING | st.lists(ANYTHING, max_size=6), value=ANYTHING)
def test_fuzz_anything_decodes_or_raises_codec_error(
    point: PointCodec, registers: Any, value: Any
) -> None:
    for call in (
        lambda: point.decode(registers),
        lambda: point.decode_bits(registers),
        lambda: point.encode(value),
        lambda: point.encode_into(value, registers),
        lambda: point.write_request(value),
    ):
        with contextlib.suppress(ModbusCodecError):
            call()


def test_float_vectors_match_struct() -> None:
    # the vectors above, cross-checked against struct
    assert struct.pack(">f", 123.456).hex() == "42f6e979"
    assert struct.pack(">d", 123.456).hex() == "405edd2f1a9fbe77"
